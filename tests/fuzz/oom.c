/*
** Allocation-failure injection (DESIGN §9, style point 22): every allocation
** the compile path and the runtime's setup make can fail, and each failure must
** end in a clean error — a return code with a one-line message that says out
** of memory — with nothing leaked, and never a crash, an abort or a wrong
** result.
**
** The program is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,
** --wrap=free,--wrap=strdup: every call in kvcc's own objects (linked in
** statically) and in Lua (through the sandbox's allocator) comes here. A
** scenario runs once to count its allocations A, then for N = 1 .. A twice:
** with only the Nth allocation failing (transient) and with the Nth and every
** later one failing (persistent), as SQLite's fault simulator does. Each run
** must return an error whose message says "memory", or succeed with exactly
** the result of the run without failures (Lua's emergency collection retries
** a failed allocation); the allocations live after the run must be those
** live before it (a leak check that also works under ASan, which checks the
** rest).
**
** Scenarios: policy.lua through the sandbox, passes, printer, hash, plan,
** interpreter (compress and observe; merges and the issue-13 selection rules
** too, with weights made up to the declared shapes), CUDA C generator; the
** same from .kir text (a policy the planner refuses — compiler/support.c —
** still runs through the interpreter; its x86 and API scenarios are a SKIP); the x86 backend's own allocations around LLVM (--x86; LLVM's C++
** allocations are not ours to fail); the npz reader and writer; and through
** the public API, kvcc_open of a compiled artifact and kvcc_plan_create, then
** kvcc_compress, kvcc_append and kvcc_decode_layer, which must allocate
** nothing (written against kvcc.h, so it holds across runtime rewrites).
**
**   oom_tests [--x86] [POLICY.lua...]   (make check: --x86 and every shipped policy;
**                                       check-san: two policies, no --x86)
**   --x86        also the x86 backend's own allocations around LLVM (kx_compile: an LLVM
**                compile per late failure point)
**   OOM_STEP=k   test every kth N only (a quicker, partial run)
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "compiler/mplan.h"
#include "tools/npz.h"
#include "compiler/plan.h"
#include "codegen/ptx/ptx.h"
#include "codegen/x86/x86.h"
#include "dsl/dsl.h"

/* --- the wrapped allocator ---------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);

static int armed, persistent;
static long count, failat, nfailed;

/* live pointers: open addressing, linear probing, deletion by backward shift */
#define NLIVE (1u << 20)
static void *live[NLIVE];
static long nlive;

static size_t slot(const void *p) { return ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 44 & (NLIVE - 1); }

static void track(void *p)
{
	if (!p || !armed)
		return;
	size_t s = slot(p);
	while (live[s])
		s = (s + 1) & (NLIVE - 1);
	live[s] = p;
	if (++nlive > (long)NLIVE * 3 / 4) {
		fputs("oom_tests: too many live allocations to track\n", stderr);
		_exit(2);
	}
}

static void untrack(void *p)
{
	if (!p)
		return;
	size_t s = slot(p);
	for (; live[s] != p; s = (s + 1) & (NLIVE - 1))
		if (!live[s])
			return;                 /* not ours (allocated before arming, or by libc) */
	live[s] = NULL;
	nlive--;
	for (size_t j = (s + 1) & (NLIVE - 1); live[j]; j = (j + 1) & (NLIVE - 1)) {
		size_t h = slot(live[j]);
		/* move live[j] into the hole when its home is not between the hole and j */
		if ((j > s && (h <= s || h > j)) || (j < s && h <= s && h > j)) {
			live[s] = live[j], live[j] = NULL;
			s = j;
		}
	}
}

static int fail(void)
{
	if (!armed)
		return 0;
	count++;
	if (failat && (count == failat || (persistent && count > failat))) {
		nfailed++;
		return 1;
	}
	return 0;
}

void *__wrap_malloc(size_t n)
{
	if (fail())
		return NULL;
	void *p = __real_malloc(n);
	track(p);
	return p;
}

void *__wrap_calloc(size_t a, size_t b)
{
	if (fail())
		return NULL;
	void *p = __real_calloc(a, b);
	track(p);
	return p;
}

void *__wrap_realloc(void *p, size_t n)
{
	if (n && fail())
		return NULL;
	void *q = __real_realloc(p, n);
	if (q || !n)
		untrack(p);
	track(q);
	return q;
}

void __wrap_free(void *p)
{
	untrack(p);
	__real_free(p);
}

char *__wrap_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = __wrap_malloc(n);
	if (p)
		memcpy(p, s, n);
	return p;
}

