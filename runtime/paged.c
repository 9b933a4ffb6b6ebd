/*
** Batches and paged caches (include/kvcc.h, DESIGN §7 "Layouts"): the checks of a call's
** sequences, pools and page tables (nothing is touched before they pass), where the rows of a
** (sequence, layer, head) are, and the few moves the generated kernels cannot make through a
** page table: rows gathered into a staging buffer for kernels that take one token stride,
** paged compaction, and the freed pages.
**
** A table is checked entry by entry for the entries in use (dense tables: ceil(longest length /
** page size); CSR tables: all of theirs): every id inside the pool and no id twice in one call
** (pl->pmark, a byte per page, cleared again before returning). Nothing here allocates.
*/
#include <stdio.h>
#include <string.h>
#include "runtime/rt.h"

/* which (sequence, layer, head)s table i maps: instances k0..k1-1 of sequence *s */
static void tabinsts(const kvcc_plan *pl, int i, int *s, int *k0, int *k1)
{
	int LH = pl->lay.layers * pl->lay.kv_heads;
	if (pl->pg.tables == KVCC_TABLE_PER_HEAD)
		*s = i / LH, *k0 = i % LH, *k1 = *k0 + 1;
	else
		*s = i, *k0 = 0, *k1 = LH;
}

/* "sequence 2" or "sequence 2 (layer 1, head 3)" */
static const char *tabname(const kvcc_plan *pl, int i, char *buf, size_t nb)
{
	int s, k0, k1;
	tabinsts(pl, i, &s, &k0, &k1);
	if (pl->pg.tables == KVCC_TABLE_PER_HEAD)
		snprintf(buf, nb, "sequence %d (layer %d, head %d)", s, k0 / pl->lay.kv_heads, k0 % pl->lay.kv_heads);
	else
		snprintf(buf, nb, "sequence %d", s);
	return buf;
}

/* the tables of a paged batch into pl->tabp/tabn/tabu, lengths + extra against their capacity */
static int tables(kvcc_plan *pl, const kvcc_batch *b, int xl)
{
	int P = pl->pg.page_size, mp = pl->pg.max_pages;
	int ntab = pl->pg.tables == KVCC_TABLE_PER_HEAD ? b->nseq * pl->lay.layers * pl->lay.kv_heads : b->nseq;
	char nm[96];
	for (int i = 0; i < ntab; i++) {
		const int32_t *t;
		int64_t n;
		if (b->table)
			t = b->table + (size_t)i * mp, n = mp;
		else {
			int64_t a = b->indptr[i], e = b->indptr[i + 1];
			if (a < 0 || e < a || e - a > mp)
				return kr_seterr(KVCC_EINVAL, "%s: indptr %lld..%lld is not a table of at most %d pages",
				                 tabname(pl, i, nm, sizeof nm), (long long)a, (long long)e, mp);
			t = b->indices + a, n = e - a;
		}
		int64_t tcap = n * P;
		if (!b->table && b->last_page_len && n > 0) {
			int lp = b->last_page_len[i];
			if (lp < 1 || lp > P)
				return kr_seterr(KVCC_EINVAL, "%s: last_page_len %d outside 1..%d", tabname(pl, i, nm, sizeof nm), lp, P);
			tcap = (n - 1) * P + lp;
		}
		int s, k0, k1;
		tabinsts(pl, i, &s, &k0, &k1);
		int64_t maxn = 0;
		for (int k = k0; k < k1; k++) {
			int64_t n1 = b->seq[s].len[k] + (k / pl->lay.kv_heads == xl);
			maxn = n1 > maxn ? n1 : maxn;
		}
		if (maxn > tcap)
			return kr_seterr(KVCC_EINVAL, "%s: %lld tokens, but its page table holds %lld (%lld pages of %d)",
			                 tabname(pl, i, nm, sizeof nm), (long long)maxn, (long long)tcap, (long long)n, P);
		pl->tabp[i] = t, pl->tabn[i] = (int32_t)n;
		pl->tabu[i] = b->table ? (int32_t)((maxn + P - 1) / P) : (int32_t)n;
	}
	/* every page in use once, inside the pool */
	int rc = 0, stop = ntab, stopj = 0;
	for (int i = 0; i < ntab && !rc; i++)
		for (int j = 0; j < pl->tabu[i]; j++) {
			int32_t id = pl->tabp[i][j];
			if (id < 0 || id >= pl->pg.num_pages || pl->pmark[id]) {
				rc = kr_seterr(KVCC_EINVAL, id < 0 || id >= pl->pg.num_pages ?
				               "%s: page id %d (table entry %d) outside the pool 0..%d" :
				               "%s: page %d (table entry %d) is used twice in one call (pages are not shared)",
				               tabname(pl, i, nm, sizeof nm), id, j, pl->pg.num_pages - 1);
				stop = i, stopj = j;
				break;
			}
			pl->pmark[id] = 1;
		}
	for (int i = 0; i <= stop && i < ntab; i++)
		for (int j = 0; j < (i == stop ? stopj : pl->tabu[i]); j++) {
			int32_t id = pl->tabp[i][j];
			if (id >= 0 && id < pl->pg.num_pages)
				pl->pmark[id] = 0;
		}
	return rc;
}

