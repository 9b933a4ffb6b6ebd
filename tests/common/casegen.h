/*
** Case generation shared by the differential tests (tests/diff/diff.c,
** tests/diff/decode.c, tests/emu/emu_diff.c): a xorshift generator, storage
** encoding of inputs, and the selection-boundary margin used to re-draw
** inputs whose kept set would hinge on a near-tie; for merge rules the same for the
** targets (merge_margin) and the stated tolerance of merged rows (merge_tol).
**
** Each test defines CASEGEN_SEED before including this header, so every
** program keeps its own deterministic sequence.
*/
#ifndef KVCC_TESTS_CASEGEN_H
#define KVCC_TESTS_CASEGEN_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/ir.h"
#include "compiler/interp.h"

#ifndef CASEGEN_SEED
#error "define CASEGEN_SEED before including tests/common/casegen.h"
#endif

static uint64_t rng = CASEGEN_SEED;

static inline double urand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static inline void encode(float x, int dt, void *dst)
{
	if (dt == KVCC_F32)
		memcpy(dst, &x, 4);
	else if (dt == KVCC_BF16) {
		uint32_t u;
		memcpy(&u, &x, 4);
		uint16_t h = (uint16_t)(u >> 16);
		memcpy(dst, &h, 2);
	} else {
		_Float16 h = (_Float16)x;
		memcpy(dst, &h, 2);
	}
}

/* the inverse of encode */
static inline double decode(const void *src, int dt)
{
	if (dt == KVCC_F32) {
		float x;
		memcpy(&x, src, 4);
		return x;
	}
	if (dt == KVCC_BF16) {
		uint16_t h;
		memcpy(&h, src, 2);
		uint32_t u = (uint32_t)h << 16;
		float x;
		memcpy(&x, &u, 4);
		return x;
	}
	_Float16 h;
	memcpy(&h, src, 2);
	return (double)h;
}

/*
** The policy's declared weights for a case (layer L, head H, group G, chan d; no out axes):
** values in [-4, 4) exact in f32 from their own generator (so a policy with weights leaves the
** shared sequence alone), packed in declaration order, each row-major over its declared axes
** (the layout kvcc_plan_set_weight and KvgArgs.wts take). wd[i] points into *dv (double copies
** for the interpreter); *fv holds the f32 values. 0, or -1 out of memory / an out axis.
*/
static inline int cg_weights(const KiFn *f, int L, int H, int G, int d, KiWData *wd, float **fv, double **dv)
{
	size_t tot = 0, cnt[KI_MAXW];
	for (int i = 0; i < f->nw; i++) {
		cnt[i] = 1;
		wd[i].name = f->w[i].name, wd[i].ndim = f->w[i].ndim;
		for (int j = 0; j < f->w[i].ndim; j++) {
			int a = f->w[i].ax[j];
			/* the out axis: its fixed size, else 5 (not a multiple of a vector) */
			wd[i].shape[j] = a == WA_layer ? L : a == WA_head ? H : a == WA_group ? G : a == WA_out
			               ? (f->w[i].size > 0 ? f->w[i].size : 5) : d;
			cnt[i] *= (size_t)wd[i].shape[j];
		}
		tot += cnt[i];
	}
	*fv = malloc((tot + 1) * sizeof(float));
	*dv = malloc((tot + 1) * sizeof(double));
	if (!*fv || !*dv)
		return -1;
	uint64_t x = 0x2545f4914f6cdd1dull;
	for (size_t k = 0; k < tot; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		(*fv)[k] = (float)((double)(x >> 40) / 2097152.0 - 4.0);
		(*dv)[k] = (*fv)[k];
	}
	for (int i = 0, o = 0; i < f->nw; o += (int)cnt[i], i++) {
		wd[i].data = *dv + o;
		/* gated_window's gate_w dots a K row: scaled by 1/d so that the gate (a sigmoid) does not
		** saturate to exactly 0 or 1 (exact ties the selection-margin checks would skip) */
		for (size_t k = 0; !strcmp(f->w[i].name, "gate_w") && k < cnt[i]; k++)
			(*fv)[o + k] = (float)((*fv)[o + k] / d), (*dv)[o + k] = (*fv)[o + k];
		/* prefixkv's frac (the fraction of a layer's tokens it evicts at each ratio): in [0, 1), so
		** that the keep count n - round(f n) is rarely clamped */
		for (size_t k = 0; !strcmp(f->w[i].name, "frac") && k < cnt[i]; k++)
			(*fv)[o + k] = ((*fv)[o + k] + 4.0f) / 8.0f, (*dv)[o + k] = (*fv)[o + k];
	}
	return 0;
}

