/*
** The GPU path of libkvcc_rt (include/kvcc.h, GPU section; doc/gpu.md).
**
** kvcc_gpu_plan_create finds the GPU blob (KVCC_GPU_SYMBOL) in the policy's shared object,
** checks it against the descriptor (kernels compiled from the same policy text, same
** specialization), loads the module through runtime/cuda.c (CUBIN for the device's sm, else PTX
** JIT with the driver's log; shared-memory opt-in) and allocates the device workspace, score and
** error buffers. kvcc_gpu_compress only fills the by-value KvgArgs and enqueues the launches.
*/
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/gpu.h"
#include "runtime/rt.h"

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return kr_seterr(code, "%s", msg);
}

static const char *dtname(int dt) { return dt == KVCC_F16 ? "f16" : dt == KVCC_BF16 ? "bf16" : "f32"; }

/* --- plan and run ------------------------------------------------------------------------ */

struct kvcc_gpu_plan {
	void *dl;                       /* the policy.so (a reference held while the plan lives) */
	const kvcc_gpu_header *h;
	KpCudaOut view;                 /* images point into the blob */
	KrCuda *m;
	kvcc_layout lay;
	int G, max_obs, npar, nst;
	int splits;                     /* split-KV decode blocks per instance (kvg_dec_splits) */
	double par[KVG_MAXPAR];
	void *ws, *scores, *err;        /* device buffers */
	/* batched and paged caches (issue 14) */
	int max_seqs, paged;
	kvcc_paging pg;
	void *plen, *pmap;              /* device scratch: [max_seqs][L][H] lengths, [num_pages] marks */
	/* the policy's weights (kvcc_gpu_plan_set_weight): packed f32 on the device as KaWeight says,
	** uploaded once per set call; the kernels read KvgArgs.wts */
	const kvcc_policy *p;
	float *wts;
	unsigned char *wset;            /* [nw] given */
	float *hwts;                    /* host copy of wts (an out axis' size given later lays it out again) */
	int64_t nout;                   /* the out axis' size (KaHdr.wout or the first data with one), 0: unknown */
	int *step;                      /* [layers] host: x.step of the next decode of each layer */
};

const void *kr_gpu_find(const kvcc_policy *p, void **dlp, char *why, size_t wn)
{
	*dlp = NULL;
	const char *name = kvcc_policy_name(p);
	Dl_info info;
	if (!name || !dladdr(name, &info) || !info.dli_fname) {
		snprintf(why, wn, "the policy is not backed by a shared object");
		return NULL;
	}
	void *dl = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
	const void *blob = dl ? dlsym(dl, KVCC_GPU_SYMBOL) : NULL;
	const kvcc_artifact *a = dl ? dlsym(dl, KVCC_DESC_SYMBOL) : NULL;
	if (!blob || !a) {
		snprintf(why, wn, "policy '%s' (%s) has no GPU kernels: compile it with `kvcc compile %s.lua -o %s.so "
		         "--gpu-arch sm_80,sm_90` (or kvcc_compile_so_gpu) and open that", name, info.dli_fname, name, name);
		if (dl)
			dlclose(dl);
		return NULL;
	}
	const kvcc_gpu_header *h = blob;
	if (h->magic == KVCC_GPU_MAGIC && h->kir_hash != a->desc->kir_hash) {
		snprintf(why, wn, "%s: the GPU kernels were compiled from another policy text than the CPU kernels",
		         info.dli_fname);
		dlclose(dl);
		return NULL;
	}
	*dlp = dl;
	return blob;
}

KrCuda *kr_gpu_module(kvcc_gpu_plan *pl) { return pl ? pl->m : NULL; }

KVCC_API void kvcc_gpu_plan_destroy(kvcc_gpu_plan *pl)
{
	if (!pl)
		return;
	kr_cuda_free(pl->ws), kr_cuda_free(pl->scores), kr_cuda_free(pl->err);
	kr_cuda_free(pl->plen), kr_cuda_free(pl->pmap), kr_cuda_free(pl->wts);
	free(pl->wset), free(pl->hwts);
	free(pl->step);
	kr_cuda_close(pl->m);
	if (pl->dl)
		dlclose(pl->dl);
	free(pl);
}

