/*
** libkvcc_rt's API around the run paths (include/kvcc.h): the thread-local error,
** what an open policy declares (read from its descriptor), and the plan — the
** layout checked against the artifact's specialization and every workspace the
** run paths need, sized once here for capacity tokens and max_obs queries, so that
** kvcc_compress, kvcc_append and kvcc_decode_layer allocate nothing.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include "runtime/rt.h"
#include "runtime/cpu.h"

static _Thread_local char lasterr[600];

int kr_seterr(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lasterr, sizeof lasterr, fmt, ap);
	va_end(ap);
	return code;
}

KVCC_API int kvcc__seterr(int code, const char *msg) { return kr_seterr(code, "%s", msg ? msg : ""); }
KVCC_API const char *kvcc_last_error(void) { return lasterr; }
KVCC_API const char *kvcc_version(void) { return KVCC_VERSION; }

double kr_ref(const KaRef *r, const double *par, double def)
{
	switch (r->kind) {
	case KA_CON: return r->val;
	case KA_PAR: return par ? par[r->idx] : r->val;
	}
	return def;
}

size_t kr_count(uint8_t m, int G, int nobs, int n, int d)
{
	return (KR_AX(m, KR_GROUP) ? (size_t)G : 1) * (KR_AX(m, KR_OBS) ? (size_t)nobs : 1) *
	       (KR_AX(m, KR_TOKEN) ? (size_t)n : 1) * (KR_AX(m, KR_CHAN) ? (size_t)d : 1);
}

double kr_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* --- what a policy declares --------------------------------------------------------------- */

KVCC_API const char *kvcc_policy_name(const kvcc_policy *p) { return p ? p->name : NULL; }

KVCC_API const char *kvcc_policy_config(const kvcc_policy *p) { return p ? p->h->config : NULL; }

KVCC_API int kvcc_policy_spec(const kvcc_policy *p, kvcc_spec *s)
{
	if (!p || !s)
		return kr_seterr(KVCC_EINVAL, "null argument");
	s->dtype = p->h->dtype, s->head_dim = p->h->head_dim, s->group = p->h->group, s->target = p->h->target;
	return 0;
}

KVCC_API int kvcc_param_count(const kvcc_policy *p) { return p ? p->h->npar : KVCC_EINVAL; }

KVCC_API int kvcc_param_index(const kvcc_policy *p, const char *name)
{
	if (!p || !name)
		return kr_seterr(KVCC_EINVAL, "null argument");
	for (int i = 0; i < p->h->npar; i++)
		if (!strcmp(p->str + p->par[i].name, name))
			return i;
	return kr_seterr(KVCC_EINVAL, "policy %s has no param '%s'", p->name, name);
}

KVCC_API int kvcc_param_info(const kvcc_policy *p, int i, const char **name, double *def)
{
	if (!p || i < 0 || i >= p->h->npar)
		return kr_seterr(KVCC_EINVAL, "param index %d out of range", i);
	if (name)
		*name = p->str + p->par[i].name;
	if (def)
		*def = p->par[i].def;
	return 0;
}

KVCC_API int kvcc_state_count(const kvcc_policy *p) { return p ? p->h->nst : kr_seterr(KVCC_EINVAL, "null policy"); }

KVCC_API int kvcc_state_info(const kvcc_policy *p, int i, const char **name, double *init)
{
	if (!p || i < 0 || i >= p->h->nst)
		return kr_seterr(KVCC_EINVAL, "state index %d out of range", i);
	if (name)
		*name = p->str + p->st[i].name;
	if (init)
		*init = p->st[i].init;
	return 0;
}

KVCC_API int kvcc_policy_when(const kvcc_policy *p, int *every)
{
	if (!p)
		return kr_seterr(KVCC_EINVAL, "null policy");
	double e = p->h->when == 1 ? kr_ref(&p->h->every, NULL, 1) : 0;
	int dec = p->h->when == 1, ev = e >= 1 && e <= 1e9 ? (int)e : 1;
	if (every)
		*every = dec ? ev : 0;
	return dec;
}

