/*
** Decode (include/kvcc.h): kvcc_append(_batch) writes one token per KV head of a layer (paged:
** into the slot's page); kvcc_decode_layer / kvcc_decode_batch
** attends one query step over every (layer, head) with the generated split-KV kernel (chunks on
** the pool, online-softmax partials merged per head), and when the policy has an observe hook
** turns the logits into probabilities (generated probs) and runs the generated hook, which
** updates the per-token state in place. A batch runs in waves of up to pl->lanes sequences, each
** wave one pool run of its (sequence, head, chunk) tasks and one of its (sequence, head) merges;
** every sequence has its lane's workspaces and is chunked as it would be alone.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include "runtime/rt.h"

static int run_append_batch(kvcc_plan *pl, kvcc_batch *b, int layer, const void *k, const void *v,
                               const int32_t *pos)
{
	if (!pl || !b || !k || !v || !pos)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, batch, k, v, pos)");
	const kvcc_layout *lay = &pl->lay;
	if (layer < 0 || layer >= lay->layers)
		return kr_seterr(KVCC_EINVAL, "layer %d outside 0..%d", layer, lay->layers - 1);
	int rc = kr_batch_check(pl, b, layer);
	if (rc)
		return rc;
	int H = lay->kv_heads, cap = lay->capacity;
	const kvcc_policy *p = pl->p;
	size_t row = (size_t)lay->head_dim * pl->esz;
	for (int s = 0; s < b->nseq; s++) {
		kvcc_seq *q = &b->seq[s];
		for (int h = 0; h < H; h++) {
			int k0 = layer * H + h, n = q->len[k0];
			KrRows w;
			kr_rows(pl, b, s, layer, h, &w);
			size_t off = (size_t)kr_row(&w, n) * pl->esz, in = ((size_t)s * H + h) * row;
			memcpy(w.K + off, (const char *)k + in, row);
			memcpy(w.V + off, (const char *)v + in, row);
			if (q->pos)
				q->pos[(size_t)k0 * cap + n] = pos[s];
			if (q->state)
				for (int st = 0; st < p->h->nst; st++)
					q->state[((size_t)st * lay->layers * H + k0) * cap + n] = (float)p->st[st].init;
			q->len[k0] = n + 1;
		}
	}
	return 0;
}

/* one call at a time per plan (kr_enter) */
KVCC_API int kvcc_append_batch(kvcc_plan *pl, kvcc_batch *b, int layer, const void *k, const void *v,
                               const int32_t *pos)
{
	if (!pl)
		return kr_seterr(KVCC_EINVAL, "null plan");
	if (kr_enter(pl))
		return KVCC_EBUSY;
	int rc = run_append_batch(pl, b, layer, k, v, pos);
	kr_leave(pl);
	return rc;
}

KVCC_API int kvcc_append(kvcc_plan *pl, kvcc_cache *c, int layer, const void *k, const void *v, int32_t pos)
{
	kvcc_seq s;
	kvcc_batch b;
	if (!k || !v)
		return kr_seterr(KVCC_EINVAL, "null argument (k or v)");
	int rc = kr_single(pl, c, NULL, "kvcc_append_batch", &s, &b);
	return rc ? rc : kvcc_append_batch(pl, &b, layer, k, v, &pos);
}

typedef struct Dec {
	kvcc_plan *pl;
	kvcc_batch *b;
	int s;                   /* the sequence */
	int32_t *len;            /* its lengths */
	float *out;
	float *S, *qs, *cst;     /* its lane's workspaces (kvcc_plan: S, qs, cst, oval) */
	float **oval;
	int layer, G, d, H, cs, chper;
	int pages;               /* chunks over all heads (dec_pages), else per head (dec_chunk) */
	int ntask;               /* chunk tasks */
	int step;                /* x.step of this call */
	int err;                 /* the observe hook's first error */
	char errmsg[300];
} Dec;

/* The sequences of one decode pool run (a wave of up to pl->lanes): task t of the chunk run is
** task t - first[i] of sequence i, likewise for the head run (H tasks each). */
typedef struct Wave {
	Dec d[KR_LANES];
	int first[KR_LANES + 1];
	int n, H;
	pthread_mutex_t mu;
} Wave;

