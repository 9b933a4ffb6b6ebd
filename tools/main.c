/*
** kvcc — the command line. Each subcommand is one function that runs the
** pipeline stages in order:
**
**   policy.lua ─dsl─▶ KIR ─passes─▶ KIR' ─┬─ interp (run: reference results)
**                                          └─ (compile: kernels, later stages)
**
** Every failure prints one line "file:line:col: error: msg" on stderr and
** exits with status 1; usage errors exit with status 2.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "tools/npz.h"
#include "dsl/dsl.h"
#include "tools/tools.h"
#include "compiler/plan.h"
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "codegen/x86/x86.h"

static const char usage[] =
	"usage: kvcc <command> [options]\n"
	"\n"
	"commands:\n"
	"  check POLICY.lua [--dtype D] [--head-dim N] [--group G] [--target T] [--gpu-arch A]\n"
	"                                   verify a policy (the sandbox, the IR, the kernel\n"
	"                                   plan) for a spec (the compile defaults); prints\n"
	"                                   nothing when it would compile\n"
	"  dump POLICY.lua|FILE.kir [-d PASSES] [--raw]\n"
	"                                   print the KIR (after the default passes; -d lists\n"
	"                                   passes to run and print after, e.g. -d fold,cse;\n"
	"                                   --raw prints it as built)\n"
	"  run POLICY.lua --inputs CASE.npz [--ratio R | --budget B] [--param NAME=VALUE]...\n"
	"      [--dtype f32|f16|bf16] [--weights W.npz]... [--out RESULT.npz]\n"
	"                                   run the reference interpreter on a case\n"
	"  compile POLICY.lua -o POLICY.so [--dtype f32|f16|bf16] [--head-dim N] [--group G]\n"
	"      [--target native|x86-64-v3|x86-64-v4|scalar] [--gpu-arch sm_80,sm_90] [-v]\n"
	"                                   compile to a shared object (CPU kernels; with\n"
	"                                   --gpu-arch also PTX/CUBIN per target); -v prints the\n"
	"                                   plan, cache hit/miss and per-kernel GPU resources\n"
	"                                   (uses the tuning database's pick, or $KVCC_CONFIG)\n"
	"  tune POLICY.lua [--dtype D] [--head-dim N] [--group G] [--target T]\n"
	"      [--buckets 1024,8192,32768,131072] [--configs K] [--budget S] [--split] [-v]\n"
	"                                   measure kernel configs on this machine and record\n"
	"                                   the pick in the tuning database (doc/tune.md)\n"
	"      [--gpu-arch sm_80,sm_90 [--gpu-only]]\n"
	"                                   and GPU configs by a static model (ptxas registers,\n"
	"                                   shared memory, occupancy; nothing measured on a GPU)\n"
	"  eval POLICY.lua [POLICY.lua ...] --model M --tokenizer T --data FILE\n"
	"      [--ratios 0,0.25,0.5,0.75] [--param [policy.]NAME=VALUE]... [--stories a:b]\n"
	"      [--chunk-chars K] [--from TEXT] [--csv OUT] [--plot OUT.png] [--threads N] [--weights W.npz]...\n"
	"                                   NLL versus compression ratio on a model\n"
	"                                   (prefill-compress-continue; doc/eval.md)\n"
	"  calibrate --model M --tokenizer T --data FILE [--stories a:b] [--chunk-chars K]\n"
	"      [--from TEXT] [--out W.npz] [--repeat N] [--trials N] [--seed S] [--sinks N]\n"
	"                                   weights of the learned policies (head classes,\n"
	"                                   query statistics, PrefixKV fractions, the gate, W_o)\n"
	"                                   from a model, for --weights (doc/dsl.md)\n"
	"  --help, --version\n"
	"\n"
	"developer commands (stages on their own, for tests; options may change):\n"
	"  dev cuda POLICY.lua [--gpu-arch sm_80,sm_90|all] [--dtype D] [--head-dim N] [--group G]\n"
	"      [--threads T] [--gpu-config STR] [-v] [--emit-cuda FILE.cu] [--emit-dir DIR] [--gen-only]\n"
	"                                   the GPU backend alone: the CUDA C, NVRTC per arch,\n"
	"                                   registers / shared memory / spills per kernel (-v)\n"
	"\n"
	"CASE.npz holds K, V [L,H,n,d]; Q [L,H,G,O,d] when the policy reads it (its last `obs`\n"
	"rows are used); optional qpos [O] (default: the positions of the last O held tokens),\n"
	"pos [n], lse [L,H,G,O]; optional 0-d ratio, budget, param.NAME and dtype; weight.NAME\n"
	"(the policy's weights, as --weights gives them). Decode steps, two protocols: dk, dv\n"
	"[S,L,H,d] with dq [S,L,H,G,d] (append, attend, observe, compress over the budget; the\n"
	"merge oracle's) or dK, dV [S,L,H,d] with optional dq (after a first compression: append,\n"
	"observe, compress every N steps); optional dpos [S].\n"
	"\n"
	"exit status: 0 success; 1 an error in the policy or an input (one line on stderr,\n"
	"file:line:col: error: ...); 2 a usage error.\n"
	"environment: KVCC_CACHE_DIR, KVCC_CACHE_LOCK_TIMEOUT, KVCC_CC, KVCC_NVRTC, KVCC_LIBCUDA,\n"
	"KVCC_BF16DOT, KVCC_MERGE_AMX.\n"
	"Every command, option, array, exit status and variable, with examples: doc/cli.md.\n";

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvcc: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (kvcc --help for usage)\n");
	exit(2);
}

static int fail(const KiErr *e)
{
	fprintf(stderr, "%s\n", e->msg);
	return 1;
}

static int endswith(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Load a policy (.lua through the sandbox, .kir through the parser). */
KiFn *kt_load(const char *path, KiErr *e)
{
	if (endswith(path, ".kir")) {
		char *text = ki_readfilemax(path, KI_MAXTEXT, NULL, e);
		if (!text)
			return NULL;
		KiFn *f = ki_parse(text, path, e);
		free(text);
		if (f && ki_verify(f, e) != 0) {
			ki_free(f);
			return NULL;
		}
		return f;
	}
	return kd_loadfile(path, NULL, e);
}

