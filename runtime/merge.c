/*
** compact_merge with merge nearest (DESIGN §3 "Merge semantics", §5) for one (sequence, layer,
** head), on the artifact's generated kernels (codegen/x86/merge.c):
**
**   1  the evicted rows E (the complement of the sorted kept list) copied aside, then the
**      generated in-place compaction: the kept rows S are rows 0 .. m-1
**   2  mscal: the row scalars of every evicted and every kept row
**   3  the evicted × kept similarity, tile by tile (MB evicted rows × 64 kept tokens, never
**      more): cvt of a block of MB evicted rows (not on the AMX path: its qkt reads their bf16
**      rows, nq < 0), then for each 64-token tile of the kept rows the generated Q·K tile qkt in
**      place (its packing of the kept tile amortized over the MB rows)
**      and mbest: the policy's epilogue and the running arg-max per lane (W lanes per evicted
**      row, ties → the lower kept index), the lanes reduced once per row after the last tile
**      (a KA_FAMX artifact whose similarity is e·k / (A B) of the keys, clamped or not, or
**      their dot: msimx instead, the
**      similarity and its arg-max in one AMX kernel, each winner's similarity from mpair 3, the
**      rows it marks as near ties re-checked by the tiles: KVCC_MSIMX=0's targets bit for bit;
**      KVCC_MSIMX=0 turns it off)
**   4  the threshold: the rule's value (mpair 0), or the mean of the maximum similarities
**   5  the evicted rows grouped by target (a counting sort, in evicted order: the segments),
**      the weights (mpair 1, 2) and the segmented update of each target (mupd)
**   6  member counts (a policy whose merge keeps them, KaHdr.cnt: a state row): each target's
**      count grows by its absorbed rows' counts (saved aside before the compaction)
**
** Paged caches (kr_pmnearest): the evicted rows copied through the page table, the paged
** compaction, then the kept rows gathered into the workspace, steps 2-5 there, the targets
** written back: the kernels see the rows a contiguous cache would give them (tests/paged).
**
** Simultaneous (every similarity and weight from the pre-merge rows: the targets are updated
** only after all of them are known). The workspace is sized at plan time (kr_mbytes): the run
** path allocates nothing.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/rt.h"

#define MB 512                /* evicted rows per similarity block (Ef: MB*d f32, S: MB*64 f32) */
#define LW 16                 /* the most lanes of mbest's running arg-max (KaHdr.vec_width) */

typedef struct Mws {
	char *EK, *EV;            /* [N][d] the evicted rows, storage dtype */
	int32_t *E, *bidx, *off, *seg;
	float *es, *ks, *bsim, *w, *Ef, *S, *Kp;
	char *KK, *KV;            /* [N][d] paged caches: the kept rows gathered (kr_pmnearest) */
	float *Ec;                /* [N] the evicted rows' member counts (KaHdr.cnt >= 0) */
	float *lv;                /* [MB][W] mbest's running best per lane, and its kept index li */
	int32_t *li;
	/* es / ks hold one more row after the row scalars: the member counts (1 without) */
	/* issue 12 (session 10), KA_FAMX3 only (else empty): similarity3's bf16 hi / lo rows (evicted
	** row-major [N+16][d], kept VNNI pairs per 64-token tile), their norms, the running best /
	** runner-up / index per row and lane [MB+16][16], the rows to re-check, their gathered row
	** scalars [nes+1][MB] (these two also with msimx: its near ties, session 12), and the counters
	** (kvcc_plan_mstats) */
	void *EH, *EL, *KH, *KL;
	float *enrm, *knrm, *v1, *v2;
	int32_t *i1, *rk;
	float *esr;
	int64_t *st;
	/* msimx (KA_FAMX; else empty): the packed evicted rows, the keys' kept factors, the
	** best key (NaN: a near tie to re-check) / the winner's dot / kept index per evicted row */
	char *Ep;
	float *kinv, *bkey, *bdot;
	int32_t *bix;
} Mws;

static size_t up64(size_t n) { return (n + 63) / 64 * 64; }

