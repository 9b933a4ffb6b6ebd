/*
** compact_merge with merge runs (KVMerger) and merge next (CaM) (DESIGN §3 "Merge semantics",
** issue 12) for one (sequence, layer, head), on the artifact's generated kernels
** (codegen/x86/mpos.c mrow, the merge's mupd). Ordinary [token] values the rule reads (CaM's
** attention, its draws) are the instance's stored values `vals` (by held index, pre-compaction).
**
** runs:
**   1  the evicted rows E copied aside (position order); their member counts aside
**   2  runs: held rows t-1, t share a run when sim(t-1, t) >= threshold (mrow 3 and 0 on the
**      two rows, t-1 as the e side); each run's pivot is its kept row that ranks first in the
**      selection order (sinks, lower position first; the recent window, newest first; then
**      higher score, NaN last; ties: lower position); a run without a kept row drops its rows
**   3  every evicted row's similarity to its pivot, the pivots' absorbed counts, the weights w_e
**      and the self weights w_k (mrow 3, 1, 2): all from the pre-merge rows (simultaneous)
**   4  the compaction (generated, or through the page table), then each pivot's segmented
**      update (mupd on the pivot's row), member counts grown by the absorbed rows' counts
**
** next: an evicted row e absorbs into the first m kept rows after it (fewer near the end: nt(e));
**   the evicted rows a kept row j absorbs are a contiguous range of E (E in position order), so
**   the compaction comes first, then per kept row: its range, the weights w_e (mrow 1: the
**   pre-merge rows; ntargets = nt(e), tmean over e's targets), w_k (mrow 2), mupd, counts
**   (+ count_e / nt(e)).
**
** The workspace is sized at plan time (kr_mposbytes): the run path allocates nothing.
*/
#include <math.h>
#include <string.h>
#include "runtime/rt.h"

typedef struct Pws {
	char *EK, *EV;                     /* [N][d] the evicted rows, storage dtype */
	int32_t *E, *rid, *piv, *kj, *tgt, *off, *seg;
	float *Ec, *bsim, *abs, *w, *wk, *wseg;
} Pws;

static size_t up64(size_t n) { return (n + 63) / 64 * 64; }

static size_t layout(const kvcc_plan *pl, char *base, Pws *m)
{
	size_t N = (size_t)pl->lay.capacity, d = (size_t)pl->lay.head_dim, at = 0;
	size_t sz[15] = { N * d * pl->esz, N * d * pl->esz, N * 4, N * 4, N * 4, N * 4, N * 4, (N + 1) * 4, N * 4,
	                  N * 4, N * 4, N * 4, N * 4, N * 4, N * 4 };
	char *p[15];
	for (int k = 0; k < 15; k++) {
		p[k] = base ? base + at : NULL;
		at += up64(sz[k] + 4);
	}
	if (m)
		*m = (Pws){ p[0], p[1], (int32_t *)(void *)p[2], (int32_t *)(void *)p[3], (int32_t *)(void *)p[4],
		            (int32_t *)(void *)p[5], (int32_t *)(void *)p[6], (int32_t *)(void *)p[7],
		            (int32_t *)(void *)p[8], (float *)(void *)p[9], (float *)(void *)p[10], (float *)(void *)p[11],
		            (float *)(void *)p[12], (float *)(void *)p[13], (float *)(void *)p[14] };
	return at;
}

size_t kr_mposbytes(const kvcc_plan *pl)
{
	return layout(pl, NULL, NULL);
}

/* selection order (runs' pivots): class 0 sinks, 1 the recent window, 2 scored, 3 NaN */
typedef struct Rk {
	int cls;
	double key;
} Rk;

static Rk rankof(const float *score, int t, int n, long S, long R)
{
	if (t < S)
		return (Rk){ 0, t };
	if (t >= n - R)
		return (Rk){ 1, -t };
	if (isnan(score[t]))
		return (Rk){ 3, 0 };
	return (Rk){ 2, -(double)score[t] };
}

/* does held row a rank before held row b */
static int before(const float *score, int a, int b, int n, long S, long R)
{
	Rk x = rankof(score, a, n, S, R), y = rankof(score, b, n, S, R);
	if (x.cls != y.cls)
		return x.cls < y.cls;
	if (x.key != y.key)
		return x.key < y.key;
	return a < b;
}

static void compact(const kvcc_artifact *A, const KrRows *rw, size_t esz, int d, const int32_t *kidx, int m,
                    int32_t *pos, float *state, int nst, int64_t sstride)
{
	if (rw->tab)
		kr_pcompact(rw, esz, d, kidx, m, pos, state, nst, sstride);
	else
		A->compact(rw->K, rw->V, rw->ldk, kidx, m, pos, state, nst, sstride);
}