static void dumpone(const KiFn *f, const char *pass, void *ud)
{
	char *s = ki_print(f);
	if (!s)
		*(int *)ud = 1;
	else
		printf("# after %s\n%s", pass, s);
	free(s);
}

static int cmd_dump(int argc, char **argv)
{
	const char *path = NULL, *passes = NULL;
	int raw = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-d") && i + 1 < argc)
			passes = argv[++i];
		else if (!strncmp(argv[i], "-d", 2) && argv[i][2])
			passes = argv[i] + 2;
		else if (!strcmp(argv[i], "--raw"))
			raw = 1;
		else if (argv[i][0] == '-')
			die_usage("dump: unknown option '%s'", argv[i]);
		else if (!path)
			path = argv[i];
		else
			die_usage("dump: unexpected argument '%s'", argv[i]);
	}
	if (!path)
		die_usage("dump: no policy file%s", "");
	KiErr e = { 0 };
	KiFn *f = kt_load(path, &e);
	if (!f)
		return fail(&e);
	int rc = 0, nomem = 0;
	if (passes) {
		rc = ki_runpasses(f, passes, 1, &e, dumpone, &nomem);
	} else {
		if (!raw)
			rc = ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL);
		if (rc == 0) {
			char *s = ki_print(f);
			if (s)
				fputs(s, stdout);
			nomem = !s;
			free(s);
		}
	}
	if (rc == 0 && nomem) {
		ki_error(&e, path, 0, 0, "out of memory");
		rc = -1;
	}
	ki_free(f);
	return rc ? fail(&e) : 0;
}

/* a positive integer option value, or a usage error */
static int posint(const char *cmd, const char *v, const char *opt)
{
	char *end;
	long x = strtol(v, &end, 10);
	if (end == v || *end || x < 1 || x > 65536) {
		fprintf(stderr, "kvcc: %s: %s wants a positive integer, got '%s' (kvcc --help for usage)\n", cmd, opt, v);
		exit(2);
	}
	return (int)x;
}

/* kvcc check POLICY.lua [--dtype D] [--head-dim N] [--group G] [--target T] [--gpu-arch A]: the
** driver's stages up to the plan and the backends' checks (compiler/driver.c), so a policy that
** checks also compiles for that spec */
static int cmd_check(int argc, char **argv)
{
	const char *in = NULL, *gpu = NULL;
	kvcc_spec s = { KVCC_F32, 128, 1, KVCC_TARGET_NATIVE };
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--gpu-arch") && v) gpu = v, i++;
		else if (!strcmp(a, "--dtype") && v) { if ((s.dtype = ki_dtypebyname(v)) < 0) die_usage("unknown dtype '%s'", v); i++; }
		else if (!strcmp(a, "--head-dim") && v) s.head_dim = posint("check", v, "--head-dim"), i++;
		else if (!strcmp(a, "--group") && v) s.group = posint("check", v, "--group"), i++;
		else if (!strcmp(a, "--target") && v) { if ((s.target = kx_targetbyname(v)) < 0) die_usage("unknown target '%s' (x86-64-v3, x86-64-v4, native, scalar)", v); i++; }
		else if (a[0] != '-' && !in) in = a;
		else die_usage("check: unexpected argument '%s'", a);
	}
	if (!in)
		die_usage("check: expects exactly one policy file%s", "");
	if (kvcc_check(in, &s, gpu) != 0) {
		fprintf(stderr, "%s\n", kvcc_last_error());
		return 1;
	}
	return 0;
}