static inline double pval(const KiFn *f, const double *par, KiRef r, double def)
{
	return KI_RKIND(r) == RK_CON ? f->con[KI_RIDX(r)] : KI_RKIND(r) == RK_PAR ? par[KI_RIDX(r)] : def;
}

static inline int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* relative margin at the selection boundary of every head (min over heads) */
/* policies whose scores tie exactly by construction (LagKV: a token's rank within its chunk /
** lag, the same few values in every chunk; sinks and the tail all 1): equal values are equal in
** f32 and double alike and both break them by position, so an exact tie at the boundary is no
** risk (a rank that differs shows as a score difference, a FAIL, never a hidden one) */
static inline int cg_exact_ties(const KiFn *f) { return !strcmp(f->name, "lagkv"); }

/* merge summary: the selection ranks the ordinary rows (not the block at c->sumat) and keeps n_keep - C
** of them: the relative gap between the worst kept and the best evicted unprotected ordinary row */
static inline double summary_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	int C = ki_summaryrows(f);
	double worst = INFINITY;
	char *kept = calloc((size_t)c->n + 1, 1);
	for (int k = 0; k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n, s0 = c->sumat ? c->sumat[k] : -1, no = n - (s0 >= 0 ? C : 0);
		memset(kept, 0, (size_t)n + 1);
		for (int j = 0; j < r->len[k]; j++)
			if (r->kept[(size_t)k * c->n + j] >= 0)
				kept[r->kept[(size_t)k * c->n + j]] = 1;
		double lo = INFINITY, hi = -INFINITY;
		for (int t = 0, j = 0; t < n; t++) {
			if (s0 >= 0 && t >= s0 && t < s0 + C)
				continue;
			double v = r->scores[(size_t)k * c->n + t];
			if (j >= S && j < no - R && !isnan(v)) {
				if (kept[t])
					lo = fmin(lo, v);
				else
					hi = fmax(hi, v);
			}
			j++;
		}
		if (lo < INFINITY && hi > -INFINITY) {
			double sc = fmax(fabs(lo), fabs(hi));
			worst = fmin(worst, sc > 0 ? (lo - hi) / sc : 0);
		}
	}
	free(kept);
	return worst;
}

/* The model schedules (compress.c schedcounts; compiler/select.c): every count follows from all
** the scores, so a rounding difference (x86 scores are f32, the interpreter's double) changes
** them only where the schedule compares close values. prefix: every instance's cumulative
** normalized mass (sorted descending) against every p the bisection probes (the smallest
** |cdf - p|, absolute); dynamic: each round's global top-k cut (the relative gap between the
** kept and the first evicted score of the layers so far). The per-head cut at the resulting
** counts is floor_margin's. */
static inline int cg_cmpdesc(const void *pa, const void *pb)
{
	double a = *(const double *)pa, b = *(const double *)pb;
	return a > b ? -1 : a < b;
}

