/*
** kvcc_compress and kvcc_compress_batch (include/kvcc.h): score, select and compact every
** (sequence, layer, head) instance of a batch (kvcc_compress: one sequence), on the plan's thread
** pool, following the artifact's run plan (runtime/artifact.h):
**
**   per instance, in instruction order:  KA_LOOP       the generated token_map loop (tmap)
**                                        KA_ATTN_*     attn_score: the generated Q·K tile, attn_stats
**                                                      passes (online max/sum) and the accumulation
**                                                      over obs (qkt, sstat, sacc, ascale)
**   between stages, per layer:           KA_HMEAN      the generated head_mean barrier (hmean)
**   then                                 select        generated keys, radix select, kept lists per
**                                                      scope group (nkeep: the budget schedule)
**                                        compact       generated in-place stable gather (merge
**                                                      nearest: the generated merge kernels, merge.c)
**
** The runtime orchestrates (threads, tiles, visibility of causal tiles, buffers); every value a
** policy computes comes from generated code. Paged caches (paged.c): the generated loops read
** rows through per-instance row offsets, a Q·K tile spanning pages is staged (a tile inside one
** page is read in place), compaction moves rows through the table, freed pages are reported.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include "runtime/rt.h"

typedef struct Run {
	kvcc_plan *pl;
	const KaHdr *h;
	const KaIns *ins;
	kvcc_batch *b;
	const double *par;
	const kvcc_args *args;   /* ratio, budget (x.ratio, x.nkeep) */
	float ***val;            /* [ninst][nins] per-instance values (head_mean), or NULL: the thread's */
	int ninst, LH, G, d;     /* instances: nseq * LH, sequence-major */
	int step;                /* x.step */
	int lo, hi;              /* instruction range of the current stage */
	int err;                 /* first error */
	char errmsg[600];
	pthread_mutex_t mu;
} Run;

typedef struct Inst {
	int s, l, h, n, O;       /* sequence, layer, head, tokens, observation queries */
	KrRows w;                /* where its rows are */
	const kvcc_obs *obs;
	int32_t *pos;
	float *state;            /* state 0 of the instance (stride sstride), or NULL */
	const int64_t *roff;     /* paged: the row offsets (generated loops), or NULL */
	float *Qf;               /* [G][O][d] f32 */
	const void *Qa;          /* qkt's Q argument: Qf, or for a KA_FAMX artifact the bf16 rows */
	int64_t nqa;             /* with it: G*O, or -G*O for the bf16 rows (codegen/x86 gen_qkt_amx) */
	const kvcc_artifact *A;  /* its score-phase kernels: the variant of its bucket (issue 15, kvcc_policy.bart) */
} Inst;

static int posof(const Inst *I, int t) { return I->pos ? I->pos[t] : t; }
/* default: the positions of the last O held tokens (DESIGN §3), extrapolated when O > n */
static int qposof(const Inst *I, int o)
{
	int t = I->n - I->O + o;
	return I->obs->qpos ? I->obs->qpos[o] : t >= 0 ? posof(I, t) : (I->n ? posof(I, 0) : 0) + t;
}

