/*
** compact_merge with merge summary (DESIGN §3 "Merge semantics": summary rows) for one
** (sequence, layer, head); the reference is compiler/merge.c `summary` (the same arithmetic, in
** double, in the same order, so the assignments and the rows agree with the interpreter's):
**
**   the cache marks its summary block with the hidden state row "summary" (KaHdr.sflag: 1 on the
**   C rows of the block, compiler/mplan.h ki_msumrow); selection (compress.c) ranks the ordinary
**   rows only and keeps n_keep - C of them when the instance is over its budget;
**   1  the evicted ordinary rows (their K, V, position, member count) and the existing block
**      (its rows, positions and state) copied aside, then the compaction (generated, or through
**      the page table): the kept rows are rows 0 .. m-1
**   2  no block yet: Lloyd's k-means over the evicted rows (initialized with the evicted rows
**      E[floor(j |E| / C)], KaHdr.siters iterations, squared L2 of keys, count-weighted means,
**      an empty cluster keeps its centroid); a block: each evicted row joins its nearest
**      existing row, a count-weighted running mean (the seed's online k-means)
**   3  the C rows written after the kept ones (the generated mstore rounds them to the storage
**      dtype), their position the largest of their members', count the members' total, the
**      flag 1, the other state rows the block's (a new block: the states' init values)
**
** The distances go one evicted row at a time against the C centroids (no |E| x C matrix; the
** evicted rows are converted to f32 in tiles of MB rows). The workspace is sized at plan time
** (kr_sbytes): the run path allocates nothing.
*/
#include <math.h>
#include <string.h>
#include "runtime/rt.h"

#define MB 64

typedef struct Sws {
	char *EK, *EV;            /* [N][d] the evicted rows, storage dtype */
	int32_t *E, *Ep, *a;      /* [N] evicted rows, their positions, their centroid */
	float *Ec;                /* [N] their member counts */
	char *SK, *SV;            /* [C][d] the existing block's rows */
	int32_t *Spos;            /* [C] */
	float *Sst;               /* [nst][C] its state */
	double *Kc, *Vc, *sk, *sv;  /* [C][d] */
	double *cnt, *sw;         /* [C] */
	int32_t *pc, *nm;         /* [C] */
	float *Fk, *Fv;           /* [MB][d] a tile of evicted rows in f32 */
	float *Ro;                /* [d] a row to store */
} Sws;

static size_t up64(size_t n) { return (n + 63) / 64 * 64; }

static size_t layout(const kvcc_plan *pl, char *base, Sws *w)
{
	const KaHdr *h = pl->p->h;
	size_t N = (size_t)pl->lay.capacity + 1, d = (size_t)pl->lay.head_dim, C = (size_t)(h->srows > 0 ? h->srows : 1);
	size_t es = pl->esz, at = 0;
	size_t sz[21] = { N * d * es, N * d * es, N * 4, N * 4, N * 4, N * 4, C * d * es, C * d * es, C * 4,
	                  (size_t)(h->nst + 1) * C * 4, C * d * 8, C * d * 8, C * d * 8, C * d * 8, C * 8, C * 8,
	                  C * 4, C * 4, MB * d * 4, MB * d * 4, d * 4 };
	char *p[21];
	for (int k = 0; k < 21; k++) {
		p[k] = base ? base + at : NULL;
		at += up64(sz[k]);
	}
	if (w)
		*w = (Sws){ p[0], p[1], (int32_t *)(void *)p[2], (int32_t *)(void *)p[3], (int32_t *)(void *)p[4],
		            (float *)(void *)p[5], p[6], p[7], (int32_t *)(void *)p[8], (float *)(void *)p[9],
		            (double *)(void *)p[10], (double *)(void *)p[11], (double *)(void *)p[12], (double *)(void *)p[13],
		            (double *)(void *)p[14], (double *)(void *)p[15], (int32_t *)(void *)p[16],
		            (int32_t *)(void *)p[17], (float *)(void *)p[18], (float *)(void *)p[19], (float *)(void *)p[20] };
	return at;
}

size_t kr_sbytes(const kvcc_plan *pl)
{
	return layout(pl, NULL, NULL);
}

int kr_sblock(const kvcc_plan *pl, const float *state, int64_t sstride, int n)
{
	const KaHdr *h = pl->p->h;
	if (!state || h->sflag < 0)
		return -1;
	const float *fl = state + (size_t)h->sflag * (size_t)sstride;
	for (int t = 0; t < n; t++)
		if (fl[t] != 0)
			return t;
	return -1;
}