/* the workspace's parts at `base` (NULL: only the size); returns the bytes */
static size_t layout(const kvcc_plan *pl, char *base, Mws *m)
{
	const KaHdr *h = pl->p->h;
	size_t N = (size_t)pl->lay.capacity, d = (size_t)pl->lay.head_dim, at = 0;
	size_t a3 = (h->flags & KA_FAMX3) != 0;   /* issue 12: similarity3's parts */
	size_t x = (h->flags & KA_FAMX) ? 1 : 0;   /* msimx's parts */
	char *p[35];
	size_t sz[35] = { N * d * pl->esz, N * d * pl->esz, N * 4, N * 4, (N + 1) * 4, N * 4,
	                  ((size_t)(h->nes + 1) * N + 64) * 4, ((size_t)(h->nks + 1) * N + 64) * 4, N * 4, N * 4,
	                  MB * d * 4, MB * TILE * 4, 2 * d * TILE * 4, pl->paged ? N * d * pl->esz : 0,
	                  pl->paged ? N * d * pl->esz : 0, N * 4, MB * LW * 4, MB * LW * 4,
	                  a3 * (N + 16) * d * 2, a3 * (N + 16) * d * 2, a3 * (N + 64) * d * 2, a3 * (N + 64) * d * 2,
	                  a3 * N * 4, a3 * N * 4, a3 * (MB + 16) * 64, a3 * (MB + 16) * 64, a3 * (MB + 16) * 64, (a3 | x) * N * 4,
	                  (a3 | x) * (((size_t)h->nes + 1) * MB + 64) * 4, 4 * 8,
	                  x * (N + 64) * d * 2, x * (N + 64) * 4, x * (N + 64) * 4, x * (N + 64) * 4, x * (N + 64) * 4 };
	for (int k = 0; k < 35; k++) {
		p[k] = base ? base + at : NULL;
		at += up64(sz[k]);
	}
	if (m)
		*m = (Mws){ p[0], p[1], (int32_t *)(void *)p[2], (int32_t *)(void *)p[3], (int32_t *)(void *)p[4],
		            (int32_t *)(void *)p[5], (float *)(void *)p[6], (float *)(void *)p[7], (float *)(void *)p[8],
		            (float *)(void *)p[9], (float *)(void *)p[10], (float *)(void *)p[11], (float *)(void *)p[12],
		            p[13], p[14], (float *)(void *)p[15], (float *)(void *)p[16], (int32_t *)(void *)p[17],
		            p[18], p[19], p[20], p[21], (float *)(void *)p[22], (float *)(void *)p[23], (float *)(void *)p[24],
		            (float *)(void *)p[25], (int32_t *)(void *)p[26], (int32_t *)(void *)p[27], (float *)(void *)p[28],
		            (int64_t *)(void *)p[29],
		            p[30], (float *)(void *)p[31], (float *)(void *)p[32], (float *)(void *)p[33],
		            (int32_t *)(void *)p[34] };
	return at;
}

size_t kr_mbytes(const kvcc_plan *pl)
{
	return layout(pl, NULL, NULL);
}

/* the W lanes of evicted row i's running arg-max (mbest) into bsim[i] / bidx[i]: the greatest,
** ties → the lower kept index (each lane's is the lowest of its own ties); i = e0 + q, or with
** rows (similarity3's re-check) rows[e0 + q] */
static void lanes(const Mws *w, int e0, int ne, int W, const int32_t *rows)
{
	for (int q = 0; q < ne; q++) {
		const float *v = w->lv + (size_t)q * W;
		const int32_t *x = w->li + (size_t)q * W;
		float bv = -INFINITY;
		int32_t bi = -1;
		for (int l = 0; l < W; l++)
			if (x[l] >= 0 && (bi < 0 || v[l] > bv || (v[l] == bv && x[l] < bi)))
				bv = v[l], bi = x[l];
		int i = rows ? rows[e0 + q] : e0 + q;
		w->bsim[i] = bv, w->bidx[i] = bi;
	}
}