/* the first error of the run, at instruction i's policy position (i < 0: none) */
static int fail(Run *r, int i, const char *fmt, ...)
{
	pthread_mutex_lock(&r->mu);
	if (!r->err) {
		char m[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(m, sizeof m, fmt, ap);
		va_end(ap);
		const KaIns *in = i >= 0 ? &r->ins[i] : NULL;
		snprintf(r->errmsg, sizeof r->errmsg, "%s:%u:%u: error: %s", r->pl->p->src, in ? in->line : 0, in ? in->col : 0, m);
		r->err = KVCC_EINVAL;
	}
	pthread_mutex_unlock(&r->mu);
	return -1;
}

/* The context the generated loops of one instance read (kvcc_tmap_ctx). */
static void tmapctx(Run *r, const Inst *I, float **vals, kvcc_tmap_ctx *c)
{
	const kvcc_layout *lay = &r->pl->lay;
	*c = (kvcc_tmap_ctx){
		.vals = vals, .par = r->par, .K = I->w.K, .V = I->w.V, .pos = I->pos, .state = I->state,
		.n = I->n, .ldk = lay->stride_token, .sstride = (int64_t)lay->layers * lay->kv_heads * lay->capacity,
		.layer = I->l, .head = I->h, .layers = lay->layers, .heads = lay->kv_heads, .step = r->step, .obs = I->O,
		.roff = I->roff, .ratio = r->args->ratio, .budget = r->args->budget,
		.wts = r->pl->wts, .nout = r->pl->nout,
	};
}

/* A generated loop's non-zero return: pool rc - 1 had a bad kernel size c->err; rc < 0: segment
** op / shift -rc - 1 had a bad size, start or offset c->err. */
static int loopfail(Run *r, int64_t rc, const kvcc_tmap_ctx *c)
{
	if (rc < 0)
		return fail(r, (int)(-rc) - 1, "%s, got %g", KR_SEGMSG, c->err);
	return fail(r, (int)rc - 1, "pooling kernel size must be a positive integer, got %g", c->err);
}

/* The visible tokens of tile [t0, t0+nt) for every query row, as bits (causal: pos <= qpos). With
** positions in order (mono) the visible ones are a prefix, found by bisection; else token by
** token. */
static void tilevis(Run *r, const Inst *I, int t0, int nt, int causal, int mono, uint64_t *vm)
{
	int G = r->G, O = I->O;
	for (int o = 0; o < O; o++) {
		int qp = causal ? qposof(I, o) : 0;
		uint64_t m = 0;
		if (!causal || (mono && posof(I, t0 + nt - 1) <= qp))
			m = nt == 64 ? ~0ull : (1ull << nt) - 1;
		else if (mono) {
			int lo = 0, hi = nt;              /* first j with pos > qp */
			while (lo < hi) {
				int mid = (lo + hi) / 2;
				if (posof(I, t0 + mid) > qp)
					hi = mid;
				else
					lo = mid + 1;
			}
			m = lo == 64 ? ~0ull : (1ull << lo) - 1;
		} else
			for (int j = 0; j < nt; j++)
				m |= (uint64_t)(posof(I, t0 + j) <= qp) << j;
		for (int g = 0; g < G; g++)
			vm[g * O + o] = m;
	}
}

/* One Q·K tile of instance I, tokens [t0, t0 + nt): S = Q·Kᵀ (the generated packed tile) and the
** visibility bits vm. A paged cache stages a tile that spans pages (and prefetches the next one). */
static void qktile(Run *r, Inst *I, int t0, int nt, int tid, int causal, int mono, float *S, float *Kp,
                   uint64_t *vm)
{
	int n = I->n, d = r->d;
	size_t esz = r->pl->esz;
	char *stg = r->pl->paged ? r->pl->stage[tid] : NULL;
	int64_t ldk;
	if (stg && t0 + TILE < n)  /* paged: the next tile's rows (the kernel prefetches in its stride) */
		kr_prefetch(&I->w, esz, d, t0 + TILE, t0 + 2 * TILE < n ? t0 + 2 * TILE : n, 0);
	const char *Kt = kr_span(&I->w, esz, d, t0, nt, stg, &ldk, NULL, NULL);
	I->A->qkt(Kt, ldk, nt, I->Qa, I->nqa, S, Kp);
	tilevis(r, I, t0, nt, causal, mono, vm);
}

static int attnscore1(Run *r, Inst *I, float **vals, int lo, int hi, int tid, float a, int mono);

/* the first attn_score output (sum / mean over obs) of the stage [lo, hi) */
static int firstout(Run *r, int lo, int hi)
{
	for (int i = lo; i < hi; i++)
		if (r->ins[i].what == KA_ATTN_SUM || r->ins[i].what == KA_ATTN_MEAN)
			return i;
	return -1;
}

/* every attn_score output of the stage from the sum over obs in vals[fr] (cnt values): copied,
** a mean divided by the O queries */
static void attnfin(Run *r, float **vals, int lo, int hi, int fr, size_t cnt, int O)
{
	for (int i = lo; i < hi; i++) {
		if (r->ins[i].what != KA_ATTN_SUM && r->ins[i].what != KA_ATTN_MEAN)
			continue;
		if (i != fr)
			memcpy(vals[i], vals[fr], cnt * sizeof(float));
		if (r->ins[i].what == KA_ATTN_MEAN)
			for (size_t k = 0; k < cnt; k++)
				vals[i][k] /= (float)O;
	}
}

/* attn_score of one instance: the generated packed Q·K tile, then per softmax pass the generated
** online statistics (attn_stats; skipped when lse is given and the logits are the attention's,
** x.scale) and the accumulation over obs, for every attn_score output of the stage [lo, hi)
** (the plan's fused pattern: dot → scalar multipliers (ascale) → softmax over token → sum / mean
** over obs). */
static int attnscore(Run *r, Inst *I, float **vals, int lo, int hi, int tid)
{
	const kvcc_artifact *A = I->A;          /* the bucket's score kernels (issue 15) */
	int G = r->G, O = I->O, GO = G * O, n = I->n, d = r->d, causal = (r->h->flags & KA_FCAUSAL) != 0;
	if (O < 1)
		return fail(r, lo, "the policy reads Q but no observation queries were given");
	if (!(r->pl->p->kern & KA_KATTN))   /* the artifact's record (ka_kernels): its attn kernels are stubs */
		return fail(r, lo, "internal error: attn_score, but the artifact's kernel record has no attn_score kernels");
	if (GO > r->pl->ws_go)
		return fail(r, -1, "internal error: %d query rows, the plan's workspace has %d", GO, r->pl->ws_go);
	int mono = 1;            /* positions non-decreasing: each row's visible tokens are a prefix */
	if (causal && I->pos)
		for (int t = 1; t < n && mono; t++)
			mono = I->pos[t] >= I->pos[t - 1];
	kvcc_tmap_ctx cx;
	tmapctx(r, I, vals, &cx);
	float a = A->ascale(&cx);
	float *w = r->pl->ws[tid];
	float *S = w, *Kp = S + (size_t)GO * TILE, *m = Kp + (size_t)d * TILE, *l = m + GO, *mp = l + GO;
	float *acc = mp + GO;
	uint64_t *vm = (uint64_t *)(void *)(I->Qf + (size_t)GO * d);
	if ((r->h->flags & KA_FSCALE) && I->obs->lse) {
		const float *ls = I->obs->lse + ((size_t)I->l * r->pl->lay.kv_heads + I->h) * GO;
		for (int q = 0; q < GO; q++)
			mp[q] = ls[q];
	} else {
		for (int q = 0; q < GO; q++)
			m[q] = -INFINITY, l[q] = 0;
		if (r->pl->ews && r->pl->ews_fl >= (int64_t)GO * (TILE + 1 + LANES))
			return attnscore1(r, I, vals, lo, hi, tid, a, mono);
		for (int t0 = 0; t0 < n; t0 += TILE) {
			int nt = n - t0 < TILE ? n - t0 : TILE;
			qktile(r, I, t0, nt, tid, causal, mono, S, Kp, vm);
			A->sstat(S, GO, vm, a, m, l);
		}
		for (int q = 0; q < GO; q++)
			mp[q] = l[q] > 0 ? m[q] + logf(l[q]) : INFINITY;
	}
	int fr = firstout(r, lo, hi);
	float *out = vals[fr];
	for (int t0 = 0; t0 < n; t0 += TILE) {
		int nt = n - t0 < TILE ? n - t0 : TILE;
		qktile(r, I, t0, nt, tid, causal, mono, S, Kp, vm);
		for (int g = 0; g < G; g++) {
			memset(acc, 0, TILE * sizeof(float));
			A->sacc(S + (size_t)g * O * TILE, O, vm + g * O, a, mp + g * O, acc);
			memcpy(out + (size_t)g * n + t0, acc, (size_t)nt * sizeof(float));
		}
	}
	attnfin(r, vals, lo, hi, fr, (size_t)G * n, O);
	return 0;
}

/* The rows' sums of exp kept per lane by sstate (all relative to the row's max m[q]) added once
** per head into the row's l[q] (issue 15, KVCC_ABI 16) */
static void lanemerge(int GO, const float *L, float *l)
{
	for (int q = 0; q < GO; q++) {
		float s = 0;
		for (int i = 0; i < LANES; i++)
			s += L[(size_t)q * LANES + i];
		l[q] = s;
	}
}

/* attn_score with one exp per logit (issue 15): one pass of the Q·K tile and sstate over the
** tiles keeps every exponential of the instance (exp(a*S - m) with the row's max after its
** tile) in the thread's exponential workspace, then per tile sacce sums them over obs with one
** exp per (row, tile): exp(a*S - mp) = exp(a*S - m_tile) * exp(m_tile - mp). No second Q·K tile
** and no second exp per logit; the same values as the two passes up to f32 rounding.
** sstate keeps the rows' sums per lane (no horizontal sum per row and tile, and a horizontal max
** only where a row's max grows); lanemerge adds the lanes once, after the kept tiles.
** The workspace holds kt = (ews_fl - GO*16) / (GO*(TILE+1)) tiles of this instance's GO rows
** (rt.h ews): the tiles after the first kt run sstat on the merged sums in the first pass and
** the Q·K tile and sacc again in the second (the two-pass path on the head's tail), so a
** workspace smaller than the head still saves its share of the second pass. */
static int attnscore1(Run *r, Inst *I, float **vals, int lo, int hi, int tid, float a, int mono)
{
	const kvcc_artifact *A = I->A;          /* the bucket's score kernels (issue 15) */
	int G = r->G, O = I->O, GO = G * O, n = I->n, d = r->d, causal = (r->h->flags & KA_FCAUSAL) != 0;
	float *w = r->pl->ws[tid];
	float *S = w, *Kp = S + (size_t)GO * TILE, *m = Kp + (size_t)d * TILE, *l = m + GO, *mp = l + GO;
	float *acc = mp + GO;
	uint64_t *vm = (uint64_t *)(void *)(I->Qf + (size_t)GO * d);
	int64_t kt = (r->pl->ews_fl - (int64_t)GO * LANES) / ((int64_t)GO * (TILE + 1));
	int64_t ntile = (n + TILE - 1) / TILE;
	if (kt > ntile)
		kt = ntile;
	int ne = (int)(kt * TILE);            /* tokens [0, ne) keep their exponentials */
	float *E = r->pl->ews[tid], *MT = E + (size_t)kt * GO * TILE;
	float *LL = MT + (size_t)kt * GO;      /* the rows' sums per lane */
	/* exponentials beyond the cache are written non-temporally (sstate's nq < 0, KVCC_ABI 17) */
	int64_t sgo = (int64_t)kt * GO * TILE * (int64_t)sizeof(float) > r->pl->ews_ntb ? -(int64_t)GO : GO;
	for (size_t i = 0; i < (size_t)GO * LANES; i++)
		LL[i] = 0;
	for (int t0 = 0; t0 < n; t0 += TILE) {
		int nt = n - t0 < TILE ? n - t0 : TILE;
		size_t k = (size_t)(t0 / TILE);
		qktile(r, I, t0, nt, tid, causal, mono, S, Kp, vm);
		if (t0 == ne)                     /* the tail continues on the rows' statistics */
			lanemerge(GO, LL, l);
		if (t0 < ne)
			A->sstate(S, sgo, vm, a, m, LL, E + k * GO * TILE, MT + k * GO);
		else
			A->sstat(S, GO, vm, a, m, l);
	}
	if (ne >= n)
		lanemerge(GO, LL, l);
	for (int q = 0; q < GO; q++)
		mp[q] = l[q] > 0 ? m[q] + logf(l[q]) : INFINITY;
	int fr = firstout(r, lo, hi);
	float *out = vals[fr];
	for (int t0 = 0; t0 < n; t0 += TILE) {
		int nt = n - t0 < TILE ? n - t0 : TILE;
		size_t k = (size_t)(t0 / TILE);
		if (t0 >= ne) {                   /* the tail: Q·K again */
			qktile(r, I, t0, nt, tid, causal, mono, S, Kp, vm);
		}
		for (int g = 0; g < G; g++) {
			memset(acc, 0, TILE * sizeof(float));
			if (t0 < ne)
				A->sacce(E + (k * GO + (size_t)g * O) * TILE, O, MT + k * GO + (size_t)g * O, mp + g * O, acc);
			else
				A->sacc(S + (size_t)g * O * TILE, O, vm + g * O, a, mp + g * O, acc);
			memcpy(out + (size_t)g * n + t0, acc, (size_t)nt * sizeof(float));
		}
	}
	attnfin(r, vals, lo, hi, fr, (size_t)G * n, O);
	return 0;
}

/* instance k = (sequence, layer, head) of the batch */
static void instof(Run *r, int k, Inst *I)
{
	const kvcc_layout *lay = &r->pl->lay;
	memset(I, 0, sizeof *I);
	int kk = k % r->LH;
	I->s = k / r->LH, I->l = kk / lay->kv_heads, I->h = kk % lay->kv_heads;
	kvcc_seq *q = &r->b->seq[I->s];
	I->n = q->len[kk];
	I->A = r->pl->p->bart[ka_bucket(I->n)];   /* per-bucket compress kernels: a table lookup */
	I->obs = &q->obs, I->O = q->obs.nobs;
	kr_rows(r->pl, r->b, I->s, I->l, I->h, &I->w);
	I->pos = q->pos ? q->pos + (size_t)kk * lay->capacity : NULL;
	I->state = q->state ? q->state + (size_t)kk * lay->capacity : NULL;
}

/* One instance through the stage [lo, hi): its generated token_map loops and its attn_score, in
** instruction order. */
static int runinst(Run *r, int k, int tid)
{
	Inst I;
	instof(r, k, &I);
	int arena = r->val == NULL;
	float **vals = arena ? r->pl->tvals[tid] : r->val[k];
	const KaIns *ins = r->ins;
	if (r->h->flags & KA_FATTN) {       /* the workspace's Q rows (G * nobs <= ws_go) */
		size_t nq = (size_t)r->G * I.O * r->d;
		int GO = r->G * I.O;
		I.Qf = r->pl->ws[tid] + (size_t)GO * TILE + (size_t)r->d * TILE + 4 * (size_t)GO + TILE;
		const char *Qs = (const char *)I.obs->Q + (size_t)(k % r->LH) * nq * r->pl->esz;
		r->pl->p->a->cvt(Qs, I.Qf, (int64_t)nq);
		int raw = (I.A->desc->flags & (KA_FAMX | KA_FQBF16)) != 0;   /* the AMX / vdpbf16ps Q·K reads the bf16 rows (issue 15) */
		I.Qa = raw ? (const void *)Qs : (const void *)I.Qf;
		I.nqa = raw ? -(int64_t)GO : GO;
	}
	int rc = 0, attn = 0;
	for (int i = r->lo; i < r->hi && rc == 0; i++) {
		if (ins[i].what == KA_LOOP && I.w.tab && !I.roff) {    /* paged: the loops' row offsets */
			kr_rowoffs(&I.w, I.n, r->pl->roff[tid]);
			I.roff = r->pl->roff[tid];
		}
		if (ins[i].what == KA_LOOP) {      /* a generated fused loop */
			int e = ins[i].arg;
			for (int j = i; j <= e && rc == 0; j++)
				if ((ins[j].store & KA_SARENA) && !vals[j])   /* run never allocates */
					rc = fail(r, -1, "internal error: value %d has no plan-time buffer", j);
			kvcc_tmap_ctx c;
			tmapctx(r, &I, vals, &c);
			int64_t lr = rc ? 0 : r->pl->p->a->tmap(i, &c);
			if (lr)
				rc = loopfail(r, lr, &c);
			i = e;
		} else if ((ins[i].what == KA_ATTN_SUM || ins[i].what == KA_ATTN_MEAN) && !attn) {
			attn = 1;            /* all attn outputs of the stage in one run */
			for (int j = i; j < r->hi && rc == 0; j++)
				if ((ins[j].what == KA_ATTN_SUM || ins[j].what == KA_ATTN_MEAN) && !vals[j])
					rc = fail(r, -1, "internal error: value %d has no plan-time buffer", j);
			if (rc == 0)
				rc = attnscore(r, &I, vals, r->lo, r->hi, tid);
		}
	}
	if (rc == 0 && r->hi == r->h->nins) {   /* select keep: the count while the values are here (keepcount) */
		kvcc_tmap_ctx c;
		tmapctx(r, &I, vals, &c);
		r->pl->keepv[k] = r->pl->p->a->keepn(&c);
	}
	if (arena && rc == 0)             /* keep the score; the arena is reused by the next instance */
		memcpy(r->pl->scorebuf + (size_t)k * r->pl->lay.capacity, vals[r->h->score], (size_t)I.n * sizeof(float));
	return rc;
}

static void insttask(void *arg, int k, int tid)
{
	Run *r = arg;
	if (!__atomic_load_n(&r->err, __ATOMIC_RELAXED))
		runinst(r, k, tid);
}

static int parallel(Run *r)
{
	kr_pool_run(&r->pl->pool, insttask, r, r->ninst);
	return r->err;
}

/* --- select and compact ---------------------------------------------------------------------- */

/* The threshold key of the `want` largest of nc keys (~0: none, 0: all). */
static uint64_t threshold(const kvcc_artifact *A, const uint64_t *ks, size_t nc, long want)
{
	return want <= 0 ? ~0ull : (size_t)want >= nc ? 0 : A->topk(ks, (int64_t)nc, want);
}

/* instance k's length */
#define LEN(r, k) ((r)->b->seq[(k) / (r)->LH].len[(k) % (r)->LH])

/* mass p, instance k's part (scores sc, n tokens): the sum of its unprotected scores added to
** *tot (mtotal: double, token order). 0, or KVCC_EINVAL with the error set (a negative or NaN
** unprotected score). */
static int masstotal(Run *r, int k, const float *sc, long n, long S, long R, double *tot)
{
	double t = 0;
	int64_t bad = r->pl->p->a->mtotal(sc, n, S, R, &t);
	if (bad >= 0) {
		int kk = k % r->LH;
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: mass needs scores >= 0, (layer %d, head %d) has %g "
		                 "at token %lld", r->pl->p->src, r->h->sel_line, r->h->sel_col, kk / r->pl->lay.kv_heads,
		                 kk % r->pl->lay.kv_heads, (double)sc[bad], (long long)bad);
	}
	*tot += t;
	return 0;
}