/* --- run ------------------------------------------------------------------------------- */

static int parse_double(const char *s, double *v)
{
	char *end;
	*v = strtod(s, &end);
	return end != s && *end == 0;
}

static int setparam(const KiFn *f, double *par, const char *name, double v, const char *where, KiErr *e)
{
	int i = ki_findparam(f, name);
	if (i < 0) {
		ki_error(e, where, 0, 0, "policy '%s' has no param '%s'", f->name, name);
		return -1;
	}
	par[i] = v;
	return 0;
}

/* Shape check of an input array. */
static int want(const KtArray *a, const char *path, int ndim, const long *shape, KiErr *e)
{
	if (a->kind != 'f' && a->kind != 'i' && a->kind != 'u') {
		ki_error(e, path, 0, 0, "array '%s' must be numeric", a->name);
		return -1;
	}
	int ok = a->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = shape[i] < 0 || a->shape[i] == shape[i];
	if (!ok) {
		char got[128] = "", exp[128] = "";
		for (int i = 0; i < a->ndim; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%ld", i ? ", " : "", a->shape[i]);
		for (int i = 0; i < ndim; i++) {
			if (shape[i] < 0)
				snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s?", i ? ", " : "");
			else
				snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%ld", i ? ", " : "", shape[i]);
		}
		ki_error(e, path, 0, 0, "array '%s' has shape (%s), expected (%s)", a->name, got, exp);
		return -1;
	}
	return 0;
}

/* NULL: out of memory */
static float *tofloat(const KtArray *a)
{
	float *p = ki_realloc(NULL, (a->count + 1) * sizeof *p);
	for (size_t k = 0; p && k < a->count; k++)
		p[k] = (float)kt_array_get(a, k);
	return p;
}

/* -1 with "out of memory" at the case file */
static int nomem(const char *inputs, KiErr *e)
{
	ki_error(e, inputs, 0, 0, "out of memory");
	return -1;
}

/* What `kvcc run` gathers from the case and the command line (malloc'd arrays). */
typedef struct Run {
	const char *inputs;      /* the case file, for messages */
	KiCase c;
	double *par, *state;
	float *K, *V, *Q, *lse, *dq;
	int32_t *pos, *qpos, *len;
	KtWeights w;             /* --weights files, then the case's weight.NAME */
} Run;

static void runfree(Run *r)
{
	free(r->par), free(r->K), free(r->V), free(r->Q), free(r->lse), free(r->pos), free(r->qpos);
	free(r->dq), free(r->state), free(r->len);
	kt_weights_free(&r->w);
}

/* The case's tensors: K, V [L, H, n, d]; optional Q [L, H, G, O, d], lse [L, H, G, O],
** pos [n] (default 0 .. n-1, every head), qpos [O]. */
static int readarrays(const KtNpz *z, Run *r, KiErr *e)
{
	KiCase *c = &r->c;
	const char *inputs = r->inputs;
	const KtArray *aK = kt_npz_get(z, "K"), *aV = kt_npz_get(z, "V"), *aQ = kt_npz_get(z, "Q"), *a;
	if (!aK || !aV) {
		ki_error(e, inputs, 0, 0, "the case needs arrays K and V [L, H, n, d]");
		return -1;
	}
	if (want(aK, inputs, 4, (long[]){ -1, -1, -1, -1 }, e) || want(aV, inputs, 4, aK->shape, e))
		return -1;
	c->L = (int)aK->shape[0], c->H = (int)aK->shape[1], c->n = (int)aK->shape[2], c->d = (int)aK->shape[3];
	c->G = 1;
	if (c->L < 1 || c->H < 1 || c->d < 1 || c->L > 4096 || c->H > 4096 || c->d > 4096) {
		ki_error(e, inputs, 0, 0, "K has an empty or oversized dimension");
		return -1;
	}
	r->K = tofloat(aK), r->V = tofloat(aV);
	if (!r->K || !r->V)
		return nomem(inputs, e);
	if (aQ) {
		if (want(aQ, inputs, 5, (long[]){ c->L, c->H, -1, -1, c->d }, e))
			return -1;
		c->G = (int)aQ->shape[2], c->O = (int)aQ->shape[3];
		if (c->G < 1 || c->G > 64) {
			ki_error(e, inputs, 0, 0, "Q's group dimension must be 1..64");
			return -1;
		}
		if (!(r->Q = tofloat(aQ)))
			return nomem(inputs, e);
	}
	if ((a = kt_npz_get(z, "lse"))) {
		if (want(a, inputs, 4, (long[]){ c->L, c->H, c->G, c->O }, e))
			return -1;
		if (!(r->lse = tofloat(a)))
			return nomem(inputs, e);
	}
	if (!(r->pos = ki_realloc(NULL, ((size_t)c->L * c->H * c->n + 1) * sizeof *r->pos)))
		return nomem(inputs, e);
	if ((a = kt_npz_get(z, "pos")) && want(a, inputs, 1, (long[]){ c->n }, e))
		return -1;
	for (size_t k = 0; k < (size_t)c->L * c->H; k++)
		for (int t = 0; t < c->n; t++)
			r->pos[k * c->n + t] = a ? (int32_t)kt_array_get(a, (size_t)t) : t;
	if ((a = kt_npz_get(z, "qpos"))) {
		if (want(a, inputs, 1, (long[]){ c->O }, e))
			return -1;
		if (!(r->qpos = ki_realloc(NULL, ((size_t)c->O + 1) * sizeof *r->qpos)))
			return nomem(inputs, e);
		for (int o = 0; o < c->O; o++)
			r->qpos[o] = (int32_t)kt_array_get(a, (size_t)o);
	}
	return 0;
}

/* The observation queries a policy reads are the ones it declares (obs =
** N, a param, or kvcc.all), never simply all of Q's rows: keep the last
** `obs` rows of Q, lse and qpos (the most recent queries), or fail when Q has
** fewer. kvcc.all reads every row given. */
static int takeobs(const KiFn *f, const double *par, KiCase *c, float **Q, float **lse, int32_t **qpos,
                   const char *inputs, KiErr *e)
{
	if (f->obs_all)
		return 0;
	double o = 0;
	if (KI_RKIND(f->obs) == RK_CON)
		o = f->con[KI_RIDX(f->obs)];
	else if (KI_RKIND(f->obs) == RK_PAR)
		o = par[KI_RIDX(f->obs)];
	if (!(o >= 0 && o <= 1e9) || o != floor(o)) {
		ki_error(e, inputs, 0, 0, "policy '%s': the observation count (obs) must be an integer in "
		         "0..1e9, got %g", f->name, o);
		return -1;
	}
	int want = (int)o, O = c->O;
	if (want > O) {
		ki_error(e, inputs, 0, 0, "policy '%s' reads %d observation queries (its obs), but %s", f->name,
		         want, *Q ? "Q has fewer rows" : "the case has no Q [L, H, G, O, d]");
		if (*Q)
			snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg), " (%d)", O);
		return -1;
	}
	size_t inst = (size_t)c->L * c->H * c->G;
	for (size_t k = 0; k < inst; k++) {          /* in place: rows O-want .. O-1 */
		if (*Q)
			memmove(*Q + k * want * c->d, *Q + (k * O + (O - want)) * c->d, (size_t)want * c->d * sizeof **Q);
		if (*lse)
			memmove(*lse + k * want, *lse + k * O + (O - want), (size_t)want * sizeof **lse);
	}
	if (*qpos)
		memmove(*qpos, *qpos + (O - want), (size_t)want * sizeof **qpos);
	c->O = want;
	return 0;
}