/* --- scenarios ------------------------------------------------------------------------------- */

/* What a scenario produced: a digest of its results, or its error. */
typedef struct Out {
	int rc;
	int code;             /* the public API's return code (KVCC_ENOMEM wanted), 0 elsewhere */
	uint64_t digest;
	char msg[600];
} Out;

static const char *cur_name;
static long cur_n;

static void onsignal(int sig)
{
	fprintf(stderr, "oom_tests: signal %d in %s at N=%ld (%s)\n", sig, cur_name ? cur_name : "?", cur_n,
	        persistent ? "persistent" : "transient");
	signal(sig, SIG_DFL);
	raise(sig);
}

static uint64_t mix(uint64_t h, const void *p, size_t n) { return ki_fnv(p, n, h ? h : 1); }

static int seterr(Out *o, const char *stage, const KiErr *e)
{
	snprintf(o->msg, sizeof o->msg, "%s: %s", stage, e->set ? e->msg : "(no message)");
	return o->rc = -1;
}

/* plan, interpreter (compress, observe), CUDA C of a loaded policy */
static int stages(KiFn *f, Out *o)
{
	KiErr e = { 0 };
	if (ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) != 0)
		return seterr(o, "passes", &e);
	char *s = ki_print(f);
	if (!s)
		return snprintf(o->msg, sizeof o->msg, "print: out of memory"), o->rc = -1;
	o->digest = mix(o->digest, s, strlen(s));
	free(s);
	uint64_t h = ki_hash(f);
	if (!h)
		return snprintf(o->msg, sizeof o->msg, "hash: out of memory"), o->rc = -1;
	o->digest = mix(o->digest, &h, sizeof h);
	KiPlan p;
	int planned = ki_plan(f, &p, &e) == 0;
	if (planned) {
		o->digest = mix(o->digest, p.cls, (size_t)f->nins);
		ki_plan_free(&p);
	} else if (strstr(e.msg, "memory"))
		return seterr(o, "plan", &e);
	else {      /* refused (the issue-12/13 language, support.c): the interpreter still runs it */
		o->digest = mix(o->digest, e.msg, strlen(e.msg));
		e = (KiErr){ 0 };
	}

	enum { L = 2, H = 2, G = 2, D = 4, N = 9, O = 3 };
	static float K[L * H * N * D], V[L * H * N * D], Q[L * H * G * O * D], q[L * H * G * D];
	static double state[KI_MAXST * L * H * N];
	for (size_t k = 0; k < sizeof K / sizeof *K; k++)
		K[k] = (float)(4 * ki_rand(1, 0, 0, k) - 2), V[k] = (float)(4 * ki_rand(2, 0, 0, k) - 2);
	for (size_t k = 0; k < sizeof Q / sizeof *Q; k++)
		Q[k] = (float)(4 * ki_rand(3, 0, 0, k) - 2);
	for (size_t k = 0; k < sizeof q / sizeof *q; k++)
		q[k] = (float)(4 * ki_rand(4, 0, 0, k) - 2);
	/* weights (kv.weights): one static array of small values, shaped as each declaration says */
	static double wdata[1 << 16];
	static KiWData wd[KI_MAXW];
	for (size_t k = 0; k < sizeof wdata / sizeof *wdata; k++)
		wdata[k] = 0.25 * (double)(k % 5) - 0.4;
	for (int i = 0; i < f->nw; i++) {
		const KiWeight *w = &f->w[i];
		wd[i] = (KiWData){ .name = w->name, .ndim = w->ndim, .data = wdata };
		for (int k = 0; k < w->ndim; k++)
			wd[i].shape[k] = w->ax[k] == WA_layer ? L : w->ax[k] == WA_head ? H : w->ax[k] == WA_group ? G
			               : w->ax[k] == WA_chan ? D : w->size ? w->size : 3;
	}
	KiCase c = { .L = L, .H = H, .G = G, .d = D, .n = N, .O = O, .K = K, .V = V, .Q = Q, .dtype = KVCC_BF16,
	             .ratio = 0.5, .budget = -1, .nw = f->nw, .w = wd };
	KiResult r;
	if (ki_run(f, &c, &r, &e) != 0)
		return seterr(o, "interpreter", &e);
	o->digest = mix(o->digest, r.scores, (size_t)L * H * N * sizeof *r.scores);
	o->digest = mix(o->digest, r.kept, (size_t)L * H * N * sizeof *r.kept);
	if (r.K)                 /* merges change the rows */
		o->digest = mix(o->digest, r.K, (size_t)L * H * N * D * sizeof *r.K);
	if (r.count)
		o->digest = mix(o->digest, r.count, (size_t)L * H * N * sizeof *r.count);
	ki_result_free(&r);
	if (f->nst) {
		for (size_t k = 0; k < (size_t)f->nst * L * H * N; k++)
			state[k] = 0.25 * (double)(k % 7);
		if (ki_observe(f, &c, q, state, NULL, &e) != 0)
			return seterr(o, "observe", &e);
		o->digest = mix(o->digest, state, (size_t)f->nst * L * H * N * sizeof *state);
	}
	KiErr ge = { 0 };
	int gr = planned ? ki_mkernels_gpu(f, &ge) : -1;
	if (gr != 0 && planned && strstr(ge.msg, "out of memory"))
		return seterr(o, "CUDA C", &ge);         /* its check allocates (ki_mvals) */
	if (gr != 0)                                 /* the CUDA generator refuses it as the planner did, or */
		return o->rc = 0;                        /* a merge rule only x86 has (compiler/mplan.h) */
	KpCudaOpts co = { .dtype = KVCC_BF16, .head_dim = 64, .group = 2, .gen_only = 1 };
	KpCudaOut out;
	if (kp_compile_cuda(f, &co, &out, &e) != 0)
		return seterr(o, "CUDA C", &e);
	o->digest = mix(o->digest, out.src, out.nsrc);
	kp_cuda_free(&out);
	return o->rc = 0;
}