KVCC_API int kvcc_policy_obs(const kvcc_policy *p, const double *params, int *obs)
{
	if (!p || !obs)
		return kr_seterr(KVCC_EINVAL, "null %s", p ? "obs pointer" : "policy");
	if (p->h->obs.kind == KA_ALL) {
		*obs = -1;
		return 0;
	}
	double o = kr_ref(&p->h->obs, params, 0);
	if (!(o >= 0 && o <= INT32_MAX) || o != floor(o))
		return kr_seterr(KVCC_EINVAL, "policy %s: the observation count must be an integer in 0..%d, got %g",
		                 p->name, INT32_MAX, o);
	*obs = (int)o;
	return 0;
}

_Static_assert((int)KVCC_SCOPE_HEAD == (int)KA_SCOPE_HEAD && (int)KVCC_SCOPE_LAYER == (int)KA_SCOPE_LAYER &&
               (int)KVCC_SCOPE_MODEL == (int)KA_SCOPE_MODEL, "scopes");

KVCC_API int kvcc_policy_info(const kvcc_policy *p, unsigned *flags, int *scope)
{
	if (!p)
		return kr_seterr(KVCC_EINVAL, "null policy");
	int32_t f = p->h->flags, sc = p->h->scope;
	if (flags)
		*flags = (f & KA_FATTN ? KVCC_POLICY_QUERIES : 0) | (f & KA_FLSE ? KVCC_POLICY_LSE : 0) |
		         (f & KA_FQPOS ? KVCC_POLICY_QPOS : 0) | (f & KA_FHMEAN ? KVCC_POLICY_HEADS : 0) |
		         (f & KA_FOBSERVE ? KVCC_POLICY_OBSERVE : 0) |
		         (f & KA_FLAYER || sc == KA_SCOPE_MODEL ? KVCC_POLICY_LAYER : 0);
	if (scope)
		*scope = sc;
	return 0;
}

/* --- plans ------------------------------------------------------------------------------------ */

/* The values an arena holds (the descriptor's KA_SARENA): stored outputs of generated loops,
** attn_score outputs and head_mean results. */
static int make_arenas(kvcc_plan *pl)
{
	const KaHdr *h = pl->p->h;
	const KaIns *in = pl->p->ins;
	size_t total = 0;
	for (int i = 0; i < h->nins; i++)
		if (in[i].store & KA_SARENA) {
			size_t c = kr_count(in[i].axes, h->group, pl->max_obs, pl->lay.capacity, pl->lay.head_dim);
			if (c > (1ull << 40) || (total += (c + 16) / 16 * 16) > (1ull << 40))
				return -1;     /* 4 TiB: out of memory, before any size wraps */
		}
	for (int t = 0; t < pl->narena; t++) {
		if (!(pl->arena[t] = aligned_alloc(64, (total + 16) * sizeof(float))) ||
		    !(pl->tvals[t] = calloc((size_t)h->nins + 1, sizeof(float *))))
			return -1;
		size_t off = 0;
		for (int i = 0; i < h->nins; i++)
			if (in[i].store & KA_SARENA) {
				pl->tvals[t][i] = pl->arena[t] + off;
				off += (kr_count(in[i].axes, h->group, pl->max_obs, pl->lay.capacity, pl->lay.head_dim) + 16) / 16 * 16;
			}
	}
	return 0;
}

/* attn_score workspace floats for go query rows: S tile, packed K tile, m, l, mp (and one spare),
** acc, Q rows, the rows' visibility masks (uint64) */
static size_t wsfloats(int go, int d)
{
	return (size_t)go * TILE + (size_t)d * TILE + 4 * (size_t)go + TILE + (size_t)go * d + 2 * (size_t)go + 64;
}