/* Runtime arguments: the defaults, the case's 0-d param.NAME, ratio, budget and dtype,
** then the command line's --param, --ratio / --budget and --dtype over them. */
static int readargs(const KiFn *f, const KtNpz *z, const char *const *params, int nparams, double ratio,
                    long budget, const char *dtype, Run *r, KiErr *e)
{
	KiCase *c = &r->c;
	const KtArray *a;
	if (!(r->par = ki_realloc(NULL, ((size_t)f->npar + 1) * sizeof *r->par)))
		return nomem(r->inputs, e);
	for (int i = 0; i < f->npar; i++)
		r->par[i] = f->par[i].def;
	for (int i = 0; i < z->n; i++)
		if (!strncmp(z->a[i].name, "param.", 6)) {
			if (z->a[i].count != 1 || z->a[i].kind == 'U') {
				ki_error(e, r->inputs, 0, 0, "'%s' must be a 0-d number", z->a[i].name);
				return -1;
			}
			if (setparam(f, r->par, z->a[i].name + 6, kt_array_get(&z->a[i], 0), r->inputs, e))
				return -1;
		}
	for (int i = 0; i < nparams; i++) {
		char name[64];
		const char *eq = strchr(params[i], '=');
		double v;
		if (!eq || eq == params[i] || (size_t)(eq - params[i]) >= sizeof name || !parse_double(eq + 1, &v))
			die_usage("run: --param expects NAME=NUMBER, got '%s'", params[i]);
		memcpy(name, params[i], (size_t)(eq - params[i]));
		name[eq - params[i]] = 0;
		if (setparam(f, r->par, name, v, "--param", e))
			return -1;
	}
	c->ratio = 0, c->budget = -1;
	if ((a = kt_npz_get(z, "ratio"))) {
		double v = a->count == 1 && a->kind != 'U' ? kt_array_get(a, 0) : NAN;
		if (!(v >= 0 && v < 1)) {
			ki_error(e, r->inputs, 0, 0, "'ratio' must be a 0-d number in [0, 1), got %s%g",
			         a->count == 1 ? "" : "an array; ", v);
			return -1;
		}
		c->ratio = v;
	}
	if ((a = kt_npz_get(z, "budget"))) {
		double v = a->count == 1 && a->kind != 'U' ? kt_array_get(a, 0) : NAN;
		if (!(v >= 0 && v <= 1e12 && v == floor(v))) {
			ki_error(e, r->inputs, 0, 0, "'budget' must be a 0-d integer in 0..1e12 (tokens kept per "
			         "head), got %s%g", a->count == 1 ? "" : "an array; ", v);
			return -1;
		}
		c->budget = (long)v;
	}
	if (!isnan(ratio))
		c->ratio = ratio, c->budget = -1;
	if (budget >= 0)
		c->budget = budget;
	c->dtype = KVCC_F32;
	char dts[16] = "";
	if ((a = kt_npz_get(z, "dtype")) && kt_array_str(a, dts, sizeof dts) == 0)
		dtype = dtype ? dtype : dts;
	if (dtype && (c->dtype = ki_dtypebyname(dtype)) < 0) {
		ki_error(e, r->inputs, 0, 0, "unknown dtype '%s' (f32, f16, bf16)", dtype);
		return -1;
	}
	if (takeobs(f, r->par, c, &r->Q, &r->lse, &r->qpos, r->inputs, e))
		return -1;
	c->K = r->K, c->V = r->V, c->Q = r->Q, c->lse = r->lse, c->pos = r->pos, c->qpos = r->qpos;
	c->params = r->par;
	return 0;
}