static const char *arg_path;    /* the scenario's input */
static const char *arg_text;
static const char *arg_tmp;

static int sc_dsl(Out *o)
{
	KiErr e = { 0 };
	KiFn *f = kd_loadfile(arg_path, NULL, &e);
	if (!f)
		return seterr(o, "load", &e);
	int rc = stages(f, o);
	ki_free(f);
	return rc;
}

static int sc_kir(Out *o)
{
	KiErr e = { 0 };
	KiFn *f = ki_parse(arg_text, "policy.kir", &e);
	if (!f)
		return seterr(o, "parse", &e);
	if (ki_verify(f, &e) != 0) {
		ki_free(f);
		return seterr(o, "verify", &e);
	}
	int rc = stages(f, o);
	ki_free(f);
	return rc;
}

static int sc_npz(Out *o)
{
	KiErr e = { 0 };
	KtNpz z, w = { 0 };
	if (kt_npz_read(arg_path, &z, &e) != 0)
		return seterr(o, "npz read", &e);
	for (int i = 0; i < z.n && i < 3; i++)
		if (kt_npz_add(&w, z.a[i].name, z.a[i].kind == 'f' ? "<f4" : "<i4", z.a[i].ndim, z.a[i].shape,
		               z.a[i].data) != 0) {
			snprintf(o->msg, sizeof o->msg, "npz add: out of memory");
			o->rc = -1;
			break;
		}
	int rc = o->rc;
	if (rc == 0 && kt_npz_write(arg_tmp, &w, &e) != 0)
		rc = seterr(o, "npz write", &e);
	kt_npz_free(&w);
	kt_npz_free(&z);
	if (rc == 0 && kt_npz_read(arg_tmp, &z, &e) != 0)
		rc = seterr(o, "npz read back", &e);
	if (rc == 0) {
		for (int i = 0; i < z.n; i++)
			o->digest = mix(o->digest, z.a[i].data, z.a[i].count * (size_t)z.a[i].itemsize);
		kt_npz_free(&z);
	}
	return rc;
}

/* the x86 backend's own allocations around LLVM (--x86) */
static int sc_x86(Out *o)
{
	KiErr e = { 0 };
	KiFn *f = ki_parse(arg_text, "policy.kir", &e);
	if (!f)
		return seterr(o, "parse", &e);
	kvcc_spec spec = { KVCC_F32, 16, 1, KVCC_TARGET_SCALAR };
	KiPlan p;
	int rc = ki_plan(f, &p, &e);
	if (rc == 0) {
		rc = kx_emit(f, &p, &spec, arg_tmp, 0, NULL, &e);     /* the object file (no link) */
		ki_plan_free(&p);
	}
	ki_free(f);
	if (rc != 0)
		return seterr(o, "x86", &e);
	o->digest = 1;
	return o->rc = 0;
}