KVCC_API const char *kvcc_gpu_plan_image(const kvcc_gpu_plan *pl) { return pl && pl->m ? kr_cuda_image(pl->m) : NULL; }

KVCC_API int kvcc_gpu_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int device_ordinal,
                                  kvcc_gpu_plan **out)
{
	return kvcc_gpu_plan_create_batch(p, lay, NULL, 1, max_obs, device_ordinal, out);
}

KVCC_API int kvcc_gpu_plan_create_batch(kvcc_policy *p, const kvcc_layout *lay, const kvcc_paging *pg,
                                        int max_seqs, int max_obs, int device_ordinal, kvcc_gpu_plan **out)
{
	if (!out)
		return fail(KVCC_EINVAL, "null argument");
	*out = NULL;
	kvcc_spec s;
	if (!p || !lay || kvcc_policy_spec(p, &s) != 0)
		return fail(KVCC_EINVAL, "null argument");
	if (lay->dtype != s.dtype || lay->head_dim != s.head_dim)
		return fail(KVCC_ESPEC, "layout is %s head_dim %d, the policy was compiled for %s head_dim %d",
		            dtname(lay->dtype), lay->head_dim, dtname(s.dtype), s.head_dim);
	if (lay->layers < 1 || lay->kv_heads < 1 || lay->capacity < 1 || max_obs < 0 || device_ordinal < 0 ||
	    lay->stride_token < lay->head_dim || lay->stride_head < 1 || lay->stride_layer < 1)
		return fail(KVCC_EINVAL, "bad layout (layers %d, kv_heads %d, capacity %d, strides %lld/%lld/%lld), "
		            "max_obs %d or device %d", lay->layers, lay->kv_heads, lay->capacity,
		            (long long)lay->stride_layer, (long long)lay->stride_head, (long long)lay->stride_token, max_obs,
		            device_ordinal);
	if (max_seqs < 1 || max_seqs > 65536 || (uint64_t)max_seqs * lay->layers * lay->kv_heads * lay->capacity > (1ull << 40))
		return fail(KVCC_EINVAL, "bad max_seqs %d (1..65536, and max_seqs*layers*kv_heads*capacity up to 2^40)",
		            max_seqs);
	if (pg && kr_paging_ok(lay, pg) != 0)
		return KVCC_EINVAL;
	char why[3000];
	if (kr_cuda_driver_load(why, sizeof why) != 0)
		return fail(KVCC_EUNSUPPORTED, "%s", why);
	kvcc_gpu_plan *pl = calloc(1, sizeof *pl);
	if (!pl)
		return fail(KVCC_ENOMEM, "out of memory");
	int rc = 0;
	const void *blob = kr_gpu_find(p, &pl->dl, why, sizeof why);
	if (!blob) {
		rc = fail(KVCC_EUNSUPPORTED, "%s", why);
		goto out;
	}
	if (kr_gpu_view(blob, (size_t)-1, &pl->view, &pl->h, why, sizeof why) != 0) {
		rc = fail(KVCC_EARTIFACT, "%s", why);
		goto out;
	}
	if (pl->h->dtype != s.dtype || pl->h->head_dim != s.head_dim || pl->h->group != s.group) {
		rc = fail(KVCC_EARTIFACT, "GPU kernels are for %s head_dim %d group %d, the policy for %s %d %d",
		          dtname(pl->h->dtype), pl->h->head_dim, pl->h->group, dtname(s.dtype), s.head_dim,
		          s.group);
		goto out;
	}
	if (!pl->view.has_compress) {
		rc = fail(KVCC_EUNSUPPORTED, "policy '%s' has no compress kernels", kvcc_policy_name(p));
		goto out;
	}
	pl->npar = kvcc_param_count(p), pl->nst = kvcc_state_count(p);
	if (pl->npar > KVG_MAXPAR) {
		rc = fail(KVCC_EUNSUPPORTED, "%d params, the GPU path passes at most %d", pl->npar, KVG_MAXPAR);
		goto out;
	}
	for (int i = 0; i < pl->npar; i++)
		kvcc_param_info(p, i, NULL, &pl->par[i]);
	pl->lay = *lay, pl->G = s.group, pl->max_obs = max_obs;
	if (kr_cuda_open(&pl->view, device_ordinal, &pl->m, why, sizeof why) != 0) {
		rc = fail(KVCC_EUNSUPPORTED, "%s", why);
		goto out;
	}
	if (pg && !kr_cuda_has_paged(pl->m)) {
		rc = fail(KVCC_EARTIFACT, "the GPU kernels of policy '%s' predate paged caches: recompile it",
		          kvcc_policy_name(p));
		goto out;
	}
	pl->max_seqs = max_seqs, pl->paged = pg != NULL;
	if (!(pl->step = calloc((size_t)lay->layers, sizeof *pl->step))) {
		rc = fail(KVCC_ENOMEM, "out of memory");
		goto out;
	}
	if (pg)
		pl->pg = *pg;
	size_t L = (size_t)lay->layers, H = (size_t)lay->kv_heads, N = (size_t)lay->capacity, B = (size_t)max_seqs;
	int zero = 0;
	pl->splits = kvg_dec_splits(lay->capacity, (long long)max_seqs * lay->layers * lay->kv_heads);
	size_t wsb = kr_cuda_ws_bytes(pl->m, max_seqs * lay->layers, lay->kv_heads, lay->capacity, max_obs, pl->splits);
	pl->ws = kr_cuda_alloc(wsb);
	pl->scores = kr_cuda_alloc(B * L * H * N * sizeof(float));
	pl->err = kr_cuda_alloc(sizeof(int));
	if (!pl->ws || !pl->scores || !pl->err || kr_cuda_put(pl->err, &zero, sizeof zero) != 0) {
		rc = fail(KVCC_ENOMEM, "cannot allocate the GPU workspace (%zu bytes) and score buffer", wsb);
		goto out;
	}
	if (pg) {
		int *z = calloc((size_t)pg->num_pages, sizeof *z);
		pl->plen = kr_cuda_alloc(B * L * H * sizeof(int));
		pl->pmap = kr_cuda_alloc((size_t)pg->num_pages * sizeof(int));
		int bad = !z || !pl->plen || !pl->pmap || kr_cuda_put(pl->pmap, z, (size_t)pg->num_pages * sizeof *z) != 0;
		free(z);
		if (bad) {
			rc = fail(KVCC_ENOMEM, "cannot allocate the GPU page marks (%d pages)", pg->num_pages);
			goto out;
		}
	}
	pl->p = p;
	if (p->h->nw > 0) {                   /* NaN until given, like the CPU plan's buffer */
		pl->nout = p->h->wout;
		size_t nwf = kr_weights_size(p, lay, pl->nout);
		float *nan = kr_weights_relayout(p, lay, NULL, 0, pl->nout, NULL);
		pl->wset = calloc((size_t)p->h->nw, 1);
		pl->wts = kr_cuda_alloc((nwf + 1) * sizeof(float));
		pl->hwts = nan;
		int bad = !nan || !pl->wset || !pl->wts || kr_cuda_put(pl->wts, nan, (nwf + 1) * sizeof *nan) != 0;
		if (bad) {
			rc = fail(KVCC_ENOMEM, "cannot allocate the GPU weights (%zu floats)", nwf);
			goto out;
		}
	}
out:
	if (rc) {
		kvcc_gpu_plan_destroy(pl);
		return rc;
	}
	*out = pl;
	return 0;
}