/* KVCC_MSIMX=0: merge nearest without msimx (the measurements' and the tests' switch) */
static int msimx_off(void)
{
	const char *v = getenv("KVCC_MSIMX");
	return v && !strcmp(v, "0");
}

/* the exact path for the nr evicted rows listed in w->rk (similarity3's near ties and marked rows,
** msimx's near ties): blocks of MB listed rows gathered (f32 rows: cvt copies; raw bf16 rows, the
** AMX Q·K's A tiles: the rows themselves) with their row scalars, then the same qkt, mbest and
** lane reduction as similarity()'s tiles: the same per-pair operations, so the same target (and
** similarity) as that path gives the row */
static void recheck(const kvcc_artifact *A, const Mws *w, const char *K, int64_t ldk, size_t esz, int d, int nE,
                    int m, const double *par, int W, int nes, int nr, int raw)
{
	for (int e0 = 0; e0 < nr; e0 += MB) {
		int ne = nr - e0 < MB ? nr - e0 : MB;
		for (int q = 0; q < ne; q++) {
			int i = w->rk[e0 + q];
			if (raw)
				memcpy((char *)w->Ef + (size_t)q * d * esz, w->EK + (size_t)i * d * esz, (size_t)d * esz);
			else
				A->cvt(w->EK + (size_t)i * d * esz, w->Ef + (size_t)q * d, d);
			for (int s = 0; s <= nes; s++)
				w->esr[(size_t)s * ne + q] = w->es[(size_t)s * nE + i];
		}
		for (int i = 0; i < ne * W; i++)
			w->lv[i] = -INFINITY, w->li[i] = -1;
		for (int j0 = 0; j0 < m; j0 += TILE) {
			int nt = m - j0 < TILE ? m - j0 : TILE;
			A->qkt(K + (size_t)j0 * ldk * esz, ldk, nt, w->Ef, raw ? -ne : ne, w->S, w->Kp);
			A->mbest(w->S, ne, nt, j0, w->esr, ne, w->ks, m, par, w->lv, w->li);
		}
		lanes(w, e0, ne, W, w->rk);
	}
}

/* step 3: bsim / bidx of every evicted row */
static void similarity(const kvcc_artifact *A, const Mws *w, const char *K, int64_t ldk, size_t esz, int d, int nE,
                       int m, const double *par, int W, int raw, int nes)
{
	/* AMX (KA_FAMX): msimx, the similarity and its arg-max in one kernel, the similarity of each
	** winner from mpair 3; the rows it marks as near ties (bkey NaN: its ranking key and the
	** similarity could order the top two differently) re-checked by the tiles below, so every
	** target is the tiles' (KVCC_MSIMX=0's) bit for bit; where it does not apply (it returns 1),
	** the tiles below for every row */
	if (raw && !msimx_off() && A->msimx(K, ldk, m, w->EK, nE, w->es, w->ks, w->Ep, w->kinv, w->bkey, w->bdot, w->bix) == 0) {
		int nr = 0;
		for (int i = 0; i < nE; i++) {
			if (isnan(w->bkey[i])) {
				w->rk[nr++] = i;
				continue;
			}
			w->bidx[i] = w->bix[i];
			w->bsim[i] = A->mpair(3, w->es, nE, i, w->ks, m, w->bix[i], w->bdot[i], NAN, par);
		}
		recheck(A, w, K, ldk, esz, d, nE, m, par, W, nes, nr, 1);
		return;
	}
	/* blocks of MB rows; a head of fewer than 2 MB evicted rows in two blocks of about half of them
	** (16 rows at least), so that every head of 32 or more runs the blocked path (the differential
	** matrix's heads of 37..115 tokens too) */
	int mb = (nE + 1) / 2;
	mb = mb < 16 ? 16 : mb > MB ? MB : (mb + 15) / 16 * 16;
	for (int e0 = 0; e0 < nE; e0 += mb) {
		int ne = nE - e0 < mb ? nE - e0 : mb;
		for (int i = 0; i < ne * W; i++)
			w->lv[i] = -INFINITY, w->li[i] = -1;
		/* the AMX Q·K (KA_FAMX) reads the block's bf16 rows themselves (nq < 0: its A tiles load
		** straight from EK); the other paths their f32 conversion, once per block */
		const char *eb = w->EK + (size_t)e0 * d * esz;
		if (!raw)
			A->cvt(eb, w->Ef, (int64_t)ne * d);
		for (int j0 = 0; j0 < m; j0 += TILE) {
			int nt = m - j0 < TILE ? m - j0 : TILE;
			A->qkt(K + (size_t)j0 * ldk * esz, ldk, nt, raw ? (const void *)eb : (const void *)w->Ef, raw ? -ne : ne,
			       w->S, w->Kp);
			A->mbest(w->S, ne, nt, j0, w->es + e0, nE, w->ks, m, par, w->lv, w->li);
		}
		lanes(w, e0, ne, W, NULL);
	}
}