/* one decode kernel call on tokens t .. t+nt-1 of head h: with the merge count bias
** (KaHdr.cbias) and the sequence's state given, decodeb with the count row at token t (no
** state: every count is 1, log 1 = 0, the plain kernel) */
static void dcall(const Dec *D, int h, int64_t t, const void *K, const void *V, int64_t ldk, int64_t nt,
                  const float *q, float *S, float *st)
{
	const kvcc_plan *pl = D->pl;
	const KaHdr *hd = pl->p->h;
	const float *state = D->b->seq[D->s].state;
	if (hd->cbias && state) {
		const kvcc_layout *lay = &pl->lay;
		size_t sstride = (size_t)lay->layers * lay->kv_heads * lay->capacity;
		const float *cnt = state + (size_t)hd->cnt * sstride + ((size_t)D->layer * D->H + h) * lay->capacity + t;
		pl->p->a->decodeb(K, V, ldk, nt, q, S, pl->lds, st, cnt);
	} else
		pl->p->a->decode(K, V, ldk, nt, q, S, pl->lds, st);
}

static void dec_chunk(void *arg, int task, int tid)
{
	Dec *D = arg;
	kvcc_plan *pl = D->pl;
	const kvcc_layout *lay = &pl->lay;
	int h = task / D->chper, ch = task % D->chper, G = D->G, d = D->d;
	int n = D->len[D->layer * D->H + h];
	float *st = D->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
	for (int g = 0; g < G; g++)
		st[g] = -INFINITY, st[G + g] = 0;
	memset(st + 2 * G, 0, (size_t)G * d * sizeof(float));
	int64_t t0 = (int64_t)ch * D->cs, nt = n - t0 < D->cs ? n - t0 : D->cs;
	if (nt <= 0)
		return;
	KrRows w;
	kr_rows(pl, D->b, D->s, D->layer, h, &w);
	if (!w.tab) {
		size_t off = (size_t)(t0 * lay->stride_token) * pl->esz;
		dcall(D, h, t0, w.K + off, w.V + off, lay->stride_token, nt, D->qs + (size_t)h * G * d,
		      D->S + (size_t)h * G * pl->lds + t0, st);
		return;
	}
	/* paged: page by page when pages are whole kernel tiles (runs end on a tile boundary, so the
	** kernel's -inf padding of S stays inside this chunk), else staged blocks of KR_STAGE rows */
	char *stg = pl->stage[tid];
	for (int64_t t = t0; t < t0 + nt;) {
		int64_t run = t0 + nt - t, ldk;
		if (w.P % DTILE == 0 && w.P - t % w.P < run)
			run = w.P - t % w.P;
		if (run > KR_STAGE)
			run = KR_STAGE;
		const char *V;
		if (w.P % DTILE == 0)
			kr_prefetch(&w, pl->esz, d, t + 2 * w.P, t + 3 * w.P - t % w.P < t0 + nt ? t + 3 * w.P - t % w.P : t0 + nt, 1);
		const char *K = kr_span(&w, pl->esz, d, t, run, stg, &ldk, &V, stg + (size_t)KR_STAGE * d * pl->esz);
		dcall(D, h, t, K, V, ldk, run, D->qs + (size_t)h * G * d, D->S + (size_t)h * G * pl->lds + t, st);
		t += run;
	}
}