/* The attn_score workspaces of every pool thread for go query rows, and the exponential
** workspaces (rt.h ews): what the plan's shapes need (ceil(capacity/64) tiles of go rows, 65
** floats per row and tile, and 16 per row for the sums per lane), capped at KVCC_EXPWS MiB per thread (default KR_EXPWS_MIB, 32; 0: none)
** in whole tiles; a head longer than the workspace holds runs its tail in two passes. */
static int make_ws(kvcc_plan *pl, int go)
{
	for (int t = 0; t < pl->threads; t++)
		if (!(pl->ws[t] = aligned_alloc(64, (wsfloats(go, pl->lay.head_dim) * sizeof(float) + 63) / 64 * 64)))
			return -1;
	pl->ws_go = go;
	const char *ev = getenv("KVCC_EXPWS");
	double mib = ev && *ev ? strtod(ev, NULL) : KR_EXPWS_MIB;
	size_t nt = ((size_t)pl->lay.capacity + TILE - 1) / TILE, tb = (size_t)go * (TILE + 1) * sizeof(float);
	size_t fb = (size_t)go * LANES * sizeof(float);           /* the rows' sums per lane */
	if (!(mib > 0) || nt == 0 || go < 1)
		return 0;
	if ((double)(nt * tb + fb) > mib * 1048576.0)
		nt = mib * 1048576.0 > (double)fb ? (size_t)((mib * 1048576.0 - (double)fb) / (double)tb) : 0;   /* whole tiles under the cap */
	if (nt == 0)
		return 0;
	size_t eb = nt * tb + fb;
	if (!(pl->ews = calloc((size_t)pl->threads, sizeof *pl->ews)))
		return -1;
	for (int t = 0; t < pl->threads; t++)
		if (!(pl->ews[t] = aligned_alloc(64, (eb + 63) / 64 * 64)))
			return -1;
	pl->ews_fl = (int64_t)(eb / sizeof(float));
	const char *nv = getenv("KVCC_EXPNT");
	long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
	double ntb = nv && *nv ? strtod(nv, NULL) * 1048576.0 : 2.0 * (l2 > 0 ? (double)l2 : 2097152.0);
	pl->ews_ntb = ntb > 0 ? (ntb < 9e18 ? (int64_t)ntb : INT64_MAX) : 0;
	return 0;
}

KVCC_API int kvcc_plan_timings(const kvcc_plan *pl, double ms[4])
{
	if (!pl || !ms)
		return kr_seterr(KVCC_EINVAL, "null argument");
	memcpy(ms, pl->ms, sizeof pl->ms);
	return 0;
}

/*
** A paged pool's strides: the (stride, extent) pairs of head, token-in-page and page sorted by
** stride must nest (each stride at least the previous one's span, the smallest at least
** head_dim), so no two rows overlap, and the whole pool (all layers when stride_layer is used)
** must stay inside int64 bytes. 0 or KVCC_EINVAL.
*/
static int pagedstrides(const kvcc_layout *lay, const kvcc_paging *pg, size_t esz)
{
	int64_t st[3] = { lay->stride_head, lay->stride_token, pg->stride_page };
	int64_t ex[3] = { lay->kv_heads, pg->page_size, pg->num_pages };
	for (int i = 1; i < 3; i++)            /* insertion sort by stride */
		for (int j = i; j > 0 && st[j] < st[j - 1]; j--) {
			int64_t a = st[j], e = ex[j];
			st[j] = st[j - 1], ex[j] = ex[j - 1], st[j - 1] = a, ex[j - 1] = e;
		}
	int64_t span = lay->head_dim;          /* elements one row ... one pool covers */
	int ok = 1;
	for (int i = 0; i < 3 && ok; i++) {
		if (ex[i] == 1)
			continue;
		ok = st[i] >= span && !__builtin_mul_overflow(st[i], ex[i], &span);
	}
	int64_t all = span, bytes;
	if (ok && lay->layers > 1 && lay->stride_layer != 0)
		ok = lay->stride_layer >= span && !__builtin_mul_overflow(lay->stride_layer, (int64_t)lay->layers, &all);
	if (ok)
		ok = lay->stride_layer >= 0 && !__builtin_mul_overflow(all, (int64_t)esz, &bytes);
	if (!ok)
		return kr_seterr(KVCC_EINVAL, "bad paged strides (layer %lld, page %lld, token %lld, head %lld) for %d pages of "
		                 "%d tokens, %d heads, head_dim %d: rows overlap or the pool overflows",
		                 (long long)lay->stride_layer, (long long)pg->stride_page, (long long)lay->stride_token,
		                 (long long)lay->stride_head, pg->num_pages, pg->page_size, lay->kv_heads, lay->head_dim);
	return 0;
}

