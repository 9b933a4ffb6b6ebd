/*
** The merge stage of the reference interpreter (DESIGN.md §3 "Merge
** semantics", doc/dsl.md "Merge"): after selection, per (layer, head), the
** evicted ordinary rows E are folded into the kept ones S, or summarized
** into summary rows, and the cache is compacted: kept rows in order, then
** the summary rows. Double precision; rows written back are rounded to the
** storage dtype.
**
**   nearest  a(e) = argmax_{k in S} sim(e, k), NaN never, ties → lower
**            position; merged when sim >= threshold (a value of the pair, or
**            the adaptive tau)
**   next     e → the first m kept tokens after it (fewer near the end)
**   runs     tokens i, i+1 (adjacent ordinary rows) share a run when
**            sim(i, i+1) >= threshold; e → the kept token of its run that
**            ranks first in the selection order; none: e is dropped
**   summary  C rows: built by Lloyd's k-means when none exist (init
**            E[floor(i |E| / C)]), else every e joins its nearest existing
**            row as a count-weighted running mean (online k-means)
**
** Update (simultaneous, from the pre-merge rows), X = K and/or V:
**   mean  X'_k = (w_k X_k + Σ_{e∈A(k)} w_e X_e) / (w_k + Σ w_e)
**   sum   X'_k = w_k X_k + Σ w_e X_e
** a row that absorbs nothing, or whose total weight is 0 or not finite
** (mean), is unchanged. Counts: count'_k = count_k + Σ count_e / |T(e)|
** (|T(e)| = 1 but for next). A merged row keeps its position and state (a
** scan state: the scan's value at it; the verifier refuses scans with summary rows).
**
** Pair expressions (sim, threshold, weight, self) are KIR instructions of
** the pair context (erow, krow, tmean, pinfo and elementwise ops and
** reductions over group, obs, chan on them): evaluated here per pair by a
** small evaluator of their own; the ordinary values they read come from
** the interpreter (KiMergeIn.val).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/interp.h"

/* --- sizes and rows -------------------------------------------------------------- */

static int held(const KiCase *c, int l, int h)
{
	return c->len ? c->len[l * c->H + h] : c->n;
}

int ki_summaryrows(const KiFn *f)
{
	const KiMerge *m = &f->merge;
	if (m->kind != MG_summary || KI_RKIND(m->rows) != RK_CON)
		return 0;
	return (int)f->con[KI_RIDX(m->rows)];
}

/* The ordinary rows of (l, h): every held row but the summary block. */
int ki_ordrows(const KiCase *c, int C, int l, int h, int *ord)
{
	int n = held(c, l, h), s0 = c->sumat ? c->sumat[l * c->H + h] : -1, k = 0;
	for (int t = 0; t < n; t++)
		if (s0 < 0 || t < s0 || t >= s0 + C)
			ord[k++] = t;
	return k;
}

static double refval(const KiFn *f, const double *par, KiRef r, double def)
{
	switch (KI_RKIND(r)) {
	case RK_CON: return f->con[KI_RIDX(r)];
	case RK_PAR: return par[KI_RIDX(r)];
	}
	return def;
}

/* --- the pair evaluator ----------------------------------------------------------------- */

typedef struct Expr {        /* the pair instructions one root needs, in order */
	KiRef root;
	int n, *ins;
} Expr;

typedef struct Mg {
	const KiMergeIn *in;
	const KiFn *f;
	const KiCase *c;
	uint8_t *ctx;            /* [nins] ki_pairctx */
	double **pv;             /* [nins] pair values (pair instructions only) */
	Expr sim, thr, w, self;
	/* the instance and the pair */
	int l, h, inst;
	int size[AX_NUM];
	int e, k;                /* rows (physical indices) */
	double psim, pabs, pntg, ecount, kcount;
	const int *tg;           /* e's targets (physical rows), for tmean */
	int ntg;
	double *count;           /* [n] member counts of this instance */
	double gap;              /* KiResult.mgap */
} Mg;

static size_t strides(uint8_t m, const int size[AX_NUM], size_t st[AX_NUM])
{
	size_t n = 1;
	for (int ax = AX_NUM - 1; ax >= 0; ax--) {
		st[ax] = (m & AXM(ax)) ? n : 0;
		if (m & AXM(ax))
			n *= (size_t)size[ax];
	}
	return n;
}