/* Paged pools whose token rows hold every head (vLLM's [page][row][head][chan]) and pages of
** whole kernel tiles: one task per chunk, page by page, every head of a page in turn, so a page
** is read in one sweep (head by head it would be read in H strided passes); the block after next
** is prefetched (pages are scattered, the hardware prefetcher does not follow them). */
static void dec_pages(void *arg, int ch, int tid)
{
	(void)tid;
	Dec *D = arg;
	kvcc_plan *pl = D->pl;
	int G = D->G, d = D->d, H = D->H, nmax = 0;
	const int32_t *len = D->len + D->layer * H;
	KrRows w[256];
	for (int h = 0; h < H; h++) {
		float *st = D->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
		for (int g = 0; g < G; g++)
			st[g] = -INFINITY, st[G + g] = 0;
		memset(st + 2 * G, 0, (size_t)G * d * sizeof(float));
		kr_rows(pl, D->b, D->s, D->layer, h, &w[h]);
		nmax = len[h] > nmax ? len[h] : nmax;
	}
	/* blocks of about 32 KiB of rows (all heads), whole kernel tiles, never across a page */
	int64_t t0 = (int64_t)ch * D->cs, end = nmax - t0 < D->cs ? nmax : t0 + D->cs, P = w[0].P;
	int64_t blk = (int64_t)32768 / ((int64_t)H * d * (int64_t)pl->esz) / DTILE * DTILE;
	blk = blk < DTILE ? DTILE : blk > P ? P : blk;
	for (int64_t t = t0; t < end;) {
		int64_t run = P - t % P < end - t ? P - t % P : end - t;
		run = run > blk ? blk : run;
		for (int h = 0; h < H; h++) {
			kr_prefetch(&w[h], pl->esz, d, t + 2 * blk, t + 3 * blk < len[h] ? t + 3 * blk : len[h], 1);
			int64_t r = len[h] - t < run ? len[h] - t : run;
			if (r <= 0)
				continue;
			size_t off = (size_t)kr_row(&w[h], t) * pl->esz;
			float *st = D->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
			dcall(D, h, t, w[h].K + off, w[h].V + off, w[h].ldk, r, D->qs + (size_t)h * G * d,
			      D->S + (size_t)h * G * pl->lds + t, st);
		}
		t += run;
	}
}

static void dec_head(Dec *D, pthread_mutex_t *mu, int h, int tid)
{
	kvcc_plan *pl = D->pl;
	const kvcc_artifact *A = pl->p->a;
	const kvcc_policy *p = pl->p;
	int G = D->G, d = D->d, k = D->layer * D->H + h, n = D->len[k];
	float *o = D->out + (size_t)h * G * d;
	float M[8], Li[8];
	for (int g = 0; g < G; g++) {
		float m = -INFINITY;
		for (int ch = 0; ch < D->chper; ch++) {
			const float *st = D->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
			m = st[g] > m ? st[g] : m;
		}
		double l = 0;
		float *og = o + (size_t)g * d;
		memset(og, 0, (size_t)d * sizeof(float));
		for (int ch = 0; ch < D->chper && n > 0; ch++) {
			const float *st = D->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
			if (st[G + g] == 0)
				continue;
			float w = expf(st[g] - m);
			l += (double)st[G + g] * w;
			const float *acc = st + 2 * G + (size_t)g * d;
			for (int c = 0; c < d; c++)
				og[c] += acc[c] * w;
		}
		float il = l > 0 ? (float)(1.0 / l) : 0;
		for (int c = 0; c < d; c++)
			og[c] *= il;
		M[g] = m, Li[g] = il;
	}
	if (!(p->h->flags & KA_FOBSERVE))
		return;
	float *S = D->S + (size_t)h * G * pl->lds;
	for (int g = 0; g < G; g++)
		if (n > 0)
			A->probs(S + (size_t)g * pl->lds, n, M[g], Li[g]);
	/* the generated observe hook: its loops over this step's probabilities, then the states */
	const kvcc_layout *lay = &pl->lay;
	kvcc_seq *q = &D->b->seq[D->s];
	KrRows w;
	kr_rows(pl, D->b, D->s, D->layer, h, &w);
	if (w.tab)
		kr_rowoffs(&w, n, pl->roff[tid]);
	kvcc_tmap_ctx c = {
		.vals = D->oval + (size_t)h * p->h->nins, .par = pl->par, .K = w.K, .V = w.V, .roff = w.tab ? pl->roff[tid] : NULL,
		.pos = q->pos ? q->pos + (size_t)k * lay->capacity : NULL,
		.state = q->state ? q->state + (size_t)k * lay->capacity : NULL, .n = n, .ldk = lay->stride_token,
		.sstride = (int64_t)lay->layers * lay->kv_heads * lay->capacity, .layer = D->layer, .head = h,
		.layers = lay->layers, .heads = lay->kv_heads, .step = D->step, .attn = S, .lda = pl->lds,
		.wts = pl->wts, .nout = pl->nout,
	};
	int64_t lr = A->observe(&c);
	if (lr) {
		const KaIns *in = &p->ins[(lr < 0 ? -lr : lr) - 1];
		pthread_mutex_lock(mu);
		if (!D->err) {
			snprintf(D->errmsg, sizeof D->errmsg, "%s:%u:%u: error: %s, got %g", p->src, in->line, in->col,
			         lr < 0 ? KR_SEGMSG : "pooling kernel size must be a positive integer", c.err);
			D->err = KVCC_EINVAL;
		}
		pthread_mutex_unlock(mu);
	}
}