/* Decode steps: dq [S, L, H, G, d] queries; each step runs the observe hook over the
** cache, then the compression reads the state. Nothing to do without dq. */
static int observe(const KiFn *f, const KtNpz *z, Run *r, KiErr *e)
{
	KiCase *c = &r->c;
	const KtArray *a = kt_npz_get(z, "dq");
	if (!a || kt_npz_get(z, "dK"))
		return 0;
	if (f->when.kind != WH_decode) {
		ki_error(e, r->inputs, 0, 0, "'dq' holds decode-step queries, but policy '%s' is a prefill "
		         "policy (when = kvcc.prefill): dq is for decode policies (when = kvcc.decode "
		         "{ ... }); a prefill policy reads its observation queries from Q", f->name);
		return -1;
	}
	if (want(a, r->inputs, 5, (long[]){ -1, c->L, c->H, -1, c->d }, e))
		return -1;
	if (r->Q && a->shape[3] != c->G) {
		ki_error(e, r->inputs, 0, 0, "dq's group dimension differs from Q's");
		return -1;
	}
	c->G = (int)a->shape[3];
	if (c->G < 1 || c->G > 64) {
		ki_error(e, r->inputs, 0, 0, "dq's group dimension must be 1..64");
		return -1;
	}
	size_t ntok = (size_t)c->L * c->H * c->n, per = (size_t)c->L * c->H * c->G * c->d;
	if (!(r->state = ki_realloc(NULL, ((size_t)f->nst * ntok + 1) * sizeof *r->state)))
		return nomem(r->inputs, e);
	for (int s = 0; s < f->nst; s++)
		for (size_t k = 0; k < ntok; k++)
			r->state[(size_t)s * ntok + k] = f->st[s].init;
	if (!(r->dq = tofloat(a)))
		return nomem(r->inputs, e);
	for (long s = 0; s < a->shape[0]; s++) {
		c->step = (int)s;
		if (ki_observe(f, c, r->dq + (size_t)s * per, r->state, NULL, e) != 0)
			return -1;
	}
	c->state = r->state;
	return 0;
}