static inline double sched_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	int LH = c->L * c->H;
	double worst = INFINITY, *v = malloc(((size_t)LH * c->n + 1) * sizeof *v);
	if (!v)
		return 0;
	if (f->sel.sched == SCH_prefix) {
		double target = 0, ntot = 0, tol = pval(f, par, f->sel.sa, 5), iters = pval(f, par, f->sel.sb, 200);
		for (int k = 0; k < LH; k++) {
			int n = c->len ? c->len[k] : c->n;
			double *d = v + (size_t)k * c->n, tot = 0, acc = 0;
			memcpy(d, r->scores + (size_t)k * c->n, (size_t)n * sizeof *d);
			qsort(d, (size_t)n, sizeof *d, cg_cmpdesc);
			for (int t = 0; t < n; t++)
				tot += d[t];
			for (int t = 0; t < n; t++)
				d[t] = acc += d[t] / tot;
			ntot += n;
			target += (double)n - (double)(c->budget < n ? c->budget : n);
		}
		if (c->budget < 0)
			target = ntot * c->ratio;
		double lo = 0, hi = 1;
		for (long it = 0; it < (long)iters && lo < hi; it++) {
			double mid = (lo + hi) / 2, count = 0;
			for (int k = 0; k < LH; k++) {
				int n = c->len ? c->len[k] : c->n, i = 0;
				const double *d = v + (size_t)k * c->n;
				for (int t = 0; t < n; t++)
					worst = fmin(worst, fabs(d[t] - mid));
				while (i < n && !(d[i] >= mid))
					i++;
				long e = n - (i + 1) - S - R;
				count += e > 0 ? (double)e : 0;
			}
			if (fabs(count - target) < tol)
				break;
			if (count < target)
				hi = mid;
			else
				lo = mid;
		}
	} else if (f->sel.sched == SCH_dynamic) {
		long n = c->n, w = R < n ? R : n, m = n - w;
		long B = c->budget >= 0 ? (c->budget < n ? c->budget : n) : (long)floor((double)n * (1.0 - c->ratio));
		long base = B - w, ev = (long)pval(f, par, f->sel.sb, 4);
		for (int l = 0; base > 0 && m > 0 && l < c->L; l++) {
			if (l % ev != ev - 1)
				continue;
			long nf = 0;
			for (int k = 0; k < (l + 1) * c->H; k++)
				for (long t = 0; t < m; t++)
					v[nf++] = r->scores[(size_t)k * c->n + t];
			qsort(v, (size_t)nf, sizeof *v, cg_cmpdesc);
			long tk = base * c->H * (l + 1);
			if (tk > 0 && tk < nf) {
				double a = v[tk - 1], b = v[tk], sc = fmax(fabs(a), fabs(b));
				worst = fmin(worst, sc > 0 ? (a - b) / sc : 0);
			}
		}
	}
	free(v);
	return worst;
}

typedef struct CgChunk { double mean, sum; } CgChunk;
/* head k's unprotected chunks of ch tokens (no protected token in them), their sums and means, into
** v (room for c->n); returns their number */
static inline int cg_uchunks(const KiCase *c, const KiResult *r, int k, long ch, long S, long R, CgChunk *v)
{
	long n = c->len ? c->len[k] : c->n;
	int m = 0;
	for (long t0 = 0; t0 < n; t0 += ch) {
		long t1 = t0 + ch < n ? t0 + ch : n;
		if (t0 < S || t1 - 1 >= n - R)
			continue;
		double sum = 0;
		for (long t = t0; t < t1; t++)
			sum += r->scores[(size_t)k * c->n + t];
		v[m].sum = sum, v[m++].mean = sum / (double)(t1 - t0);
	}
	return m;
}

/* threshold over chunks (scope head; issue 13): every unprotected chunk's mean (double, as the
** reference) away from tau, and the smallest relative gap between two such means (the f32
** kernels rank chunks by a float mean; a near tie could order them differently) */
static inline double thrchunk_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r, long ch)
{
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	double tau = pval(f, par, f->sel.tau, 0), worst = INFINITY, *v = malloc(((size_t)c->n + 1) * sizeof *v);
	CgChunk *u = malloc(((size_t)c->n + 1) * sizeof *u);
	for (int k = 0; v && u && k < c->L * c->H; k++) {
		int m = 0, nu = cg_uchunks(c, r, k, ch, S, R, u);
		for (int i = 0; i < nu; i++) {
			double s = u[i].mean;
			if (!isfinite(s))
				continue;
			worst = fmin(worst, fabs(s - tau) / fmax(1, fmax(fabs(s), fabs(tau))));
			v[m++] = s;
		}
		qsort(v, (size_t)m, sizeof *v, cmpd);
		for (int i = 1; i < m; i++) {
			double sc = fmax(fabs(v[i]), fabs(v[i - 1])), dl = fabs(v[i] - v[i - 1]);
			if (sc > 0 && dl > 0)
				worst = fmin(worst, dl / sc);
		}
	}
	int ok = v && u;
	free(v), free(u);
	return ok ? worst : 0;
}