int kr_gpu_args(kvcc_gpu_plan *pl, const kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args, KvgArgs *out)
{
	if (!pl || !c || !args)
		return fail(KVCC_EINVAL, "null argument");
	if (pl->paged)
		return fail(KVCC_EINVAL, "a paged GPU plan: call kvcc_gpu_compress_batch with the page tables");
	if (!c->K || !c->V || !c->len || !c->pos || (pl->nst && !c->state))
		return fail(KVCC_EINVAL, "the GPU path needs device pointers K, V, len, pos%s", pl->nst ? " and state" : "");
	int O = obs ? obs->nobs : 0;
	if (O < 0 || O > pl->max_obs || (O && !obs->Q))
		return fail(KVCC_EINVAL, "nobs %d (plan max_obs %d)%s", O, pl->max_obs, O && !obs->Q ? ", Q is NULL" : "");
	if (args->budget < 0 && !(args->ratio >= 0 && args->ratio < 1))
		return fail(KVCC_EINVAL, "ratio %g outside [0, 1)", args->ratio);
	if (pl->wset && kr_weights_given(pl->p, pl->wset) != 0)
		return KVCC_EINVAL;
	KvgArgs a;
	memset(&a, 0, sizeof a);
	a.wts = pl->wts, a.nout = (int)pl->nout;
	a.K = c->K, a.V = c->V, a.len = c->len, a.pos = c->pos, a.state = c->state;
	a.Q = O ? obs->Q : NULL, a.lse = O ? obs->lse : NULL, a.qpos = O ? obs->qpos : NULL;
	a.scores = args->scores ? args->scores : pl->scores;
	a.ws = pl->ws, a.err = pl->err;
	a.sL = pl->lay.stride_layer, a.sH = pl->lay.stride_head, a.sT = pl->lay.stride_token;
	a.ws_inst = kvg_ws_floats(&pl->view, pl->lay.capacity, O, pl->splits);
	a.splits = pl->splits;
	a.budget = args->budget >= 0 ? args->budget : -1;
	a.ratio = args->ratio;
	a.L = pl->lay.layers, a.H = pl->lay.kv_heads, a.N = pl->lay.capacity, a.O = O;
	for (int i = 0; i < pl->npar; i++)
		a.par[i] = args->params ? args->params[i] : pl->par[i];
	a.B = 1, a.alayer = -1;
	*out = a;
	return 0;
}