/* squared L2 of a row (f32) to a centroid (double), as compiler/merge.c dist2 */
static double dist2(const float *a, const double *b, int d)
{
	double s = 0;
	for (int ch = 0; ch < d; ch++)
		s += ((double)a[ch] - b[ch]) * ((double)a[ch] - b[ch]);
	return s;
}

/* a[i] = the nearest centroid (squared L2 of keys, ties: the lower) of every evicted row, the
** rows converted to f32 a tile at a time; with acc, the members' count-weighted sums of K and V
** (sw, nm, sk, sv) accumulate too, in evicted order */
static void assign(const kvcc_artifact *A, const Sws *w, size_t esz, int C, int d, int nE, int acc)
{
	for (int e0 = 0; e0 < nE; e0 += MB) {
		int ne = nE - e0 < MB ? nE - e0 : MB;
		A->cvt(w->EK + (size_t)e0 * d * esz, w->Fk, (int64_t)ne * d);
		if (acc)
			A->cvt(w->EV + (size_t)e0 * d * esz, w->Fv, (int64_t)ne * d);
		for (int i = 0; i < ne; i++) {
			const float *k = w->Fk + (size_t)i * d;
			int b = 0;
			double bd = INFINITY;
			for (int j = 0; j < C; j++) {
				double x = dist2(k, &w->Kc[(size_t)j * d], d);
				if (j == 0 || x < bd)
					b = j, bd = x;
			}
			w->a[e0 + i] = b;
			if (!acc)
				continue;
			double wt = w->Ec[e0 + i];
			const float *v = w->Fv + (size_t)i * d;
			w->sw[b] += wt, w->nm[b]++;
			for (int ch = 0; ch < d; ch++)
				w->sk[(size_t)b * d + ch] += wt * k[ch], w->sv[(size_t)b * d + ch] += wt * v[ch];
		}
	}
}

/* Lloyd's iterations from the evicted rows (no block yet) */
static void lloyd(const kvcc_artifact *A, const Sws *w, size_t esz, int C, int d, int nE, int iters)
{
	for (int j = 0; j < C; j++) {
		int i = (int)((size_t)j * (size_t)nE / (size_t)C);
		A->cvt(w->EK + (size_t)i * d * esz, w->Fk, d);
		A->cvt(w->EV + (size_t)i * d * esz, w->Fv, d);
		for (int ch = 0; ch < d; ch++)
			w->Kc[(size_t)j * d + ch] = w->Fk[ch], w->Vc[(size_t)j * d + ch] = w->Fv[ch];
		w->pc[j] = w->Ep[i];
	}
	for (int it = 0; it < iters; it++) {
		memset(w->sk, 0, (size_t)C * d * sizeof *w->sk);
		memset(w->sv, 0, (size_t)C * d * sizeof *w->sv);
		memset(w->sw, 0, (size_t)C * sizeof *w->sw);
		memset(w->nm, 0, (size_t)C * sizeof *w->nm);
		assign(A, w, esz, C, d, nE, 1);
		for (int j = 0; j < C; j++)
			if (w->nm[j] > 0 && w->sw[j] != 0)
				for (int ch = 0; ch < d; ch++)
					w->Kc[(size_t)j * d + ch] = w->sk[(size_t)j * d + ch] / w->sw[j],
					w->Vc[(size_t)j * d + ch] = w->sv[(size_t)j * d + ch] / w->sw[j];
	}
	/* positions: the largest of the members of the last assignment (an empty cluster keeps its
	** initial row's); counts: the members' total */
	if (iters < 1) {         /* no assignment: every row in the first (compiler/merge.c: calloc) */
		memset(w->a, 0, (size_t)nE * sizeof *w->a);
		memset(w->sw, 0, (size_t)C * sizeof *w->sw);
	}
	memset(w->nm, 0, (size_t)C * sizeof *w->nm);
	for (int i = 0; i < nE; i++) {
		int j = w->a[i];
		w->pc[j] = w->nm[j] && w->pc[j] > w->Ep[i] ? w->pc[j] : w->Ep[i];
		w->nm[j]++;
	}
	for (int j = 0; j < C; j++)
		w->cnt[j] = w->sw[j];
}