/* mass p: the smallest count c of the nk keys' best unprotected ones (after the *npr protected
** ones) whose sum(ctx, the threshold key of the best npr + c) reaches p of tot, by bisection over
** the count with the radix select (0 when p <= 0, tot is 0 or no key is unprotected) */
static long massbisect(const kvcc_artifact *A, const uint64_t *ks, size_t nk, double p, double tot,
                       double (*sum)(void *, uint64_t), void *ctx, long *npr)
{
	long np = (long)A->kcount(ks, (int64_t)nk, 1ull << 63), m = (long)nk - np, lo = 0;
	if (p > 0 && tot > 0 && m > 0) {
		long hi = m;
		lo = 1;
		while (lo < hi) {
			long mid = lo + (hi - lo) / 2;
			if (sum(ctx, A->topk(ks, (int64_t)nk, np + mid)) / tot >= p)
				hi = mid;
			else
				lo = mid + 1;
		}
	}
	*npr = np;
	return lo;
}

/* a scope group's instances base..k, their scores and keys, for massbisect's sums */
typedef struct MassGrp {
	Run *r;
	float **score;
	int base, k;
	const uint64_t *ks;
	long ch;
	const KrPart *pt;
	int np;
} MassGrp;

/* chunk 1: the sum of the group's unprotected scores whose key is >= thr (ksum per instance) */
static double ksumat(void *ctx, uint64_t thr)
{
	const MassGrp *g = ctx;
	double sum = 0;
	size_t c = 0;
	for (int kj = g->base; kj <= g->k; kj++) {
		long nn = LEN(g->r, kj);
		nn -= g->r->h->merge == KA_MSUMMARY && g->r->pl->sblk[kj] >= 0 ? g->r->h->srows : 0;   /* the ordinary rows (sumrows) */
		sum += g->r->pl->p->a->ksum(g->ks + c, g->score[kj], nn, thr);
		c += (size_t)nn;
	}
	return sum;
}