int kr_gpu_batch_args(const KrGpuShape *sh, const kvcc_gpu_batch *b, const kvcc_args *args, KvgArgs *out)
{
	const kvcc_layout *lay = &sh->lay;
	if (!b || !args)
		return fail(KVCC_EINVAL, "null argument (batch, args)");
	if (b->nseq < 1 || b->nseq > sh->max_seqs)
		return fail(KVCC_EINVAL, "batch of %d sequences, the plan takes 1..%d", b->nseq, sh->max_seqs);
	if (!b->len || !b->pos || (sh->nst && !b->state))
		return fail(KVCC_EINVAL, "the GPU batch needs device pointers len, pos%s", sh->nst ? " and state" : "");
	if (sh->paged ? !(b->K || b->Kl) || !(b->V || b->Vl) : !b->K || !b->V || b->Kl || b->Vl)
		return fail(KVCC_EINVAL, "%s", sh->paged ? "a paged GPU batch needs pools K, V or per-layer Kl, Vl" :
		            "a contiguous GPU batch needs K and V (no per-layer Kl, Vl)");
	if (sh->paged && !b->table && !(b->indptr && b->indices))
		return fail(KVCC_EINVAL, "a paged GPU batch needs a dense table or CSR indptr and indices");
	if (!sh->paged && (b->table || b->indptr || b->indices))
		return fail(KVCC_EINVAL, "page tables given to a contiguous GPU plan (create it with a kvcc_paging)");
	if (!sh->paged && b->nseq > 1 && b->stride_seq < (int64_t)lay->layers * lay->stride_layer)
		return fail(KVCC_EINVAL, "stride_seq %lld: sequences overlap (one is %lld elements)", (long long)b->stride_seq,
		            (long long)lay->layers * lay->stride_layer);
	int O = b->nobs;
	if (O < 0 || O > sh->max_obs || (O && !b->Q))
		return fail(KVCC_EINVAL, "nobs %d (plan max_obs %d)%s", O, sh->max_obs, O && !b->Q ? ", Q is NULL" : "");
	if (args->budget < 0 && !(args->ratio >= 0 && args->ratio < 1))
		return fail(KVCC_EINVAL, "ratio %g outside [0, 1)", args->ratio);
	KvgArgs a;
	memset(&a, 0, sizeof a);
	a.K = b->K, a.V = b->V, a.Kl = b->Kl, a.Vl = b->Vl, a.len = b->len, a.pos = b->pos, a.state = b->state;
	a.Q = O ? b->Q : NULL, a.lse = O ? b->lse : NULL, a.qpos = O ? b->qpos : NULL;
	a.scores = args->scores ? args->scores : sh->scores;
	a.ws = sh->ws, a.err = sh->err;
	a.sL = lay->stride_layer, a.sH = lay->stride_head, a.sT = lay->stride_token;
	a.ws_inst = kvg_ws_floats(sh->view, lay->capacity, O, sh->splits);
	a.splits = sh->splits;
	a.budget = args->budget >= 0 ? args->budget : -1;
	a.ratio = args->ratio;
	a.L = lay->layers, a.H = lay->kv_heads, a.N = lay->capacity, a.O = O;
	for (int i = 0; i < sh->npar; i++)
		a.par[i] = args->params ? args->params[i] : sh->par[i];
	a.B = b->nseq, a.alayer = -1;
	a.wts = sh->wts, a.nout = sh->nout;
	if (sh->paged) {
		const kvcc_paging *pg = &sh->pg;
		a.pt = b->table ? b->table : b->indices;
		a.ptr = b->table ? NULL : b->indptr;
		a.lpl = b->table ? NULL : b->last_page_len;
		a.plen = sh->plen, a.pmap = sh->pmap, a.freed = b->freed, a.nfreed = b->nfreed;
		a.sP = pg->stride_page, a.P = pg->page_size, a.pmax = pg->max_pages, a.npool = pg->num_pages;
		a.phead = pg->tables == KVCC_TABLE_PER_HEAD;
		a.fmax = a.phead ? lay->layers * lay->kv_heads * pg->max_pages : pg->max_pages;
	} else
		a.sB = b->stride_seq;
	*out = a;
	return 0;
}