/*
** A contiguous cache's strides: rows of head_dim elements apart, each head's capacity rows before
** the next head, each layer's heads before the next layer, and the whole cache inside int64
** bytes (every product checked: a huge stride must not wrap into a small one).
*/
static int stridesok(const kvcc_layout *lay, size_t esz)
{
	int64_t st = lay->stride_token, sh = lay->stride_head, sl = lay->stride_layer, span, all, bytes;
	if (st < lay->head_dim || sl < 0 || __builtin_mul_overflow(st, (int64_t)lay->capacity, &span) || sh < span ||
	    __builtin_mul_overflow(sh, (int64_t)lay->kv_heads, &span))
		return 0;
	all = span;
	if (lay->layers > 1 && (sl < span || __builtin_mul_overflow(sl, (int64_t)lay->layers, &all)))
		return 0;
	return !__builtin_mul_overflow(all, (int64_t)esz, &bytes);
}

/* the paging's own fields */
static int pagingcheck(const kvcc_layout *lay, const kvcc_paging *pg)
{
	if (pg->page_size < 1 || pg->page_size > 256)
		return kr_seterr(KVCC_EINVAL, "page size %d outside 1..256", pg->page_size);
	if (pg->num_pages < 1 || pg->max_pages < 1 || (pg->tables != KVCC_TABLE_SHARED && pg->tables != KVCC_TABLE_PER_HEAD))
		return kr_seterr(KVCC_EINVAL, "bad paging: num_pages %d, max_pages %d, tables %d", pg->num_pages, pg->max_pages,
		                 pg->tables);
	(void)lay;
	return 0;
}

/* the GPU plan's paging checks (runtime/gpu.c): the same as a CPU plan's */
KC_FUNC int kr_paging_ok(const kvcc_layout *lay, const kvcc_paging *pg)
{
	int rc = pagingcheck(lay, pg);
	return rc ? rc : pagedstrides(lay, pg, lay->dtype == KVCC_F32 ? 4 : 2);
}

KVCC_API int kvcc_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int threads, kvcc_plan **out)
{
	return kvcc_plan_create_batch(p, lay, NULL, 1, max_obs, threads, out);
}