/* mass p over a scope group (instances base..k, their nc keys ks from selkeys, total tot): the
** shortest run of the group's best unprotected tokens whose scores reach p of the total (the
** smallest count whose ksum, summed over the instances, reaches it), then the group's count
** want = min(want, protected + that count). */
static long masscount(Run *r, float **score, int base, int k, const uint64_t *ks, size_t nc, double p, double tot,
                      long want)
{
	MassGrp g = { r, score, base, k, ks, 1, NULL, 0 };
	long np, lo = massbisect(r->pl->p->a, ks, nc, p, tot, ksumat, &g, &np);
	return np + lo < want ? np + lo : want;
}

/* threshold: the smallest kept key when the `want` best of the group's ncand candidates (keys
** != 0 after tfilter; the others are 0, below every candidate) are kept */
static uint64_t tthreshold(const kvcc_artifact *A, const uint64_t *ks, size_t nc, long want, long ncand)
{
	want = want < ncand ? want : ncand;
	return want <= 0 ? ~0ull : want >= ncand ? 1 : A->topk(ks, (int64_t)nc, want);
}

/*
** chunk > 1: the reference takes the group's chunks in key order and keeps each one that still
** fits the budget `want` (a full chunk that does not fit is skipped, a smaller partial last chunk
** may still fit). Full chunks all have `ch` tokens, so the kept full chunks are the top `taken`
** ones; only the few partial chunks (one per instance at most, pt sorted by key, highest first)
** interleave: before each, kcount ranks it among the full chunks, and the full chunks ranked
** above it are taken as far as they fit (once one does not, no later one does).
** Returns `taken`; pt[j].keep says whether partial j is kept.
*/
static long chunkgreedy(const kvcc_artifact *A, const uint64_t *ks, size_t nc, long ch, KrPart *pt, int np, long want)
{
	long got = 0, taken = 0;
	int open = 1;
	for (int j = 0; j < np; j++) {
		if (open) {
			long avail = (long)A->kcount(ks, (int64_t)nc, pt[j].key) - taken, fit = (want - got) / ch;
			if (avail > fit)
				avail = fit, open = 0;
			taken += avail, got += avail * ch;
		}
		pt[j].keep = got + pt[j].len <= want;
		got += pt[j].keep ? pt[j].len : 0;
	}
	if (open) {
		long avail = (long)nc - taken, fit = (want - got) / ch;
		taken += avail < fit ? avail : fit;
	}
	return taken;
}

/* mass p with chunk > 1 over a scope group (instances base..k; ks: their full-chunk keys from
** ckeys, pt their shorter last chunks): the sum of the unprotected chunks whose key is >= thr
** (cmass over each instance's full chunks and each shorter one) */
static double cmassat(void *ctx, uint64_t thr)
{
	const MassGrp *g = ctx;
	const kvcc_artifact *A = g->r->pl->p->a;
	double sum = 0;
	int64_t bad;
	size_t c = 0;
	for (int kj = g->base; kj <= g->k; kj++) {
		long nf = LEN(g->r, kj) / g->ch;
		sum += A->cmass(g->score[kj], g->ks + c, nf * g->ch, g->ch, thr, &bad);
		c += (size_t)nf;
	}
	for (int j = 0; j < g->np; j++) {
		const KrPart *q = &g->pt[j];
		sum += A->cmass(g->score[q->k] + LEN(g->r, q->k) / g->ch * g->ch, &q->key, q->len, g->ch, thr, &bad);
	}
	return sum;
}

/* ... its prefix (tot: the unprotected chunks' total): the group's best unprotected chunks, full
** and shorter ones in one key array (pt's keys copied after the nc full ones), whose sums reach p
** of tot (massbisect); returns the smallest key kept (protected chunks and that prefix), drops
** the shorter chunks below it from pt (*np) and sets *ncand to the kept candidates' tokens */
static uint64_t cmassprefix(Run *r, float **score, int base, int k, uint64_t *ks, size_t nc, long ch, KrPart *pt,
                            int *np, double p, double tot, long *ncand)
{
	const kvcc_artifact *A = r->pl->p->a;
	for (int j = 0; j < *np; j++)
		ks[nc + (size_t)j] = pt[j].key;
	size_t na = nc + (size_t)*np;
	MassGrp g = { r, score, base, k, ks, ch, pt, *np };
	long npr, lo = massbisect(A, ks, na, p, tot, cmassat, &g, &npr);
	uint64_t thr = threshold(A, ks, na, npr + lo);
	*ncand = (long)A->kcount(ks, (int64_t)nc, thr) * ch;
	int q = 0;
	for (int j = 0; j < *np; j++)
		if (pt[j].key >= thr)
			*ncand += pt[j].len, pt[q++] = pt[j];
	*np = q;
	return thr;
}

/* Select: the kept positions of every instance, sorted, into pl->kidx / pl->nkept, on generated
** kernels per scope group (head, layer or model; budgets via ki_nkeep). chunk 1: selkeys builds
** the 64-bit keys (protected, score with NaN lowest and -0 = +0, lower instance and position
** first), topk radix-selects the group's threshold key, keepidx writes each instance's sorted kept
** list. chunk > 1: ckeys builds the chunk keys (full chunks contiguous, each instance's partial
** last chunk set aside in pl->part), chunkgreedy finds how many full chunks are kept, topk their
** threshold, ckeepidx expands kept chunks to each instance's sorted kept list. Threshold with
** chunk > 1: ctfilter zeroes the keys of the chunks below tau; a zeroed partial chunk is not set
** aside, and the group's budget is capped at the candidates' tokens: then a full chunk of key 0
** never fits (it ranks below every candidate, which the greedy takes or closes on first). Mass
** with chunk > 1 the same with the candidates its prefix leaves (cmassprefix): a full chunk below
** them never fits either, a shorter one below them is dropped from pl->part. */

/* merge summary (summary.c): instance k's summary block (its first row into pl->sblk, or -1),
** its scores shifted over the block so that select ranks the ordinary rows only, *n their
** number; *cnt: n_keep - C of them when the instance holds more than n_keep rows, else all */
static int sumrows(Run *r, int k, float *sc, long *n, long *cnt)
{
	const KaHdr *hd = r->h;
	const kvcc_layout *lay = &r->pl->lay;
	int kk = k % r->LH, C = hd->srows;
	const kvcc_seq *q = &r->b->seq[k / r->LH];
	int64_t sstride = (int64_t)r->LH * lay->capacity;
	int s0 = kr_sblock(r->pl, q->state ? q->state + (size_t)kk * lay->capacity : NULL, sstride, (int)*n);
	r->pl->sblk[k] = s0;
	if (s0 >= 0 && s0 + C > *n)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge summary: the summary rows of (layer %d, head %d) "
		                 "start at row %d, but it holds %ld (the summary state row marks %d rows)", r->pl->p->src,
		                 hd->mline, hd->mcol, kk / lay->kv_heads, kk % lay->kv_heads, s0, *n, C);
	if (*n > *cnt && *cnt < C)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge summary: the budget keeps %ld rows of (layer %d, "
		                 "head %d), fewer than its %d summary rows", r->pl->p->src, hd->mline, hd->mcol, *cnt,
		                 kk / lay->kv_heads, kk % lay->kv_heads, C);
	long no = *n - (s0 >= 0 ? C : 0);
	*cnt = *n > *cnt ? *cnt - C : no;
	if (s0 >= 0)
		memmove(sc + s0, sc + s0 + C, (size_t)(*n - s0 - C) * sizeof *sc);
	*n = no;
	return 0;
}