/* The value of operand r at (g, o, ch) (token absent: pair values never have it). */
static double opv(const Mg *M, KiRef r, int g, int o, int ch)
{
	const KiFn *f = M->f;
	size_t st[AX_NUM];
	switch (KI_RKIND(r)) {
	case RK_CON: return f->con[KI_RIDX(r)];
	case RK_PAR: return M->in->par[KI_RIDX(r)];
	case RK_INS: {
		int i = KI_RIDX(r);
		const double *p = M->ctx[i] ? M->pv[i] : M->in->val[i][M->inst];
		strides(f->ins[i].axes, M->size, st);
		return p[g * st[AX_group] + o * st[AX_obs] + ch * st[AX_chan]];
	}
	}
	return NAN;
}

/* An ordinary [token, ...] value at token t. */
static double rowv(const Mg *M, KiRef r, int t, int g, int o, int ch)
{
	size_t st[AX_NUM];
	int i = KI_RIDX(r);
	strides(M->f->ins[i].axes, M->size, st);
	return M->in->val[i][M->inst][g * st[AX_group] + o * st[AX_obs] + (size_t)t * st[AX_token] +
	                              ch * st[AX_chan]];
}

/* An operand a kernel holds exactly as the interpreter: a constant, a param, a kvcc.random draw
** read at a row (the constant's f32 rounding cannot move a draw across it: the draws lie on the
** f32 grid) */
static int exactop(const KiFn *f, KiRef r)
{
	if (KI_RKIND(r) == RK_CON || KI_RKIND(r) == RK_PAR)
		return 1;
	if (KI_RKIND(r) != RK_INS)
		return 0;
	const KiIns *in = &f->ins[KI_RIDX(r)];
	return (in->op == KO_erow || in->op == KO_krow) && KI_RKIND(in->arg[0]) == RK_INS &&
	       f->ins[KI_RIDX(in->arg[0])].op == KO_rand;
}

/* the gap of a comparison (KiResult.mgap) */
static void cmpgap(Mg *M, const KiIns *in, double a, double b)
{
	if ((in->op != KO_lt && in->op != KO_le) ||    /* gt, ge: lt, le with the operands swapped */
	    (exactop(M->f, in->arg[0]) && exactop(M->f, in->arg[1])) || isnan(a) || isnan(b))
		return;
	double g = fabs(a - b) / fmax(1.0, fmax(fabs(a), fabs(b)));
	if (g < M->gap)
		M->gap = g;
}

/* One pair instruction at the current pair. */
static void evalpair(Mg *M, int i)
{
	const KiIns *in = &M->f->ins[i];
	double *out = M->pv[i];
	int R[AX_NUM];
	size_t rs[AX_NUM];
	for (int ax = 0; ax < AX_NUM; ax++)
		R[ax] = (in->axes & AXM(ax)) ? M->size[ax] : 1;
	strides(in->axes, M->size, rs);
	const KiSem *sem = ki_sem(in->op);
	for (int g = 0; g < R[AX_group]; g++)
		for (int o = 0; o < R[AX_obs]; o++)
			for (int ch = 0; ch < R[AX_chan]; ch++) {
				double v = NAN;
				switch (in->op) {
				case KO_erow: v = rowv(M, in->arg[0], M->e, g, o, ch); break;
				case KO_krow: v = rowv(M, in->arg[0], M->k, g, o, ch); break;
				case KO_tmean: {
					double s = 0;
					for (int j = 0; j < M->ntg; j++)
						s += rowv(M, in->arg[0], M->tg[j], g, o, ch);
					v = M->ntg ? s / M->ntg : NAN;
					break;
				}
				case KO_pinfo:
					v = in->aux == PI_sim ? M->psim : in->aux == PI_absorbed ? M->pabs :
					    in->aux == PI_ntargets ? M->pntg : in->aux == PI_ecount ? M->ecount : M->kcount;
					break;
				default:
					if (sem->kind == SEM_EW) {
						const double a0 = opv(M, in->arg[0], g, o, ch), a1 = opv(M, in->arg[1], g, o, ch);
						v = ki_evalew(in->op, a0, a1, opv(M, in->arg[2], g, o, ch));
						cmpgap(M, in, a0, a1);
						break;
					}
					/* a reduction over group, obs or chan (the verifier allows no other) */
					int ax = in->axis, m = M->size[ax];
					double acc = sem->init, mu = 0;
					for (int pass = sem->map == MAP_DEV ? 0 : 1; pass < 2; pass++)
						for (int j = 0; j < m; j++) {
							int idx[AX_NUM] = { g, o, 0, ch };
							idx[ax] = j;
							double a = opv(M, in->arg[0], idx[0], idx[1], idx[3]);
							if (pass == 0) {
								mu += a / m;
								continue;
							}
							switch (sem->map) {
							case MAP_SQ: a = a * a; break;
							case MAP_MUL: a = a * opv(M, in->arg[1], idx[0], idx[1], idx[3]); break;
							case MAP_DEV: a = (a - mu) * (a - mu); break;
							}
							acc = ki_combine(sem->comb, acc, a);
						}
					v = ki_finish(sem->fin, acc, m);
				}
				out[g * rs[AX_group] + o * rs[AX_obs] + ch * rs[AX_chan]] = v;
			}
}