KC_FUNC int kr_batch_check(kvcc_plan *pl, const kvcc_batch *b, int xl)
{
	const kvcc_layout *lay = &pl->lay;
	int L = lay->layers, H = lay->kv_heads;
	if (!b || !b->seq || b->nseq < 1 || b->nseq > pl->max_seqs)
		return kr_seterr(KVCC_EINVAL, "batch of %d sequences (%s), the plan takes 1..%d", b ? b->nseq : 0,
		                 b && b->seq ? "given" : "null", pl->max_seqs);
	for (int s = 0; s < b->nseq; s++) {
		const kvcc_seq *q = &b->seq[s];
		char sq[32] = "";
		if (b->nseq > 1)
			snprintf(sq, sizeof sq, "sequence %d: ", s);
		if (!q->len || (!pl->paged && (!q->K || !q->V)))
			return kr_seterr(KVCC_EINVAL, "%snull %s", sq, q->len ? "K or V" : "len");
		for (int k = 0; k < L * H; k++)
			if (q->len[k] < 0 || (int64_t)q->len[k] + (k / H == xl) > lay->capacity)
				return kr_seterr(KVCC_EINVAL, "%slength %d%s of (layer %d, head %d) outside 0..%d", sq, q->len[k],
				                 k / H == xl ? " + 1 (append)" : "", k / H, k % H, lay->capacity);
	}
	if (!pl->paged)
		return 0;
	if ((b->Kl || b->Vl) ? !(b->Kl && b->Vl) : !(b->K && b->V))
		return kr_seterr(KVCC_EINVAL, "paged batch: pass the page pools (K and V, or Kl and Vl)");
	for (int l = 0; l < L && b->Kl; l++)
		if (!b->Kl[l] || !b->Vl[l])
			return kr_seterr(KVCC_EINVAL, "paged batch: null pool of layer %d (Kl, Vl)", l);
	if (!b->Kl && L > 1 && lay->stride_layer == 0)
		return kr_seterr(KVCC_EINVAL, "paged batch: stride_layer is 0: pass per-layer pools (Kl, Vl)");
	if (!b->table && !(b->indptr && b->indices))
		return kr_seterr(KVCC_EINVAL, "paged batch: pass the page tables (table, or indptr and indices)");
	return tables(pl, b, xl);
}