/* merge summary with select threshold (scope head): instance k without a block, under its
** budget (all n ordinary rows counted), whose candidates ci (tfilter's) leave some out keeps at
** most n - C of them: the C summary rows take the place of evicted ones (interp.c threvicts) */
static int sumthr(Run *r, int k, long n, long ci, long *cnt)
{
	int C = r->h->srows, kk = k % r->LH;
	if (r->pl->sblk[k] >= 0 || *cnt != n || ci >= n)
		return 0;
	if (n < C)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge summary: (layer %d, head %d) evicts below tau but "
		                 "holds %ld rows, fewer than its %d summary rows", r->pl->p->src, r->h->mline, r->h->mcol,
		                 kk / r->pl->lay.kv_heads, kk % r->pl->lay.kv_heads, n, C);
	*cnt = n - C;
	return 0;
}

/* merge summary with select mass (scope head, chunk 1): instance k (flags fl: sumgroup's) without
** a block, under its budget, whose mass prefix (pre rows: the protected ones and the prefix) leaves
** some of its n ordinary rows out keeps at most n - C of them (interp.c massevicts) */
static int summass(Run *r, int k, long n, long pre, long *want)
{
	int C = r->h->srows, kk = k % r->LH;
	if (r->pl->nkept[k] & 3 || pre >= n)
		return 0;
	if (n < C)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge summary: (layer %d, head %d) evicts past its mass "
		                 "prefix but holds %ld rows, fewer than its %d summary rows", r->pl->p->src, r->h->mline,
		                 r->h->mcol, kk / r->pl->lay.kv_heads, kk % r->pl->lay.kv_heads, n, C);
	*want = n - C < *want ? n - C : *want;
	return 0;
}

/* merge summary with AdaKV's floor (topk, scope layer, chunk 1; interp.c floorsum): instance k's
** floor fl = min(floor(alpha c0), c0, n0) (c0 its count, n0 its rows) includes its C summary rows:
** the ordinary rows it keeps first, max(fl - C, 0) (a floor at or below C is met by its C rows). */
static long sumfloor(Run *r, double alpha, long c0, long n0)
{
	long fl = (long)floor(alpha * (double)c0), C = r->h->srows;
	fl = fl < c0 ? fl : c0;
	fl = fl < n0 ? fl : n0;
	return fl > C ? fl - C : 0;
}

/* merge summary at scope layer / model (interp.c selectsummary): instances base..k are one group,
** nkept[] holds each one's flags from selectkeep (1: over its count, 2: it has a block, bit 30:
** threshold, a row below tau). A group with an instance over its count or below tau evicts: every instance's C rows count in the group's budget (an
** instance under its count without a block gives C of it up, *want) and one without a block keeps
** at most its n - C best rows (keys below them zeroed: never kept), so the C rows it builds come
** out of what it held and no instance ends holding more than it held: topk finds the threshold of
** its n - C best keys, the generated kcut zeroes the keys below it (the rule's semantics stay in
** generated code; the runtime only walks the group). */
static int sumgroup(Run *r, int base, int k, uint64_t *ks, long *want)
{
	const KaHdr *hd = r->h;
	int32_t *fl = r->pl->nkept;
	int C = hd->srows, ev = 0;
	for (int kj = base; kj <= k; kj++)
		ev |= (fl[kj] & 1) | (fl[kj] >> 30 & 1);     /* over its count, or a row below tau */
	size_t c = 0;
	for (int kj = base; kj <= k; kj++) {
		int blk = fl[kj] >> 1 & 1, kk = kj % r->LH;
		long no = LEN(r, kj) - (blk ? C : 0);
		if (ev && !blk && no > 0 && !(fl[kj] & 1) && no < C)
			return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge summary: the budget keeps %ld rows of (layer %d, "
			                 "head %d), fewer than its %d summary rows", r->pl->p->src, hd->mline, hd->mcol, no,
			                 kk / r->pl->lay.kv_heads, kk % r->pl->lay.kv_heads, C);
		if (ev && !blk && no > 0) {      /* an empty instance takes no part */
			*want -= fl[kj] & 1 ? 0 : C;
			r->pl->p->a->kcut(ks + c, no, threshold(r->pl->p->a, ks + c, (size_t)no, no - C));
		}
		c += (size_t)no;
	}
	return 0;
}

/*
** The model schedules (KaHdr.sched, DESIGN §3 "Global rules"; compiler/select.c's prefixsched and
** dynsched define them, tests/oracle/selref.py checks both): every instance's count of one
** sequence s from all its scores, into pl->schnk, before the per-group top-k. The generated
** schedcnt (codegen/x86/sched.c) does the bisections and the arithmetic with the select kernels;
** the runtime resolves the params and reports its errors at the select rule.
*/
static int schedcounts(Run *r, float **score, int s, long S, long R, const kvcc_args *args)
{
	const KaHdr *hd = r->h;
	const kvcc_layout *lay = &r->pl->lay;
	int H = lay->kv_heads, LH = r->LH, pf = hd->sched == KA_SCH_PREFIX;
	int64_t *nk = r->pl->schnk, *len = nk + LH;
	const char *src = r->pl->p->src;
	float **sc = score + (size_t)s * LH;
	for (int kk = 0; kk < LH; kk++)
		len[kk] = LEN(r, (size_t)s * LH + kk);
	kvcc_sched_ctx c = { sc, len, nk, r->pl->schkeys, r->pl->schtot, len + LH, lay->layers, H, lay->capacity, S, R,
	                     args->budget, args->ratio, kr_ref(&hd->sa, r->par, pf ? 5 : 10),
	                     kr_ref(&hd->sb, r->par, pf ? 200 : 4), 0, 0 };
	int64_t rc = r->pl->p->a->schedcnt(&c);
	if (rc == -1)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: the prefix schedule needs a tol in 0..1e9 "
		                 "and iters an integer in 0..1e4 (got %g, %g)", src, hd->sel_line, hd->sel_col, c.sa, c.sb);
	if (rc == -2)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: the prefix schedule needs finite scores "
		                 ">= 0, (layer %d, head %d) has %g at token %lld", src, hd->sel_line, hd->sel_col,
		                 (int)c.bad / H, (int)c.bad % H, (double)sc[c.bad][c.badt], (long long)c.badt);
	if (rc == -3)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: the dynamic schedule needs the same length in "
		                 "every (layer, head)", src, hd->sel_line, hd->sel_col);
	if (rc == -4)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: the dynamic schedule needs a ratio_max >= 0 and "
		                 "every >= 1 (got %g, %g)", src, hd->sel_line, hd->sel_col, c.sa, c.sb);
	return 0;
}

/* instance k's count before selection: the generated keepn's (the policy's keep expression, else
** the budget's n_keep), which runinst computed after the instance's last stage (a keep count may
** reduce the instance's [token] values over token: the arena holds them only then), or the
** reference's error for a keep count that is not finite */
static int keepcount(Run *r, int k, long *cnt)
{
	Inst I;
	instof(r, k, &I);
	int64_t v = r->pl->keepv[k];
	if (v < 0)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: the keep count of (layer %d, head %d) is %s",
		                 r->pl->p->src, r->h->sel_line, r->h->sel_col, I.l, I.h, v == -1 ? "nan" : v == -2 ? "inf" : "-inf");
	*cnt = (long)v;
	return 0;
}