/* The value of a root at the current pair. */
static double evalroot(Mg *M, const Expr *x)
{
	for (int j = 0; j < x->n; j++)
		evalpair(M, x->ins[j]);
	return opv(M, x->root, 0, 0, 0);
}

/* The pair instructions root r needs, in order. */
static int prepare(Mg *M, KiRef r, Expr *x)
{
	const KiFn *f = M->f;
	x->root = r, x->n = 0, x->ins = NULL;
	if (KI_RKIND(r) != RK_INS)
		return 0;
	char *need = calloc((size_t)f->nins + 1, 1);
	x->ins = malloc(((size_t)f->nins + 1) * sizeof *x->ins);
	if (!need || !x->ins) {
		free(need);
		return -1;
	}
	need[KI_RIDX(r)] = 1;
	for (int i = KI_RIDX(r); i >= 0; i--) {
		if (!need[i] || !M->ctx[i])
			continue;
		if (f->ins[i].op == KO_erow || f->ins[i].op == KO_krow || f->ins[i].op == KO_tmean)
			continue;    /* its operand is an ordinary value */
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS)
				need[KI_RIDX(f->ins[i].arg[k])] = 1;
	}
	for (int i = 0; i <= KI_RIDX(r); i++)
		if (need[i] && M->ctx[i])
			x->ins[x->n++] = i;
	free(need);
	return 0;
}

/* Set the pair (e, k) (either may be -1). */
static void setpair(Mg *M, int e, int k)
{
	M->e = e, M->k = k;
	M->ecount = e >= 0 ? M->count[e] : NAN;
	M->kcount = k >= 0 ? M->count[k] : NAN;
}

/* --- selection rank (runs' pivots) ---------------------------------------------------- */

typedef struct Rank {
	int cls;                 /* 0 sink, 1 recent, 2 scored, 3 NaN */
	double key;
	int t;                   /* ordinary index */
} Rank;

static int rankcmp(const void *pa, const void *pb)
{
	const Rank *a = pa, *b = pb;
	if (a->cls != b->cls)
		return a->cls - b->cls;
	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	return a->t - b->t;
}

/* rank[j] of ordinary row j in the top-k order: sinks (lower first), the recent
** window (newest first), then higher score, NaN last, ties → lower position. */
static int selrank(const Mg *M, const int *ord, int no, int *rank)
{
	const KiFn *f = M->f;
	double S = refval(f, M->in->par, f->sel.keep_first, 0), Rr = refval(f, M->in->par, f->sel.keep_recent, 0);
	Rank *r = malloc(((size_t)no + 1) * sizeof *r);
	if (!r)
		return -1;
	for (int j = 0; j < no; j++) {
		double s = M->in->scores[(size_t)M->inst * M->c->n + ord[j]];
		r[j].t = j;
		if (j < S)
			r[j].cls = 0, r[j].key = j;
		else if (j >= no - Rr)
			r[j].cls = 1, r[j].key = -j;
		else if (isnan(s))
			r[j].cls = 3, r[j].key = 0;
		else
			r[j].cls = 2, r[j].key = -s;
	}
	qsort(r, (size_t)no, sizeof *r, rankcmp);
	for (int j = 0; j < no; j++)
		rank[r[j].t] = j;
	free(r);
	return 0;
}

/* --- targets ------------------------------------------------------------------------- */

/* The work arrays of one instance. */
typedef struct Inst {
	int n, no, nS, nE, C, cex;
	int *ord, *S, *E;        /* physical rows */
	int *tgoff, *tg;         /* targets of E[i]: tg[tgoff[i] .. tgoff[i+1]) (indices into S) */
	double *msim;            /* [nE] the pair's similarity (nearest: the maximum) */
	double *absorbed;        /* [nS] */
	int *trow;               /* [m] one evicted row's targets (physical rows) */
} Inst;