static void shape(kvcc_gpu_plan *pl, KrGpuShape *sh)
{
	memset(sh, 0, sizeof *sh);
	sh->view = &pl->view, sh->lay = pl->lay, sh->pg = pl->pg, sh->paged = pl->paged;
	sh->max_seqs = pl->max_seqs, sh->max_obs = pl->max_obs, sh->splits = pl->splits;
	sh->npar = pl->npar, sh->nst = pl->nst;
	memcpy(sh->par, pl->par, sizeof sh->par);
	sh->ws = pl->ws, sh->scores = pl->scores, sh->err = pl->err, sh->plen = pl->plen, sh->pmap = pl->pmap;
	sh->wts = pl->wts, sh->nout = (int)pl->nout;
}

const float *kr_gpu_weights(const kvcc_gpu_plan *pl) { return pl ? pl->wts : NULL; }

KVCC_API int kvcc_gpu_plan_set_weight(kvcc_gpu_plan *pl, const char *name, const float *data, int ndim,
                                      const int64_t *shape)
{
	if (!pl)
		return fail(KVCC_EINVAL, "null argument (plan, name, data, shape)");
	int i;
	size_t off, n;
	int64_t no = pl->nout;
	int rc = kr_weight_arg(pl->p, &pl->lay, &no, name, data, ndim, shape, &i, &off, &n);
	if (rc)
		return rc;
	if (no != pl->nout) {       /* the out axis' size is known now: the buffer laid out again, uploaded whole */
		size_t nwf = kr_weights_size(pl->p, &pl->lay, no);
		float *h = kr_weights_relayout(pl->p, &pl->lay, pl->hwts, pl->nout, no, pl->wset);
		float *d = kr_cuda_alloc((nwf + 1) * sizeof(float));
		if (!h || !d) {
			free(h), kr_cuda_free(d);
			return fail(KVCC_ENOMEM, "cannot allocate the GPU weights (%zu floats)", nwf);
		}
		memcpy(h + off, data, n * sizeof *data);
		if (kr_cuda_put(d, h, (nwf + 1) * sizeof *h) != 0) {
			free(h), kr_cuda_free(d);
			return fail(KVCC_EDEVICE, "uploading weight '%s' (%zu floats) to the device failed", name, nwf);
		}
		kr_cuda_free(pl->wts), free(pl->hwts);
		pl->wts = d, pl->hwts = h, pl->nout = no;
	} else if (kr_cuda_put(pl->wts + off, data, n * sizeof *data) != 0)
		return fail(KVCC_EDEVICE, "uploading weight '%s' (%zu floats) to the device failed", name, n);
	memcpy(pl->hwts + off, data, n * sizeof *data);
	pl->wset[i] = 1;
	return 0;
}