/*
** Issue 12 (session 10): the similarity of a KA_FAMX3 artifact (f32, the cosine of the keys,
** the arg-max only: codegen/x86/mamx3.c, doc/merge-f32-amx.md). Every row normalized and split
** into bf16 hi + lo once (msplit), the approximate cosines hi.hi + hi.lo + lo.hi of each 64-token
** kept tile by three tdpbf16ps (mtop2: per row and lane the best, its index and the runner-up),
** the lanes reduced per row; a row whose best does not beat every other candidate by more than
** 2B, B = (800 + 7d) 2^-24 (the bound on |approximate - exact cosine|, derived in the doc), or
** whose norm msplit marks (not finite, the clamp max(|e||k|, c) could be active, overflow), is
** re-checked: its arg-max over all kept rows by the exact f32 path (cvt, qkt, mbest on the
** gathered rows: the same kernels and per-pair operations as similarity(), so the same target
** bit for bit). bsim is NaN (the policy reads no similarity: kx_mamx3). Returns 0, or -1 (nothing
** written) when a kept row is not finite or of norm 0: the head takes similarity() whole.
*/
#define B3(d) ((800.0 + 7.0 * (d)) / 16777216.0)
static int similarity3(const kvcc_artifact *A, const Mws *w, const char *K, int64_t ldk, int d, int nE, int m,
                       const double *par, int W, int nes)
{
	float kmin = INFINITY, kmax = 0;
	A->msplit((const float *)(const void *)K, ldk, m, 1, w->KH, w->KL, w->knrm, 0, 0);
	for (int j = 0; j < m; j++) {
		float v = w->knrm[j];
		if (!(v > 0 && v < INFINITY)) {
			w->st[2]++;
			return -1;
		}
		kmin = v < kmin ? v : kmin, kmax = v > kmax ? v : kmax;
	}
	A->msplit((const float *)(const void *)w->EK, d, nE, 0, w->EH, w->EL, w->enrm, kmin, kmax);
	{	/* mtop2 reads whole 16-row blocks: the last block's pad rows zeroed (their outputs are never read) */
		size_t pad = ((size_t)(nE + 15) / 16 * 16 - (size_t)nE) * (size_t)d * 2;
		memset((char *)w->EH + (size_t)nE * d * 2, 0, pad), memset((char *)w->EL + (size_t)nE * d * 2, 0, pad);
	}
	size_t tile = (size_t)d / 2 * TILE;   /* 32-bit pairs per kept tile */
	int nr = 0;
	for (int e0 = 0; e0 < nE; e0 += MB) {
		int ne = nE - e0 < MB ? nE - e0 : MB, n16 = (ne + 15) / 16 * 16;
		for (int i = 0; i < n16 * LW; i++)
			w->v1[i] = w->v2[i] = -INFINITY, w->i1[i] = -1;
		for (int j0 = 0; j0 < m; j0 += TILE)
			A->mtop2((const uint16_t *)w->EH + (size_t)e0 * d, (const uint16_t *)w->EL + (size_t)e0 * d, n16,
			         (const uint32_t *)w->KH + (size_t)(j0 / TILE) * tile, (const uint32_t *)w->KL + (size_t)(j0 / TILE) * tile,
			         m - j0 < TILE ? m - j0 : TILE, j0, w->v1, w->v2, w->i1);
		for (int q = 0; q < ne; q++) {   /* the best (ties → the lower index) and the runner-up */
			const float *a = w->v1 + (size_t)q * LW, *b = w->v2 + (size_t)q * LW;
			const int32_t *x = w->i1 + (size_t)q * LW;
			int bl = -1, i = e0 + q;
			for (int l = 0; l < LW; l++)
				if (x[l] >= 0 && (bl < 0 || a[l] > a[bl] || (a[l] == a[bl] && x[l] < x[bl])))
					bl = l;
			float sec = bl >= 0 ? b[bl] : -INFINITY;
			for (int l = 0; l < LW; l++)
				if (l != bl && a[l] > sec)
					sec = a[l];
			w->bsim[i] = NAN, w->bidx[i] = bl >= 0 ? x[bl] : -1;
			if (isnan(w->enrm[i]) || bl < 0 || !((double)a[bl] - sec > 2 * B3(d)))
				w->rk[nr++] = i;
		}
	}
	recheck(A, w, K, ldk, 4, d, nE, m, par, W, nes, nr, 0);
	w->st[0] += nE, w->st[1] += nr;
	return 0;
}

