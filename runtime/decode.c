/*
** Decode (include/kvcc.h): kvcc_append writes one token per KV head of a layer; kvcc_decode_layer
** attends one query step over every (layer, head) with the generated split-KV kernel (chunks on
** the pool, online-softmax partials merged per head), and when the policy has an observe hook
** turns the logits into probabilities (generated probs) and runs the generated hook, which
** updates the per-token state in place.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include "runtime/rt.h"

KVCC_API int kvcc_append(kvcc_plan *pl, kvcc_cache *c, int layer, const void *k, const void *v, int32_t pos)
{
	if (!pl || !c || !c->K || !c->V || !c->len || !k || !v)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, cache, K, V, len, k, v)");
	const kvcc_layout *lay = &pl->lay;
	if (layer < 0 || layer >= lay->layers)
		return kr_seterr(KVCC_EINVAL, "layer %d outside 0..%d", layer, lay->layers - 1);
	int H = lay->kv_heads, cap = lay->capacity;
	const kvcc_policy *p = pl->p;
	for (int h = 0; h < H; h++) {
		int n = c->len[layer * H + h];
		if (n < 0 || n >= cap)
			return kr_seterr(KVCC_EINVAL, "append: (layer %d, head %d) holds %d tokens, capacity %d", layer, h, n, cap);
	}
	size_t row = (size_t)lay->head_dim * pl->esz;
	for (int h = 0; h < H; h++) {
		int k0 = layer * H + h, n = c->len[k0];
		size_t off = ((size_t)layer * lay->stride_layer + (size_t)h * lay->stride_head + (size_t)n * lay->stride_token) * pl->esz;
		memcpy((char *)c->K + off, (const char *)k + h * row, row);
		memcpy((char *)c->V + off, (const char *)v + h * row, row);
		if (c->pos)
			c->pos[(size_t)k0 * cap + n] = pos;
		if (c->state)
			for (int s = 0; s < p->h->nst; s++)
				c->state[((size_t)s * lay->layers * H + k0) * cap + n] = (float)p->st[s].init;
		c->len[k0] = n + 1;
	}
	return 0;
}

typedef struct Dec {
	kvcc_plan *pl;
	kvcc_cache *c;
	float *out;
	int layer, G, d, H, cs, chper;
	int step;                /* x.step of this call */
	int err;                 /* the observe hook's first error */
	char errmsg[300];
	pthread_mutex_t mu;
} Dec;

static void dec_chunk(void *arg, int task, int tid)
{
	(void)tid;
	Dec *D = arg;
	kvcc_plan *pl = D->pl;
	const kvcc_layout *lay = &pl->lay;
	int h = task / D->chper, ch = task % D->chper, G = D->G, d = D->d;
	int n = D->c->len[D->layer * D->H + h];
	float *st = pl->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
	for (int g = 0; g < G; g++)
		st[g] = -INFINITY, st[G + g] = 0;
	memset(st + 2 * G, 0, (size_t)G * d * sizeof(float));
	int64_t t0 = (int64_t)ch * D->cs, nt = n - t0 < D->cs ? n - t0 : D->cs;
	if (nt <= 0)
		return;
	size_t off = ((size_t)D->layer * lay->stride_layer + (size_t)h * lay->stride_head + (size_t)t0 * lay->stride_token) *
	             pl->esz;
	pl->p->a->decode((const char *)D->c->K + off, (const char *)D->c->V + off, lay->stride_token, nt,
	                 pl->qs + (size_t)h * G * d, pl->S + (size_t)h * G * pl->lds + t0, pl->lds, st);
}