KC_FUNC void kr_rows(const kvcc_plan *pl, const kvcc_batch *b, int s, int l, int h, KrRows *w)
{
	const kvcc_layout *lay = &pl->lay;
	size_t esz = pl->esz;
	w->ldk = lay->stride_token;
	if (!pl->paged) {
		size_t off = ((size_t)l * lay->stride_layer + (size_t)h * lay->stride_head) * esz;
		w->K = (char *)b->seq[s].K + off, w->V = (char *)b->seq[s].V + off;
		w->tab = NULL, w->P = 1, w->sp = 0;
		return;
	}
	char *K = b->Kl ? (char *)b->Kl[l] : (char *)b->K + (size_t)l * lay->stride_layer * esz;
	char *V = b->Vl ? (char *)b->Vl[l] : (char *)b->V + (size_t)l * lay->stride_layer * esz;
	w->K = K + (size_t)h * lay->stride_head * esz, w->V = V + (size_t)h * lay->stride_head * esz;
	int i = pl->pg.tables == KVCC_TABLE_PER_HEAD ? (s * lay->layers + l) * lay->kv_heads + h : s;
	w->tab = pl->tabp[i], w->P = pl->pg.page_size, w->sp = pl->pg.stride_page;
}

KC_FUNC void kr_rowoffs(const KrRows *w, int64_t n, int64_t *ro)
{
	for (int64_t t0 = 0; t0 < n; t0 += w->P) {
		int64_t base = (int64_t)w->tab[t0 / w->P] * w->sp, e = n - t0 < w->P ? n - t0 : w->P;
		for (int64_t j = 0; j < e; j++)
			ro[t0 + j] = base + j * w->ldk;
	}
}

/* n rows of rowb bytes, source stride ss, packed into dst (the common row sizes inline) */
static void rowcopy(char *dst, const char *src, size_t rowb, size_t ss, int64_t n)
{
#define RC(B) case B: for (int64_t j = 0; j < n; j++) memcpy(dst + j * B, src + j * ss, B); return;
	switch (rowb) {
	RC(128) RC(256) RC(512)
	default:
		for (int64_t j = 0; j < n; j++)
			memcpy(dst + j * rowb, src + j * ss, rowb);
	}
#undef RC
}

KC_FUNC const char *kr_span(const KrRows *w, size_t esz, int d, int64_t t0, int64_t nt, char *st, int64_t *ldk,
                            const char **V, char *Vst)
{
	if (!w->tab || t0 % w->P + nt <= w->P) {      /* one stride: straight from the cache */
		size_t off = (size_t)kr_row(w, t0) * esz;
		*ldk = w->ldk;
		if (V)
			*V = w->V + off;
		return w->K + off;
	}
	size_t rowb = (size_t)d * esz;
	for (int64_t t = t0; t < t0 + nt;) {          /* page by page */
		int64_t r = t % w->P, run = w->P - r < t0 + nt - t ? w->P - r : t0 + nt - t;
		size_t off = (size_t)kr_row(w, t) * esz, o = (size_t)(t - t0) * rowb;
		if (w->ldk == d) {
			memcpy(st + o, w->K + off, (size_t)run * rowb);
			if (Vst)
				memcpy(Vst + o, w->V + off, (size_t)run * rowb);
		} else {
			rowcopy(st + o, w->K + off, rowb, (size_t)w->ldk * esz, run);
			if (Vst)
				rowcopy(Vst + o, w->V + off, rowb, (size_t)w->ldk * esz, run);
		}
		t += run;
	}
	*ldk = d;
	if (V)
		*V = Vst;
	return st;
}

KC_FUNC void kr_prefetch(const KrRows *w, size_t esz, int d, int64_t t, int64_t end, int v)
{
	size_t rowb = (size_t)d * esz;
	while (t < end) {
		int64_t e = end - t < w->P - t % w->P ? end - t : w->P - t % w->P;
		size_t off = (size_t)kr_row(w, t) * esz, ld = (size_t)w->ldk * esz;
		for (int64_t j = 0; j < e; j++, off += ld)
			for (size_t c = 0; c < rowb; c += 64) {
				if (v) {   /* decode: K and V into L1 (prefetcht0: paged decode 1.05-1.09x of contiguous
				              in CPU time, 1.10-1.16x with prefetcht2; bench-paged, issue 14) */
					__builtin_prefetch(w->K + off + c, 0, 3);
					__builtin_prefetch(w->V + off + c, 0, 3);
				} else
					__builtin_prefetch(w->K + off + c, 0, 1);
			}
		t += e;
	}
}