KVCC_API int kvcc_gpu_compress_batch(kvcc_gpu_plan *pl, const kvcc_gpu_batch *b, const kvcc_args *args, void *stream)
{
	if (!pl)
		return fail(KVCC_EINVAL, "null plan");
	KrGpuShape sh;
	KvgArgs a;
	shape(pl, &sh);
	int rc = kr_gpu_batch_args(&sh, b, args, &a);
	if (rc)
		return rc;
	if (pl->wset && kr_weights_given(pl->p, pl->wset) != 0)
		return KVCC_EINVAL;
	char why[600];
	if (kr_cuda_compress(pl->m, &a, stream, why, sizeof why) != 0)
		return fail(KVCC_EDEVICE, "%s", why);
	return 0;
}

KVCC_API int kvcc_gpu_append_batch(kvcc_gpu_plan *pl, const kvcc_gpu_batch *b, int layer, const void *k,
                                   const void *v, const int32_t *pos, void *stream)
{
	if (!pl || !k || !v || !pos)
		return fail(KVCC_EINVAL, "null argument (plan, k, v, pos)");
	if (layer < 0 || layer >= pl->lay.layers)
		return fail(KVCC_EINVAL, "layer %d outside 0..%d", layer, pl->lay.layers - 1);
	if (!kr_cuda_has_paged(pl->m))
		return fail(KVCC_EARTIFACT, "the plan's GPU kernels predate paged caches: recompile the policy");
	KrGpuShape sh;
	KvgArgs a;
	kvcc_args args = { 0.5, -1, NULL, 0, NULL };
	shape(pl, &sh);
	int rc = kr_gpu_batch_args(&sh, b, &args, &a);
	if (rc)
		return rc;
	a.ak = k, a.av = v, a.apos = pos, a.alayer = layer;
	char why[600];
	if (kr_cuda_append(pl->m, &a, stream, why, sizeof why) != 0)
		return fail(KVCC_EDEVICE, "%s", why);
	return 0;
}

int kr_gpu_decode_args(const KrGpuShape *sh, const kvcc_gpu_batch *b, int layer, const void *q, float *out, int step,
                       KvgArgs *a)
{
	if (!q || !out)
		return fail(KVCC_EINVAL, "null argument (q, out)");
	if (layer < 0 || layer >= sh->lay.layers)
		return fail(KVCC_EINVAL, "layer %d outside 0..%d", layer, sh->lay.layers - 1);
	kvcc_args args = { 0.5, -1, NULL, 0, NULL };
	int rc = kr_gpu_batch_args(sh, b, &args, a);
	if (rc)
		return rc;
	a->Q = NULL, a->lse = NULL, a->qpos = NULL, a->O = 0;     /* decode reads no observation queries */
	a->q = q, a->out = out, a->dlay = layer + 1, a->steps = b->step, a->step = step;
	return 0;
}

KVCC_API int kvcc_gpu_decode_batch(kvcc_gpu_plan *pl, const kvcc_gpu_batch *b, int layer, const void *q, float *out,
                                   void *stream)
{
	if (!pl)
		return fail(KVCC_EINVAL, "null plan");
	if (!pl->view.has_decode)
		return fail(KVCC_EARTIFACT, "the GPU kernels of this policy have no decode kernel: recompile it");
	KrGpuShape sh;
	KvgArgs a;
	shape(pl, &sh);
	int rc = kr_gpu_decode_args(&sh, b, layer, q, out, layer >= 0 && layer < pl->lay.layers ? pl->step[layer] : 0, &a);
	if (rc)
		return rc;
	char why[600];
	if (kr_cuda_decode(pl->m, &a, stream, why, sizeof why) != 0)
		return fail(KVCC_EDEVICE, "%s", why);
	pl->step[layer]++;
	return 0;
}