/* nearest: argmax over S, threshold; the adaptive tau updated in *tau. */
static void nearest(Mg *M, Inst *I, double *tau, double beta)
{
	const KiMerge *mg = &M->f->merge;
	int *best = I->tg;
	for (int i = 0; i < I->nE; i++) {
		int b = -1;
		double bs = -INFINITY;
		for (int j = 0; j < I->nS; j++) {
			setpair(M, I->E[i], I->S[j]);
			double s = evalroot(M, &M->sim);
			if (!isnan(s) && (b < 0 || s > bs))
				b = j, bs = s;
		}
		best[i] = b;
		I->msim[i] = b >= 0 ? bs : NAN;
	}
	if (mg->thr == MT_adaptive && I->nE) {
		double sum = 0;
		int cnt = 0;
		for (int i = 0; i < I->nE; i++)
			if (!isnan(I->msim[i]))
				sum += I->msim[i], cnt++;
		double mean = cnt ? sum / cnt : NAN;
		*tau = isnan(*tau) ? mean : beta * *tau + (1 - beta) * mean;
	}
	for (int i = 0; i < I->nE; i++) {
		int ok = best[i] >= 0;
		if (ok && mg->thr == MT_value) {
			setpair(M, I->E[i], I->S[best[i]]);
			ok = I->msim[i] >= evalroot(M, &M->thr);
		} else if (ok && mg->thr == MT_adaptive)
			ok = I->msim[i] >= *tau;
		I->tgoff[i] = i, I->tg[i] = ok ? best[i] : -1;
	}
	/* one slot per evicted token; -1 compacted away */
	int k = 0;
	for (int i = 0; i < I->nE; i++) {
		int t = I->tg[i];
		I->tgoff[i] = k;
		if (t >= 0)
			I->tg[k++] = t;
	}
	I->tgoff[I->nE] = k;
}

/* next: the first m kept rows after e */
static void nextkept(Inst *I, long m)
{
	int k = 0;
	for (int i = 0; i < I->nE; i++) {
		I->tgoff[i] = k;
		int j = 0;
		while (j < I->nS && I->S[j] < I->E[i])
			j++;
		for (long c = 0; c < m && j < I->nS; c++, j++)
			I->tg[k++] = j;
		I->msim[i] = NAN;
	}
	I->tgoff[I->nE] = k;
}

/* runs: runs of adjacent ordinary rows; e → its run's best-ranked kept row */
static int runs(Mg *M, Inst *I)
{
	int no = I->no, *rid = malloc(((size_t)no + 1) * sizeof *rid), *rank = malloc(((size_t)no + 1) * sizeof *rank);
	int *kj = malloc(((size_t)no + 1) * sizeof *kj);    /* ordinary index → index into S, or -1 */
	int *piv = malloc(((size_t)no + 1) * sizeof *piv);  /* run → best kept (index into S), or -1 */
	if (!rid || !rank || !kj || !piv || selrank(M, I->ord, no, rank) != 0) {
		free(rid), free(rank), free(kj), free(piv);
		return -1;
	}
	for (int j = 0; j < no; j++) {
		rid[j] = 0;
		if (j > 0) {
			setpair(M, I->ord[j - 1], I->ord[j]);
			M->psim = M->pabs = M->pntg = NAN;   /* the pair leaves: m.sim is the neighbours' own in thr */
			double s = evalroot(M, &M->sim);
			M->psim = s;
			double thr = evalroot(M, &M->thr);
			rid[j] = s >= thr ? rid[j - 1] : rid[j - 1] + 1;
		}
		piv[j] = -1;
	}
	for (int j = 0, s = 0; j < no; j++) {
		kj[j] = s < I->nS && I->S[s] == I->ord[j] ? s++ : -1;
		if (kj[j] >= 0 && (piv[rid[j]] < 0 || rank[j] < rank[piv[rid[j]]]))
			piv[rid[j]] = j;     /* an ordinary index for now */
	}
	int k = 0;
	for (int i = 0, j = 0; i < I->nE; i++) {
		while (I->ord[j] != I->E[i])
			j++;
		I->tgoff[i] = k;
		int p = piv[rid[j]];
		if (p >= 0) {
			I->tg[k++] = kj[p];
			setpair(M, I->E[i], I->ord[p]);
			M->psim = M->pabs = M->pntg = NAN;
			I->msim[i] = evalroot(M, &M->sim);
		} else
			I->msim[i] = NAN;
	}
	I->tgoff[I->nE] = k;
	free(rid), free(rank), free(kj), free(piv);
	return 0;
}