/*
** Decode steps after the first compression (dK, dV [S, L, H, d]; dpos [S], default the
** last position + 1, + 2, ...; dq [S, L, H, G, d] optional): per step, in DESIGN's
** order, append the token to every (layer, head) of the compressed cache (its state
** at the init value: nan, not yet scanned, for a scan's), run the observe hook with
** dq, and compress every `every` steps (the policy's when.every; 1 for a prefill
** policy). The result is the last compression's, over the cache it compressed.
*/
static int decode(const KiFn *f, const KtNpz *z, Run *r, KiResult *res, KiErr *e)
{
	KiCase *c = &r->c;
	const KtArray *aK = kt_npz_get(z, "dK"), *aV = kt_npz_get(z, "dV"), *ap = kt_npz_get(z, "dpos");
	const KtArray *aq = kt_npz_get(z, "dq");
	if (!aK)
		return 0;
	long S = aK->shape[0];
	if (want(aK, r->inputs, 4, (long[]){ -1, c->L, c->H, c->d }, e) ||
	    !aV || want(aV, r->inputs, 4, aK->shape, e) || (ap && want(ap, r->inputs, 1, (long[]){ S }, e)) ||
	    (aq && want(aq, r->inputs, 5, (long[]){ S, c->L, c->H, c->G, c->d }, e))) {
		if (!aV)
			ki_error(e, r->inputs, 0, 0, "dK needs dV [S, L, H, d]");
		return -1;
	}
	if (S > 100000) {
		ki_error(e, r->inputs, 0, 0, "at most 100000 decode steps");
		return -1;
	}
	long every = 1;
	if (f->when.kind == WH_decode) {
		double v = KI_RKIND(f->when.every) == RK_PAR ? r->par[KI_RIDX(f->when.every)] :
		           f->con[KI_RIDX(f->when.every)];
		every = v >= 1 && v <= 1e9 ? (long)v : 1;
	}
	int L = c->L, H = c->H, d = c->d, cap = c->n + (int)S;
	size_t nlh = (size_t)L * H, ntok = nlh * (size_t)cap;
	float *K = calloc(ntok * d + 1, sizeof *K), *V = calloc(ntok * d + 1, sizeof *V);
	float *dK = NULL, *dV = NULL, *q = NULL;
	int32_t *pos = calloc(ntok + 1, sizeof *pos), *len = calloc(nlh, sizeof *len);
	double *st = calloc(ntok * (size_t)f->nst + 1, sizeof *st);
	int rc = -1, last = 0;
	if (!K || !V || !pos || !len || !st) {
		ki_error(e, r->inputs, 0, 0, "out of memory");
		goto done;
	}
	dK = tofloat(aK), dV = tofloat(aV), q = aq ? tofloat(aq) : NULL;
	for (long s = 0; s < S; s++) {
		/* the compressed cache (res) plus this step's token */
		for (size_t lh = 0; lh < nlh; lh++) {
			int m = res->len[lh];
			for (int t = 0; t <= m; t++) {
				size_t dst = lh * cap + t, src = lh * res->n + t;
				const float *kr = t < m ? &res->K[src * d] : &dK[((size_t)s * nlh + lh) * d];
				const float *vr = t < m ? &res->V[src * d] : &dV[((size_t)s * nlh + lh) * d];
				memcpy(&K[dst * d], kr, (size_t)d * sizeof *K);
				memcpy(&V[dst * d], vr, (size_t)d * sizeof *V);
				if (t < m)
					pos[dst] = res->pos[src];
				else
					pos[dst] = ap ? (int32_t)kt_array_get(ap, (size_t)s) :
					           (m ? res->pos[src - 1] : r->pos[lh * c->n + c->n - 1]) + 1;
				for (int k = 0; k < f->nst; k++)
					st[((size_t)k * nlh + lh) * cap + t] = t < m ? res->state[((size_t)k * nlh + lh) * res->n + t] :
					                                     f->st[k].init;
			}
			len[lh] = m + 1;
		}
		KiCase dc = *c;
		dc.n = cap, dc.len = len, dc.K = K, dc.V = V, dc.pos = pos, dc.state = st;
		dc.O = 0, dc.Q = NULL, dc.lse = NULL, dc.qpos = NULL, dc.step = (int)s;
		if (q && ki_observe(f, &dc, q + (size_t)s * nlh * c->G * d, st, NULL, e) != 0)
			goto done;
		if ((s + 1) % every == 0) {
			KiResult nr;
			if (ki_run(f, &dc, &nr, e) != 0)
				goto done;
			ki_result_free(res);
			*res = nr;
			last = 1;
		}
	}
	if (last) {       /* report over the last compressed cache */
		free(r->K), free(r->V), free(r->pos), free(r->len);
		r->K = K, r->V = V, r->pos = pos, r->len = len;
		K = V = NULL, pos = len = NULL;
		c->n = cap, c->len = r->len, c->K = r->K, c->V = r->V, c->pos = r->pos;
	}
	rc = 0;
done:
	free(K), free(V), free(pos), free(len), free(st), free(dK), free(dV), free(q);
	return rc;
}