/* the sequence of task t of a wave run (tasks of sequence i: first[i] .. first[i+1]-1) */
static Dec *wave_dec(Wave *W, int *t)
{
	int i = 0;
	while (*t >= W->first[i + 1])
		i++;
	*t -= W->first[i];
	return &W->d[i];
}

/* a sequence whose heads are one chunk each: its chunk task merges the head and runs the
** observe hook right after the kernel (S still in the cache, no second pool run for it) */
static int dec_fused(const Dec *D)
{
	return !D->pages && D->chper == 1;
}

static void wave_chunk(void *arg, int t, int tid)
{
	Wave *W = arg;
	Dec *D = wave_dec(W, &t);
	if (D->pages)
		dec_pages(D, t, tid);
	else
		dec_chunk(D, t, tid);
	if (dec_fused(D))
		dec_head(D, &W->mu, t, tid);
}

static void wave_head(void *arg, int t, int tid)
{
	Wave *W = arg;
	Dec *D = &W->d[t / W->H];
	if (!dec_fused(D))
		dec_head(D, &W->mu, t % W->H, tid);
}

/* Sequence s of b as lane `lane` of a wave (checked): its rounded queries, its split of the
** keys into chunks (the same as it would get alone, so a batch decodes as single calls do). */
static long dec_setup(kvcc_plan *pl, kvcc_batch *b, int s, int lane, int layer, const float *q, float *out, Dec *D)
{
	const kvcc_layout *lay = &pl->lay;
	const KaHdr *hd = pl->p->h;
	int H = lay->kv_heads, G = hd->group, d = lay->head_dim, nmax = 0;
	int32_t *len = b->seq[s].len;
	long total = 0;
	for (int h = 0; h < H; h++) {
		int n = len[layer * H + h];
		nmax = n > nmax ? n : nmax;
		total += n;
	}
	*D = (Dec){ .pl = pl, .b = b, .s = s, .len = len, .out = out, .layer = layer, .G = G, .d = d, .H = H,
	            .step = b->seq[s].step ? b->seq[s].step[layer] : pl->step[layer],
	            .S = pl->S + (size_t)lane * H * G * pl->lds, .qs = pl->qs + (size_t)lane * H * G * d,
	            .cst = pl->cst + (size_t)lane * H * pl->maxch * G * (2 + (size_t)d),
	            .oval = pl->oval + (size_t)lane * H * hd->nins };
	/* rounded (storage dtype, the reference semantics) and scaled queries */
	pl->p->a->qround(q, D->qs, (int64_t)H * G * d);
	/* split-KV: the config's tasks per thread (2 by default) and smallest chunk (256) for the
	** bucket of the longest head, chunks a multiple of the kernel's tile; a paged pool with
	** whole tiles per page splits over all heads at once */
	int bk = nmax < 4096 ? 0 : nmax < 16384 ? 1 : nmax < 65536 ? 2 : 3;
	int tpt = hd->dtasks[bk] ? hd->dtasks[bk] : 2, cmin = hd->dmin[bk] ? hd->dmin[bk] : 256;
	int pages = pl->paged && pl->pg.page_size % DTILE == 0 && lay->stride_head < lay->stride_token && H <= 256;
	int want = pl->threads > 1 && total >= 1024 ? (tpt * pl->threads + (pages ? 0 : H - 1)) / (pages ? 1 : H) : 1;
	if (want > pl->maxch)
		want = pl->maxch;
	int cs = (nmax + want - 1) / want;
	cs = (cs + DTILE - 1) / DTILE * DTILE;
	if (cs < cmin)
		cs = cmin;
	D->cs = cs;
	D->chper = nmax > 0 ? (nmax + cs - 1) / cs : 1;
	D->pages = pages;
	D->ntask = pages ? D->chper : H * D->chper;
	return total;
}

