/*
** libkvcc runtime (include/kvcc.h): artifacts, layouts, compression.
**
** compress = for each (layer, head) instance, on a thread pool:
**   token_map values (f32, columnar per instance) and the attn_score skeleton
**   (token tiles of TILE: generated Q·Kᵀ kernel → logit transform → attn_stats
**   passes (online max/sum per softmax) → probabilities → accumulate over obs);
**   head_mean barriers between stages; then select (top-k, protections, chunk,
**   scopes, pyramid via ki_nkeep) and stable in-place compaction.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include <dlfcn.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>
#include "kvcc.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "compiler/plan.h"
#include "codegen/x86/x86.h"
#include "dsl/dsl.h"
#include "runtime/pool.h"
#include "runtime/cache.h"

#define TILE 64
#define DTILE 16     /* decode token tile of the generated kernel (x86.c DT) */
#define ATILE 64     /* attn_score token tile of the generated qkt/sstat/sacc (x86.c AT) */

static _Thread_local char lasterr[600];

static int seterr(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lasterr, sizeof lasterr, fmt, ap);
	va_end(ap);
	return code;
}

KVCC_API const char *kvcc_last_error(void) { return lasterr; }
KVCC_API const char *kvcc_version(void) { return KVCC_VERSION; }

struct kvcc_policy {
	void *dl;
	const kvcc_artifact *a;
	KiFn *f;
	KpPlan plan;
};

KVCC_API void kvcc_close(kvcc_policy *p)
{
	if (!p)
		return;
	kp_free(&p->plan);
	if (p->f)
		ki_free(p->f);
	if (p->dl)
		dlclose(p->dl);
	free(p);
}

static int validate(const kvcc_artifact *a, const char *path)
{
	if (a->magic != KVCC_MAGIC)
		return seterr(KVCC_EARTIFACT, "%s: not a kvcc artifact (bad magic)", path);
	if (a->abi != KVCC_ABI || a->size != sizeof(kvcc_artifact))
		return seterr(KVCC_EARTIFACT, "%s: artifact ABI %u (size %u), this libkvcc has ABI %d", path, a->abi,
		              a->size, KVCC_ABI);
	if (!a->version || !a->kir || !a->name || !a->features || !a->qk || !a->cvt || !a->decode || !a->probs || !a->qkt || !a->sstat || !a->sacc ||
	    !a->selkeys || !a->topk || !a->keepidx || !a->compact || !a->ckeys || !a->kcount || !a->ckeepidx)
		return seterr(KVCC_EARTIFACT, "%s: corrupted artifact descriptor", path);
	if (strcmp(a->version, KVCC_VERSION) != 0)
		return seterr(KVCC_EARTIFACT, "%s: compiled by kvcc %s, this is %s", path, a->version, KVCC_VERSION);
	if (ki_fnv(a->kir, strlen(a->kir), 0xcbf29ce484222325ull) != a->kir_hash)
		return seterr(KVCC_EARTIFACT, "%s: corrupted artifact (KIR hash mismatch)", path);
	if (kx_key(a->kir, a->version, a->features, a->dtype, a->head_dim, a->group, a->target, a->vec_width) != a->key)
		return seterr(KVCC_EARTIFACT, "%s: compiled by another kvcc build, or corrupted (cache key mismatch)", path);
	char *host = kx_hostfeatures();
	if (!host)
		return seterr(KVCC_ENOMEM, "out of memory");
	kvcc_spec s = { a->dtype, a->head_dim, a->group, a->target };
	int ok = a->target == KVCC_TARGET_NATIVE ? strcmp(host, a->features) == 0 : kx_vecwidth(&s, host) == a->vec_width;
	free(host);
	if (!ok)
		return seterr(KVCC_ESPEC, "%s: compiled for CPU features '%.80s...' that this host does not match", path,
		              a->features);
	return 0;
}

KVCC_API int kvcc_open(const char *path, kvcc_policy **out)
{
	*out = NULL;
	kvcc_policy *p = calloc(1, sizeof *p);
	if (!p)
		return seterr(KVCC_ENOMEM, "out of memory");
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		free(p);
		return seterr(KVCC_EIO, "%s: cannot open", path);
	}
	unsigned char hdr[4] = { 0 };
	size_t got = fread(hdr, 1, 4, fp);
	fclose(fp);
	if (got != 4 || memcmp(hdr, "\177ELF", 4) != 0) {
		free(p);
		return seterr(KVCC_EARTIFACT, "%s: not a shared object", path);
	}
	p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!p->dl) {
		const char *m = dlerror();
		free(p);
		return seterr(KVCC_EARTIFACT, "%s: cannot load: %s", path, m ? m : "?");
	}
	p->a = dlsym(p->dl, KVCC_DESC_SYMBOL);
	int rc;
	if (!p->a) {
		rc = seterr(KVCC_EARTIFACT, "%s: no %s symbol: not a kvcc artifact", path, KVCC_DESC_SYMBOL);
		goto fail;
	}
	if ((rc = validate(p->a, path)) != 0)
		goto fail;
	KcErr e = { 0 };
	p->f = ki_parse(p->a->kir, p->a->name, &e);
	if (!p->f || ki_verify(p->f, &e) != 0 || kp_build(p->f, &p->plan, &e) != 0) {
		rc = seterr(KVCC_EARTIFACT, "%s: embedded KIR: %s", path, e.msg);
		goto fail;
	}
	*out = p;
	return 0;
fail:
	kvcc_close(p);
	return rc;
}

/* A policy file (.lua, or .kir text) verified and through the default passes (shared with
** runtime/gpu.c). */
__attribute__((visibility("hidden"))) KiFn *kr_loadpolicy(const char *path, KcErr *e)
{
	size_t n = strlen(path);
	KiFn *f;
	if (n > 4 && !strcmp(path + n - 4, ".kir")) {
		char *text = kc_readfile(path, NULL, e);
		if (!text)
			return NULL;
		f = ki_parse(text, path, e);
		free(text);
	} else
		f = kd_loadfile(path, NULL, e);
	if (f && (ki_verify(f, e) != 0 || ki_runpasses(f, KI_DEFAULT_PASSES, 0, e, NULL, NULL) != 0)) {
		ki_free(f);
		return NULL;
	}
	return f;
}

/* Load + passes + plan check (positioned errors); NULL with the error set. */
static KiFn *loadchecked(const char *path, int verbose)
{
	KcErr e = { 0 };
	KiFn *f = kr_loadpolicy(path, &e);
	if (!f) {
		seterr(KVCC_ECOMPILE, "%s", e.msg);
		return NULL;
	}
	KpPlan pl;
	if (kp_build(f, &pl, &e) != 0) {
		ki_free(f);
		seterr(KVCC_ECOMPILE, "%s", e.msg);
		return NULL;
	}
	if (verbose)
		kp_print(&pl, stderr);
	kp_free(&pl);
	return f;
}