/* a select step about to call the kernels `k` (KA_K*): 0 when the artifact's record of the run's
** kernels (artifact.h ka_kernels, the one the compiler stubbed the others by) lists them, else
** KVCC_EARTIFACT with an internal error at the select rule (never a silent stub's 0) */
static int needk(const Run *r, unsigned k, const char *what)
{
	if ((r->pl->p->kern & k) == k)
		return 0;
	return kr_seterr(KVCC_EARTIFACT, "%s:%u:%u: internal error: select calls %s, which the artifact's kernel record "
	                 "(ka_kernels %#x) does not list: a stub", r->pl->p->src, r->h->sel_line, r->h->sel_col, what,
	                 r->pl->p->kern);
}
#define NEEDK(k, what) do { int e_ = needk(r, (k), (what)); if (e_) return e_; } while (0)

/* instances [k0, k1) (whole scope groups), with the keys buffer ks and the partial chunks pt of
** the thread that runs them (selectrun) */
static int selectkeep(Run *r, float **score, const kvcc_args *args, int k0, int k1, uint64_t *ks, KrPart *pt)
{
	const kvcc_artifact *A = r->pl->p->a;
	int32_t *kidx = r->pl->kidx, *nkept = r->pl->nkept;
	const KaHdr *hd = r->h;
	const kvcc_layout *lay = &r->pl->lay;
	int cap = lay->capacity;
	double vs = kr_ref(&hd->keep_first, r->par, 0), vr = kr_ref(&hd->keep_recent, r->par, 0);
	double vc = kr_ref(&hd->chunk, r->par, 1);
	if (!(vs >= 0 && vs <= 1e9) || !(vr >= 0 && vr <= 1e9) || !(vc >= 1 && vc <= 1e9) || vs != floor(vs) ||
	    vr != floor(vr) || vc != floor(vc))
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: keep_first and keep_recent must be integers in "
		                 "0..1e9 and chunk in 1..1e9 (got %g, %g, %g)", r->pl->p->src, hd->sel_line, hd->sel_col,
		                 vs, vr, vc);
	long S = (long)vs, Rr = (long)vr, ch = (long)vc;
	int thsel = hd->selkind == KA_SEL_THRESHOLD;   /* candidates: tfilter's keys */
	double tau = kr_ref(&hd->tau, r->par, 0);
	long ncand = 0;
	int msel = hd->selkind == KA_SEL_MASS;         /* any chunk, any scope */
	double mp = kr_ref(&hd->mass, r->par, 0), mtot = 0;
	int fsel = hd->floor.kind != KA_NONE;          /* topk, scope layer, chunk 1 (the verifier) */
	double alpha = kr_ref(&hd->floor, r->par, 0);
	if (fsel && !(alpha >= 0 && alpha <= 1))
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: floor must be in [0, 1], got %g", r->pl->p->src,
		                 hd->sel_line, hd->sel_col, alpha);
	if (fsel && ch != 1)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: floor needs chunk 1 (got %ld)", r->pl->p->src,
		                 hd->sel_line, hd->sel_col, ch);
	/* the kernels the steps below call (a stub for a policy whose record lacks them) */
	if (ch > 1)
		NEEDK(KA_KCHUNK | KA_KCOUNT, "ckeys, kcount, ckeepidx (chunk > 1)");
	if (thsel)
		NEEDK(ch > 1 ? KA_KCTFILTER : KA_KTFILTER, ch > 1 ? "ctfilter (threshold)" : "tfilter (threshold)");
	if (msel)
		NEEDK(ch > 1 ? KA_KCMASS | KA_KCOUNT : KA_KMASS | KA_KCOUNT, ch > 1 ? "cmass, kcount (mass)" : "mtotal, ksum, kcount (mass)");
	if (fsel)
		NEEDK(KA_KFLOOR, "kfloor (floor)");
	if (hd->merge == KA_MSUMMARY)
		NEEDK(hd->scope != KA_SCOPE_HEAD ? KA_KSUMMARY | KA_KSUMCAP | (thsel ? KA_KCOUNT : 0) : KA_KSUMMARY,
		      "mstore, kcut (merge summary), kcount (with threshold)");
	if (hd->merge == KA_MNEAREST)
		NEEDK(KA_KQKT, "qkt (merge nearest)");
	if (hd->sched >= KA_SCH_PREFIX)    /* the generated schedcnt calls them */
		NEEDK(hd->sched == KA_SCH_PREFIX ? KA_KMASS : KA_KCOUNT, hd->sched == KA_SCH_PREFIX ? "mtotal, ksum (prefix)" : "kcount (dynamic)");
	size_t nc = 0, base = (size_t)k0;
	long want = 0;
	int np = 0;
	for (int k = k0; k < k1; k++) {         /* groups never span sequences; keys as for one sequence */
		int kk = k % r->LH, h = kk % lay->kv_heads;
		long n = LEN(r, k);
		if (hd->sched >= KA_SCH_PREFIX && kk == 0) {
			int rc = schedcounts(r, score, k / r->LH, S, Rr, args);
			if (rc)
				return rc;
		}
		long cnt = hd->sched >= KA_SCH_PREFIX ? (long)r->pl->schnk[kk] : hd->nocap ? n : 0;
		if (hd->sched < KA_SCH_PREFIX && !hd->nocap) {
			int rc = keepcount(r, k, &cnt);
			if (rc)
				return rc;
		}
		long n0 = n, c0 = cnt;
		if (hd->merge == KA_MSUMMARY) {    /* the ordinary rows only (summary.c); n_keep - C of them */
			int rc = sumrows(r, k, score[k], &n, &cnt);
			if (rc)
				return rc;
			nkept[k] = (n0 > c0) | (r->pl->sblk[k] >= 0) << 1;   /* sumgroup's flags until the group's end */
		}
		if (ch == 1) {
			A->selkeys(score[k], n, S, Rr, (uint32_t)((size_t)kk * cap), ks + nc);
			if (thsel) {
				long ci = (long)A->tfilter(score[k], n, S, Rr, tau, ks + nc);
				ncand += ci;
				if (hd->merge == KA_MSUMMARY && hd->scope != KA_SCOPE_HEAD && ci < n)
					nkept[k] |= 1 << 30;     /* a row below tau: the group evicts (sumgroup) */
				int rc = hd->merge == KA_MSUMMARY && hd->scope == KA_SCOPE_HEAD ? sumthr(r, k, n, ci, &cnt) : 0;
				if (rc)
					return rc;
			}
			int rc = msel ? masstotal(r, k, score[k], n, S, Rr, &mtot) : 0;
			if (rc)
				return rc;
			long fl = !fsel ? 0 : hd->merge == KA_MSUMMARY ? sumfloor(r, alpha, c0, n0) :
			          (long)floor(alpha * (double)cnt);      /* the head's own top first */
			if (fl > 0)
				A->kfloor(ks + nc, n, threshold(A, ks + nc, (size_t)n, fl < cnt ? fl : cnt));
			nc += (size_t)n;
			want += cnt;
		} else {
			want += cnt;
			A->ckeys(score[k], n, S, Rr, (uint32_t)((size_t)kk * cap), ch, ks + nc);
			if (thsel)              /* chunks below tau: key 0 (ctfilter), a short one left out */
				ncand += (long)A->ctfilter(score[k], n, S, Rr, ch, tau, ks + nc);
			if (msel) {             /* the unprotected chunks' total (cmass at threshold 0) */
				int64_t bad;
				mtot += A->cmass(score[k], ks + nc, n, ch, 0, &bad);
				if (bad >= 0)
					return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: select: mass needs scores >= 0, (layer %d, head %d) "
					                 "has %g at token %lld", r->pl->p->src, hd->sel_line, hd->sel_col, kk / lay->kv_heads,
					                 h, (double)score[k][bad], (long long)bad);
			}
			if (n % ch && (!thsel || ks[nc + (size_t)(n / ch)])) {   /* insertion into pt, highest key first */
				KrPart p = { ks[nc + (size_t)(n / ch)], k, (int)(n % ch), 0 };
				int j = np++;
				for (; j > 0 && pt[j - 1].key < p.key; j--)
					pt[j] = pt[j - 1];
				pt[j] = p;
			}
			nc += (size_t)(n / ch);
		}
		int lastk = hd->scope == KA_SCOPE_HEAD || (hd->scope == KA_SCOPE_LAYER && h == lay->kv_heads - 1) ||
		            kk == r->LH - 1;
		if (!lastk)
			continue;
		size_t c = 0;
		if (msel && ch == 1) {    /* the group's count; summary: the rows under it (scope head) */
			long pre = masscount(r, score, (int)base, k, ks, nc, mp, mtot, LONG_MAX);
			int rc = hd->merge == KA_MSUMMARY ? summass(r, k, (long)nc, pre, &want) : 0;
			if (rc)
				return rc;
			want = pre < want ? pre : want;
		}
		if (msel && ch > 1)       /* the candidates: the protected chunks and the prefix */
			cmassprefix(r, score, (int)base, k, ks, nc, ch, pt, &np, mp, mtot, &ncand);
		if (hd->merge == KA_MSUMMARY && hd->scope != KA_SCOPE_HEAD) {
			int rc = sumgroup(r, (int)base, k, ks, &want);
			if (rc)
				return rc;
			if (thsel)       /* the candidates kcut left (keys != 0) */
				ncand = (long)A->kcount(ks, (int64_t)nc, 1);
		}
		if (ch == 1) {
			uint64_t thr = thsel ? tthreshold(A, ks, nc, want, ncand) : threshold(A, ks, nc, want);
			for (int kj = (int)base; kj <= k; kj++) {
				long nn = LEN(r, kj), s0 = hd->merge == KA_MSUMMARY ? r->pl->sblk[kj] : -1;
				nn -= s0 >= 0 ? hd->srows : 0;
				nkept[kj] = want <= 0 ? 0 : (int32_t)A->keepidx(ks + c, nn, thr, kidx + (size_t)kj * cap);
				/* no rule reaches this (each keeps at most n - C ordinary rows where summary rows are
				** built: review of session 12); a guard, so that a selection bug is an error, never
				** kr_msummary writing past the head's rows */
				if (hd->merge == KA_MSUMMARY && (s0 >= 0 || nkept[kj] < nn) && nkept[kj] + hd->srows > LEN(r, kj))
					return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge summary: internal error: instance %d keeps "
					                 "%d rows and %d summary rows, more than the %ld it holds", r->pl->p->src,
					                 hd->mline, hd->mcol, kj, (int)nkept[kj], (int)hd->srows, (long)LEN(r, kj));
				for (int32_t j = 0; s0 >= 0 && j < nkept[kj]; j++)   /* ordinary index -> row */
					kidx[(size_t)kj * cap + j] += kidx[(size_t)kj * cap + j] >= s0 ? hd->srows : 0;
				c += (size_t)nn;
			}
		} else {
			/* threshold: the budget capped at the candidates' tokens, so no key-0 chunk fits */
			long w = (thsel || msel) && ncand < want ? ncand : want;
			uint64_t thr = threshold(A, ks, nc, chunkgreedy(A, ks, nc, ch, pt, np, w));
			for (int kj = (int)base; kj <= k; kj++)
				nkept[kj] = 0;          /* here: whether the partial last chunk is kept */
			for (int j = 0; j < np; j++)
				nkept[pt[j].k] = pt[j].keep;
			for (int kj = (int)base; kj <= k; kj++) {
				long nn = LEN(r, kj);
				nkept[kj] = (int32_t)A->ckeepidx(ks + c, nn, ch, thr, nkept[kj], kidx + (size_t)kj * cap);
				c += (size_t)(nn / ch);
			}
		}
		nc = 0, want = 0, np = 0, ncand = 0, mtot = 0, base = (size_t)k + 1;
	}
	return 0;
}