/* step 4: bidx[i] = -1 where the threshold is not reached; KA_TEMA (D2O, issue 12): *ema is the
** carried tau in (NaN: unset) and out */
static void threshold(const kvcc_artifact *A, const KaHdr *h, const Mws *w, int nE, int m, const double *par,
                      double *ema)
{
	if (h->mthr == KA_TNONE)
		return;
	double tau = NAN;
	int mean = h->mthr == KA_TMEAN || h->mthr == KA_TEMA;
	if (mean) {                      /* the mean of this call's maximum similarities */
		double sum = 0;
		int cnt = 0;
		for (int i = 0; i < nE; i++)
			if (w->bidx[i] >= 0)
				sum += w->bsim[i], cnt++;
		tau = cnt ? sum / cnt : NAN;
	}
	if (h->mthr == KA_TEMA) {        /* tau = beta tau' + (1 - beta) mean (the first: the mean) */
		double beta = kr_ref(&h->mbeta, par, 0);
		tau = *ema = isnan(*ema) ? tau : beta * *ema + (1 - beta) * tau;
	}
	for (int i = 0; i < nE; i++) {
		if (w->bidx[i] < 0)
			continue;
		float thr = mean ? (float)tau : A->mpair(0, w->es, nE, i, w->ks, m, w->bidx[i], w->bsim[i], NAN, par);
		int ok = mean ? (double)w->bsim[i] >= tau : w->bsim[i] >= thr;
		if (!ok)
			w->bidx[i] = -1;
	}
}

/* the evicted rows (the complement of kidx) copied into EK / EV in position order; their count */
static int evicted(const Mws *w, const KrRows *rw, size_t esz, int d, int n, const int32_t *kidx, int m)
{
	size_t row = (size_t)d * esz;
	int nE = 0;
	for (int t = 0, j = 0; t < n; t++) {
		if (j < m && kidx[j] == t)
			j++;
		else {
			size_t o = (size_t)kr_row(rw, t) * esz;
			memcpy(w->EK + (size_t)nE * row, rw->K + o, row);
			memcpy(w->EV + (size_t)nE * row, rw->V + o, row);
			w->E[nE++] = t;
		}
	}
	return nE;
}