/* kvcc_open + kvcc_plan_create, then one kvcc_compress and a decode step (kvcc_append,
** kvcc_decode_layer), which must allocate nothing */
static int sc_api(Out *o)
{
	enum { L = 2, H = 2, D = 16, CAP = 24, G = 1, OB = 4 };
	static float K[L * H * CAP * D], V[L * H * CAP * D], Q[L * H * G * OB * D];
	static float state[KI_MAXST * L * H * CAP], kv[H * D], q[H * G * D], out[H * G * D];
	static int32_t pos[L * H * CAP], len[L * H];
	kvcc_policy *p;
	if ((o->code = kvcc_open(arg_path, &p)) != 0) {
		snprintf(o->msg, sizeof o->msg, "kvcc_open: %s", kvcc_last_error());
		return o->rc = -1;
	}
	kvcc_layout lay = { KVCC_F32, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	kvcc_plan *pl;
	if ((o->code = kvcc_plan_create(p, &lay, OB, 1, &pl)) != 0) {
		snprintf(o->msg, sizeof o->msg, "kvcc_plan_create: %s", kvcc_last_error());
		kvcc_close(p);
		return o->rc = -1;
	}
	for (size_t k = 0; k < sizeof K / sizeof *K; k++)
		K[k] = (float)(4 * ki_rand(1, 0, 0, k) - 2), V[k] = (float)(4 * ki_rand(2, 0, 0, k) - 2);
	for (size_t k = 0; k < sizeof Q / sizeof *Q; k++)
		Q[k] = (float)(4 * ki_rand(3, 0, 0, k) - 2);
	for (int k = 0; k < L * H * CAP; k++)
		pos[k] = k % CAP;
	for (int k = 0; k < L * H; k++)
		len[k] = CAP - 1 - k / H;       /* equal across the heads of a layer (hmean) */
	for (size_t k = 0; k < sizeof state / sizeof *state; k++)
		state[k] = 0.5f;
	for (int k = 0; k < H * D; k++)
		kv[k] = (float)k / 32;
	for (int k = 0; k < H * G * D; k++)
		q[k] = (float)(k % 5) - 2;
	kvcc_cache cache = { K, V, pos, len, kvcc_state_count(p) > 0 ? state : NULL };
	kvcc_obs obs = { OB, Q, NULL, NULL };
	kvcc_args args = { .ratio = 0.5, .budget = -1, .threads = 1 };
	long before = count;
	int rc = kvcc_compress(pl, &cache, &obs, &args);
	const char *what = "kvcc_compress";
	for (int l = 0; l < L && rc == 0; l++) {
		what = "kvcc_append";
		if ((rc = kvcc_append(pl, &cache, l, kv, kv, 100 + l)) == 0)
			what = "kvcc_decode_layer", rc = kvcc_decode_layer(pl, &cache, l, q, out);
	}
	long allocs = count - before;
	if (rc != 0) {
		snprintf(o->msg, sizeof o->msg, "%s: %s", what, kvcc_last_error());
		o->code = rc;
	}
	else if (allocs) {
		snprintf(o->msg, sizeof o->msg, "compress/append/decode allocated %ld times", allocs);
		rc = -2;                  /* a bug, not a clean error */
	} else {
		o->digest = mix(o->digest, len, sizeof len);
		o->digest = mix(o->digest, K, sizeof K);
		o->digest = mix(o->digest, out, sizeof out);
		o->digest = mix(o->digest, state, sizeof state);
	}
	kvcc_plan_destroy(pl);
	kvcc_close(p);
	return o->rc = rc;
}

/* --- the driver ------------------------------------------------------------------------------ */

static int npass, nfail;

static void run(const char *name, int (*sc)(Out *), Out *o, long n, int pers)
{
	memset(o, 0, sizeof *o);
	failat = n, persistent = pers, count = 0, nfailed = 0;
	cur_name = name, cur_n = n;
	armed = 1;
	sc(o);
	armed = 0;
}

static void scenario(const char *name, int (*sc)(Out *))
{
	Out base, o;
	long before = nlive;
	run(name, sc, &base, 0, 0);
	long total = count;
	if (base.rc != 0 || nlive != before) {
		printf("FAIL %s: without failures: %s (%ld allocations leaked)\n", name,
		       base.rc ? base.msg : "ok", nlive - before);
		nfail++;
		return;
	}
	long step = getenv("OOM_STEP") ? atol(getenv("OOM_STEP")) : 1, bad = 0, points = 0;
	if (step < 1)
		step = 1;
	for (int pers = 0; pers < 2; pers++)
		for (long n = 1; n <= total; n += step) {
			run(name, sc, &o, n, pers);
			points++;
			const char *why = NULL;
			if (nlive != before)
				why = "leaked";
			else if (o.rc == -2)
				why = "bug";
			else if (o.rc != 0 && (!strstr(o.msg, "memory") || strchr(o.msg, '\n')))
				why = "unclean error";
			else if (o.rc != 0 && o.code && o.code != KVCC_ENOMEM)
				why = "an error code other than KVCC_ENOMEM";
			else if (o.rc == 0 && o.digest != base.digest)
				why = "a different result";
			else if (!nfailed)
				why = "no allocation failed";
			if (why) {
				if (bad++ < 5)
					printf("FAIL %s: %s failure at allocation %ld of %ld: %s (%s, %ld live allocations more)\n",
					       name, pers ? "persistent" : "transient", n, total, why, o.rc ? o.msg : "succeeded",
					       nlive - before);
				before = nlive;       /* report each leak once */
			}
		}
	printf("%s %s: %ld allocations, %ld failure points%s\n", bad ? "FAIL" : "ok", name, total, points,
	       bad ? "" : ", each a clean error or the same result");
	bad ? nfail++ : npass++;
}

int main(int argc, char **argv)
{
	signal(SIGSEGV, onsignal);
	signal(SIGABRT, onsignal);
	signal(SIGBUS, onsignal);
	setvbuf(stdout, NULL, _IOLBF, 0);
	static const char *defaults[] = { "policies/snapkv.lua", "policies/h2o.lua" };
	int x86 = argc > 1 && !strcmp(argv[1], "--x86");
	argc -= x86, argv += x86;
	const char **pol = argc > 1 ? (const char **)argv + 1 : defaults;
	int npol = argc > 1 ? argc - 1 : 2;
	char tmp[] = "/tmp/kvcc-oom-XXXXXX";
	if (!mkdtemp(tmp))
		return perror("mkdtemp"), 1;
	char so[256], npzout[256], name[300];
	snprintf(npzout, sizeof npzout, "%s/out.npz", tmp);
	for (int i = 0; i < npol; i++) {
		snprintf(name, sizeof name, "dsl %s", pol[i]);
		arg_path = pol[i];
		scenario(name, sc_dsl);
		/* the same policy as .kir text (printed after the default passes) */
		KiErr e = { 0 };
		KiFn *f = kd_loadfile(pol[i], NULL, &e);
		char *text = f && ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0 ? ki_print(f) : NULL;
		KiErr why = { 0 };
		int refused = text && ki_unsupported(f, &why) != 0;   /* no kernels for it yet */
		ki_free(f);
		if (!text) {
			printf("FAIL %s: %s\n", pol[i], e.msg);
			nfail++;
			continue;
		}
		snprintf(name, sizeof name, "kir %s", pol[i]);
		arg_text = text;
		scenario(name, sc_kir);
		if (refused) {
			printf("SKIP x86, api %s: %s\n", pol[i], why.msg);
			free(text);
			continue;
		}
		if (x86) {
			snprintf(name, sizeof name, "x86 %s", pol[i]);
			snprintf(so, sizeof so, "%s/x86.so", tmp);
			arg_tmp = so;
			scenario(name, sc_x86);
		}
		free(text);
		/* the public API on the compiled artifact (LLVM compiles it before arming) */
		snprintf(so, sizeof so, "%s/p%d.so", tmp, i);
		kvcc_spec spec = { KVCC_F32, 16, 1, KVCC_TARGET_SCALAR };
		setenv("KVCC_CACHE_DIR", tmp, 1);
		if (kvcc_compile_so(pol[i], &spec, so, 0) != 0) {
			printf("FAIL %s: kvcc_compile_so: %s\n", pol[i], kvcc_last_error());
			nfail++;
			continue;
		}
		snprintf(name, sizeof name, "api %s", pol[i]);
		arg_path = so;
		scenario(name, sc_api);
	}
	/* npz: a case written by kvcc itself */
	char npzin[256];
	snprintf(npzin, sizeof npzin, "%s/in.npz", tmp);
	KtNpz w = { 0 };
	KiErr e = { 0 };
	float kv[2 * 3 * 4];
	int32_t ps[3] = { 5, 6, 9 };
	for (int k = 0; k < 24; k++)
		kv[k] = (float)k / 8;
	if (kt_npz_add(&w, "K", "<f4", 4, (long[]){ 1, 2, 3, 4 }, kv) || kt_npz_add(&w, "pos", "<i4", 1, (long[]){ 3 }, ps) ||
	    kt_npz_write(npzin, &w, &e)) {
		printf("FAIL npz: cannot write the input: %s\n", e.msg);
		nfail++;
	} else {
		arg_path = npzin, arg_tmp = npzout;
		scenario("npz", sc_npz);
	}
	kt_npz_free(&w);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "oom_tests: could not remove %s\n", tmp);
	printf("allocation failures: %d scenario(s) passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