KVCC_API int kvcc_plan_create_batch(kvcc_policy *p, const kvcc_layout *lay, const kvcc_paging *pg, int max_seqs,
                                    int max_obs, int threads, kvcc_plan **out)
{
	if (!out)
		return kr_seterr(KVCC_EINVAL, "null argument");
	*out = NULL;
	if (!p || !lay)
		return kr_seterr(KVCC_EINVAL, "null argument");
	const KaHdr *h = p->h;
	if (lay->dtype != h->dtype || lay->head_dim != h->head_dim)
		return kr_seterr(KVCC_ESPEC, "layout has dtype %d head_dim %d, artifact was compiled for dtype %d head_dim %d",
		                 lay->dtype, lay->head_dim, h->dtype, h->head_dim);
	if (lay->layers < 1 || lay->kv_heads < 1 || lay->capacity < 1 || lay->capacity > (1 << 30))
		return kr_seterr(KVCC_EINVAL, "bad layout: layers %d kv_heads %d capacity %d", lay->layers, lay->kv_heads,
		                 lay->capacity);
	size_t esz = lay->dtype == KVCC_F32 ? 4 : 2;
	if (max_seqs < 1 || max_seqs > 65536 || (uint64_t)max_seqs * lay->layers * lay->kv_heads * lay->capacity > (1ull << 40))
		return kr_seterr(KVCC_EINVAL, "bad max_seqs %d (1..65536, and max_seqs*layers*kv_heads*capacity up to 2^40)",
		                 max_seqs);
	if (pg) {
		int rc = pagingcheck(lay, pg);
		if (rc || (rc = pagedstrides(lay, pg, esz)) != 0)
			return rc;
	} else if (!stridesok(lay, esz))
		return kr_seterr(KVCC_EINVAL, "bad layout strides (layer %lld, head %lld, token %lld) for head_dim %d capacity %d",
		                 (long long)lay->stride_layer, (long long)lay->stride_head, (long long)lay->stride_token,
		                 lay->head_dim, lay->capacity);
	if (max_obs < 0 || threads < 0 || (int64_t)max_obs * h->group > KR_MAXQROWS)
		return kr_seterr(KVCC_EINVAL, "bad max_obs %d (0..%d for group %d) or threads %d", max_obs,
		                 KR_MAXQROWS / h->group, h->group, threads);
	if ((p->famx || (h->flags & KA_FAMX3)) && kr_amx_enable() != 0)   /* the CPU and the OS have AMX (load.c's mask) */
		return kr_seterr(KVCC_EUNSUPPORTED, "%s: the kernels use AMX tiles and the operating system refused this "
		                 "process the tile state (arch_prctl ARCH_REQ_XCOMP_PERM); recompile with %s",
		                 p->name, p->famx ? "KVCC_CONFIG=amx0" : "KVCC_MERGE_AMX=0");
	kvcc_plan *pl = calloc(1, sizeof *pl);
	if (!pl)
		return kr_seterr(KVCC_ENOMEM, "out of memory");
	pl->p = p, pl->lay = *lay, pl->max_obs = max_obs, pl->max_seqs = max_seqs;
	__atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);   /* kvcc_close before this plan's destroy is fine */
	if (pg)
		pl->paged = 1, pl->pg = *pg;
	pl->threads = threads ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (pl->threads < 1)
		pl->threads = 1;
	if (pl->threads > 256)
		pl->threads = 256;
	pl->esz = lay->dtype == KVCC_F32 ? 4 : 2;
	int H = lay->kv_heads, G = h->group, nins = h->nins;
	size_t dd = (size_t)lay->head_dim;
	pl->lds = ((int64_t)lay->capacity + DTILE - 1) / DTILE * DTILE + DTILE;
	int dt = 2;                /* the most decode tasks per thread of any bucket (the config's) */
	for (int k = 0; k < KA_NBUCKET; k++)
		dt = p->h->dtasks[k] > dt ? p->h->dtasks[k] : dt;
	/* paged: chunks over all heads */
	pl->maxch = (pg ? dt * pl->threads : (dt * pl->threads + H - 1) / H) + 1;
	/* decode lanes: up to KR_LANES sequences per pool run, while their logits stay under 64 MiB */
	size_t lane_b = (size_t)H * G * pl->lds * sizeof(float);
	pl->lanes = max_seqs < KR_LANES ? max_seqs : KR_LANES;
	while (pl->lanes > 1 && (size_t)pl->lanes * lane_b > ((size_t)64 << 20))
		pl->lanes--;
	size_t NL = (size_t)pl->lanes;
	pl->par = malloc(((size_t)h->npar + 1) * sizeof *pl->par);
	pl->step = calloc((size_t)lay->layers, sizeof *pl->step);
	pl->S = malloc(NL * H * G * pl->lds * sizeof(float));
	pl->qs = malloc(NL * H * G * dd * sizeof(float));
	pl->cst = malloc(NL * H * pl->maxch * G * (2 + dd) * sizeof(float));
	pl->oval = calloc(NL * H * (nins + 1), sizeof *pl->oval);
	pl->ws = calloc((size_t)pl->threads, sizeof *pl->ws);
	size_t LH = (size_t)lay->layers * H, ninst = LH * (size_t)max_seqs;
	size_t sg = h->scope == KA_SCOPE_HEAD ? 1 : h->scope == KA_SCOPE_LAYER ? (size_t)H : LH;
	/* select: one scope group per pool task, keys and partial chunks per thread, as many copies as
	** groups can run at once (the model schedules: one thread; compress.c selectrun) */
	size_t ngmax = ninst / sg;
	pl->nsel = h->sched >= KA_SCH_PREFIX ? 1 : (size_t)pl->threads < ngmax ? pl->threads : (int)ngmax;
	pl->selstride = sg * (size_t)lay->capacity + 1;
	pl->selkeys = malloc((size_t)pl->nsel * pl->selstride * sizeof(uint64_t));
	pl->part = malloc((size_t)pl->nsel * (LH + 1) * sizeof *pl->part);
	pl->kidx = malloc((ninst * lay->capacity + 1) * sizeof(int32_t));
	pl->nkept = malloc((ninst + 1) * sizeof(int32_t));
	pl->keepv = malloc((ninst + 1) * sizeof(int64_t));
	pl->sblk = malloc((ninst + 1) * sizeof(int32_t));
	if (h->sched >= KA_SCH_PREFIX) {       /* the model schedules: one sequence at a time */
		pl->schkeys = malloc((LH * lay->capacity + 1) * sizeof(uint64_t));
		pl->schnk = malloc((5 * LH + 3 * (size_t)lay->layers + 1) * sizeof(int64_t));
		pl->schtot = malloc((LH + 1) * sizeof(double));
	}
	pl->hsrc = calloc((size_t)H, sizeof *pl->hsrc);
	pl->hdst = calloc((size_t)H, sizeof *pl->hdst);
	pl->narena = h->flags & KA_FHMEAN ? (int)ninst : pl->threads;
	pl->arena = calloc((size_t)pl->narena, sizeof *pl->arena);
	pl->tvals = calloc((size_t)pl->narena, sizeof *pl->tvals);
	pl->scorebuf = malloc((ninst * lay->capacity + 1) * sizeof(float));
	pl->score = calloc(ninst, sizeof *pl->score);
	pl->cpar = malloc(((size_t)h->npar + 1) * sizeof *pl->cpar);
	int bad = !pl->par || !pl->step || !pl->S || !pl->qs || !pl->cst || !pl->oval || !pl->ws || !pl->selkeys ||
	          !pl->part || !pl->kidx || !pl->nkept || !pl->keepv || !pl->sblk || !pl->hsrc || !pl->hdst || !pl->arena || !pl->tvals ||
	          !pl->scorebuf || !pl->score || !pl->cpar ||
	          (h->sched >= KA_SCH_PREFIX && (!pl->schkeys || !pl->schnk || !pl->schtot));
	if (!bad && pg) {         /* tables of a call, page marks, row offsets and staging per thread */
		size_t ntab = pg->tables == KVCC_TABLE_PER_HEAD ? ninst : (size_t)max_seqs;
		pl->tabp = calloc(ntab, sizeof *pl->tabp);
		pl->tabn = calloc(ntab, sizeof *pl->tabn);
		pl->tabu = calloc(ntab, sizeof *pl->tabu);
		pl->pmark = calloc((size_t)pg->num_pages, 1);
		pl->roff = calloc((size_t)pl->threads, sizeof *pl->roff);
		pl->stage = calloc((size_t)pl->threads, sizeof *pl->stage);
		bad = !pl->tabp || !pl->tabn || !pl->tabu || !pl->pmark || !pl->roff || !pl->stage;
		for (int t = 0; t < pl->threads && !bad; t++)
			bad = !(pl->roff[t] = malloc(((size_t)lay->capacity + 1) * sizeof(int64_t))) ||
			      !(pl->stage[t] = aligned_alloc(64, 2 * KR_STAGE * dd * esz));
	}
	if (!bad) {
		bad = make_arenas(pl) != 0;
		pl->obs_sized = (h->flags & KA_FATTN) != 0;
		for (int i = 0; i < nins; i++)
			pl->obs_sized |= (p->ins[i].store & KA_SARENA) && KR_AX(p->ins[i].axes, KR_OBS);
	}
	if (!bad)
		bad = kr_weights_init(pl) != 0;
	if (!bad && (h->flags & KA_FATTN) && max_obs > 0)
		bad = make_ws(pl, G * max_obs) != 0;
	if (!bad && h->merge != KA_MDROP) {  /* compact_merge workspaces (merge.c, summary.c, mpos.c) */
		size_t mb = h->merge == KA_MNEAREST ? kr_mbytes(pl) : h->merge == KA_MSUMMARY ? kr_sbytes(pl) : kr_mposbytes(pl);
		bad = !(pl->mws = calloc((size_t)pl->threads, sizeof *pl->mws));
		for (int t = 0; t < pl->threads && !bad; t++)
			bad = !(pl->mws[t] = aligned_alloc(64, mb));
		for (int t = 0; t < pl->threads && !bad && h->merge == KA_MNEAREST; t++)
			kr_mstat0(pl, t);
	}
	for (int i = 0; i < h->npar && !bad; i++)
		pl->par[i] = p->par[i].def;
	/* observe values: one buffer per (head, stored value of the observe loops), at capacity */
	for (size_t hh = 0; hh < NL * H && !bad; hh++)
		for (int i = 0; i < nins && !bad; i++)
			if (p->ins[i].store & KA_SOBSERVE)
				bad = !(pl->oval[hh * nins + i] =
				            malloc((kr_count(p->ins[i].axes, G, 1, lay->capacity, (int)dd) + 1) * sizeof(float)));
	if (!bad && kr_pool_init(&pl->pool, pl->threads) != 0)
		bad = 1;
	else if (!bad)
		pl->pool_ok = 1;
	if (bad) {
		kvcc_plan_destroy(pl);
		return kr_seterr(KVCC_ENOMEM, "out of memory (plan workspaces)");
	}
	*out = pl;
	return 0;
}