/* Sequences s0 .. s0+n-1 (n <= pl->lanes) in one pool run of their chunks and one of their
** heads (merge of the chunk partials, the observe hook). */
static int dec_wave(kvcc_plan *pl, kvcc_batch *b, int s0, int n, int layer, const float *q, float *out)
{
	const KaHdr *hd = pl->p->h;
	int H = pl->lay.kv_heads;
	size_t nq = (size_t)H * hd->group * pl->lay.head_dim;
	Wave W;
	long total = 0;
	W.n = n, W.H = H, W.first[0] = 0;
	for (int i = 0; i < n; i++) {
		total += dec_setup(pl, b, s0 + i, i, layer, q + (s0 + i) * nq, out + (s0 + i) * nq, &W.d[i]);
		W.first[i + 1] = W.first[i] + W.d[i].ntask;
	}
	int split = 0;
	for (int i = 0; i < n; i++)
		split |= !dec_fused(&W.d[i]);
	pthread_mutex_init(&W.mu, NULL);
	kr_pool_run(&pl->pool, wave_chunk, &W, W.first[n]);
	if (split && (total >= 1024 || (hd->flags & KA_FOBSERVE)))
		kr_pool_run(&pl->pool, wave_head, &W, n * H);
	else if (split)
		for (int t = 0; t < n * H; t++)
			wave_head(&W, t, 0);
	pthread_mutex_destroy(&W.mu);
	for (int i = 0; i < n; i++)
		if (W.d[i].err)
			return kr_seterr(W.d[i].err, "%s", W.d[i].errmsg);
	return 0;
}

static int run_decode_batch(kvcc_plan *pl, kvcc_batch *b, int layer, const float *q, float *out)
{
	if (!pl || !b || !q || !out)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, batch, q, out)");
	const kvcc_layout *lay = &pl->lay;
	const KaHdr *hd = pl->p->h;
	if (layer < 0 || layer >= lay->layers)
		return kr_seterr(KVCC_EINVAL, "layer %d outside 0..%d", layer, lay->layers - 1);
	int rc = kr_batch_check(pl, b, -1);
	if (rc || ((hd->flags & KA_FOBSERVE) && (rc = kr_weights_check(pl)) != 0))
		return rc;
	for (int s = 0; s < b->nseq; s++)
		if ((hd->flags & KA_FOBSERVE) && hd->nst && !b->seq[s].state)
			return kr_seterr(KVCC_EINVAL, "policy %s keeps per-token state: pass cache->state ([%d][layers][kv_heads][capacity])",
			                 pl->p->name, hd->nst);
	/* (sequence, head, chunk) tasks of up to pl->lanes sequences per pool run */
	for (int s = 0; s < b->nseq; s += pl->lanes) {
		int n = b->nseq - s < pl->lanes ? b->nseq - s : pl->lanes;
		if ((rc = dec_wave(pl, b, s, n, layer, q, out)) != 0)
			return rc;
	}
	pl->step[layer]++;
	for (int s = 0; s < b->nseq; s++)
		if (b->seq[s].step)
			b->seq[s].step[layer]++;
	return 0;
}

/* one call at a time per plan (kr_enter) */
KVCC_API int kvcc_decode_batch(kvcc_plan *pl, kvcc_batch *b, int layer, const float *q, float *out)
{
	if (!pl)
		return kr_seterr(KVCC_EINVAL, "null plan");
	if (kr_enter(pl))
		return KVCC_EBUSY;
	int rc = run_decode_batch(pl, b, layer, q, out);
	kr_leave(pl);
	return rc;
}

KVCC_API int kvcc_decode_layer(kvcc_plan *pl, kvcc_cache *c, int layer, const float *q, float *out)
{
	kvcc_seq s;
	kvcc_batch b;
	if (!q || !out)
		return kr_seterr(KVCC_EINVAL, "null argument (q or out)");
	int rc = kr_single(pl, c, NULL, "kvcc_decode_batch", &s, &b);
	return rc ? rc : kvcc_decode_batch(pl, &b, layer, q, out);
}