/* The result: scores and, per (layer, head), kept indices, rows and positions into
** OUT.npz, or printed. */
static int report(const KiFn *f, const KiCase *c, const KiResult *res, const char *out, KiErr *e)
{
	if (out) {
		KtNpz w = { 0 };
		long sh[4] = { c->L, c->H, c->n };
		int bad = kt_npz_add(&w, "scores", "<f8", 3, sh, res->scores);
		for (int l = 0; l < c->L; l++)
			for (int h = 0; h < c->H; h++) {
				size_t lh = (size_t)l * c->H + h;
				char nm[64];
				long m[2] = { res->len[lh], c->d };
				snprintf(nm, sizeof nm, "kept.%d.%d", l, h);
				bad |= kt_npz_add(&w, nm, "<i4", 1, m, &res->kept[lh * c->n]);
				snprintf(nm, sizeof nm, "K.%d.%d", l, h);
				bad |= kt_npz_add(&w, nm, "<f4", 2, m, &res->K[lh * c->n * c->d]);
				snprintf(nm, sizeof nm, "V.%d.%d", l, h);
				bad |= kt_npz_add(&w, nm, "<f4", 2, m, &res->V[lh * c->n * c->d]);
				snprintf(nm, sizeof nm, "pos.%d.%d", l, h);
				bad |= kt_npz_add(&w, nm, "<i4", 1, m, &res->pos[lh * c->n]);
				if (f->merge.kind != MG_drop) {
					snprintf(nm, sizeof nm, "count.%d.%d", l, h);
					bad |= kt_npz_add(&w, nm, "<f8", 1, m, &res->count[lh * c->n]);
				}
			}
		if (f->merge.kind != MG_drop) {
			long lh2[2] = { c->L, c->H };
			bad |= kt_npz_add(&w, "sumat", "<i4", 2, lh2, res->sumat);
			bad |= kt_npz_add(&w, "tau", "<f8", 2, lh2, res->tau);
		}
		int wr = bad ? (ki_error(e, out, 0, 0, "out of memory"), -1) : kt_npz_write(out, &w, e);
		kt_npz_free(&w);
		return wr;
	}
	printf("policy %s: L=%d H=%d G=%d n=%d d=%d obs=%d dtype=%s %s=%g\n", f->name, c->L, c->H, c->G, c->n, c->d,
	       c->O, ki_dtypename(c->dtype), c->budget >= 0 ? "budget" : "ratio",
	       c->budget >= 0 ? (double)c->budget : c->ratio);
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			size_t lh = (size_t)l * c->H + h;
			printf("layer %d head %d: kept %d of %d:", l, h, res->len[lh], c->n);
			for (int k = 0; k < res->len[lh]; k++)
				printf(" %d", res->kept[lh * c->n + k]);
			printf("\n  scores:");
			for (int t = 0; t < c->n; t++)
				printf(" %.6g", res->scores[lh * c->n + t]);
			printf("\n");
		}
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	const char *path = NULL, *inputs = NULL, *out = NULL, *dtype = NULL;
	double ratio = NAN;
	long budget = -1;
	const char *params[64], *weights[8];
	int nparams = 0, nweights = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--inputs") && i + 1 < argc)
			inputs = argv[++i];
		else if (!strcmp(a, "--out") && i + 1 < argc)
			out = argv[++i];
		else if (!strcmp(a, "--dtype") && i + 1 < argc)
			dtype = argv[++i];
		else if (!strcmp(a, "--ratio") && i + 1 < argc) {
			if (!parse_double(argv[++i], &ratio) || !(ratio >= 0 && ratio < 1))
				die_usage("run: --ratio must be a number in [0, 1), got '%s'", argv[i]);
		} else if (!strcmp(a, "--budget") && i + 1 < argc) {
			double b;
			if (!parse_double(argv[++i], &b) || b < 0 || b != floor(b) || b > 1e12)
				die_usage("run: --budget must be a non-negative integer, got '%s'", argv[i]);
			budget = (long)b;
		} else if (!strcmp(a, "--param") && i + 1 < argc) {
			if (nparams == 64)
				die_usage("run: too many --param%s", "");
			params[nparams++] = argv[++i];
		} else if (!strcmp(a, "--weights") && i + 1 < argc) {
			if (nweights == 8)
				die_usage("run: too many --weights%s", "");
			weights[nweights++] = argv[++i];
		} else if (a[0] == '-')
			die_usage("run: unknown option or missing value '%s'", a);
		else if (!path)
			path = a;
		else
			die_usage("run: unexpected argument '%s'", a);
	}
	if (!path || !inputs)
		die_usage("run: needs a policy and --inputs CASE.npz%s", "");
	if (!isnan(ratio) && budget >= 0)
		die_usage("run: give --ratio or --budget, not both%s", "");

	KiErr e = { 0 };
	KiFn *f = kt_load(path, &e);
	if (!f)
		return fail(&e);
	if (ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) != 0) {
		ki_free(f);
		return fail(&e);
	}
	KtNpz z;
	if (kt_npz_read(inputs, &z, &e) != 0) {
		ki_free(f);
		return fail(&e);
	}
	Run r;
	memset(&r, 0, sizeof r);
	r.inputs = inputs;
	KiResult res;
	memset(&res, 0, sizeof res);
	int rc = 0;
	for (int i = 0; i < nweights && !rc; i++)
		rc = kt_weights_read(&r.w, weights[i], &e);
	rc = rc || kt_weights_add(&r.w, &z, "weight.", inputs, &e);
	r.c.nw = r.w.n, r.c.w = r.w.w;
	rc = rc || readarrays(&z, &r, &e) || readargs(f, &z, params, nparams, ratio, budget, dtype, &r, &e);
	if (!rc && kt_npz_get(&z, "dk"))
		rc = kt_rundecode(f, &r.c, &z, inputs, out, &e);
	else if (!rc)
		rc = observe(f, &z, &r, &e) || ki_run(f, &r.c, &res, &e) || decode(f, &z, &r, &res, &e) ||
		     report(f, &r.c, &res, out, &e);
	if (rc)
		fail(&e);
	ki_result_free(&res);
	runfree(&r);
	kt_npz_free(&z);
	ki_free(f);
	return rc;
}