KVCC_API void kvcc_plan_destroy(kvcc_plan *pl)
{
	if (!pl)
		return;
	if (pl->pool_ok)
		kr_pool_free(&pl->pool);
	if (pl->oval)
		for (size_t k = 0; k < (size_t)pl->lanes * pl->lay.kv_heads * (pl->p->h->nins + 1); k++)
			free(pl->oval[k]);
	for (int t = 0; pl->ws && t < pl->threads; t++)
		free(pl->ws[t]);
	free(pl->ws), free(pl->hsrc), free(pl->hdst);
	for (int t = 0; pl->ews && t < pl->threads; t++)
		free(pl->ews[t]);
	free(pl->ews);
	free(pl->selkeys), free(pl->part), free(pl->kidx), free(pl->nkept), free(pl->keepv), free(pl->sblk);
	free(pl->schkeys), free(pl->schnk), free(pl->schtot);
	for (int t = 0; t < pl->narena; t++) {
		if (pl->arena)
			free(pl->arena[t]);
		if (pl->tvals)
			free(pl->tvals[t]);
	}
	free(pl->arena), free(pl->tvals), free(pl->scorebuf), free(pl->score), free(pl->cpar);
	free(pl->oval), free(pl->par), free(pl->step), free(pl->S), free(pl->qs), free(pl->cst);
	for (int t = 0; t < pl->threads; t++) {
		if (pl->roff)
			free(pl->roff[t]);
		if (pl->stage)
			free(pl->stage[t]);
	}
	for (int t = 0; pl->mws && t < pl->threads; t++)
		free(pl->mws[t]);
	free(pl->mws);
	free(pl->roff), free(pl->stage), free(pl->tabp), free(pl->tabn), free(pl->tabu), free(pl->pmark);
	free(pl->wts), free(pl->wset);
	kr_policy_unref(pl->p);
	free(pl);
}