static void next(kvcc_plan *pl, const double *par, const KrRows *rw, int n, const int32_t *kidx, int m, int32_t *pos,
                 float *state, int nst, int64_t sstride, float *const *vals, int tid);

void kr_mpos(kvcc_plan *pl, const double *par, const KrRows *rw, int n, const int32_t *kidx, int m, int32_t *pos,
             float *state, int nst, int64_t sstride, const float *score, float *const *vals, int tid)
{
	if (pl->p->h->merge == KA_MNEXT) {
		next(pl, par, rw, n, kidx, m, pos, state, nst, sstride, vals, tid);
		return;
	}
	const kvcc_artifact *A = pl->p->a;
	const KaHdr *h = pl->p->h;
	int d = pl->lay.head_dim;
	size_t esz = pl->esz, row = (size_t)d * esz;
	Pws w;
	layout(pl, pl->mws[tid], &w);
	float *cnt = state && h->cnt >= 0 && h->cnt < nst ? state + (size_t)h->cnt * (size_t)sstride : NULL;
	long S = (long)kr_ref(&h->keep_first, par, 0), R = (long)kr_ref(&h->keep_recent, par, 0);
	/* 1: E aside; kj[t] = t's index among the kept rows, or -1 */
	int nE = 0;
	for (int t = 0, j = 0; t < n; t++) {
		if (j < m && kidx[j] == t) {
			w.kj[t] = j++;
			continue;
		}
		size_t o = (size_t)kr_row(rw, t) * esz;
		memcpy(w.EK + (size_t)nE * row, rw->K + o, row);
		memcpy(w.EV + (size_t)nE * row, rw->V + o, row);
		w.kj[t] = -1;
		w.Ec[nE] = cnt ? cnt[t] : 1;
		w.E[nE++] = t;
	}
	if (nE == 0 || m == 0) {
		compact(A, rw, esz, d, kidx, m, pos, state, nst, sstride);
		return;
	}
#define RK(t) (rw->K + (size_t)kr_row(rw, t) * esz)
#define RV(t) (rw->V + (size_t)kr_row(rw, t) * esz)
#define CNT(t) (cnt ? cnt[t] : 1.0f)
	/* 2: runs and their pivots (a held row index, or -1) */
	int nr = 0;
	for (int t = 0; t < n; t++) {
		if (t > 0) {
			float s = A->mrow(3, RK(t - 1), RV(t - 1), RK(t), RV(t), NAN, NAN, NAN, CNT(t - 1), CNT(t), par, vals,
			                  t - 1, t, NULL, 0);
			int same = h->mthr == KA_TVALUE ?
			           s >= A->mrow(0, RK(t - 1), RV(t - 1), RK(t), RV(t), s, NAN, NAN, CNT(t - 1), CNT(t), par, vals, t - 1,
			                   t, NULL, 0) : 1;
			if (!same)
				nr++;
		}
		if (t == 0 || w.rid[t - 1] != nr)
			w.piv[nr] = -1;
		w.rid[t] = nr;
		if (w.kj[t] >= 0 && (w.piv[nr] < 0 || before(score, t, w.piv[nr], n, S, R)))
			w.piv[nr] = t;
	}
	/* 3: targets, similarities, absorbed counts, weights (pre-merge rows) */
	for (int j = 0; j < m; j++)
		w.abs[j] = 0;
	for (int i = 0; i < nE; i++) {
		int p = w.piv[w.rid[w.E[i]]];
		w.tgt[i] = p >= 0 ? w.kj[p] : -1;
		if (p < 0)
			continue;
		const char *ek = w.EK + (size_t)i * row, *ev = w.EV + (size_t)i * row;
		w.bsim[i] = A->mrow(3, ek, ev, RK(p), RV(p), NAN, NAN, NAN, w.Ec[i], CNT(p), par, vals, w.E[i], p, NULL, 0);
		w.abs[w.tgt[i]] += 1;
	}
	for (int i = 0; i < nE; i++) {
		int j = w.tgt[i];
		if (j < 0)
			continue;
		int p = kidx[j];
		const char *ek = w.EK + (size_t)i * row, *ev = w.EV + (size_t)i * row;
		w.w[i] = A->mrow(1, ek, ev, RK(p), RV(p), w.bsim[i], w.abs[j], 1, w.Ec[i], CNT(p), par, vals, w.E[i], p,
		                 &kidx[j], 1);
	}
	for (int j = 0; j < m; j++)
		if (w.abs[j] > 0) {
			int p = kidx[j];
			w.wk[j] = A->mrow(2, RK(p), RV(p), RK(p), RV(p), NAN, w.abs[j], NAN, NAN, CNT(p), par, vals, p, p, NULL, 0);
		}
	/* the segments: off[j] .. off[j+1] of seg, the evicted rows of kept row j in evicted order */
	memset(w.off, 0, ((size_t)m + 1) * sizeof *w.off);
	for (int i = 0; i < nE; i++)
		if (w.tgt[i] >= 0)
			w.off[w.tgt[i] + 1]++;
	for (int j = 0; j < m; j++)
		w.off[j + 1] += w.off[j];
	for (int i = 0; i < nE; i++)
		if (w.tgt[i] >= 0) {
			int q = w.off[w.tgt[i]]++;
			w.seg[q] = i, w.wseg[q] = w.w[i];
		}
	for (int j = m; j > 0; j--)
		w.off[j] = w.off[j - 1];
	w.off[0] = 0;
	/* 4: compaction, then the updates on the compacted rows; counts */
	compact(A, rw, esz, d, kidx, m, pos, state, nst, sstride);
	for (int j = 0; j < m; j++) {
		int c = w.off[j + 1] - w.off[j];
		if (!c)
			continue;
		A->mupd(RK(j), RV(j), 0, 0, w.EK, w.EV, w.seg + w.off[j], w.wseg + w.off[j], c, w.wk[j]);
		if (cnt)
			for (int q = w.off[j]; q < w.off[j + 1]; q++)
				cnt[j] += w.Ec[w.seg[q]];
	}
#undef RK
#undef RV
#undef CNT
}