/*
** Select on the pool: one task per scope group (head: one instance, layer: its kv_heads, model: a
** sequence's layers*kv_heads), each with its thread's keys and partial chunks (api.c: pl->nsel
** copies of pl->selstride keys). Groups are independent and each writes only its instances'
** kidx / nkept / sblk, so the result is the one of one thread; of failing groups the lowest one's
** error is reported (kr_seterr's message is per thread: copied into r->errmsg), as one thread in
** group order would. The model schedules share one sequence's buffers: one thread, in order.
*/
typedef struct SelRun { Run *r; float **score; const kvcc_args *args; int gs, gerr; } SelRun;

static void selecttask(void *arg, int g, int tid)
{
	SelRun *s = arg;
	Run *r = s->r;
	if (__atomic_load_n(&s->gerr, __ATOMIC_RELAXED) < g)     /* a lower group failed: its error wins */
		return;
	kvcc_plan *pl = r->pl;
	int rc = selectkeep(r, s->score, s->args, g * s->gs, (g + 1) * s->gs, pl->selkeys + (size_t)tid * pl->selstride,
	                    pl->part + (size_t)tid * (r->LH + 1));
	if (!rc)
		return;
	pthread_mutex_lock(&r->mu);
	if (g < s->gerr) {
		__atomic_store_n(&s->gerr, g, __ATOMIC_RELAXED), r->err = rc;
		snprintf(r->errmsg, sizeof r->errmsg, "%s", kvcc_last_error());
	}
	pthread_mutex_unlock(&r->mu);
}

static int selectrun(Run *r, float **score, const kvcc_args *args)
{
	const KaHdr *hd = r->h;
	kvcc_plan *pl = r->pl;
	int gs = hd->scope == KA_SCOPE_HEAD ? 1 : hd->scope == KA_SCOPE_LAYER ? pl->lay.kv_heads : r->LH;
	int ng = r->ninst / gs;
	if (hd->sched >= KA_SCH_PREFIX || ng < 2 || pl->pool.n == 0 || pl->pool.n + 1 > pl->nsel)
		return selectkeep(r, score, args, 0, r->ninst, pl->selkeys, pl->part);
	SelRun s = { r, score, args, gs, ng };
	r->err = 0;
	kr_pool_run(&pl->pool, selecttask, &s, ng);
	return r->err ? kr_seterr(r->err, "%s", r->errmsg) : 0;
}

/* compact_merge: the generated in-place stable gather of one instance's kept rows of K, V, pos
** and state, from the sorted kept list select wrote; through the page table for paged caches
** (paged.c); merge nearest: the generated merge kernels first (merge.c). */
static void compacttask(void *arg, int k, int tid)
{
	Run *r = arg;
	const kvcc_layout *lay = &r->pl->lay;
	Inst I;
	instof(r, k, &I);
	int nst = I.state ? r->h->nst : 0;
	size_t cap = (size_t)lay->capacity;
	int64_t sstride = (int64_t)r->LH * (int64_t)cap;
	if (r->h->merge == KA_MSUMMARY) {         /* summary rows, then the compaction (summary.c) */
		KrRows rw = I.w;
		if (!rw.tab)
			rw = (KrRows){ I.w.K, I.w.V, NULL, 1, lay->stride_token, 0 };
		LEN(r, k) = kr_msummary(r->pl, &rw, I.w.tab != NULL, I.n, r->pl->kidx + k * cap, r->pl->nkept[k],
		                        r->pl->sblk[k], I.pos, I.state, nst, sstride, tid);
		return;
	}
	if (r->h->merge == KA_MRUNS || r->h->merge == KA_MNEXT)   /* issue 12: runs / next, contiguous or paged (mpos.c) */
		kr_mpos(r->pl, r->par, &I.w, I.n, r->pl->kidx + k * cap, r->pl->nkept[k], I.pos, I.state, nst, sstride,
		        r->pl->scorebuf + k * cap, r->val ? r->val[k] : NULL, tid);
	else if (I.w.tab && r->h->merge == KA_MNEAREST)
		kr_pmnearest(r->pl, r->par, &I.w, I.n, r->pl->kidx + k * cap, r->pl->nkept[k], I.pos, I.state, nst, sstride, tid);
	else if (I.w.tab)
		kr_pcompact(&I.w, r->pl->esz, r->d, r->pl->kidx + k * cap, r->pl->nkept[k], I.pos, I.state, nst, sstride);
	else if (r->h->merge == KA_MNEAREST)      /* merges, then the compaction (merge.c) */
		kr_mnearest(r->pl, r->par, I.w.K, I.w.V, lay->stride_token, I.n, r->pl->kidx + k * cap, r->pl->nkept[k], I.pos,
		            I.state, nst, sstride, tid);
	else
		r->pl->p->a->compact(I.w.K, I.w.V, lay->stride_token, r->pl->kidx + k * cap, r->pl->nkept[k], I.pos, I.state,
		                     nst, sstride);
	LEN(r, k) = r->pl->nkept[k];
}