/* Copy through a temporary file and rename (readers never see half a file). */
__attribute__((visibility("hidden"))) int kr_copyfile(const char *from, const char *to)
{
	char tmp[1200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", to, (long)getpid());
	FILE *in = fopen(from, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
	int ok = in && out;
	char buf[1 << 16];
	size_t k;
	while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0)
		ok = fwrite(buf, 1, k, out) == k;
	ok = ok && !ferror(in);
	if (in)
		fclose(in);
	if (out && fclose(out) != 0)
		ok = 0;
	if (ok && rename(tmp, to) != 0)
		ok = 0;
	if (!ok)
		unlink(tmp);
	return ok ? 0 : -1;
}

KVCC_API int kvcc_compile_so(const char *path, const kvcc_spec *spec, const char *out_so, int verbose)
{
	if (!path || !spec || !out_so)
		return seterr(KVCC_EINVAL, "null argument");
	KiFn *f = loadchecked(path, verbose);
	if (!f)
		return KVCC_ECOMPILE;
	KcErr e = { 0 };
	char cpath[1400];
	int c = kr_cache_get(f, spec, verbose, cpath, sizeof cpath, &e), rc = 0;
	if (c < 0)
		rc = seterr(KVCC_ECOMPILE, "%s", e.msg);
	else if (c == 0) {
		kvcc_policy *chk = NULL;
		if (kvcc_open(cpath, &chk) != 0) {      /* checked but refused (cannot happen): rebuild once */
			unlink(cpath);
			c = kr_cache_get(f, spec, verbose, cpath, sizeof cpath, &e);
		}
		kvcc_close(chk);
		if (c < 0)
			rc = seterr(KVCC_ECOMPILE, "%s", e.msg);
		else if (c == 0 && kr_copyfile(cpath, out_so) != 0)
			rc = seterr(KVCC_EIO, "cannot write %s", out_so);
		else if (c > 0 && kx_compile(f, spec, out_so, verbose, NULL, &e) != 0)
			rc = seterr(KVCC_ECOMPILE, "%s", e.msg);
	} else {
		double ms = 0;
		if (kx_compile(f, spec, out_so, verbose, &ms, &e) != 0)
			rc = seterr(KVCC_ECOMPILE, "%s", e.msg);
		else if (verbose)
			fprintf(stderr, "kvcc: compiled in %.1f ms\n", ms);
	}
	ki_free(f);
	return rc;
}

KVCC_API int kvcc_compile_file(const char *path, const kvcc_spec *spec, kvcc_policy **out)
{
	if (!out)
		return seterr(KVCC_EINVAL, "null argument");
	*out = NULL;
	if (!path || !spec)
		return seterr(KVCC_EINVAL, "null argument");
	KiFn *f = loadchecked(path, 0);
	if (!f)
		return KVCC_ECOMPILE;
	KcErr e = { 0 };
	char cpath[1400];
	int rc = KVCC_ECOMPILE;
	for (int attempt = 0; attempt < 2; attempt++) {
		int c = kr_cache_get(f, spec, 0, cpath, sizeof cpath, &e);
		if (c < 0) {
			rc = seterr(KVCC_ECOMPILE, "%s", e.msg);
			break;
		}
		if (c == 0) {
			if ((rc = kvcc_open(cpath, out)) == 0)
				break;
			unlink(cpath);           /* checked but refused (cannot happen): rebuild once */
			continue;
		}
		char tmp[] = "/tmp/kvcc-jit-XXXXXX.so";
		int fd = mkstemps(tmp, 3);
		if (fd < 0) {
			rc = seterr(KVCC_EIO, "cannot create a temporary file");
			break;
		}
		close(fd);
		double ms;
		if (kx_compile(f, spec, tmp, 0, &ms, &e) != 0)
			rc = seterr(KVCC_ECOMPILE, "%s", e.msg);
		else
			rc = kvcc_open(tmp, out);
		unlink(tmp);
		break;
	}
	ki_free(f);
	return rc;
}

KVCC_API const char *kvcc_policy_name(const kvcc_policy *p) { return p ? p->a->name : NULL; }

KVCC_API int kvcc_policy_spec(const kvcc_policy *p, kvcc_spec *s)
{
	if (!p || !s)
		return seterr(KVCC_EINVAL, "null argument");
	s->dtype = p->a->dtype, s->head_dim = p->a->head_dim, s->group = p->a->group, s->target = p->a->target;
	return 0;
}

KVCC_API int kvcc_param_count(const kvcc_policy *p) { return p ? p->f->npar : KVCC_EINVAL; }

KVCC_API int kvcc_param_index(const kvcc_policy *p, const char *name)
{
	if (!p || !name)
		return seterr(KVCC_EINVAL, "null argument");
	int i = ki_findparam(p->f, name);
	return i >= 0 ? i : seterr(KVCC_EINVAL, "policy %s has no param '%s'", p->a->name, name);
}

KVCC_API int kvcc_state_count(const kvcc_policy *p) { return p ? p->f->nst : seterr(KVCC_EINVAL, "null policy"); }

KVCC_API int kvcc_state_info(const kvcc_policy *p, int i, const char **name, double *init)
{
	if (!p || i < 0 || i >= p->f->nst)
		return seterr(KVCC_EINVAL, "state index %d out of range", i);
	if (name)
		*name = p->f->st[i].name;
	if (init)
		*init = p->f->st[i].init;
	return 0;
}

KVCC_API int kvcc_policy_when(const kvcc_policy *p, int *every)
{
	if (!p)
		return seterr(KVCC_EINVAL, "null policy");
	const KiFn *f = p->f;
	int ev = 1;
	if (f->when.kind == WH_decode) {
		KcRef r = f->when.every;
		ev = KC_RKIND(r) == RK_CON ? (int)f->con[KC_RIDX(r)] : KC_RKIND(r) == RK_PAR ? (int)f->par[KC_RIDX(r)].def : 1;
		if (ev < 1)
			ev = 1;
	}
	if (every)
		*every = f->when.kind == WH_decode ? ev : 0;
	return f->when.kind == WH_decode ? 1 : 0;
}

KVCC_API int kvcc_policy_obs(const kvcc_policy *p, const double *params, int *obs)
{
	if (!p || !obs)
		return seterr(KVCC_EINVAL, "null %s", p ? "obs pointer" : "policy");
	const KiFn *f = p->f;
	double o = 0;
	if (f->obs_all) {
		*obs = -1;
		return 0;
	}
	if (KC_RKIND(f->obs) == RK_CON)
		o = f->con[KC_RIDX(f->obs)];
	else if (KC_RKIND(f->obs) == RK_PAR)
		o = params ? params[KC_RIDX(f->obs)] : f->par[KC_RIDX(f->obs)].def;
	if (!(o >= 0 && o <= INT32_MAX) || o != floor(o))
		return seterr(KVCC_EINVAL, "policy %s: the observation count must be an integer in 0..%d, got %g",
		              p->a->name, INT32_MAX, o);
	*obs = (int)o;
	return 0;
}

KVCC_API int kvcc_param_info(const kvcc_policy *p, int i, const char **name, double *def)
{
	if (!p || i < 0 || i >= p->f->npar)
		return seterr(KVCC_EINVAL, "param index %d out of range", i);
	if (name)
		*name = p->f->par[i].name;
	if (def)
		*def = p->f->par[i].def;
	return 0;
}

/* --- plan ------------------------------------------------------------------------------------ */

/* select, chunk > 1: a partial last chunk (instance k, len tokens) of a scope group */
typedef struct Part {
	uint64_t key;
	int k, len, keep;
} Part;

struct kvcc_plan {
	kvcc_policy *p;
	kvcc_layout lay;
	int max_obs, threads;
	size_t esz;
	KrPool pool;
	int pool_ok;
	int tmap;                /* token_map: generated fused elementwise loops (plan tgen) */
	double *par;             /* [npar] params of the observe hook */
	int *step;               /* [layers] x.step of the next decode of each layer */
	/* decode workspaces (sized here; the run path allocates nothing) */
	int64_t lds;             /* logits row stride: capacity rounded up to DTILE, + DTILE */
	int maxch;               /* split-KV chunks per head */
	float *S;                /* [kv_heads][G][lds] logits, then probabilities */
	float *qs;               /* [kv_heads][G][d] rounded, scaled queries */
	float *cst;              /* [kv_heads][maxch][G*(2+d)] chunk states (m, l, acc) */
	float **oval;            /* [kv_heads][nins] observe values */
	double ms[4];            /* last compress: score, select, compact, total */
	/* attn_score workspaces, one per pool thread, for ws_go = G * max_obs query rows: the fused
	** kernels' tiles and Q rows (ws), the generic epilogue's tiles and softmax stats (ews) */
	int ws_go;
	float **ws;
	char **ews;
	int obs_sized;           /* the workspaces depend on nobs: a compress may pass up to max_obs */
	uint64_t *selkeys;       /* select: candidate keys of one scope group */
	Part *part;              /* [layers*kv_heads] select, chunk > 1: partial last chunks of a group */
	int32_t *kidx;           /* [layers][kv_heads][capacity] sorted kept positions per instance */
	int32_t *nkept;          /* [layers][kv_heads] */
	/* compress values, in arenas sized at plan time for capacity tokens and max_obs queries:
	** without a head_mean barrier every instance is scored by one thread in one go, so its
	** token_map / attn_score values live in that thread's arena and only the score is kept per
	** instance; with one (values cross the barrier) every instance has its own arena */
	uint8_t *mat;            /* [nins] materialized instructions */
	int narena;              /* threads, or layers*kv_heads with head_mean */
	float **arena;           /* [narena] */
	float ***tvals;          /* [narena][nins] value pointers into the arena */
	float *scorebuf;         /* [layers][kv_heads][capacity] */
	float **score;           /* [layers*kv_heads] */
	double *cpar;            /* [npar] compress params */
};

static size_t inscount(const KiFn *f, int i, const int size[AX_NUM])
{
	size_t n = 1;
	for (int ax = 0; ax < AX_NUM; ax++)
		if (f->ins[i].axes & AXM(ax))
			n *= (size_t)size[ax];
	return n;
}

/* The values an arena holds: materialized instructions, attn_score outputs, the stored outputs of
** generated token_map loops and head_mean results. */
static int inarena(const kvcc_plan *pl, int i)
{
	const KpPlan *kp = &pl->p->plan;
	return pl->mat[i] || kp->cls[i] == KP_RED || (pl->tmap && kp->tout[i]) ||
	       (kp->cls[i] && pl->p->f->ins[i].op == KO_hmean);
}

static int make_arenas(kvcc_plan *pl)
{
	const KiFn *f = pl->p->f;
	int size[AX_NUM] = { pl->p->a->group, pl->max_obs, pl->lay.capacity, pl->lay.head_dim };
	size_t total = 0;
	for (int i = 0; i < f->nins; i++)
		if (inarena(pl, i))
			total += (inscount(f, i, size) + 16) / 16 * 16;
	for (int t = 0; t < pl->narena; t++) {
		if (!(pl->arena[t] = aligned_alloc(64, (total + 16) * sizeof(float))) ||
		    !(pl->tvals[t] = calloc((size_t)f->nins + 1, sizeof(float *))))
			return -1;
		size_t off = 0;
		for (int i = 0; i < f->nins; i++)
			if (inarena(pl, i)) {
				pl->tvals[t][i] = pl->arena[t] + off;
				off += (inscount(f, i, size) + 16) / 16 * 16;
			}
	}
	return 0;
}

static size_t wsfloats(int go, int d) { return (size_t)go * ATILE + (size_t)d * ATILE + 4 * (size_t)go + ATILE + (size_t)go * d + 64; }

/* The generic attn epilogue's workspace for go query rows: tile pointers [nins], softmax max and
** sum [nins][go] (double), a [go][TILE] tile per Q·K / attn instruction. */
static size_t ewsbytes(const kvcc_plan *pl, int go)
{
	const KiFn *f = pl->p->f;
	size_t ntile = 0;
	for (int i = 0; i < f->nins; i++)
		ntile += pl->p->plan.cls[i] == KP_DOT || pl->p->plan.cls[i] == KP_ATTN;
	return ((size_t)f->nins + 1) * sizeof(float *) + 2 * ((size_t)f->nins * go + 1) * sizeof(double) +
	       ntile * go * TILE * sizeof(float);
}

/* The attn_score workspaces of every pool thread for go query rows (plan time). */
static int make_ws(kvcc_plan *pl, int go)
{
	for (int t = 0; t < pl->threads; t++)
		if (!(pl->ws[t] = aligned_alloc(64, (wsfloats(go, pl->lay.head_dim) * sizeof(float) + 63) / 64 * 64)) ||
		    !(pl->ews[t] = malloc(ewsbytes(pl, go))))
			return -1;
	pl->ws_go = go;
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

KVCC_API int kvcc_plan_timings(const kvcc_plan *pl, double ms[4])
{
	if (!pl || !ms)
		return seterr(KVCC_EINVAL, "null argument");
	memcpy(ms, pl->ms, sizeof pl->ms);
	return 0;
}

KVCC_API int kvcc_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int threads, kvcc_plan **out)
{
	if (!out)
		return seterr(KVCC_EINVAL, "null argument");
	*out = NULL;
	if (!p || !lay)
		return seterr(KVCC_EINVAL, "null argument");
	const kvcc_artifact *a = p->a;
	if (lay->dtype != a->dtype || lay->head_dim != a->head_dim)
		return seterr(KVCC_ESPEC, "layout has dtype %d head_dim %d, artifact was compiled for dtype %d head_dim %d",
		              lay->dtype, lay->head_dim, a->dtype, a->head_dim);
	if (lay->layers < 1 || lay->kv_heads < 1 || lay->capacity < 1 || lay->capacity > (1 << 30))
		return seterr(KVCC_EINVAL, "bad layout: layers %d kv_heads %d capacity %d", lay->layers, lay->kv_heads,
		              lay->capacity);
	int64_t d = lay->head_dim, st = lay->stride_token, sh = lay->stride_head, sl = lay->stride_layer;
	if (st < d || sh < st * lay->capacity || (lay->layers > 1 && sl < sh * lay->kv_heads) ||
	    (lay->kv_heads == 1 && sh < st * lay->capacity) || sl < 0)
		return seterr(KVCC_EINVAL, "bad layout strides (layer %lld, head %lld, token %lld) for head_dim %d capacity %d",
		              (long long)sl, (long long)sh, (long long)st, lay->head_dim, lay->capacity);
	if (max_obs < 0 || threads < 0)
		return seterr(KVCC_EINVAL, "bad max_obs %d or threads %d", max_obs, threads);
	kvcc_plan *pl = calloc(1, sizeof *pl);
	if (!pl)
		return seterr(KVCC_ENOMEM, "out of memory");
	pl->p = p, pl->lay = *lay, pl->max_obs = max_obs;
	pl->threads = threads ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (pl->threads < 1)
		pl->threads = 1;
	if (pl->threads > 256)
		pl->threads = 256;
	pl->esz = lay->dtype == KVCC_F32 ? 4 : 2;
	const KiFn *f = p->f;
	int H = lay->kv_heads, G = a->group;
	size_t dd = (size_t)lay->head_dim;
	pl->lds = ((int64_t)lay->capacity + DTILE - 1) / DTILE * DTILE + DTILE;
	pl->maxch = (2 * pl->threads + H - 1) / H + 1;
	pl->par = malloc(((size_t)f->npar + 1) * sizeof *pl->par);
	pl->step = calloc((size_t)lay->layers, sizeof *pl->step);
	pl->S = malloc((size_t)H * G * pl->lds * sizeof(float));
	pl->qs = malloc((size_t)H * G * dd * sizeof(float));
	pl->cst = malloc((size_t)H * pl->maxch * G * (2 + dd) * sizeof(float));
	pl->oval = calloc((size_t)H * (f->nins + 1), sizeof *pl->oval);
	pl->ws = calloc((size_t)pl->threads, sizeof *pl->ws);
	pl->ews = calloc((size_t)pl->threads, sizeof *pl->ews);
	size_t ninst = (size_t)lay->layers * H, sg = f->sel.scope == SC_head ? 1 : f->sel.scope == SC_layer ? (size_t)H : ninst;
	pl->selkeys = malloc((sg * lay->capacity + 1) * sizeof(uint64_t));
	pl->part = malloc((ninst + 1) * sizeof *pl->part);
	pl->kidx = malloc((ninst * lay->capacity + 1) * sizeof(int32_t));
	pl->nkept = malloc((ninst + 1) * sizeof(int32_t));
	pl->mat = calloc((size_t)f->nins + 1, 1);
	pl->narena = p->plan.uses_hmean ? (int)ninst : pl->threads;
	pl->arena = calloc((size_t)pl->narena, sizeof *pl->arena);
	pl->tvals = calloc((size_t)pl->narena, sizeof *pl->tvals);
	pl->scorebuf = malloc((ninst * lay->capacity + 1) * sizeof(float));
	pl->score = calloc(ninst, sizeof *pl->score);
	pl->cpar = malloc(((size_t)f->npar + 1) * sizeof *pl->cpar);
	{
		const char *ev = getenv("KVCC_TMAP");     /* KVCC_TMAP=0: the C evaluator for all of token_map */
		pl->tmap = p->a->tmap && p->plan.ngen && !(ev && !strcmp(ev, "0"));
	}
	int bad = !pl->par || !pl->step || !pl->S || !pl->qs || !pl->cst || !pl->oval || !pl->ws || !pl->ews || !pl->selkeys ||
	          !pl->part || !pl->kidx || !pl->nkept || !pl->mat || !pl->arena || !pl->tvals || !pl->scorebuf || !pl->score || !pl->cpar;
	if (!bad) {
		/* materialize: needed instructions consumed by token_map/attn (not only by the Q·K tile) */
		const KpPlan *kp = &p->plan;
		for (int i = 0; i < f->nins; i++) {
			int cl = kp->cls[i];
			if (cl == KP_MAT || cl == KP_ATTN || cl == KP_RED)
				for (int k = 0; k < ki_nargs(f->ins[i].op); k++) {
					int j = KC_RIDX(f->ins[i].arg[k]);
					/* generated loops store only their tout values (the rest stays in registers) */
					if (KC_RKIND(f->ins[i].arg[k]) == RK_INS && kp->cls[j] == KP_MAT &&
					    !(pl->tmap && kp->tgen[j] && !kp->tout[j]))
						pl->mat[j] = 1;
				}
			if (pl->tmap && kp->tout[i])
				pl->mat[i] = 1;
		}
		if (KC_RKIND(f->score) == RK_INS && kp->cls[KC_RIDX(f->score)] == KP_MAT)
			pl->mat[KC_RIDX(f->score)] = 1;
		bad = make_arenas(pl) != 0;
		pl->obs_sized = p->plan.has_attn;
		for (int i = 0; i < f->nins; i++)
			pl->obs_sized |= inarena(pl, i) && (f->ins[i].axes & AXM(AX_obs));
	}
	if (!bad && p->plan.has_attn && max_obs > 0)
		bad = make_ws(pl, G * max_obs) != 0;
	for (int i = 0; i < f->npar && !bad; i++)
		pl->par[i] = f->par[i].def;
	/* observe values: one buffer per (head, needed instruction), at capacity */
	int size[AX_NUM] = { G, 1, lay->capacity, (int)dd };
	for (int h = 0; h < H && !bad; h++)
		for (int i = 0; i < f->nins && !bad; i++)
			if (p->plan.oneed[i]) {
				size_t n = 1;
				for (int ax = 0; ax < AX_NUM; ax++)
					if (f->ins[i].axes & AXM(ax))
						n *= (size_t)size[ax];
				bad = !(pl->oval[(size_t)h * f->nins + i] = malloc((n + 1) * sizeof(float)));
			}
	if (!bad && kr_pool_init(&pl->pool, pl->threads) != 0)
		bad = 1;
	else if (!bad)
		pl->pool_ok = 1;
	if (bad) {
		kvcc_plan_destroy(pl);
		return seterr(KVCC_ENOMEM, "out of memory (plan workspaces)");
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
		for (size_t k = 0; k < (size_t)pl->lay.kv_heads * (pl->p->f->nins + 1); k++)
			free(pl->oval[k]);
	for (int t = 0; pl->ws && t < pl->threads; t++)
		free(pl->ws[t]), free(pl->ews ? pl->ews[t] : NULL);
	free(pl->ws), free(pl->ews);
	free(pl->selkeys), free(pl->part), free(pl->kidx), free(pl->nkept);
	for (int t = 0; t < pl->narena; t++) {
		if (pl->arena)
			free(pl->arena[t]);
		if (pl->tvals)
			free(pl->tvals[t]);
	}
	free(pl->arena), free(pl->tvals), free(pl->mat), free(pl->scorebuf), free(pl->score), free(pl->cpar);
	free(pl->oval), free(pl->par), free(pl->step), free(pl->S), free(pl->qs), free(pl->cst);
	free(pl);
}

KVCC_API int kvcc_plan_set_params(kvcc_plan *pl, const double *params)
{
	if (!pl)
		return seterr(KVCC_EINVAL, "null plan");
	for (int i = 0; i < pl->p->f->npar; i++)
		pl->par[i] = params ? params[i] : pl->p->f->par[i].def;
	return 0;
}

KVCC_API int kvcc_plan_set_step(kvcc_plan *pl, int step)
{
	if (!pl || step < 0)
		return seterr(KVCC_EINVAL, "null plan or negative step");
	for (int l = 0; l < pl->lay.layers; l++)
		pl->step[l] = step;
	return 0;
}

/* --- execution ------------------------------------------------------------------------------- */

typedef struct Run {
	kvcc_plan *pl;
	const KiFn *f;
	const KpPlan *kp;
	kvcc_cache *c;
	const kvcc_obs *obs;
	const double *par;
	uint8_t *mat;            /* [nins] materialize */
	float ***val;            /* [ninst][nins] */
	int ninst, G, O, d;
	int step;                /* x.step */
	int lo, hi;              /* instruction range of the current stage */
	int next, err;           /* work counter, first error */
	char errmsg[600];
	pthread_mutex_t mu;
} Run;

typedef struct Op {
	const float *p;
	float k;
	size_t st[AX_NUM];
} Op;

static size_t strides(uint8_t m, const int size[AX_NUM], size_t st[AX_NUM])
{
	size_t n = 1;
	for (int ax = AX_NUM - 1; ax >= 0; ax--) {
		st[ax] = (m & AXM(ax)) ? n : 0;
		if (m & AXM(ax))
			n *= (size_t)size[ax];
	}
	return n;
}

static void mkop(Run *r, float **vals, KcRef ref, const int size[AX_NUM], Op *o)
{
	memset(o, 0, sizeof *o);
	switch (KC_RKIND(ref)) {
	case RK_CON: o->k = (float)r->f->con[KC_RIDX(ref)]; return;
	case RK_PAR: o->k = (float)r->par[KC_RIDX(ref)]; return;
	case RK_INS: {
		const KiIns *in = &r->f->ins[KC_RIDX(ref)];
		strides(in->axes, size, o->st);
		o->p = vals[KC_RIDX(ref)];
		if (!in->axes) {
			o->k = o->p ? o->p[0] : 0;
			o->p = NULL;
		}
	}
	}
}

static inline float at(const Op *o, int g, int ob, int t, int ch)
{
	return o->p ? o->p[g * o->st[0] + ob * o->st[1] + t * o->st[2] + ch * o->st[3]] : o->k;
}

static inline float ew(int op, float a, float b, float c)
{
	switch (op) {
	case KO_neg: return -a;
	case KO_exp: return expf(a);
	case KO_log: return logf(a);
	case KO_sqrt: return sqrtf(a);
	case KO_abs: return fabsf(a);
	case KO_add: return a + b;
	case KO_sub: return a - b;
	case KO_mul: return a * b;
	case KO_div: return a / b;
	case KO_pow: return powf(a, b);
	case KO_max: return isnan(a) || isnan(b) ? NAN : a > b ? a : b > a ? b : signbit(a) ? b : a;
	case KO_min: return isnan(a) || isnan(b) ? NAN : a < b ? a : b < a ? b : signbit(a) ? a : b;
	case KO_lt: return a < b;
	case KO_le: return a <= b;
	case KO_eq: return a == b;
	case KO_ne: return a != b;
	case KO_where: return a != 0 ? b : c;
	}
	return NAN;
}

typedef struct Inst {
	int l, h, n;
	int size[AX_NUM];
	const char *Kb, *Vb;     /* rows of this instance */
	int32_t *pos;
	float *Qf;               /* [G][O][d] f32 */
	const float *attn;       /* decode: [G][lda] probabilities */
	int64_t lda;
} Inst;

static int posof(const Inst *I, int t) { return I->pos ? I->pos[t] : t; }
/* default: the positions of the last O held tokens (DESIGN §3), extrapolated when O > n */
static int qposof(Run *r, const Inst *I, int o)
{
	int t = I->n - r->O + o;
	return r->obs && r->obs->qpos ? r->obs->qpos[o] : t >= 0 ? posof(I, t) : (I->n ? posof(I, 0) : 0) + t;
}

static int fail(Run *r, const KiIns *in, const char *fmt, ...)
{
	pthread_mutex_lock(&r->mu);
	if (!r->err) {
		char m[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(m, sizeof m, fmt, ap);
		va_end(ap);
		snprintf(r->errmsg, sizeof r->errmsg, "%s:%u:%u: error: %s", r->f->src, in ? in->line : 0, in ? in->col : 0, m);
		r->err = KVCC_EINVAL;
	}
	pthread_mutex_unlock(&r->mu);
	return -1;
}

/* a pool's kernel size (a runtime scalar), or -1 with the error set */
static int poolk(Run *r, float **vals, const KiIns *in, const int size[AX_NUM])
{
	Op b;
	mkop(r, vals, in->arg[1], size, &b);
	float kv = b.p ? b.p[0] : b.k;
	if (!(kv >= 1 && kv <= 1e6) || kv != floorf(kv))
		return fail(r, in, "pooling kernel size must be a positive integer, got %g", kv);
	return (int)kv;
}

/* a generated token_map loop (instructions i..e) for one instance */
static int runtmap(Run *r, Inst *I, float **vals, int i, int e)
{
	const KiFn *f = r->f;
	const kvcc_layout *lay = &r->pl->lay;
	for (int j = i; j <= e; j++) {
		const KiIns *in = &f->ins[j];
		if (!r->kp->tgen[j])
			continue;
		if ((in->op == KO_avgpool || in->op == KO_maxpool) && poolk(r, vals, in, I->size) < 0)
			return -1;
		if (r->kp->tout[j] && !vals[j])   /* the arenas hold every stored value: run never allocates */
			return fail(r, NULL, "internal error: value %d has no plan-time buffer", j);
	}
	kvcc_tmap_ctx c = {
		.vals = vals, .par = r->par, .K = I->Kb, .V = I->Vb, .pos = I->pos,
		.state = r->c->state ? r->c->state + ((size_t)I->l * lay->kv_heads + I->h) * (size_t)lay->capacity : NULL,
		.n = I->n, .ldk = lay->stride_token, .sstride = (int64_t)lay->layers * lay->kv_heads * lay->capacity,
		.layer = I->l, .head = I->h, .layers = lay->layers, .heads = lay->kv_heads, .step = r->step, .obs = r->O,
	};
	r->pl->p->a->tmap(i, &c);
	return 0;
}

/* std over axis ax (m long) of a into out (output shape R, strides rs): per output element the
** mean, then the mean squared deviation from it, each summed in axis order (no buffer). */
static void stdred(const Op *a, int ax, int m, const int R[AX_NUM], const size_t rs[AX_NUM], float *out)
{
	for (int g = 0; g < R[0]; g++)
		for (int o = 0; o < R[1]; o++)
			for (int t = 0; t < R[2]; t++)
				for (int ch = 0; ch < R[3]; ch++) {
					int idx[AX_NUM] = { g, o, t, ch };
					float mu = 0, acc = 0;
					for (idx[ax] = 0; idx[ax] < m; idx[ax]++)
						mu += at(a, idx[0], idx[1], idx[2], idx[3]) / m;
					for (idx[ax] = 0; idx[ax] < m; idx[ax]++) {
						float v = at(a, idx[0], idx[1], idx[2], idx[3]);
						acc += (v - mu) * (v - mu);
					}
					out[g * rs[0] + o * rs[1] + t * rs[2] + ch * rs[3]] = m ? sqrtf(acc / m) : NAN;
				}
}

/* token_map: one materialized instruction (f32 mirror of interp.c evalins) */
static int evalmat(Run *r, Inst *I, float **vals, int i)
{
	const KiIns *in = &r->f->ins[i];
	const kvcc_artifact *A = r->pl->p->a;
	const kvcc_layout *lay = &r->pl->lay;
	size_t rs[AX_NUM], count = strides(in->axes, I->size, rs);
	float *out = vals[i];
	int R[AX_NUM];
	for (int ax = 0; ax < AX_NUM; ax++)
		R[ax] = (in->axes & AXM(ax)) ? I->size[ax] : 1;
	Op a, b, c;
	mkop(r, vals, in->arg[0], I->size, &a);
	mkop(r, vals, in->arg[1], I->size, &b);
	mkop(r, vals, in->arg[2], I->size, &c);
	int n = I->n, d = r->d;
	switch (in->op) {
	case KO_input:
		switch (in->aux) {
		case IN_K: case IN_V:
			for (int t = 0; t < n; t++)
				A->cvt((in->aux == IN_K ? I->Kb : I->Vb) + (size_t)t * lay->stride_token * r->pl->esz,
				       out + (size_t)t * d, d);
			return 0;
		case IN_Q:
			memcpy(out, I->Qf, count * sizeof(float));
			return 0;
		case IN_lse: {
			const float *ls = r->obs->lse + ((size_t)I->l * lay->kv_heads + I->h) * r->G * r->O;
			memcpy(out, ls, count * sizeof(float));
			return 0;
		}
		case IN_pos:
			for (int t = 0; t < n; t++)
				out[t] = (float)posof(I, t);
			return 0;
		case IN_qpos:
			for (int o = 0; o < r->O; o++)
				out[o] = (float)qposof(r, I, o);
			return 0;
		}
		return fail(r, in, "input not supported");
	case KO_index:
		for (size_t k = 0; k < count; k++)
			out[k] = (float)k;
		return 0;
	case KO_size:
		out[0] = in->axis < AX_NUM ? (float)I->size[in->axis] : 0;
		return 0;
	case KO_info: {
		double v = 0;
		switch (in->aux) {
		case INF_scale: v = 1.0 / sqrt((double)d); break;
		case INF_layer: v = I->l; break;
		case INF_head: v = I->h; break;
		case INF_nlayers: v = lay->layers; break;
		case INF_nheads: v = lay->kv_heads; break;
		case INF_step: v = r->step; break;
		}
		out[0] = (float)v;
		return 0;
	}
	case KO_rand: {
		uint64_t seed = (uint64_t)(int64_t)(a.p ? a.p[0] : a.k);
		for (int t = 0; t < n; t++)
			out[t] = (float)ki_rand(seed, (uint64_t)I->l, (uint64_t)I->h, (uint64_t)posof(I, t));
		return 0;
	}
	case KO_hmean:
		return 0;
	case KO_state: {
		const float *s = r->c->state ? r->c->state + (((size_t)in->aux * lay->layers + I->l) * lay->kv_heads + I->h) *
		                                                  (size_t)lay->capacity
		                             : NULL;
		float init = (float)r->f->st[in->aux].init;
		for (int t = 0; t < n; t++)
			out[t] = s ? s[t] : init;
		return 0;
	}
	case KO_attn:
		if (!I->attn)
			return fail(r, in, "x.attn outside a decode step");
		for (int g = 0; g < r->G; g++)
			memcpy(out + (size_t)g * n, I->attn + (size_t)g * I->lda, (size_t)n * sizeof(float));
		return 0;
	}
	switch (ki_rule(in->op)) {
	case AR_EW:
		for (int g = 0; g < R[0]; g++)
			for (int o = 0; o < R[1]; o++)
				for (int t = 0; t < R[2]; t++)
					for (int ch = 0; ch < R[3]; ch++)
						out[g * rs[0] + o * rs[1] + t * rs[2] + ch * rs[3]] =
							ew(in->op, at(&a, g, o, t, ch), at(&b, g, o, t, ch), at(&c, g, o, t, ch));
		return 0;
	case AR_RED:
	case AR_DOT: {
		int ax = in->axis, S[AX_NUM];
		for (int k = 0; k < AX_NUM; k++)
			S[k] = R[k];
		S[ax] = I->size[ax];
		int m = I->size[ax];
		if (in->op == KO_std) {
			stdred(&a, ax, m, R, rs, out);
			return 0;
		}
		for (size_t k = 0; k < count; k++)
			out[k] = in->op == KO_rmax ? -INFINITY : in->op == KO_rmin ? INFINITY : 0;
		for (int g = 0; g < S[0]; g++)
			for (int o = 0; o < S[1]; o++)
				for (int t = 0; t < S[2]; t++)
					for (int ch = 0; ch < S[3]; ch++) {
						int idx[AX_NUM] = { g, o, t, ch };
						idx[ax] = 0;
						size_t k = idx[0] * rs[0] + idx[1] * rs[1] + idx[2] * rs[2] + idx[3] * rs[3];
						float v = at(&a, g, o, t, ch);
						switch (in->op) {
						case KO_sum: case KO_mean: out[k] += v; break;
						case KO_rmax: out[k] = isnan(v) || v > out[k] ? v : out[k]; break;
						case KO_rmin: out[k] = isnan(v) || v < out[k] ? v : out[k]; break;
						case KO_norm: out[k] += v * v; break;
						case KO_dot: out[k] += v * at(&b, g, o, t, ch); break;
						}
					}
		for (size_t k = 0; k < count; k++) {
			if (in->op == KO_mean)
				out[k] = m ? out[k] / m : NAN;
			else if (in->op == KO_norm)
				out[k] = sqrtf(out[k]);
		}
		return 0;
	}
	case AR_KEEP: {
		int ax = in->axis, m = I->size[ax];
		if (in->op == KO_avgpool || in->op == KO_maxpool) {
			int k = poolk(r, vals, in, I->size), p = k / 2;
			if (k < 0)
				return -1;
			for (int g = 0; g < R[0]; g++)
				for (int o = 0; o < R[1]; o++)
					for (int ch = 0; ch < R[3]; ch++)
						for (int t = 0; t < m; t++) {
							float acc = in->op == KO_avgpool ? 0 : -INFINITY;
							int j0 = t - p < 0 ? 0 : t - p, j1 = t - p + k > m ? m : t - p + k;
							for (int j = j0; j < j1; j++) {
								float v = at(&a, g, o, j, ch);
								acc = in->op == KO_avgpool ? acc + v : (v > acc || isnan(v) ? v : acc);
							}
							out[g * rs[0] + o * rs[1] + t * rs[2] + ch * rs[3]] = in->op == KO_avgpool ? acc / k : acc;
						}
			return 0;
		}
		int causal = in->op == KO_softmax && ax == AX_token && (in->axes & AXM(AX_obs));
		for (int g = 0; g < R[0]; g++)
			for (int o = 0; o < R[1]; o++)
				for (int t = 0; t < R[2]; t++)
					for (int ch = 0; ch < R[3]; ch++) {
						int idx[AX_NUM] = { g, o, t, ch };
						if (idx[ax] != 0)
							continue;
						float mx = -INFINITY;
						double sum = 0;
						for (int pass = 0; pass < 3; pass++)
							for (int j = 0; j < m; j++) {
								idx[ax] = j;
								int vis = !(causal && posof(I, j) > qposof(r, I, o));
								float v = at(&a, idx[0], idx[1], idx[2], idx[3]);
								if (pass == 0 && vis)
									mx = v > mx ? v : mx;
								else if (pass == 1 && vis)
									sum += exp((double)v - mx);
								else if (pass == 2)
									out[idx[0] * rs[0] + idx[1] * rs[1] + idx[2] * rs[2] + idx[3] * rs[3]] =
										vis && sum > 0 ? (float)(exp((double)v - mx) / sum) : 0;
							}
					}
		return 0;
	}
	}
	return fail(r, in, "x86 runtime: op %s not handled", ki_opname(in->op));
}

/* Visible tokens of tile [t0, t0+nt) for every query row (causal: pos <= qpos, with pos
** non-decreasing so the visible ones are a prefix). */
static void tilevis(Run *r, const Inst *I, int t0, int nt, int causal, int32_t *vj)
{
	int G = r->G, O = r->O;
	for (int o = 0; o < O; o++) {
		int v = nt;
		if (causal) {
			int qp = qposof(r, I, o);
			if (posof(I, t0 + nt - 1) > qp) {
				int lo = 0, hi = nt;          /* first j with pos > qp */
				while (lo < hi) {
					int mid = (lo + hi) / 2;
					if (posof(I, t0 + mid) > qp)
						hi = mid;
					else
						lo = mid + 1;
				}
				v = lo;
			}
		}
		for (int g = 0; g < G; g++)
			vj[g * O + o] = v;
	}
}

/* The fused attn_score: dot → mul by scalars → softmax over token → sum/mean over obs, with the
** generated packed Q·K tile and softmax epilogue; attn_stats is skipped when lse is given and the
** logits are the attention's (x.scale). 1: the pattern does not apply here (generic path). */
static int fastattn(Run *r, Inst *I, float **vals, int lo, int hi, int tid)
{
	const KpPlan *kp = r->kp;
	const KiFn *f = r->f;
	const kvcc_artifact *A = r->pl->p->a;
	int G = r->G, O = r->O, GO = G * O, n = I->n, d = r->d;
	if (GO > r->pl->ws_go)
		return 1;
	if (kp->fcausal && I->pos)
		for (int t = 1; t < n; t++)
			if (I->pos[t] < I->pos[t - 1])
				return 1;
	float a = 1;
	for (int k = 0; k < kp->nmul; k++) {
		Op o;
		mkop(r, vals, kp->mul[k], I->size, &o);
		a *= o.k;
	}
	float *w = r->pl->ws[tid];
	float *S = w, *Kp = S + (size_t)GO * ATILE, *m = Kp + (size_t)d * ATILE, *l = m + GO, *mp = l + GO;
	float *acc = mp + GO;
	int32_t *vj = (int32_t *)(acc + ATILE);
	int64_t ldk = r->pl->lay.stride_token;
	size_t esz = r->pl->esz;
	if (kp->fscale && r->obs->lse) {
		const float *ls = r->obs->lse + ((size_t)I->l * r->pl->lay.kv_heads + I->h) * GO;
		for (int q = 0; q < GO; q++)
			mp[q] = ls[q];
	} else {
		for (int q = 0; q < GO; q++)
			m[q] = -INFINITY, l[q] = 0;
		for (int t0 = 0; t0 < n; t0 += ATILE) {
			int nt = n - t0 < ATILE ? n - t0 : ATILE;
			A->qkt(I->Kb + (size_t)t0 * ldk * esz, ldk, nt, I->Qf, GO, S, Kp);
			tilevis(r, I, t0, nt, kp->fcausal, vj);
			A->sstat(S, GO, vj, a, m, l);
		}
		for (int q = 0; q < GO; q++)
			mp[q] = l[q] > 0 ? m[q] + logf(l[q]) : INFINITY;
	}
	int fr = -1;
	for (int i = lo; i < hi; i++)
		if (kp->cls[i] == KP_RED && fr < 0)
			fr = i;
	float *out = vals[fr];
	for (int t0 = 0; t0 < n; t0 += ATILE) {
		int nt = n - t0 < ATILE ? n - t0 : ATILE;
		A->qkt(I->Kb + (size_t)t0 * ldk * esz, ldk, nt, I->Qf, GO, S, Kp);
		tilevis(r, I, t0, nt, kp->fcausal, vj);
		for (int g = 0; g < G; g++) {
			memset(acc, 0, ATILE * sizeof(float));
			A->sacc(S + (size_t)g * O * ATILE, O, vj + g * O, a, mp + g * O, acc);
			memcpy(out + (size_t)g * n + t0, acc, (size_t)nt * sizeof(float));
		}
	}
	for (int i = lo; i < hi; i++) {
		if (kp->cls[i] != KP_RED)
			continue;
		if (i != fr)
			memcpy(vals[i], out, (size_t)G * n * sizeof(float));
		if (f->ins[i].op == KO_mean)
			for (size_t k = 0; k < (size_t)G * n; k++)
				vals[i][k] /= (float)O;
	}
	return 0;
}

/* attn_score: compute every KP_RED instruction of the stage for one instance. */
static int evalattn(Run *r, Inst *I, float **vals, int lo, int hi, int tid)
{
	const KiFn *f = r->f;
	const KpPlan *kp = r->kp;
	int GO = r->G * r->O, n = I->n;
	int nred = 0;
	for (int i = lo; i < hi; i++)
		nred += kp->cls[i] == KP_RED;
	if (!nred)
		return 0;
	if (r->O < 1)
		return fail(r, &f->ins[lo], "the policy reads Q but no observation queries were given");
	if (kp->fast && fastattn(r, I, vals, lo, hi, tid) == 0)
		return 0;
	int last = 0;
	for (int i = lo; i < hi; i++)
		if (kp->cls[i] == KP_RED)
			last = i;
	/* tile buffers for the attn instructions up to `last`, softmax stats: the thread's plan-time
	** workspace (ewsbytes, GO <= ws_go) */
	float **tb = (float **)(void *)r->pl->ews[tid];
	double *mx = (double *)(tb + f->nins + 1), *sm = mx + (size_t)f->nins * GO + 1;
	float *tile = (float *)(sm + (size_t)f->nins * GO + 1);
	memset(mx, 0, 2 * ((size_t)f->nins * GO + 1) * sizeof *mx);
	for (int i = 0; i < f->nins; i++) {
		tb[i] = NULL;
		if (i <= last && (kp->cls[i] == KP_DOT || kp->cls[i] == KP_ATTN))
			tb[i] = tile, tile += (size_t)GO * TILE;
	}
	for (int i = lo; i < hi; i++)
		if (kp->cls[i] == KP_RED)
			memset(vals[i], 0, (size_t)r->G * n * sizeof(float));
	const kvcc_artifact *A = r->pl->p->a;
	int64_t ldk = r->pl->lay.stride_token;
	/* pass s < nsoft: attn_stats of softmax s; pass nsoft: attn_score */
	for (int s = 0; s <= kp->nsoft; s++) {
		int upto = s < kp->nsoft ? kp->soft[s] : last + 1;   /* evaluate ins < upto */
		if (upto > last + 1)
			break;
		if (s < kp->nsoft)
			for (int q = 0; q < GO; q++)
				mx[(size_t)upto * GO + q] = -INFINITY, sm[(size_t)upto * GO + q] = 0;
		for (int t0 = 0; t0 < n; t0 += TILE) {
			int nt = n - t0 < TILE ? n - t0 : TILE;
			for (int i = 0; i < upto; i++) {
				int cl = kp->cls[i];
				const KiIns *in = &f->ins[i];
				if (cl == KP_DOT) {
					A->qk(I->Kb + (size_t)t0 * ldk * r->pl->esz, ldk, nt, I->Qf, GO, tb[i]);
				} else if (cl == KP_ATTN) {
					Op op[3];
					float *ta[3] = { 0 };
					for (int k = 0; k < 3; k++) {
						mkop(r, vals, in->arg[k], I->size, &op[k]);
						if (KC_RKIND(in->arg[k]) == RK_INS && tb[KC_RIDX(in->arg[k])] &&
						    (kp->cls[KC_RIDX(in->arg[k])] == KP_DOT || kp->cls[KC_RIDX(in->arg[k])] == KP_ATTN))
							ta[k] = tb[KC_RIDX(in->arg[k])];
					}
					float *o = tb[i];
					if (in->op == KO_softmax || in->op == KO_softmaxnc) {
						int causal = in->op == KO_softmax;
						for (int g = 0; g < r->G; g++)
							for (int ob = 0; ob < r->O; ob++) {
								int q = g * r->O + ob, qp = qposof(r, I, ob);
								double m = mx[(size_t)i * GO + q], su = sm[(size_t)i * GO + q];
								for (int j = 0; j < nt; j++) {
									int vis = !causal || posof(I, t0 + j) <= qp;
									o[q * nt + j] = vis && su > 0 ? (float)(exp((double)ta[0][q * nt + j] - m) / su) : 0;
								}
							}
					} else {
						for (int g = 0; g < r->G; g++)
							for (int ob = 0; ob < r->O; ob++) {
								int q = g * r->O + ob;
								for (int j = 0; j < nt; j++) {
									float v[3];
									for (int k = 0; k < 3; k++)
										v[k] = ta[k] ? ta[k][q * nt + j] : at(&op[k], g, ob, t0 + j, 0);
									o[q * nt + j] = ew(in->op, v[0], v[1], v[2]);
								}
							}
					}
				} else if (cl == KP_RED && i >= lo && s == kp->nsoft) {
					const float *src = tb[KC_RIDX(in->arg[0])];
					float *acc = vals[i];
					for (int g = 0; g < r->G; g++)
						for (int ob = 0; ob < r->O; ob++)
							for (int j = 0; j < nt; j++)
								acc[(size_t)g * n + t0 + j] += src[(g * r->O + ob) * nt + j];
				}
			}
			if (s < kp->nsoft) {     /* online max / sum of the softmax operand */
				const KiIns *in = &f->ins[upto];
				const float *src = tb[KC_RIDX(in->arg[0])];
				int causal = in->op == KO_softmax;
				for (int g = 0; g < r->G; g++)
					for (int ob = 0; ob < r->O; ob++) {
						int q = g * r->O + ob, qp = qposof(r, I, ob);
						double m = mx[(size_t)upto * GO + q], su = sm[(size_t)upto * GO + q];
						for (int j = 0; j < nt; j++) {
							if (causal && posof(I, t0 + j) > qp)
								continue;
							double v = src[q * nt + j];
							if (v > m) {
								su = su * exp(m - v) + 1;
								m = v;
							} else
								su += exp(v - m);
						}
						mx[(size_t)upto * GO + q] = m, sm[(size_t)upto * GO + q] = su;
					}
			}
		}
	}
	for (int i = lo; i < hi; i++)
		if (kp->cls[i] == KP_RED && f->ins[i].op == KO_mean)
			for (size_t k = 0; k < (size_t)r->G * n; k++)
				vals[i][k] /= r->O;
	return 0;
}

static void instof(Run *r, int k, Inst *I)
{
	const kvcc_layout *lay = &r->pl->lay;
	memset(I, 0, sizeof *I);
	I->l = k / lay->kv_heads, I->h = k % lay->kv_heads;
	I->n = r->c->len[k];
	I->size[AX_group] = r->G, I->size[AX_obs] = r->O, I->size[AX_token] = I->n, I->size[AX_chan] = r->d;
	size_t off = ((size_t)I->l * lay->stride_layer + (size_t)I->h * lay->stride_head) * r->pl->esz;
	I->Kb = (const char *)r->c->K + off;
	I->Vb = (const char *)r->c->V + off;
	I->pos = r->c->pos ? r->c->pos + (size_t)k * lay->capacity : NULL;
}

static int runinst(Run *r, int k, int tid)
{
	Inst I;
	instof(r, k, &I);
	int arena = r->val == NULL;
	float **vals = arena ? r->pl->tvals[tid] : r->val[k];
	const KiFn *f = r->f;
	if (r->kp->has_attn && !I.Qf) {       /* the workspace's Q rows (G * nobs <= ws_go) */
		size_t nq = (size_t)r->G * r->O * r->d;
		int GO = r->G * r->O;
		I.Qf = r->pl->ws[tid] + (size_t)GO * ATILE + (size_t)r->d * ATILE + 4 * (size_t)GO + ATILE;
		r->pl->p->a->cvt((const char *)r->obs->Q + (size_t)k * nq * r->pl->esz, I.Qf, (int64_t)nq);
	}
	int rc = 0;
	const uint8_t *tg = r->pl->tmap ? r->kp->tgen : NULL;
	for (int i = r->lo; i < r->hi && rc == 0; i++) {
		if (tg && tg[i] == KP_GEN_IN)
			continue;
		if (tg && tg[i] == KP_GEN_START) {      /* a generated fused loop */
			int e = kp_segend(r->kp, i);
			rc = runtmap(r, &I, vals, i, e);
			i = e;
			continue;
		}
		if (!r->mat[i] && r->kp->cls[i] != KP_RED)
			continue;
		if (!vals[i]) {
			rc = fail(r, NULL, "internal error: value %d has no plan-time buffer", i);
			break;
		}
		if (r->kp->cls[i] == KP_RED) {
			/* all attn outputs of the stage in one skeleton run */
			int first = 1;
			for (int j = r->lo; j < i; j++)
				first &= r->kp->cls[j] != KP_RED;
			if (first) {
				for (int j = i; j < r->hi; j++)
					if (r->kp->cls[j] == KP_RED && !vals[j])
						rc = fail(r, NULL, "internal error: value %d has no plan-time buffer", j);
				if (rc == 0)
					rc = evalattn(r, &I, vals, r->lo, r->hi, tid);
			}
		} else
			rc = evalmat(r, &I, vals, i);
	}
	if (arena && rc == 0) {           /* keep the score; the arena is reused by the next instance */
		float *sb = r->pl->scorebuf + (size_t)k * r->pl->lay.capacity;
		Op a;
		mkop(r, vals, f->score, I.size, &a);
		for (int t = 0; t < I.n; t++)
			sb[t] = at(&a, 0, 0, t, 0);
	}
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

static double refval(const KiFn *f, const double *par, KcRef r, double def)
{
	switch (KC_RKIND(r)) {
	case RK_CON: return f->con[KC_RIDX(r)];
	case RK_PAR: return par[KC_RIDX(r)];
	}
	return def;
}

/* The threshold key of the `want` largest of nc keys (~0: none, 0: all). */
static uint64_t threshold(const kvcc_artifact *A, const uint64_t *ks, size_t nc, long want)
{
	return want <= 0 ? ~0ull : (size_t)want >= nc ? 0 : A->topk(ks, (int64_t)nc, want);
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
static long chunkgreedy(const kvcc_artifact *A, const uint64_t *ks, size_t nc, long ch, Part *pt, int np, long want)
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

/* Select: the kept positions of every instance, sorted, into pl->kidx / pl->nkept, on generated
** kernels per scope group (head, layer or model; budgets via ki_nkeep). chunk 1: selkeys builds
** the 64-bit keys (protected, score with NaN lowest and -0 = +0, lower instance and position
** first), topk radix-selects the group's threshold key, keepidx writes each instance's sorted kept
** list. chunk > 1: ckeys builds the chunk keys (full chunks contiguous, each instance's partial
** last chunk set aside in pl->part), chunkgreedy finds how many full chunks are kept, topk their
** threshold, ckeepidx expands kept chunks to each instance's sorted kept list. */
static int selectkeep(Run *r, float **score, const kvcc_args *args)
{
	const kvcc_artifact *A = r->pl->p->a;
	int32_t *kidx = r->pl->kidx, *nkept = r->pl->nkept;
	Part *pt = r->pl->part;
	const KiFn *f = r->f;
	const kvcc_layout *lay = &r->pl->lay;
	int cap = lay->capacity;
	long S = (long)refval(f, r->par, f->sel.keep_first, 0), Rr = (long)refval(f, r->par, f->sel.keep_recent, 0);
	long ch = (long)refval(f, r->par, f->sel.chunk, 1);
	if (S < 0 || Rr < 0 || ch < 1)
		return seterr(KVCC_EINVAL, "%s:%u:%u: error: select: keep_first, keep_recent must be >= 0 and chunk >= 1",
		              f->src, f->sel.line, f->sel.col);
	uint64_t *ks = r->pl->selkeys;      /* plan-time: the keys of one scope group */
	size_t nc = 0, base = 0;
	long want = 0;
	int np = 0;
	for (int k = 0; k < r->ninst; k++) {
		int l = k / lay->kv_heads, h = k % lay->kv_heads;
		long n = r->c->len[k];
		want += ki_nkeep(f, r->par, l, lay->layers, n, args->ratio, args->budget);
		if (ch == 1) {
			A->selkeys(score[k], n, S, Rr, (uint32_t)((size_t)k * cap), ks + nc);
			nc += (size_t)n;
		} else {
			A->ckeys(score[k], n, S, Rr, (uint32_t)((size_t)k * cap), ch, ks + nc);
			if (n % ch) {           /* insertion into pt, highest key first */
				Part p = { ks[nc + (size_t)(n / ch)], k, (int)(n % ch), 0 };
				int j = np++;
				for (; j > 0 && pt[j - 1].key < p.key; j--)
					pt[j] = pt[j - 1];
				pt[j] = p;
			}
			nc += (size_t)(n / ch);
		}
		int lastk = f->sel.scope == SC_head || (f->sel.scope == SC_layer && h == lay->kv_heads - 1) ||
		            k == r->ninst - 1;
		if (!lastk)
			continue;
		size_t c = 0;
		if (ch == 1) {
			uint64_t thr = threshold(A, ks, nc, want);
			for (int kk = (int)base; kk <= k; kk++) {
				long nn = r->c->len[kk];
				nkept[kk] = want <= 0 ? 0 : (int32_t)A->keepidx(ks + c, nn, thr, kidx + (size_t)kk * cap);
				c += (size_t)nn;
			}
		} else {
			uint64_t thr = threshold(A, ks, nc, chunkgreedy(A, ks, nc, ch, pt, np, want));
			for (int kk = (int)base; kk <= k; kk++)
				nkept[kk] = 0;          /* here: whether the partial last chunk is kept */
			for (int j = 0; j < np; j++)
				nkept[pt[j].k] = pt[j].keep;
			for (int kk = (int)base; kk <= k; kk++) {
				long nn = r->c->len[kk];
				nkept[kk] = (int32_t)A->ckeepidx(ks + c, nn, ch, thr, nkept[kk], kidx + (size_t)kk * cap);
				c += (size_t)(nn / ch);
			}
		}
		nc = 0, want = 0, np = 0, base = (size_t)k + 1;
	}
	return 0;
}

/* compact_merge (no merges yet): the generated in-place stable gather of one instance's kept
** rows of K, V, pos and state, from the sorted kept list select wrote. */
static void compacttask(void *arg, int k, int tid)
{
	(void)tid;
	Run *r = arg;
	const kvcc_layout *lay = &r->pl->lay;
	int nst = r->c->state ? r->f->nst : 0;
	Inst I;
	instof(r, k, &I);
	size_t cap = (size_t)lay->capacity;
	r->pl->p->a->compact((void *)I.Kb, (void *)I.Vb, lay->stride_token, r->pl->kidx + k * cap, r->pl->nkept[k], I.pos,
	                     nst ? r->c->state + k * cap : NULL, nst, (int64_t)(r->ninst * cap));
	r->c->len[k] = r->pl->nkept[k];
}

static void compact(Run *r) { kr_pool_run(&r->pl->pool, compacttask, r, r->ninst); }

KVCC_API int kvcc_compress(kvcc_plan *pl, kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args)
{
	if (!pl || !c || !args || !c->K || !c->V || !c->len)
		return seterr(KVCC_EINVAL, "null argument (plan, cache, K, V, len, args)");
	const KiFn *f = pl->p->f;
	const KpPlan *kp = &pl->p->plan;
	const kvcc_layout *lay = &pl->lay;
	int ninst = lay->layers * lay->kv_heads;
	for (int k = 0; k < ninst; k++)
		if (c->len[k] < 0 || c->len[k] > lay->capacity)
			return seterr(KVCC_EINVAL, "length %d of (layer %d, head %d) outside 0..%d", c->len[k], k / lay->kv_heads,
			              k % lay->kv_heads, lay->capacity);
	if (args->budget < 0 && !(args->ratio >= 0 && args->ratio < 1))
		return seterr(KVCC_EINVAL, "ratio must be in [0, 1), got %g", args->ratio);
	int O = obs ? obs->nobs : 0;
	if (kp->has_attn && (O < 1 || !obs->Q))
		return seterr(KVCC_EINVAL, "policy %s reads Q: pass observation queries", f->name);
	if ((kp->uses_lse && (!obs || !obs->lse)) || O < 0)
		return seterr(KVCC_EINVAL, "bad observation queries (nobs %d, lse %s)", O, obs && obs->lse ? "given" : "missing");
	if (pl->obs_sized && O > pl->max_obs)
		return seterr(KVCC_EINVAL, "%d observation queries, but the plan was created for at most %d (max_obs)", O,
		              pl->max_obs);
	if (kp->uses_qpos && O < 1)
		return seterr(KVCC_EINVAL, "policy %s reads qpos: pass observation queries", f->name);
	if (kp->uses_hmean)
		for (int k = 0; k < ninst; k++)
			if (c->len[k] != c->len[(k / lay->kv_heads) * lay->kv_heads])
				return seterr(KVCC_EINVAL, "mean over heads needs equal lengths across the heads of layer %d",
				              k / lay->kv_heads);
	double t0 = now_ms(), t1 = t0, t2 = t0;
	Run r = { .pl = pl, .f = f, .kp = kp, .c = c, .obs = obs, .ninst = ninst, .G = pl->p->a->group, .O = O,
	          .d = lay->head_dim };
	int maxstep = 0;
	for (int l = 0; l < lay->layers; l++)
		maxstep = pl->step[l] > maxstep ? pl->step[l] : maxstep;
	r.step = maxstep > 0 ? maxstep - 1 : 0;
	pthread_mutex_init(&r.mu, NULL);
	double *par = pl->cpar;
	r.mat = pl->mat;
	int arena = !kp->uses_hmean;      /* per-thread arenas, else per-instance ones (plan time) */
	r.val = arena ? NULL : pl->tvals;
	float **score = pl->score;
	int rc = 0;
	for (int i = 0; i < f->npar; i++)
		par[i] = args->params ? args->params[i] : f->par[i].def;
	r.par = par;
	/* stages split at hmean */
	r.lo = 0;
	for (int i = 0; i <= f->nins; i++) {
		int bar = i < f->nins && kp->cls[i] && f->ins[i].op == KO_hmean;
		if (i < f->nins && !bar)
			continue;
		r.hi = i;
		if (parallel(&r) != 0) {
			rc = seterr(r.err, "%s", r.errmsg);
			goto done;
		}
		if (bar) {
			const KiIns *in = &f->ins[i];
			for (int l = 0; l < lay->layers; l++) {
				int k0 = l * lay->kv_heads, n = c->len[k0];
				int size[AX_NUM] = { r.G, O, n, r.d };
				size_t st[AX_NUM], cnt = strides(in->axes, size, st);
				for (size_t e = 0; e < cnt; e++) {
					double s = 0;
					for (int h = 0; h < lay->kv_heads; h++) {
						Op a;
						mkop(&r, r.val[k0 + h], in->arg[0], size, &a);
						s += a.p ? a.p[e] : a.k;
					}
					for (int h = 0; h < lay->kv_heads; h++)
						r.val[k0 + h][i][e] = (float)(s / lay->kv_heads);
				}
			}
			r.lo = i + 1;
		}
	}
	for (int k = 0; k < ninst; k++) {
		score[k] = pl->scorebuf + (size_t)k * lay->capacity;
		if (!arena) {
			Op a;
			int size[AX_NUM] = { r.G, O, c->len[k], r.d };
			mkop(&r, r.val[k], f->score, size, &a);
			for (int t = 0; t < c->len[k]; t++)
				score[k][t] = at(&a, 0, 0, t, 0);
		}
		if (args->scores)
			for (int t = 0; t < lay->capacity; t++)
				args->scores[(size_t)k * lay->capacity + t] = t < c->len[k] ? score[k][t] : NAN;
	}
	t1 = now_ms();
	if ((rc = selectkeep(&r, score, args)) != 0)
		goto done;
	t2 = now_ms();
	compact(&r);
	pl->ms[0] = t1 - t0, pl->ms[1] = t2 - t1, pl->ms[2] = now_ms() - t2, pl->ms[3] = now_ms() - t0;
done:
	pthread_mutex_destroy(&r.mu);
	return rc;
}

/* --- decode ------------------------------------------------------------------------------------ */

KVCC_API int kvcc_append(kvcc_plan *pl, kvcc_cache *c, int layer, const void *k, const void *v, int32_t pos)
{
	if (!pl || !c || !c->K || !c->V || !c->len || !k || !v)
		return seterr(KVCC_EINVAL, "null argument (plan, cache, K, V, len, k, v)");
	const kvcc_layout *lay = &pl->lay;
	if (layer < 0 || layer >= lay->layers)
		return seterr(KVCC_EINVAL, "layer %d outside 0..%d", layer, lay->layers - 1);
	int H = lay->kv_heads, cap = lay->capacity;
	const KiFn *f = pl->p->f;
	for (int h = 0; h < H; h++) {
		int n = c->len[layer * H + h];
		if (n < 0 || n >= cap)
			return seterr(KVCC_EINVAL, "append: (layer %d, head %d) holds %d tokens, capacity %d", layer, h, n, cap);
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
			for (int s = 0; s < f->nst; s++)
				c->state[((size_t)s * lay->layers * H + k0) * cap + n] = (float)f->st[s].init;
		c->len[k0] = n + 1;
	}
	return 0;
}

typedef struct Dec {
	kvcc_plan *pl;
	kvcc_cache *c;
	float *out;
	Run r;                   /* observe-hook evaluation context */
	int layer, G, d, H, cs, chper;
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
	const KpPlan *kp = &pl->p->plan;
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
	if (!kp->has_observe)
		return;
	const KiFn *f = pl->p->f;
	Run *r = &D->r;
	float *S = pl->S + (size_t)h * G * pl->lds;
	for (int g = 0; g < G; g++)
		if (n > 0)
			A->probs(S + (size_t)g * pl->lds, n, M[g], Li[g]);
	Inst I;
	instof(r, k, &I);
	I.attn = S, I.lda = pl->lds;
	float **vals = pl->oval + (size_t)h * f->nins;
	for (int i = 0; i < f->nins; i++)
		if (kp->oneed[i] && evalmat(r, &I, vals, i) != 0)
			return;
	const kvcc_layout *lay = &pl->lay;
	for (int s = 0; s < f->nst; s++) {
		if (!f->st[s].update)
			continue;
		Op op;
		mkop(r, vals, f->st[s].update, I.size, &op);
		float *sv = D->c->state + ((size_t)s * lay->layers * D->H + k) * lay->capacity;
		for (int t = 0; t < n; t++)
			sv[t] = at(&op, 0, 0, t, 0);
	}
}

KVCC_API int kvcc_decode_layer(kvcc_plan *pl, kvcc_cache *c, int layer, const float *q, float *out)
{
	if (!pl || !c || !c->K || !c->V || !c->len || !q || !out)
		return seterr(KVCC_EINVAL, "null argument (plan, cache, K, V, len, q, out)");
	const kvcc_layout *lay = &pl->lay;
	const KiFn *f = pl->p->f;
	const KpPlan *kp = &pl->p->plan;
	if (layer < 0 || layer >= lay->layers)
		return seterr(KVCC_EINVAL, "layer %d outside 0..%d", layer, lay->layers - 1);
	if (kp->has_observe && f->nst && !c->state)
		return seterr(KVCC_EINVAL, "policy %s keeps per-token state: pass cache->state ([%d][layers][kv_heads][capacity])",
		              f->name, f->nst);
	int H = lay->kv_heads, G = pl->p->a->group, d = lay->head_dim, nmax = 0;
	long total = 0;
	for (int h = 0; h < H; h++) {
		int n = c->len[layer * H + h];
		if (n < 0 || n > lay->capacity)
			return seterr(KVCC_EINVAL, "length %d of (layer %d, head %d) outside 0..%d", n, layer, h, lay->capacity);
		nmax = n > nmax ? n : nmax;
		total += n;
	}
	/* rounded (storage dtype, the reference semantics) and scaled queries */
	float scale = (float)(1.0 / sqrt((double)d));
	for (size_t i = 0; i < (size_t)H * G * d; i++)
		pl->qs[i] = ki_round(q[i], lay->dtype) * scale;
	Dec D = { .pl = pl, .c = c, .out = out, .layer = layer, .G = G, .d = d, .H = H };
	D.r = (Run){ .pl = pl, .f = f, .kp = kp, .c = c, .par = pl->par, .ninst = lay->layers * H, .G = G, .O = 0, .d = d,
	             .step = pl->step[layer] };
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
	pthread_mutex_init(&D.r.mu, NULL);
	if (total >= 1024 || kp->has_observe)
		kr_pool_run(&pl->pool, dec_head, &D, H);
	else
		for (int h = 0; h < H; h++)
			dec_head(&D, h, 0);
	pthread_mutex_destroy(&D.r.mu);
	if (D.r.err)
		return seterr(D.r.err, "%s", D.r.errmsg);
	pl->step[layer]++;
	return 0;
}

/* the GPU path (runtime/gpu.c) reports through the same thread-local message */
__attribute__((visibility("hidden"))) int kr_seterr(int code, const char *msg)
{
	return seterr(code, "%s", msg);
}