KVCC_API int kvcc_gpu_decode(kvcc_gpu_plan *pl, const kvcc_cache *c, int layer, const void *q, float *out, void *stream)
{
	if (!pl || !c)
		return fail(KVCC_EINVAL, "null argument (plan, cache)");
	if (pl->paged)
		return fail(KVCC_EINVAL, "a paged GPU plan: call kvcc_gpu_decode_batch with the page tables");
	kvcc_gpu_batch b;
	memset(&b, 0, sizeof b);
	b.nseq = 1, b.K = c->K, b.V = c->V, b.len = c->len, b.pos = c->pos, b.state = c->state;
	return kvcc_gpu_decode_batch(pl, &b, layer, q, out, stream);
}

KVCC_API int kvcc_gpu_plan_set_step(kvcc_gpu_plan *pl, int step)
{
	if (!pl || step < 0)
		return fail(KVCC_EINVAL, "null plan or negative step");
	for (int l = 0; l < pl->lay.layers; l++)
		pl->step[l] = step;
	return 0;
}

KVCC_API int kvcc_gpu_compress(kvcc_gpu_plan *pl, const kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args,
                               void *stream)
{
	KvgArgs a;
	int rc = kr_gpu_args(pl, c, obs, args, &a);
	if (rc)
		return rc;
	char why[600];
	if (kr_cuda_compress(pl->m, &a, stream, why, sizeof why) != 0)
		return fail(KVCC_EDEVICE, "%s", why);
	return 0;
}

KVCC_API int kvcc_gpu_plan_check(kvcc_gpu_plan *pl)
{
	if (!pl)
		return fail(KVCC_EINVAL, "null argument");
	int code = 0, zero = 0;
	if (kr_cuda_sync() != 0 || kr_cuda_get(&code, pl->err, sizeof code) != 0)
		return fail(KVCC_EDEVICE, "kernel execution failed (context synchronize)");
	if (!code)
		return 0;
	kr_cuda_put(pl->err, &zero, sizeof zero);
	return fail(KVCC_EINVAL, "GPU kernels reported error %d: %s", code,
	            code == KVG_EPOOL ? "bad pooling size" : code == KVG_ESELECT ? "bad select arguments (budget/ratio)" :
	            code == KVG_EHMEAN ? "hmean needs equal lengths across heads" :
	            code == KVG_ECHUNK ? "chunk > 1 with a merge summary is not compiled to CUDA yet" :
	            code == KVG_EMASS ? "select mass needs scores >= 0" :
	            code == KVG_ETABLE ? "bad page table or lengths (a page id outside the pool, a page used twice in "
	                                 "one call, a length above its table's capacity or outside 0..capacity); nothing "
	                                 "was changed" :
	            code == KVG_EFLOOR ? "select floor must be in [0, 1]" :
	            code == KVG_ESEG ? "a segment size (an integer >= 1 or inf), segment start (an integer >= 0 or "
	                               "inf) or shift offset (an integer in -1e9..1e9) out of range" :
	            code == KVG_ESUM ? "merge summary: the budget keeps fewer rows than the summary rows, the summary "
	                               "state row marks a block outside the held rows, or (internal error) the kept "
	                               "and summary rows exceed the held rows" :
	            code == KVG_EMNEXT ? "merge next_kept: m must be an integer in 1..1e6" :

	            code == KVG_ESCHED ? "the prefix schedule needs finite scores >= 0, a tol in 0..1e9 and iters an "
	                                 "integer in 0..1e4; the dynamic schedule the same length in every (layer, head), "
	                                 "a ratio_max in 0..1e6 and every an integer in 1..1e6" :
	            code == KVG_EKEEP ? "select: a keep count is not a finite number" : "unknown");
}