/* mass over chunks (ch > 1), per scope group (a head, a layer, the model): every two unprotected
** chunks' means apart (their order: relative gaps >= 1e-5 suffice, an f32 mean of a few scores against the double one, so the gap is
** scaled by 10 for case_margin's 1e-4 — 1e-4 itself skips most cases of 25 chunks a head), and
** every cumulative share of the best chunks' sums (by mean, highest first) away from p */
static int cmpchunk(const void *pa, const void *pb)
{
	const CgChunk *a = pa, *b = pb;
	return a->mean > b->mean ? -1 : a->mean < b->mean;
}
static inline double masschunk_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r, long ch)
{
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	double mp = pval(f, par, f->sel.mass, 0), worst = INFINITY;
	int gs = f->sel.scope == SC_head ? 1 : f->sel.scope == SC_layer ? c->H : c->L * c->H;
	CgChunk *v = malloc(((size_t)c->n * gs + 1) * sizeof *v);
	for (int k0 = 0; v && k0 < c->L * c->H; k0 += gs) {
		int m = 0;
		for (int k = k0; k < k0 + gs; k++)
			m += cg_uchunks(c, r, k, ch, S, R, v + m);
		double tot = 0, acc = 0;
		for (int i = 0; i < m; i++)
			tot += v[i].sum;
		qsort(v, (size_t)m, sizeof *v, cmpchunk);
		for (int i = 0; i < m; i++) {
			double sc = fmax(fabs(v[i].mean), i ? fabs(v[i - 1].mean) : 0);
			if (i && sc > 0 && v[i - 1].mean != v[i].mean)   /* exact ties: the order by position, alike */
				worst = fmin(worst, 10 * (v[i - 1].mean - v[i].mean) / sc);
			if (tot > 0)
				worst = fmin(worst, fabs((acc += v[i].sum / tot) - mp));
		}
	}
	free(v);
	return v ? worst : 0;
}

static inline double case_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	if (f->merge.kind == MG_summary)
		return summary_margin(f, par, c, r);
	long chk = (long)pval(f, par, f->sel.chunk, 1);
	if (f->sel.kind == SEL_threshold && f->sel.scope == SC_head && chk > 1)
		return thrchunk_margin(f, par, c, r, chk);
	if (f->sel.kind == SEL_mass && chk > 1)
		return masschunk_margin(f, par, c, r, chk);
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	double worst = INFINITY, *v = malloc((size_t)c->n * sizeof *v + 8);
	for (int k = 0; k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n, m = 0, np = 0;
		for (int t = 0; t < n; t++) {
			if (t < S || t >= n - R)
				np++;
			else
				v[m++] = r->scores[(size_t)k * c->n + t];
		}
		qsort(v, (size_t)m, sizeof *v, cmpd);
		int kk = r->len[k] - (np < r->len[k] ? np : r->len[k]);
		if (kk > 0 && kk < m && !(cg_exact_ties(f) && v[kk - 1] == v[kk])) {
			double a = v[kk - 1], b = v[kk], s = fmax(fabs(a), fabs(b));
			double rel = s > 0 ? (a - b) / s : 0;
			if (rel < worst)
				worst = rel;
		}
	}
	/* mass: every cumulative share of the best unprotected scores away from p */
	double mp = f->sel.kind == SEL_mass ? pval(f, par, f->sel.mass, 0) : NAN;
	for (int k = 0; !isnan(mp) && k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n, m = 0;
		double tot = 0, acc = 0;
		for (int t = S; t < n - R; t++)
			tot += v[m++] = r->scores[(size_t)k * c->n + t];
		qsort(v, (size_t)m, sizeof *v, cmpd);
		for (int j = 0; tot > 0 && j < m; j++) {
			double rel = fabs((acc += v[j] / tot) - mp);
			if (rel < worst)
				worst = rel;
		}
	}
	free(v);
	/* threshold: every unprotected score away from tau (f32 kernels vs the double reference) */
	double tau = f->sel.kind == SEL_threshold ? pval(f, par, f->sel.tau, 0) : NAN;
	for (int k = 0; !isnan(tau) && k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n;
		for (int t = S; t < n - R; t++) {
			double s = r->scores[(size_t)k * c->n + t];
			double rel = fabs(s - tau) / fmax(1, fmax(fabs(s), fabs(tau)));
			if (isfinite(s) && rel < worst)
				worst = rel;
		}
	}
	return worst;
}