/* --- update ----------------------------------------------------------------------------- */

static float store(double v, int dtype)
{
	return ki_round((float)v, dtype);
}

/* Weighted update of the kept rows into r (slots 0 .. nS-1 of instance lh). */
static int update(Mg *M, Inst *I, KiResult *r, size_t lh)
{
	const KiMerge *mg = &M->f->merge;
	const KiCase *c = M->c;
	int d = c->d;
	double *num = calloc((size_t)I->nS * 2 * d + 1, sizeof *num), *den = calloc((size_t)I->nS + 1, sizeof *den);
	double *ck = calloc((size_t)I->nS + 1, sizeof *ck);
	if (!num || !den || !ck) {
		free(num), free(den), free(ck);
		return -1;
	}
	for (int j = 0; j < I->nS; j++)
		I->absorbed[j] = 0, ck[j] = M->count[I->S[j]];
	for (int i = 0; i < I->nE; i++)
		for (int q = I->tgoff[i]; q < I->tgoff[i + 1]; q++)
			I->absorbed[I->tg[q]] += 1;
	for (int i = 0; i < I->nE; i++) {
		int nt = I->tgoff[i + 1] - I->tgoff[i], e = I->E[i];
		for (int u = 0; u < nt; u++)      /* e's targets as rows, for tmean */
			I->trow[u] = I->S[I->tg[I->tgoff[i] + u]];
		for (int q = I->tgoff[i]; q < I->tgoff[i + 1]; q++) {
			int j = I->tg[q];
			setpair(M, e, I->S[j]);
			M->psim = I->msim[i], M->pabs = I->absorbed[j], M->pntg = nt;
			M->tg = I->trow, M->ntg = nt;
			double w = evalroot(M, &M->w);
			M->tg = NULL, M->ntg = 0;
			den[j] += w;
			for (int ch = 0; ch < d; ch++) {
				num[(size_t)j * 2 * d + ch] += w * M->in->K[(lh * c->n + e) * d + ch];
				num[(size_t)j * 2 * d + d + ch] += w * M->in->V[(lh * c->n + e) * d + ch];
			}
			ck[j] += M->count[e] / nt;
		}
	}
	for (int j = 0; j < I->nS; j++) {
		int k = I->S[j];
		const float *Kk = &M->in->K[(lh * c->n + k) * d], *Vk = &M->in->V[(lh * c->n + k) * d];
		float *Ko = &r->K[(lh * c->n + j) * d], *Vo = &r->V[(lh * c->n + j) * d];
		memcpy(Ko, Kk, (size_t)d * sizeof *Ko);
		memcpy(Vo, Vk, (size_t)d * sizeof *Vo);
		r->count[lh * c->n + j] = ck[j];
		if (!I->absorbed[j])
			continue;
		setpair(M, -1, k);
		M->psim = NAN, M->pabs = I->absorbed[j], M->pntg = NAN;
		double wk = evalroot(M, &M->self), tot = wk + den[j];
		if (mg->update == MU_mean && !(tot != 0 && isfinite(tot)))
			continue;
		for (int ch = 0; ch < d; ch++) {
			double xk = wk * Kk[ch] + num[(size_t)j * 2 * d + ch];
			double xv = wk * Vk[ch] + num[(size_t)j * 2 * d + d + ch];
			if (mg->update == MU_mean)
				xk /= tot, xv /= tot;
			if (mg->keys)
				Ko[ch] = store(xk, c->dtype);
			if (mg->values)
				Vo[ch] = store(xv, c->dtype);
		}
	}
	free(num), free(den), free(ck);
	return 0;
}

/* --- summary rows ----------------------------------------------------------------------- */

static double dist2(const float *a, const double *b, int d)
{
	double s = 0;
	for (int ch = 0; ch < d; ch++)
		s += ((double)a[ch] - b[ch]) * ((double)a[ch] - b[ch]);
	return s;
}

/* nearest centroid by squared L2 of keys, ties → lower */
static int assign(const float *k, const double *Kc, int C, int d)
{
	int b = 0;
	double bd = INFINITY;
	for (int j = 0; j < C; j++) {
		double x = dist2(k, &Kc[(size_t)j * d], d);
		if (j == 0 || x < bd)
			b = j, bd = x;
	}
	return b;
}