static void dec_head(void *arg, int h, int tid)
{
	(void)tid;
	Dec *D = arg;
	kvcc_plan *pl = D->pl;
	const kvcc_artifact *A = pl->p->a;
	const kvcc_policy *p = pl->p;
	int G = D->G, d = D->d, k = D->layer * D->H + h, n = D->c->len[k];
	float *o = D->out + (size_t)h * G * d;
	float M[8], Li[8];
	for (int g = 0; g < G; g++) {
		float m = -INFINITY;
		for (int ch = 0; ch < D->chper; ch++) {
			const float *st = pl->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
			m = st[g] > m ? st[g] : m;
		}
		double l = 0;
		float *og = o + (size_t)g * d;
		memset(og, 0, (size_t)d * sizeof(float));
		for (int ch = 0; ch < D->chper && n > 0; ch++) {
			const float *st = pl->cst + ((size_t)h * pl->maxch + ch) * G * (2 + (size_t)d);
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
	float *S = pl->S + (size_t)h * G * pl->lds;
	for (int g = 0; g < G; g++)
		if (n > 0)
			A->probs(S + (size_t)g * pl->lds, n, M[g], Li[g]);
	/* the generated observe hook: its loops over this step's probabilities, then the states */
	const kvcc_layout *lay = &pl->lay;
	size_t off = ((size_t)D->layer * lay->stride_layer + (size_t)h * lay->stride_head) * pl->esz;
	kvcc_tmap_ctx c = {
		.vals = pl->oval + (size_t)h * p->h->nins, .par = pl->par, .K = (const char *)D->c->K + off,
		.V = (const char *)D->c->V + off, .pos = D->c->pos ? D->c->pos + (size_t)k * lay->capacity : NULL,
		.state = D->c->state ? D->c->state + (size_t)k * lay->capacity : NULL, .n = n, .ldk = lay->stride_token,
		.sstride = (int64_t)lay->layers * lay->kv_heads * lay->capacity, .layer = D->layer, .head = h,
		.layers = lay->layers, .heads = lay->kv_heads, .step = D->step, .attn = S, .lda = pl->lds,
	};
	int64_t lr = A->observe(&c);
	if (lr) {
		const KaIns *in = &p->ins[lr - 1];
		pthread_mutex_lock(&D->mu);
		if (!D->err) {
			snprintf(D->errmsg, sizeof D->errmsg, "%s:%u:%u: error: pooling kernel size must be a positive integer, "
			         "got %g", p->src, in->line, in->col, c.err);
			D->err = KVCC_EINVAL;
		}
		pthread_mutex_unlock(&D->mu);
	}
}

KVCC_API int kvcc_decode_layer(kvcc_plan *pl, kvcc_cache *c, int layer, const float *q, float *out)
{
	if (!pl || !c || !c->K || !c->V || !c->len || !q || !out)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, cache, K, V, len, q, out)");
	const kvcc_layout *lay = &pl->lay;
	const KaHdr *hd = pl->p->h;
	if (layer < 0 || layer >= lay->layers)
		return kr_seterr(KVCC_EINVAL, "layer %d outside 0..%d", layer, lay->layers - 1);
	if ((hd->flags & KA_FOBSERVE) && hd->nst && !c->state)
		return kr_seterr(KVCC_EINVAL, "policy %s keeps per-token state: pass cache->state ([%d][layers][kv_heads][capacity])",
		                 pl->p->name, hd->nst);
	int H = lay->kv_heads, G = hd->group, d = lay->head_dim, nmax = 0;
	long total = 0;
	for (int h = 0; h < H; h++) {
		int n = c->len[layer * H + h];
		if (n < 0 || n > lay->capacity)
			return kr_seterr(KVCC_EINVAL, "length %d of (layer %d, head %d) outside 0..%d", n, layer, h, lay->capacity);
		nmax = n > nmax ? n : nmax;
		total += n;
	}
	/* rounded (storage dtype, the reference semantics) and scaled queries */
	pl->p->a->qround(q, pl->qs, (int64_t)H * G * d);
	Dec D = { .pl = pl, .c = c, .out = out, .layer = layer, .G = G, .d = d, .H = H, .step = pl->step[layer] };
	/* split-KV: about two tasks per thread, chunks a multiple of the kernel's tile */
	int want = pl->threads > 1 && total >= 1024 ? (2 * pl->threads + H - 1) / H : 1;
	if (want > pl->maxch)
		want = pl->maxch;
	int cs = (nmax + want - 1) / want;
	cs = (cs + DTILE - 1) / DTILE * DTILE;
	if (cs < 256)
		cs = 256;
	D.cs = cs;
	D.chper = nmax > 0 ? (nmax + cs - 1) / cs : 1;
	kr_pool_run(&pl->pool, dec_chunk, &D, H * D.chper);
	pthread_mutex_init(&D.mu, NULL);
	if (total >= 1024 || (hd->flags & KA_FOBSERVE))
		kr_pool_run(&pl->pool, dec_head, &D, H);
	else
		for (int h = 0; h < H; h++)
			dec_head(&D, h, 0);
	pthread_mutex_destroy(&D.mu);
	if (D.err)
		return kr_seterr(D.err, "%s", D.errmsg);
	pl->step[layer]++;
	return 0;
}