/* Merge nearest (the manifest's merge policies: cosine of keys): the smallest gap, over every
** evicted row of every instance, between its best and second-best kept similarity and between
** its best and the threshold (a constant / param, or the adaptive mean), in double from the
** pre-merge keys, so that f32 rounding cannot change a target or a threshold decision. */
/* Merge runs (KVMerger: cosine of neighbouring keys against a constant / param threshold): the
** smallest gap between a neighbouring pair's cosine and the threshold, in double (issue 12). */
static inline double runs_margin(const KiFn *f, const double *par, const KiCase *c)
{
	const KiMerge *mg = &f->merge;
	if (mg->thr != MT_value || KI_RKIND(mg->threshold) == RK_INS)
		return INFINITY;
	double tau = pval(f, par, mg->threshold, 0), worst = INFINITY;
	for (int k = 0; k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n;
		for (int t = 1; t < n; t++) {
			const float *a = &c->K[((size_t)k * c->n + t - 1) * c->d], *b = &c->K[((size_t)k * c->n + t) * c->d];
			double dot = 0, na = 0, nb = 0;
			for (int ch = 0; ch < c->d; ch++)
				dot += (double)a[ch] * b[ch], na += (double)a[ch] * a[ch], nb += (double)b[ch] * b[ch];
			worst = fmin(worst, fabs(dot / fmax(sqrt(na) * sqrt(nb), 1e-8) - tau));
		}
	}
	return worst;
}

/* ... and every comparison the merge rule evaluated whose operand is not exact in f32, e.g. CaM's
** Bernoulli draw u < p (the interpreter's KiResult.mgap, issue 12 session 8): the smaller */
static inline double merge_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	const KiMerge *mg = &f->merge;
	if (mg->kind == MG_runs)
		return fmin(r->mgap, runs_margin(f, par, c));
	if (mg->kind != MG_nearest)
		return r->mgap;
	double worst = INFINITY, *best = malloc(((size_t)c->n + 1) * sizeof *best);
	char *kept = malloc((size_t)c->n + 1);
	for (int k = 0; k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n, nb = 0;
		memset(kept, 0, (size_t)n);
		for (int j = 0; j < r->len[k]; j++)
			kept[r->kept[(size_t)k * c->n + j]] = 1;
		for (int e = 0; e < n; e++) {
			if (kept[e])
				continue;
			const float *ke = &c->K[((size_t)k * c->n + e) * c->d];
			double b1 = -INFINITY, b2 = -INFINITY;
			for (int t = 0; t < n; t++) {
				if (!kept[t])
					continue;
				const float *kt = &c->K[((size_t)k * c->n + t) * c->d];
				double dot = 0, ne = 0, nt = 0;
				for (int ch = 0; ch < c->d; ch++)
					dot += (double)ke[ch] * kt[ch], ne += (double)ke[ch] * ke[ch], nt += (double)kt[ch] * kt[ch];
				double sim = dot / fmax(sqrt(ne) * sqrt(nt), 1e-8);
				if (sim > b1)
					b2 = b1, b1 = sim;
				else if (sim > b2)
					b2 = sim;
			}
			if (b1 > -INFINITY)
				best[nb++] = b1;
			worst = fmin(worst, b1 - b2);
		}
		double tau = NAN;
		if (mg->thr == MT_adaptive && nb) {
			tau = 0;
			for (int i = 0; i < nb; i++)
				tau += best[i] / nb;
			if (c->tau && !isnan(c->tau[k])) {     /* D2O: the EMA of a carried tau (issue 12) */
				double beta = pval(f, par, mg->beta, 0);
				tau = beta * c->tau[k] + (1 - beta) * tau;
			}
		} else if (mg->thr == MT_value && KI_RKIND(mg->threshold) != RK_INS)
			tau = pval(f, par, mg->threshold, 0);
		for (int i = 0; i < nb && !isnan(tau); i++)
			worst = fmin(worst, fabs(best[i] - tau));
	}
	free(best), free(kept);
	return fmin(r->mgap, worst);
}

/* the stated tolerance of merged rows (f32 accumulation vs the reference's double, then one
** rounding to the storage dtype each: up to two units in the last place of f16 / bf16) */
static inline double merge_tol(int dtype)
{
	return dtype == KVCC_F32 ? 1e-4 : dtype == KVCC_F16 ? 2e-3 : 1.6e-2;
}

#endif