/* Summary rows of instance lh into slots nS .. nS+C-1 of r. Existing rows
** (I->cex): online running means; none: Lloyd from E. */
static int summary(Mg *M, Inst *I, KiResult *r, size_t lh)
{
	const KiCase *c = M->c;
	const KiFn *f = M->f;
	int C = I->C, d = c->d, nE = I->nE;
	long iters = (long)refval(f, M->in->par, f->merge.iters, 1);
	int s0 = c->sumat ? c->sumat[lh] : -1;
	double *Kc = calloc((size_t)C * d + 1, sizeof *Kc), *Vc = calloc((size_t)C * d + 1, sizeof *Vc);
	double *sk = calloc((size_t)C * d + 1, sizeof *sk), *sv = calloc((size_t)C * d + 1, sizeof *sv);
	double *cnt = calloc((size_t)C + 1, sizeof *cnt), *sw = calloc((size_t)C + 1, sizeof *sw);
	int *pc = calloc((size_t)C + 1, sizeof *pc), *a = calloc((size_t)nE + 1, sizeof *a);
	int *nm = calloc((size_t)C + 1, sizeof *nm);
	int rc = -1;
	if (!Kc || !Vc || !sk || !sv || !cnt || !sw || !pc || !a || !nm)
		goto out;
	const float *K = &M->in->K[lh * c->n * d], *V = &M->in->V[lh * c->n * d];
	const int32_t *pos = c->pos ? &c->pos[lh * c->n] : NULL;
#define POS(t) (pos ? pos[t] : (t))
	if (I->cex) {
		for (int j = 0; j < C; j++) {
			for (int ch = 0; ch < d; ch++)
				Kc[(size_t)j * d + ch] = K[(size_t)(s0 + j) * d + ch], Vc[(size_t)j * d + ch] = V[(size_t)(s0 + j) * d + ch];
			cnt[j] = M->count[s0 + j], pc[j] = POS(s0 + j);
		}
		for (int i = 0; i < nE; i++)
			a[i] = assign(&K[(size_t)I->E[i] * d], Kc, C, d);
		for (int i = 0; i < nE; i++) {
			int j = a[i], e = I->E[i];
			double w = M->count[e];
			sw[j] += w, nm[j]++;
			for (int ch = 0; ch < d; ch++)
				sk[(size_t)j * d + ch] += w * K[(size_t)e * d + ch], sv[(size_t)j * d + ch] += w * V[(size_t)e * d + ch];
			pc[j] = POS(e) > pc[j] ? POS(e) : pc[j];
		}
		for (int j = 0; j < C; j++) {
			double tot = cnt[j] + sw[j];
			if (!nm[j])
				continue;
			if (tot != 0 && isfinite(tot))
				for (int ch = 0; ch < d; ch++) {
					Kc[(size_t)j * d + ch] = (cnt[j] * Kc[(size_t)j * d + ch] + sk[(size_t)j * d + ch]) / tot;
					Vc[(size_t)j * d + ch] = (cnt[j] * Vc[(size_t)j * d + ch] + sv[(size_t)j * d + ch]) / tot;
				}
			cnt[j] = tot;
		}
	} else {
		for (int j = 0; j < C; j++) {
			int e = I->E[(size_t)j * nE / C];
			for (int ch = 0; ch < d; ch++)
				Kc[(size_t)j * d + ch] = K[(size_t)e * d + ch], Vc[(size_t)j * d + ch] = V[(size_t)e * d + ch];
			pc[j] = POS(e);
		}
		for (long it = 0; it < iters; it++) {
			for (int i = 0; i < nE; i++)
				a[i] = assign(&K[(size_t)I->E[i] * d], Kc, C, d);
			memset(sk, 0, (size_t)C * d * sizeof *sk);
			memset(sv, 0, (size_t)C * d * sizeof *sv);
			memset(sw, 0, (size_t)C * sizeof *sw);
			memset(nm, 0, (size_t)C * sizeof *nm);
			for (int i = 0; i < nE; i++) {
				int j = a[i], e = I->E[i];
				double w = M->count[e];
				sw[j] += w, nm[j]++;
				for (int ch = 0; ch < d; ch++)
					sk[(size_t)j * d + ch] += w * K[(size_t)e * d + ch], sv[(size_t)j * d + ch] += w * V[(size_t)e * d + ch];
			}
			for (int j = 0; j < C; j++)
				if (nm[j] > 0 && sw[j] != 0)
					for (int ch = 0; ch < d; ch++)
						Kc[(size_t)j * d + ch] = sk[(size_t)j * d + ch] / sw[j],
						Vc[(size_t)j * d + ch] = sv[(size_t)j * d + ch] / sw[j];
		}
		memset(nm, 0, (size_t)C * sizeof *nm);
		for (int i = 0; i < nE; i++) {
			int j = a[i], e = I->E[i];
			pc[j] = nm[j] && pc[j] > POS(e) ? pc[j] : POS(e);
			nm[j]++;
		}
		for (int j = 0; j < C; j++)
			cnt[j] = sw[j];
	}
#undef POS
	for (int j = 0; j < C; j++) {
		size_t slot = lh * c->n + (size_t)I->nS + j;
		for (int ch = 0; ch < d; ch++) {
			r->K[slot * d + ch] = store(Kc[(size_t)j * d + ch], c->dtype);
			r->V[slot * d + ch] = store(Vc[(size_t)j * d + ch], c->dtype);
		}
		r->pos[slot] = pc[j];
		r->count[slot] = cnt[j];
		r->kept[slot] = I->cex ? s0 + j : -1;
		for (int s = 0; s < f->nst; s++) {
			size_t si = (size_t)s * c->L * c->H * c->n;
			r->state[si + slot] = I->cex && c->state ? c->state[si + lh * c->n + s0 + j] : f->st[s].init;
		}
	}
	rc = 0;
out:
	free(Kc), free(Vc), free(sk), free(sv), free(cnt), free(sw), free(pc), free(a), free(nm);
	return rc;
}