/* steps 2-5 on the m compacted kept rows of K / V (token stride ldk) */
static void merge(kvcc_plan *pl, const Mws *wp, const double *par, char *K, char *V, int64_t ldk, int nE, int m,
                  const float *cnt, double *ema)
{
	const kvcc_artifact *A = pl->p->a;
	const KaHdr *h = pl->p->h;
	int d = pl->lay.head_dim;
	size_t esz = pl->esz;
	Mws w = *wp;
	if (nE == 0 || m == 0)
		return;
	for (int i = 0; i < nE; i++)          /* the member counts: row nes / nks of the row tables */
		w.es[(size_t)h->nes * nE + i] = cnt ? w.Ec[i] : 1;
	for (int j = 0; j < m; j++)
		w.ks[(size_t)h->nks * m + j] = cnt ? cnt[j] : 1;
	A->mscal(w.EK, w.EV, d, nE, 0, par, w.es, nE);
	A->mscal(K, V, ldk, m, 1, par, w.ks, m);
	int W = h->vec_width > 1 && h->vec_width <= LW ? h->vec_width : 1;
	if (!((h->flags & KA_FAMX3) && similarity3(A, &w, K, ldk, d, nE, m, par, W, h->nes) == 0))
		similarity(A, &w, K, ldk, esz, d, nE, m, par, W, (h->flags & KA_FAMX) != 0, h->nes);
	threshold(A, h, &w, nE, m, par, ema);
	/* the segments: off[j] .. off[j+1] of seg, the evicted rows of target j in evicted order */
	memset(w.off, 0, ((size_t)m + 1) * sizeof *w.off);
	for (int i = 0; i < nE; i++)
		if (w.bidx[i] >= 0)
			w.off[w.bidx[i] + 1]++;
	for (int j = 0; j < m; j++)
		w.off[j + 1] += w.off[j];
	for (int i = 0; i < nE; i++)          /* off[j] is the next free slot of j, then its end */
		if (w.bidx[i] >= 0)
			w.seg[w.off[w.bidx[i]]++] = i;
	for (int j = m; j > 0; j--)
		w.off[j] = w.off[j - 1];
	w.off[0] = 0;
	for (int j = 0; j < m; j++) {
		int c = w.off[j + 1] - w.off[j];
		if (!c)
			continue;
		for (int q = w.off[j]; q < w.off[j + 1]; q++)
			w.w[q] = A->mpair(1, w.es, nE, w.seg[q], w.ks, m, j, w.bsim[w.seg[q]], (float)c, par);
		float wk = A->mpair(2, w.es, nE, 0, w.ks, m, j, NAN, (float)c, par);
		A->mupd(K, V, ldk, j, w.EK, w.EV, w.seg + w.off[j], w.w + w.off[j], c, wk);
	}
}

/* member counts (KaHdr.cnt: a state row, `cnt` = that row of the instance, or NULL): the
** evicted rows' counts aside before the compaction overwrites them (cnt[E[i]] -> Ec[i]) */
static void ecounts(const Mws *w, const float *cnt, int nE)
{
	for (int i = 0; cnt && i < nE; i++)
		w->Ec[i] = cnt[w->E[i]];
}

/* ... and after the merge: a kept row's count grows by the counts of the rows it absorbed */
static void kcounts(const Mws *w, float *cnt, int nE, int m)
{
	if (!cnt || nE == 0 || m == 0)
		return;
	for (int j = 0; j < m; j++)
		for (int q = w->off[j]; q < w->off[j + 1]; q++)
			cnt[j] += w->Ec[w->seg[q]];
}

/* D2O's EMA threshold (KaHdr.mtau, issue 12): the tau row of the instance, or NULL; the carried
** tau = its first non-NaN value over the n held rows (read before the compaction; rows appended
** since the last compression hold NaN), written into every kept row after the merge */
static float *taurow(const kvcc_plan *pl, float *state, int nst, int64_t sstride)
{
	int c = pl->p->h->mtau;
	return state && c >= 0 && c < nst ? state + (size_t)c * (size_t)sstride : NULL;
}

static double tauin(const float *tr, int n)
{
	for (int t = 0; tr && t < n; t++)
		if (!isnan(tr[t]))
			return tr[t];
	return NAN;
}

static void tauout(float *tr, int nE, int m, double tau)
{
	for (int j = 0; tr && nE > 0 && j < m; j++)
		tr[j] = (float)tau;
}