/* one row of rowb bytes (the common sizes inline) */
static inline void row1(char *dst, const char *src, size_t rowb)
{
	switch (rowb) {
	case 128: memcpy(dst, src, 128); return;
	case 256: memcpy(dst, src, 256); return;
	case 512: memcpy(dst, src, 512); return;
	default: memcpy(dst, src, rowb);
	}
}

#define KR_CPF 8             /* kr_pcompact: source rows prefetched this many moves ahead */

KC_FUNC void kr_pcompact(const KrRows *w, size_t esz, int d, const int32_t *idx, int64_t m, int32_t *pos,
                         float *state, int nst, int64_t sstride)
{
	size_t rowb = (size_t)d * esz;
	int64_t P = w->P, ip = 0, ir = 0, sp = 0, sr = 0, s0 = 0;   /* page and row of i and of the source */
	for (int64_t i = 0; i < m; i++, ir = ir + 1 == P ? (ip++, 0) : ir + 1) {
		int64_t src = idx[i];         /* idx[i] >= i, increasing: sources not yet overwritten */
		sr += src - s0, s0 = src;
		if (sr >= P)
			sp += sr / P, sr %= P;
		if (src == i)
			continue;
		if (i + KR_CPF < m) {         /* the source rows KR_CPF moves ahead: scattered pages */
			int64_t f = idx[i + KR_CPF];
			size_t fo = (size_t)((int64_t)w->tab[f / P] * w->sp + f % P * w->ldk) * esz;
			for (size_t c = 0; c < rowb; c += 64)
				__builtin_prefetch(w->K + fo + c, 0, 1), __builtin_prefetch(w->V + fo + c, 0, 1);
		}
		size_t to = (size_t)((int64_t)w->tab[ip] * w->sp + ir * w->ldk) * esz;
		size_t from = (size_t)((int64_t)w->tab[sp] * w->sp + sr * w->ldk) * esz;
		row1(w->K + to, w->K + from, rowb);
		row1(w->V + to, w->V + from, rowb);
		if (pos)
			pos[i] = pos[src];
		for (int s = 0; s < nst; s++)
			state[s * sstride + i] = state[s * sstride + src];
	}
}

KC_FUNC void kr_freed(kvcc_plan *pl, kvcc_batch *b)
{
	int P = pl->pg.page_size, LH = pl->lay.layers * pl->lay.kv_heads;
	int per = pl->pg.tables == KVCC_TABLE_PER_HEAD;
	for (int s = 0; s < b->nseq; s++) {
		kvcc_seq *q = &b->seq[s];
		int nf = 0;
		for (int i = per ? s * LH : s; i < (per ? (s + 1) * LH : s + 1); i++) {
			int ss, k0, k1, maxn = 0;
			tabinsts(pl, i, &ss, &k0, &k1);
			for (int k = k0; k < k1; k++)
				maxn = q->len[k] > maxn ? q->len[k] : maxn;
			int need = (maxn + P - 1) / P;
			for (int j = need; j < pl->tabu[i]; j++, nf++)
				if (q->freed)
					q->freed[nf] = pl->tabp[i][j];
			if (!b->table && b->last_page_len)
				b->last_page_len[i] = need ? maxn - (need - 1) * P : 0;
		}
		q->nfreed = nf;
	}
}

KC_FUNC int kr_single(const kvcc_plan *pl, kvcc_cache *c, const kvcc_obs *obs, const char *batchfn,
                      kvcc_seq *s, kvcc_batch *b)
{
	if (!pl || !c || !c->K || !c->V || !c->len)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, cache, K, V or len)");
	if (pl->paged)
		return kr_seterr(KVCC_EINVAL, "a paged plan: call %s with the page tables", batchfn);
	memset(s, 0, sizeof *s);
	memset(b, 0, sizeof *b);
	s->K = c->K, s->V = c->V, s->pos = c->pos, s->len = c->len, s->state = c->state;
	if (obs)
		s->obs = *obs;
	b->nseq = 1, b->seq = s;
	return 0;
}