/* --- one instance ------------------------------------------------------------------------ */

static int instance(Mg *M, int l, int h, KiResult *r)
{
	const KiCase *c = M->c;
	const KiFn *f = M->f;
	const KiMerge *mg = &f->merge;
	size_t lh = (size_t)l * c->H + h;
	Inst I;
	memset(&I, 0, sizeof I);
	I.n = held(c, l, h);
	I.C = ki_summaryrows(f);
	I.cex = c->sumat && c->sumat[lh] >= 0 ? I.C : 0;
	size_t n1 = (size_t)I.n + 1;
	I.ord = malloc(n1 * sizeof *I.ord), I.S = malloc(n1 * sizeof *I.S), I.E = malloc(n1 * sizeof *I.E);
	I.tgoff = malloc((n1 + 1) * sizeof *I.tgoff);
	double mv = mg->kind == MG_next ? refval(f, M->in->par, mg->m, 1) : 1;
	if (!(mv >= 1 && mv <= 1000000) || mv != floor(mv)) {    /* checked before any conversion */
		ki_error(M->in->e, f->src, mg->line, mg->col, "merge next_kept: m must be an integer in 1..1e6, got %g", mv);
		goto fail;
	}
	long mm = (long)mv;
	I.tg = malloc(n1 * (size_t)mm * sizeof *I.tg);
	I.msim = malloc(n1 * sizeof *I.msim), I.absorbed = malloc(n1 * sizeof *I.absorbed);
	I.trow = malloc(((size_t)mm + 1) * sizeof *I.trow);
	if (!I.ord || !I.S || !I.E || !I.tgoff || !I.tg || !I.msim || !I.absorbed || !I.trow)
		goto oom;
	I.no = ki_ordrows(c, I.cex, l, h, I.ord);
	for (int j = 0; j < I.no; j++) {
		int t = I.ord[j];
		if (M->in->keep[lh * c->n + t])
			I.S[I.nS++] = t;
		else
			I.E[I.nE++] = t;
	}
	M->l = l, M->h = h, M->inst = (int)lh;
	M->size[AX_group] = c->G, M->size[AX_obs] = c->O, M->size[AX_token] = I.n, M->size[AX_chan] = c->d;
	double tau = c->tau ? c->tau[lh] : NAN;
	double beta = refval(f, M->in->par, mg->beta, 0);
	switch (mg->kind) {
	case MG_nearest: nearest(M, &I, &tau, beta); break;
	case MG_next: nextkept(&I, mm); break;
	case MG_runs:
		if (runs(M, &I) != 0)
			goto oom;
		break;
	default:
		for (int i = 0; i <= I.nE; i++)
			I.tgoff[i] = 0;
	}
	if (mg->kind != MG_summary) {
		if (update(M, &I, r, lh) != 0)
			goto oom;
	} else
		for (int j = 0; j < I.nS; j++) {
			size_t dst = lh * c->n + j, src = lh * c->n + I.S[j];
			memcpy(&r->K[dst * c->d], &M->in->K[src * c->d], (size_t)c->d * sizeof(float));
			memcpy(&r->V[dst * c->d], &M->in->V[src * c->d], (size_t)c->d * sizeof(float));
			r->count[dst] = M->count[I.S[j]];
		}
	for (int j = 0; j < I.nS; j++) {
		size_t dst = lh * c->n + j;
		int t = I.S[j];
		r->kept[dst] = t;
		r->pos[dst] = c->pos ? c->pos[lh * c->n + t] : t;
		for (int s = 0; s < f->nst; s++) {
			size_t si = (size_t)s * c->L * c->H * c->n;
			r->state[si + dst] = ki_isscanstate(f, s) ? M->in->val[KI_RIDX(f->st[s].update)][lh][t] :
			                     c->state ? c->state[si + lh * c->n + t] : f->st[s].init;
		}
	}
	int rows = I.nS;
	if (mg->kind == MG_summary && (I.cex || I.nE) && I.nS + I.C > I.n) {
		/* no rule reaches this (each keeps at most n - C ordinary rows where summary rows are
		** built: review of session 12); a guard, so that a selection bug is an error, never a
		** write past the head's rows */
		ki_error(M->in->e, f->src, mg->line, mg->col, "merge summary: internal error: (layer %d, head %d) keeps "
		         "%d rows and %d summary rows, more than the %d it holds", l, h, I.nS, I.C, I.n);
		goto fail;
	}
	if (mg->kind == MG_summary && (I.cex || I.nE)) {
		if (summary(M, &I, r, lh) != 0)
			goto oom;
		rows += I.C;
		r->sumat[lh] = I.nS;
	} else
		r->sumat[lh] = -1;
	r->len[lh] = rows;
	r->tau[lh] = tau;
	free(I.ord), free(I.S), free(I.E), free(I.tgoff), free(I.tg), free(I.msim), free(I.absorbed), free(I.trow);
	return 0;
oom:
	ki_error(M->in->e, f->src, 0, 0, "interpreter: out of memory");
fail:
	free(I.ord), free(I.S), free(I.E), free(I.tgoff), free(I.tg), free(I.msim), free(I.absorbed), free(I.trow);
	return -1;
}