static void compact(Run *r) { kr_pool_run(&r->pl->pool, compacttask, r, r->ninst); }

/* The checks of a call that need no table: arguments, observation queries, head_mean lengths. */
static int callcheck(kvcc_plan *pl, const kvcc_batch *b, const kvcc_args *args)
{
	const KaHdr *h = pl->p->h;
	const kvcc_layout *lay = &pl->lay;
	int H = lay->kv_heads;
	if (args->budget < 0 && !(args->ratio >= 0 && args->ratio < 1))
		return kr_seterr(KVCC_EINVAL, "ratio must be in [0, 1), got %g", args->ratio);
	for (int s = 0; s < b->nseq; s++) {
		const kvcc_obs *obs = &b->seq[s].obs;
		const int32_t *len = b->seq[s].len;
		int O = obs->nobs;
		if ((h->flags & KA_FATTN) && (O < 1 || !obs->Q))
			return kr_seterr(KVCC_EINVAL, "policy %s reads Q: pass observation queries%s", pl->p->name,
			                 b->nseq > 1 ? " (every sequence)" : "");
		if (((h->flags & KA_FLSE) && !obs->lse) || O < 0)
			return kr_seterr(KVCC_EINVAL, "bad observation queries (nobs %d, lse %s)", O, obs->lse ? "given" : "missing");
		if (pl->obs_sized && O > pl->max_obs)
			return kr_seterr(KVCC_EINVAL, "%d observation queries, but the plan was created for at most %d (max_obs)", O,
			                 pl->max_obs);
		if ((h->flags & KA_FQPOS) && O < 1)
			return kr_seterr(KVCC_EINVAL, "policy %s reads qpos: pass observation queries", pl->p->name);
		if (h->flags & KA_FHMEAN)
			for (int k = 0; k < lay->layers * H; k++)
				if (len[k] != len[(k / H) * H])
					return kr_seterr(KVCC_EINVAL, "mean over heads needs equal lengths across the heads of layer %d", k / H);
	}
	return 0;
}

static int run_compress_batch(kvcc_plan *pl, kvcc_batch *b, const kvcc_args *args)
{
	if (!pl || !b || !args)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, batch, args)");
	int rc = kr_batch_check(pl, b, -1);
	if (rc || (rc = callcheck(pl, b, args)) != 0 || (rc = kr_weights_check(pl)) != 0)
		return rc;
	const KaHdr *h = pl->p->h;
	const KaIns *ins = pl->p->ins;
	const kvcc_layout *lay = &pl->lay;
	int LH = lay->layers * lay->kv_heads, ninst = b->nseq * LH;
	double t0 = kr_now_ms(), t1 = t0, t2 = t0;
	Run r = { .pl = pl, .h = h, .ins = ins, .b = b, .ninst = ninst, .LH = LH, .G = h->group, .d = lay->head_dim,
	          .args = args };
	int maxstep = 0;
	for (int l = 0; l < lay->layers; l++)
		maxstep = pl->step[l] > maxstep ? pl->step[l] : maxstep;
	r.step = maxstep > 0 ? maxstep - 1 : 0;
	pthread_mutex_init(&r.mu, NULL);
	double *par = pl->cpar;
	int arena = !(h->flags & KA_FHMEAN);      /* per-thread arenas, else per-instance ones (plan time) */
	r.val = arena ? NULL : pl->tvals;
	float **score = pl->score;
	for (int i = 0; i < h->npar; i++)
		par[i] = args->params ? args->params[i] : pl->p->par[i].def;
	r.par = par;
	/* stages split at hmean */
	r.lo = 0;
	for (int i = 0; i <= h->nins; i++) {
		int bar = i < h->nins && ins[i].what == KA_HMEAN;
		if (i < h->nins && !bar)
			continue;
		r.hi = i;
		if (parallel(&r) != 0) {
			rc = kr_seterr(r.err, "%s", r.errmsg);
			goto done;
		}
		if (bar) {          /* head_mean: the generated barrier kernel over each layer's heads */
			int j = ins[i].arg;
			for (int s = 0; s < b->nseq; s++)
				for (int l = 0; l < lay->layers; l++) {
					int k0 = s * LH + l * lay->kv_heads;
					int64_t cnt = (int64_t)kr_count(ins[i].axes, r.G, b->seq[s].obs.nobs, LEN(&r, k0), r.d);
					for (int hh = 0; hh < lay->kv_heads; hh++)
						pl->hsrc[hh] = r.val[k0 + hh][j], pl->hdst[hh] = r.val[k0 + hh][i];
					pl->p->a->hmean(pl->hsrc, lay->kv_heads, cnt, pl->hdst);
				}
			r.lo = i + 1;
		}
	}
	for (int k = 0; k < ninst; k++) {
		score[k] = pl->scorebuf + (size_t)k * lay->capacity;
		if (!arena)
			memcpy(score[k], r.val[k][h->score], (size_t)LEN(&r, k) * sizeof(float));
		if (args->scores)
			for (int t = 0; t < lay->capacity; t++)
				args->scores[(size_t)k * lay->capacity + t] = t < LEN(&r, k) ? score[k][t] : NAN;
	}
	t1 = kr_now_ms();
	if ((rc = selectrun(&r, score, args)) != 0)
		goto done;
	t2 = kr_now_ms();
	if (h->merge == KA_MNEXT) {      /* issue 12: m of merge next_kept (the interpreter's check and words) */
		double mv = kr_ref(&h->mnext, par, 1);
		if (!(mv >= 1 && mv <= 1000000) || mv != floor(mv)) {
			rc = kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: merge next_kept: m must be an integer in 1..1e6, got %g",
			               pl->p->src, h->mline, h->mcol, mv);
			goto done;
		}
	}
	compact(&r);
	if (pl->paged)
		kr_freed(pl, b);
	pl->ms[0] = t1 - t0, pl->ms[1] = t2 - t1, pl->ms[2] = kr_now_ms() - t2, pl->ms[3] = kr_now_ms() - t0;
done:
	pthread_mutex_destroy(&r.mu);
	return rc;
}

/* one call at a time per plan (kr_enter) */
KVCC_API int kvcc_compress_batch(kvcc_plan *pl, kvcc_batch *b, const kvcc_args *args)
{
	if (!pl)
		return kr_seterr(KVCC_EINVAL, "null plan");
	if (kr_enter(pl))
		return KVCC_EBUSY;
	int rc = run_compress_batch(pl, b, args);
	kr_leave(pl);
	return rc;
}

KVCC_API int kvcc_compress(kvcc_plan *pl, kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args)
{
	kvcc_seq s;
	kvcc_batch b;
	if (!args)
		return kr_seterr(KVCC_EINVAL, "null argument (args)");
	int rc = kr_single(pl, c, obs, "kvcc_compress_batch", &s, &b);
	return rc ? rc : kvcc_compress_batch(pl, &b, args);
}