/* merge next (CaM): see the top */
static void next(kvcc_plan *pl, const double *par, const KrRows *rw, int n, const int32_t *kidx, int m, int32_t *pos,
                 float *state, int nst, int64_t sstride, float *const *vals, int tid)
{
	const kvcc_artifact *A = pl->p->a;
	const KaHdr *h = pl->p->h;
	int d = pl->lay.head_dim;
	size_t esz = pl->esz, row = (size_t)d * esz;
	Pws w;
	layout(pl, pl->mws[tid], &w);
	float *cnt = state && h->cnt >= 0 && h->cnt < nst ? state + (size_t)h->cnt * (size_t)sstride : NULL;
	long mm = (long)kr_ref(&h->mnext, par, 1);    /* checked before the call (kr_mnextcheck) */
	/* E aside; j0[i] (in tgt) = the kept rows before E[i]: its targets are j0 .. j0 + nt - 1 */
	int nE = 0;
	for (int t = 0, j = 0; t < n; t++) {
		if (j < m && kidx[j] == t) {
			j++;
			continue;
		}
		size_t o = (size_t)kr_row(rw, t) * esz;
		memcpy(w.EK + (size_t)nE * row, rw->K + o, row);
		memcpy(w.EV + (size_t)nE * row, rw->V + o, row);
		w.Ec[nE] = cnt ? cnt[t] : 1;
		w.tgt[nE] = j;
		w.seg[nE] = nE;
		w.E[nE++] = t;
	}
	compact(A, rw, esz, d, kidx, m, pos, state, nst, sstride);
	if (nE == 0 || m == 0)
		return;
	/* kept row j absorbs E[lo .. hi): j0 <= j < j0 + mm, j0 nondecreasing along E */
	for (int j = 0, lo = 0, hi = 0; j < m; j++) {
		while (lo < nE && (long)w.tgt[lo] + mm <= j)
			lo++;
		while (hi < nE && w.tgt[hi] <= j)
			hi++;
		int c = hi - lo;
		if (c <= 0)
			continue;
		char *Kj = rw->K + (size_t)kr_row(rw, j) * esz, *Vj = rw->V + (size_t)kr_row(rw, j) * esz;
		float kc = cnt ? cnt[j] : 1;
		for (int i = lo; i < hi; i++) {
			long nt = m - w.tgt[i] < mm ? m - w.tgt[i] : mm;
			w.wseg[i] = A->mrow(1, w.EK + (size_t)i * row, w.EV + (size_t)i * row, Kj, Vj, NAN, (float)c, (float)nt,
			                    w.Ec[i], kc, par, vals, w.E[i], kidx[j], kidx + w.tgt[i], nt);
		}
		float wk = A->mrow(2, Kj, Vj, Kj, Vj, NAN, (float)c, NAN, NAN, kc, par, vals, kidx[j], kidx[j], NULL, 0);
		A->mupd(Kj, Vj, 0, 0, w.EK, w.EV, w.seg + lo, w.wseg + lo, c, wk);
		if (cnt)
			for (int i = lo; i < hi; i++) {
				long nt = m - w.tgt[i] < mm ? m - w.tgt[i] : mm;
				cnt[j] += w.Ec[i] / (float)nt;
			}
	}
}