/*
** The merge stage: r's arrays are allocated (ki_run); fills kept, K, V, pos,
** state, count, len, sumat, tau for every (layer, head).
*/
int ki_merge(const KiMergeIn *in, KiResult *r)
{
	const KiFn *f = in->f;
	const KiCase *c = in->c;
	Mg M;
	memset(&M, 0, sizeof M);
	M.in = in, M.f = f, M.c = c;
	M.gap = INFINITY;
	size_t maxv = (size_t)c->G * (c->O > 0 ? c->O : 1) * c->d + 1;
	M.ctx = calloc((size_t)f->nins + 1, 1);
	M.pv = calloc((size_t)f->nins + 1, sizeof *M.pv);
	M.count = malloc(((size_t)c->n + 1) * sizeof *M.count);
	int rc = -1;
	if (!M.ctx || !M.pv || !M.count)
		goto oom;
	ki_pairctx(f, M.ctx);
	for (int i = 0; i < f->nins; i++)
		if (M.ctx[i] && !(M.pv[i] = malloc(maxv * sizeof **M.pv)))
			goto oom;
	const KiMerge *mg = &f->merge;
	if (prepare(&M, mg->sim, &M.sim) || prepare(&M, mg->threshold, &M.thr) ||
	    prepare(&M, mg->weight, &M.w) || prepare(&M, mg->self, &M.self))
		goto oom;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			size_t lh = (size_t)l * c->H + h;
			for (int t = 0; t < c->n; t++)
				M.count[t] = c->count ? c->count[lh * c->n + t] : 1;
			if (instance(&M, l, h, r) != 0)
				goto out;
		}
	r->mgap = M.gap;
	rc = 0;
	goto out;
oom:
	ki_error(in->e, f->src, 0, 0, "interpreter: out of memory");
out:
	for (int i = 0; M.pv && i < f->nins; i++)
		free(M.pv[i]);
	free(M.pv), free(M.ctx), free(M.count);
	free(M.sim.ins), free(M.thr.ins), free(M.w.ins), free(M.self.ins);
	return rc;
}