int kr_enter(kvcc_plan *pl)
{
	if (__atomic_exchange_n(&pl->busy, 1, __ATOMIC_ACQUIRE))
		return kr_seterr(KVCC_EBUSY, "the plan is in use by another call (a plan runs one call at a time: "
		                 "one plan per thread)");
	return 0;
}

void kr_leave(kvcc_plan *pl) { __atomic_store_n(&pl->busy, 0, __ATOMIC_RELEASE); }

KVCC_API int kvcc_plan_set_params(kvcc_plan *pl, const double *params)
{
	if (!pl)
		return kr_seterr(KVCC_EINVAL, "null plan");
	if (kr_enter(pl))
		return KVCC_EBUSY;
	for (int i = 0; i < pl->p->h->npar; i++)
		pl->par[i] = params ? params[i] : pl->p->par[i].def;
	kr_leave(pl);
	return 0;
}

KVCC_API int kvcc_plan_set_step(kvcc_plan *pl, int step)
{
	if (!pl || step < 0)
		return kr_seterr(KVCC_EINVAL, "null plan or negative step");
	if (kr_enter(pl))
		return KVCC_EBUSY;
	for (int l = 0; l < pl->lay.layers; l++)
		pl->step[l] = step;
	kr_leave(pl);
	return 0;
}