static float *cntrow(const kvcc_plan *pl, float *state, int nst, int64_t sstride)
{
	int c = pl->p->h->cnt;
	return state && c >= 0 && c < nst ? state + (size_t)c * (size_t)sstride : NULL;
}

void kr_mnearest(kvcc_plan *pl, const double *par, char *K, char *V, int64_t ldk, int n, const int32_t *kidx, int m,
                 int32_t *pos, float *state, int nst, int64_t sstride, int tid)
{
	Mws w;
	layout(pl, pl->mws[tid], &w);
	KrRows rw = { K, V, NULL, 1, ldk, 0 };
	int nE = evicted(&w, &rw, pl->esz, pl->lay.head_dim, n, kidx, m);
	float *cnt = cntrow(pl, state, nst, sstride), *tr = taurow(pl, state, nst, sstride);
	double ema = tauin(tr, n);
	ecounts(&w, cnt, nE);
	pl->p->a->compact(K, V, ldk, kidx, m, pos, state, nst, sstride);
	merge(pl, &w, par, K, V, ldk, nE, m, cnt, &ema);
	kcounts(&w, cnt, nE, m);
	tauout(tr, nE, m, ema);
}

/* paged: the same on rows through the page table — the kept rows, once compacted, gathered into
** KK / KV (token stride d), merged there with the same kernels, the targets written back; the
** kernels see the same rows as on a contiguous cache, so the result is the same bit for bit */
void kr_pmnearest(kvcc_plan *pl, const double *par, const KrRows *rw, int n, const int32_t *kidx, int m, int32_t *pos,
                  float *state, int nst, int64_t sstride, int tid)
{
	int d = pl->lay.head_dim;
	size_t esz = pl->esz, row = (size_t)d * esz;
	Mws w;
	layout(pl, pl->mws[tid], &w);
	int nE = evicted(&w, rw, esz, d, n, kidx, m);
	float *cnt = cntrow(pl, state, nst, sstride), *tr = taurow(pl, state, nst, sstride);
	double ema = tauin(tr, n);
	ecounts(&w, cnt, nE);
	kr_pcompact(rw, esz, d, kidx, m, pos, state, nst, sstride);
	if (nE == 0 || m == 0)
		return;
	for (int j = 0; j < m; j++) {
		size_t o = (size_t)kr_row(rw, j) * esz;
		memcpy(w.KK + (size_t)j * row, rw->K + o, row);
		memcpy(w.KV + (size_t)j * row, rw->V + o, row);
	}
	merge(pl, &w, par, w.KK, w.KV, d, nE, m, cnt, &ema);
	kcounts(&w, cnt, nE, m);
	tauout(tr, nE, m, ema);
	for (int j = 0; j < m; j++)                /* the targets back (the others are unchanged) */
		if (w.off[j + 1] > w.off[j]) {
			size_t o = (size_t)kr_row(rw, j) * esz;
			memcpy(rw->K + o, w.KK + (size_t)j * row, row);
			memcpy(rw->V + o, w.KV + (size_t)j * row, row);
		}
}

/* issue 12 (session 10): the f32 merge similarity on AMX's counters of thread t's workspace zeroed
** (plan creation), and summed over the threads (kvcc_plan_mstats) */
void kr_mstat0(kvcc_plan *pl, int t)
{
	Mws w;
	layout(pl, pl->mws[t], &w);
	memset(w.st, 0, 4 * sizeof *w.st);
}

int kvcc_plan_mstats(const kvcc_plan *pl, int64_t st[3])
{
	if (!pl || !st)
		return kr_seterr(KVCC_EINVAL, "kvcc_plan_mstats: NULL argument");
	st[0] = st[1] = st[2] = 0;
	for (int t = 0; pl->mws && pl->p->h->merge == KA_MNEAREST && t < pl->threads; t++) {
		Mws w;
		layout(pl, pl->mws[t], &w);
		for (int k = 0; k < 3; k++)
			st[k] += w.st[k];
	}
	return 0;
}