/* the block's running means (online k-means): every evicted row joins its nearest row */
static void online(const kvcc_artifact *A, const Sws *w, size_t esz, int C, int d, int nE)
{
	memset(w->sk, 0, (size_t)C * d * sizeof *w->sk);
	memset(w->sv, 0, (size_t)C * d * sizeof *w->sv);
	memset(w->sw, 0, (size_t)C * sizeof *w->sw);
	memset(w->nm, 0, (size_t)C * sizeof *w->nm);
	assign(A, w, esz, C, d, nE, 1);
	for (int i = 0; i < nE; i++) {
		int j = w->a[i];
		w->pc[j] = w->Ep[i] > w->pc[j] ? w->Ep[i] : w->pc[j];
	}
	for (int j = 0; j < C; j++) {
		double tot = w->cnt[j] + w->sw[j];
		if (!w->nm[j])
			continue;
		if (tot != 0 && isfinite(tot))
			for (int ch = 0; ch < d; ch++) {
				w->Kc[(size_t)j * d + ch] = (w->cnt[j] * w->Kc[(size_t)j * d + ch] + w->sk[(size_t)j * d + ch]) / tot;
				w->Vc[(size_t)j * d + ch] = (w->cnt[j] * w->Vc[(size_t)j * d + ch] + w->sv[(size_t)j * d + ch]) / tot;
			}
		w->cnt[j] = tot;
	}
}

int kr_msummary(kvcc_plan *pl, const KrRows *rw, int paged, int n, const int32_t *kidx, int m, int s0, int32_t *pos,
                float *state, int nst, int64_t sstride, int tid)
{
	const kvcc_artifact *A = pl->p->a;
	const KaHdr *h = pl->p->h;
	int d = pl->lay.head_dim, C = h->srows, cex = s0 >= 0;
	size_t esz = pl->esz, row = (size_t)d * esz;
	Sws w;
	layout(pl, pl->mws[tid], &w);
	const float *cntr = state && h->cnt >= 0 && h->cnt < nst ? state + (size_t)h->cnt * (size_t)sstride : NULL;
	/* 1: the evicted ordinary rows and the block aside */
	int nE = 0;
	for (int t = 0, j = 0; t < n; t++) {
		if (cex && t >= s0 && t < s0 + C)
			continue;
		if (j < m && kidx[j] == t) {
			j++;
			continue;
		}
		size_t o = (size_t)kr_row(rw, t) * esz;
		memcpy(w.EK + (size_t)nE * row, rw->K + o, row);
		memcpy(w.EV + (size_t)nE * row, rw->V + o, row);
		w.Ep[nE] = pos ? pos[t] : t;
		w.Ec[nE] = cntr ? cntr[t] : 1;
		w.E[nE++] = t;
	}
	for (int j = 0; cex && j < C; j++) {
		size_t o = (size_t)kr_row(rw, s0 + j) * esz;
		memcpy(w.SK + (size_t)j * row, rw->K + o, row);
		memcpy(w.SV + (size_t)j * row, rw->V + o, row);
		w.Spos[j] = pos ? pos[s0 + j] : s0 + j;
		for (int s = 0; s < nst; s++)
			w.Sst[(size_t)s * C + j] = state[(size_t)s * (size_t)sstride + (size_t)(s0 + j)];
	}
	if (paged)
		kr_pcompact(rw, esz, d, kidx, m, pos, state, nst, sstride);
	else
		A->compact(rw->K, rw->V, rw->ldk, kidx, m, pos, state, nst, sstride);
	if (!cex && !nE)
		return m;
	/* 2: the centroids */
	if (cex) {
		for (int j = 0; j < C; j++) {
			A->cvt(w.SK + (size_t)j * row, w.Fk, d);
			A->cvt(w.SV + (size_t)j * row, w.Fv, d);
			for (int ch = 0; ch < d; ch++)
				w.Kc[(size_t)j * d + ch] = w.Fk[ch], w.Vc[(size_t)j * d + ch] = w.Fv[ch];
			w.cnt[j] = h->cnt >= 0 && h->cnt < nst ? w.Sst[(size_t)h->cnt * C + j] : 1;
			w.pc[j] = w.Spos[j];
		}
		online(A, &w, esz, C, d, nE);
	} else
		lloyd(A, &w, esz, C, d, nE, h->siters);
	/* 3: the rows after the kept ones */
	for (int j = 0; j < C; j++) {
		size_t o = (size_t)kr_row(rw, m + j) * esz;
		for (int ch = 0; ch < d; ch++)
			w.Ro[ch] = (float)w.Kc[(size_t)j * d + ch];
		A->mstore(w.Ro, rw->K + o, d);
		for (int ch = 0; ch < d; ch++)
			w.Ro[ch] = (float)w.Vc[(size_t)j * d + ch];
		A->mstore(w.Ro, rw->V + o, d);
		if (pos)
			pos[m + j] = w.pc[j];
		for (int s = 0; state && s < nst; s++) {
			float v = cex ? w.Sst[(size_t)s * C + j] : (float)pl->p->st[s].init;
			if (s == h->cnt)
				v = (float)w.cnt[j];
			else if (s == h->sflag)
				v = 1;
			state[(size_t)s * (size_t)sstride + (size_t)(m + j)] = v;
		}
	}
	return m + C;
}