/* kvcc compile POLICY.lua -o POLICY.so [--dtype D] [--head-dim N] [--group G] [--target T] [-v] */
static int cmd_compile(int argc, char **argv)
{
	const char *in = NULL, *out = NULL;
	kvcc_spec s = { KVCC_F32, 128, 1, KVCC_TARGET_NATIVE };
	int verbose = 0;
	const char *gpu = NULL;            /* --gpu-arch sm_80,sm_90: embed PTX/CUBIN (runtime/gpu.c) */
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-o") && v) out = v, i++;
		else if (!strcmp(a, "--gpu-arch") && v) gpu = v, i++;
		else if (!strcmp(a, "--dtype") && v) { if ((s.dtype = ki_dtypebyname(v)) < 0) die_usage("unknown dtype '%s'", v); i++; }
		else if (!strcmp(a, "--head-dim") && v) s.head_dim = posint("compile", v, "--head-dim"), i++;
		else if (!strcmp(a, "--group") && v) s.group = posint("compile", v, "--group"), i++;
		else if (!strcmp(a, "--target") && v) { if ((s.target = kx_targetbyname(v)) < 0) die_usage("unknown target '%s' (x86-64-v3, x86-64-v4, native, scalar)", v); i++; }
		else if (!strcmp(a, "-v")) verbose++;
		else if (a[0] != '-' && !in) in = a;
		else die_usage("compile: unexpected argument '%s'", a);
	}
	if (!in || !out)
		die_usage("%s", "compile needs POLICY.lua and -o OUT.so");
	if ((gpu ? kvcc_compile_so_gpu(in, &s, gpu, out, verbose) : kvcc_compile_so(in, &s, out, verbose)) != 0) {
		fprintf(stderr, "%s\n", kvcc_last_error());
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("kvcc %s\n", KVCC_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "dump"))
		return cmd_dump(argc - 2, argv + 2);
	if (!strcmp(cmd, "check"))
		return cmd_check(argc - 2, argv + 2);
	if (!strcmp(cmd, "compile"))
		return cmd_compile(argc - 2, argv + 2);
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 2, argv + 2);
	if (!strcmp(cmd, "eval"))
		return kt_eval(argc - 2, argv + 2);
	if (!strcmp(cmd, "calibrate"))
		return kt_calibrate(argc - 2, argv + 2);
	if (!strcmp(cmd, "dev"))
		return kt_dev(argc - 2, argv + 2);
	if (!strcmp(cmd, "tune"))
		return kt_tune(argc - 2, argv + 2);
	die_usage("unknown command '%s'", cmd);
	return 2;
}
