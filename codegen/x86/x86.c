/*
** x86 code generation through the LLVM 19 C API (see x86.h).
**
** Kernels (C ABI, all specialized on dtype, head_dim d and vector width W):
**   qk(K, ldk, nt, Q, nq, S)   S[q*nt + j] = sum_c Q[q*d + c] * f32(K[j*ldk + c])
**       register-blocked 4 queries × 2 tokens, explicit <W x float> vectors,
**       chan loop fully unrolled (d/W chunks), fmuladd, tree reduction.
**   cvt(src, dst, n)           dst[i] = f32(src[i])
** Target machine from the host's feature set (never its CPU name), +evex512 and
** -prefer-256-bit when 512-bit vectors are wanted; the pass pipeline runs with it.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <llvm-c/Core.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include "codegen/x86/x86.h"
#include "compiler/interp.h"

extern char **environ;

const char *kx_targetname(int t)
{
	switch (t) {
	case KVCC_TARGET_V3: return "x86-64-v3";
	case KVCC_TARGET_V4: return "x86-64-v4";
	case KVCC_TARGET_SCALAR: return "scalar";
	}
	return "native";
}

int kx_targetbyname(const char *s)
{
	if (!strcmp(s, "native")) return KVCC_TARGET_NATIVE;
	if (!strcmp(s, "x86-64-v3") || !strcmp(s, "avx2")) return KVCC_TARGET_V3;
	if (!strcmp(s, "x86-64-v4") || !strcmp(s, "avx512")) return KVCC_TARGET_V4;
	if (!strcmp(s, "scalar")) return KVCC_TARGET_SCALAR;
	return -1;
}

static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

char *kx_hostfeatures(void)
{
	char *raw = LLVMGetHostCPUFeatures();
	size_t n = strlen(raw);
	char *copy = strdup(raw), **v = calloc(n / 2 + 2, sizeof *v), *out = calloc(n + 2, 1);
	LLVMDisposeMessage(raw);
	if (!copy || !v || !out) {
		free(copy), free(v), free(out);
		return NULL;
	}
	int k = 0;
	for (char *s = strtok(copy, ","); s; s = strtok(NULL, ","))
		if (s[0] == '+')
			v[k++] = s;
	qsort(v, (size_t)k, sizeof *v, cmpstr);
	for (int i = 0; i < k; i++) {
		if (i)
			strcat(out, ",");
		strcat(out, v[i]);
	}
	free(copy), free(v);
	return out;
}

static int hasfeat(const char *fs, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = fs; (p = strstr(p, name)); p += n)
		if (p > fs && p[-1] == '+' && (p[n] == ',' || p[n] == 0))
			return 1;
	return 0;
}

int kx_vecwidth(const kvcc_spec *s, const char *fs)
{
	int v4 = hasfeat(fs, "avx512f") && hasfeat(fs, "avx512bw") && hasfeat(fs, "avx512vl") &&
	         hasfeat(fs, "avx512dq") && hasfeat(fs, "evex512");
	int v3 = hasfeat(fs, "avx2") && hasfeat(fs, "fma") && hasfeat(fs, "f16c");
	switch (s->target) {
	case KVCC_TARGET_SCALAR: return 1;
	case KVCC_TARGET_V3: return v3 ? 8 : 0;
	case KVCC_TARGET_V4: return v4 ? (s->head_dim % 16 == 0 ? 16 : 8) : 0;
	}
	return v4 ? (s->head_dim % 16 == 0 ? 16 : 8) : v3 ? 8 : 1;
}

uint64_t kx_key(const char *kir, const char *version, const char *features, int dtype, int head_dim,
                int group, int target, int vec_width)
{
	char buf[160];
	uint64_t h = ki_fnv(kir, strlen(kir), 0xcbf29ce484222325ull);
	h = ki_fnv(version, strlen(version), h);
	h = ki_fnv(features, strlen(features), h);
	unsigned maj = 0, mi = 0, pa = 0;
	LLVMGetVersion(&maj, &mi, &pa);
	char *tri = LLVMGetDefaultTargetTriple();
	snprintf(buf, sizeof buf, "llvm%u.%u|%s|dt%d|d%d|g%d|t%d|w%d|abi%d", maj, mi, tri, dtype, head_dim, group,
	         target, vec_width, KVCC_ABI);
	LLVMDisposeMessage(tri);
	return ki_fnv(buf, strlen(buf), h);
}

/* --- IR building -------------------------------------------------------------------------- */

typedef struct Gen {
	LLVMContextRef cx;
	LLVMModuleRef m;
	LLVMBuilderRef b;
	LLVMTypeRef f32, i16, i32, i64, ptr, half, vf, vi16, vi32, vh, fma_ty, red_ty;
	LLVMValueRef fma, red;
	int W, d, dtype;
	LLVMValueRef fn;
} Gen;

typedef struct Loop {
	LLVMBasicBlockRef head, body, exit;
	LLVMValueRef iv;
	int step;
} Loop;

/* for (iv = start; iv + step <= limit; iv += step) */
static LLVMValueRef loop_begin(Gen *g, LLVMValueRef start, LLVMValueRef limit, int step, Loop *lp)
{
	LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
	lp->head = LLVMAppendBasicBlockInContext(g->cx, g->fn, "head");
	lp->body = LLVMAppendBasicBlockInContext(g->cx, g->fn, "body");
	lp->exit = LLVMAppendBasicBlockInContext(g->cx, g->fn, "exit");
	lp->step = step;
	LLVMBuildBr(g->b, lp->head);
	LLVMPositionBuilderAtEnd(g->b, lp->head);
	lp->iv = LLVMBuildPhi(g->b, g->i64, "iv");
	LLVMAddIncoming(lp->iv, &start, &pre, 1);
	LLVMValueRef nx = LLVMBuildAdd(g->b, lp->iv, LLVMConstInt(g->i64, (unsigned)step, 0), "");
	LLVMValueRef c = LLVMBuildICmp(g->b, LLVMIntSLE, nx, limit, "");
	LLVMBuildCondBr(g->b, c, lp->body, lp->exit);
	LLVMPositionBuilderAtEnd(g->b, lp->body);
	return lp->iv;
}

static void loop_end(Gen *g, Loop *lp)
{
	LLVMValueRef nx = LLVMBuildAdd(g->b, lp->iv, LLVMConstInt(g->i64, (unsigned)lp->step, 0), "");
	LLVMBasicBlockRef cur = LLVMGetInsertBlock(g->b);
	LLVMAddIncoming(lp->iv, &nx, &cur, 1);
	LLVMBuildBr(g->b, lp->head);
	LLVMPositionBuilderAtEnd(g->b, lp->exit);
}

static LLVMValueRef ci(Gen *g, long v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }

/* Load w (W or 1) storage elements at element index `idx` of `base` as f32. */
static LLVMValueRef loadconv(Gen *g, LLVMValueRef base, LLVMValueRef idx, int w)
{
	LLVMTypeRef et = g->dtype == KI_F32 ? g->f32 : g->dtype == KI_F16 ? g->half : g->i16;
	LLVMValueRef p = LLVMBuildGEP2(g->b, et, base, &idx, 1, "");
	LLVMTypeRef vt = w == 1 ? et : LLVMVectorType(et, (unsigned)w);
	LLVMValueRef v = LLVMBuildLoad2(g->b, vt, p, "");
	LLVMSetAlignment(v, g->dtype == KI_F32 ? 4 : 2);
	LLVMTypeRef ft = w == 1 ? g->f32 : LLVMVectorType(g->f32, (unsigned)w);
	if (g->dtype == KI_F16)
		return LLVMBuildFPExt(g->b, v, ft, "");
	if (g->dtype == KI_BF16) {
		LLVMTypeRef it = w == 1 ? g->i32 : LLVMVectorType(g->i32, (unsigned)w);
		LLVMValueRef z = LLVMBuildZExt(g->b, v, it, "");
		LLVMValueRef sh = LLVMConstInt(g->i32, 16, 0);
		if (w > 1) {
			LLVMValueRef shs[16];
			for (int i = 0; i < w; i++)
				shs[i] = sh;
			sh = LLVMConstVector(shs, (unsigned)w);
		}
		return LLVMBuildBitCast(g->b, LLVMBuildShl(g->b, z, sh, ""), ft, "");
	}
	return v;
}

static LLVMValueRef loadf(Gen *g, LLVMValueRef base, LLVMValueRef idx, int w)
{
	LLVMValueRef p = LLVMBuildGEP2(g->b, g->f32, base, &idx, 1, "");
	LLVMValueRef v = LLVMBuildLoad2(g->b, w == 1 ? g->f32 : LLVMVectorType(g->f32, (unsigned)w), p, "");
	LLVMSetAlignment(v, 4);
	return v;
}

static void storef(Gen *g, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx)
{
	LLVMValueRef p = LLVMBuildGEP2(g->b, g->f32, base, &idx, 1, "");
	LLVMValueRef s = LLVMBuildStore(g->b, v, p);
	LLVMSetAlignment(s, 4);
}

/* One register block: QB queries from q, TB tokens from j. */
static void qk_block(Gen *g, LLVMValueRef K, LLVMValueRef ldk, LLVMValueRef nt, LLVMValueRef Q,
                     LLVMValueRef S, LLVMValueRef q, LLVMValueRef j, int QB, int TB)
{
	int W = g->W, nc = g->d / W;
	LLVMValueRef acc[4][2];
	LLVMTypeRef vt = W == 1 ? g->f32 : g->vf;
	for (int a = 0; a < QB; a++)
		for (int t = 0; t < TB; t++)
			acc[a][t] = LLVMConstNull(vt);
	LLVMValueRef krow[2], qrow[4];
	for (int t = 0; t < TB; t++)
		krow[t] = LLVMBuildMul(g->b, LLVMBuildAdd(g->b, j, ci(g, t), ""), ldk, "");
	for (int a = 0; a < QB; a++)
		qrow[a] = LLVMBuildMul(g->b, LLVMBuildAdd(g->b, q, ci(g, a), ""), ci(g, g->d), "");
	for (int c = 0; c < nc; c++) {
		LLVMValueRef kv[2];
		for (int t = 0; t < TB; t++)
			kv[t] = loadconv(g, K, LLVMBuildAdd(g->b, krow[t], ci(g, (long)c * W), ""), W);
		for (int a = 0; a < QB; a++) {
			LLVMValueRef qv = loadf(g, Q, LLVMBuildAdd(g->b, qrow[a], ci(g, (long)c * W), ""), W);
			for (int t = 0; t < TB; t++) {
				LLVMValueRef args[3] = { qv, kv[t], acc[a][t] };
				acc[a][t] = LLVMBuildCall2(g->b, g->fma_ty, g->fma, args, 3, "");
			}
		}
	}
	for (int a = 0; a < QB; a++)
		for (int t = 0; t < TB; t++) {
			LLVMValueRef r = acc[a][t];
			if (W > 1) {
				LLVMValueRef args[2] = { LLVMConstReal(g->f32, -0.0), r };
				r = LLVMBuildCall2(g->b, g->red_ty, g->red, args, 2, "");
				LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc);
			}
			LLVMValueRef idx = LLVMBuildAdd(g->b, LLVMBuildMul(g->b, LLVMBuildAdd(g->b, q, ci(g, a), ""), nt, ""),
			                                LLVMBuildAdd(g->b, j, ci(g, t), ""), "");
			storef(g, r, S, idx);
		}
}

static void gen_qk(Gen *g)
{
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->ptr, g->i64, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 6, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_qk", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), ldk = LLVMGetParam(g->fn, 1), nt = LLVMGetParam(g->fn, 2);
	LLVMValueRef Q = LLVMGetParam(g->fn, 3), nq = LLVMGetParam(g->fn, 4), S = LLVMGetParam(g->fn, 5);
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	LLVMValueRef qstart = ci(g, 0);
	for (int QB = 4; QB >= 1; QB -= 3) {
		Loop lq, lj;
		LLVMValueRef q = loop_begin(g, qstart, nq, QB, &lq);
		LLVMValueRef jstart = ci(g, 0);
		for (int TB = 2; TB >= 1; TB--) {
			LLVMValueRef j = loop_begin(g, jstart, nt, TB, &lj);
			qk_block(g, K, ldk, nt, Q, S, q, j, QB, TB);
			loop_end(g, &lj);
			jstart = lj.iv;
		}
		loop_end(g, &lq);
		qstart = lq.iv;
	}
	LLVMBuildRetVoid(g->b);
}

static void gen_cvt(Gen *g)
{
	LLVMTypeRef ps[3] = { g->ptr, g->ptr, g->i64 };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 3, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_cvt", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef src = LLVMGetParam(g->fn, 0), dst = LLVMGetParam(g->fn, 1), n = LLVMGetParam(g->fn, 2);
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	LLVMValueRef start = ci(g, 0);
	for (int w = g->W; w >= 1; w = w > 1 ? 1 : 0) {
		Loop lp;
		LLVMValueRef i = loop_begin(g, start, n, w, &lp);
		storef(g, loadconv(g, src, i, w), dst, i);
		loop_end(g, &lp);
		start = lp.iv;
		if (w == 1)
			break;
	}
	LLVMBuildRetVoid(g->b);
}

static LLVMValueRef gstr(Gen *g, const char *s, const char *name)
{
	LLVMValueRef init = LLVMConstStringInContext(g->cx, s, (unsigned)strlen(s), 0);
	LLVMValueRef gv = LLVMAddGlobal(g->m, LLVMTypeOf(init), name);
	LLVMSetInitializer(gv, init);
	LLVMSetGlobalConstant(gv, 1);
	LLVMSetLinkage(gv, LLVMPrivateLinkage);
	return gv;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int run_cc(const char *obj, const char *so, KcErr *e)
{
	const char *cc = getenv("KVCC_CC");
	if (!cc || !*cc)
		cc = "cc";
	char *argv[] = { (char *)cc, "-shared", "-o", (char *)so, (char *)obj, "-lgcc", NULL };
	pid_t pid;
	int rc = posix_spawnp(&pid, cc, NULL, NULL, argv, environ);
	if (rc != 0) {
		kc_error(e, "kvcc", 0, 0, "cannot run %s: %s", cc, strerror(rc));
		return -1;
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		kc_error(e, "kvcc", 0, 0, "%s -shared failed linking %s (status %d)", cc, so, st);
		return -1;
	}
	return 0;
}

static void append(char **buf, size_t *len, const char *fmt, double v, const char *name)
{
	char tmp[128];
	int k = snprintf(tmp, sizeof tmp, fmt, name, v);
	char *nb = realloc(*buf, *len + (size_t)k + 2);
	if (!nb)
		return;
	*buf = nb;
	memcpy(*buf + *len, tmp, (size_t)k + 1);
	*len += (size_t)k;
}

int kx_compile(const KiFn *f, const kvcc_spec *spec, const char *out_so, int verbose, double *ms, KcErr *e)
{
	double t0 = now_ms();
	if (spec->head_dim < 8 || spec->head_dim > 256 || spec->head_dim % 8) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: head_dim %d not supported (multiples of 8 up to 256)",
		         spec->head_dim);
		return -1;
	}
	if (spec->group < 1 || spec->group > 8) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: group %d not supported (1..8)", spec->group);
		return -1;
	}
	if (spec->dtype < KI_F32 || spec->dtype > KI_BF16) {
		kc_error(e, f->src, f->line, f->col, "x86 backend: unknown dtype %d", spec->dtype);
		return -1;
	}
	LLVMInitializeX86TargetInfo();
	LLVMInitializeX86Target();
	LLVMInitializeX86TargetMC();
	LLVMInitializeX86AsmPrinter();
	char *host = kx_hostfeatures();
	if (!host) {
		kc_error(e, f->src, 0, 0, "out of memory");
		return -1;
	}
	int W = kx_vecwidth(spec, host);
	if (!W) {
		kc_error(e, f->src, 0, 0, "target %s needs CPU features this host lacks", kx_targetname(spec->target));
		free(host);
		return -1;
	}
	const char *cpu = "x86-64";
	char *feats = NULL;
	switch (spec->target) {
	case KVCC_TARGET_V3: cpu = "x86-64-v3"; feats = strdup(""); break;
	case KVCC_TARGET_V4: cpu = "x86-64-v4"; feats = strdup("+evex512,-prefer-256-bit"); break;
	case KVCC_TARGET_SCALAR: cpu = "x86-64"; feats = strdup(""); break;
	default:
		feats = malloc(strlen(host) + 32);
		if (feats)
			sprintf(feats, "%s%s", host, W == 16 ? ",-prefer-256-bit" : "");
	}
	/* the features recorded in the artifact (and its key) */
	const char *recfeat = spec->target == KVCC_TARGET_NATIVE ? host : kx_targetname(spec->target);
	char *triple = LLVMGetDefaultTargetTriple();
	char *err = NULL;
	LLVMTargetRef tgt;
	if (LLVMGetTargetFromTriple(triple, &tgt, &err)) {
		kc_error(e, f->src, 0, 0, "LLVM: %s", err);
		LLVMDisposeMessage(err), LLVMDisposeMessage(triple), free(host), free(feats);
		return -1;
	}
	LLVMTargetMachineRef tm = LLVMCreateTargetMachine(tgt, triple, cpu, feats ? feats : "", LLVMCodeGenLevelAggressive,
	                                                  LLVMRelocPIC, LLVMCodeModelDefault);
	Gen g = { 0 };
	g.cx = LLVMContextCreate();
	g.m = LLVMModuleCreateWithNameInContext(f->name, g.cx);
	g.b = LLVMCreateBuilderInContext(g.cx);
	LLVMSetTarget(g.m, triple);
	LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
	LLVMSetModuleDataLayout(g.m, td);
	g.W = W, g.d = spec->head_dim, g.dtype = spec->dtype;
	g.f32 = LLVMFloatTypeInContext(g.cx), g.half = LLVMHalfTypeInContext(g.cx);
	g.i16 = LLVMInt16TypeInContext(g.cx), g.i32 = LLVMInt32TypeInContext(g.cx), g.i64 = LLVMInt64TypeInContext(g.cx);
	g.ptr = LLVMPointerTypeInContext(g.cx, 0);
	g.vf = LLVMVectorType(g.f32, (unsigned)W);
	LLVMTypeRef ot = W == 1 ? g.f32 : g.vf;
	unsigned id = LLVMLookupIntrinsicID("llvm.fmuladd", 12);
	g.fma = LLVMGetIntrinsicDeclaration(g.m, id, &ot, 1);
	g.fma_ty = LLVMIntrinsicGetType(g.cx, id, &ot, 1);
	if (W > 1) {
		unsigned rid = LLVMLookupIntrinsicID("llvm.vector.reduce.fadd", 23);
		g.red = LLVMGetIntrinsicDeclaration(g.m, rid, &ot, 1);
		g.red_ty = LLVMIntrinsicGetType(g.cx, rid, &ot, 1);
	}
	gen_qk(&g);
	LLVMValueRef qk = g.fn;
	gen_cvt(&g);
	LLVMValueRef cvt = g.fn;

	/* descriptor */
	char *kir = ki_print(f);
	char *pstr = calloc(1, 1), *sstr = calloc(1, 1);
	size_t pl = 0, sl = 0;
	for (int i = 0; i < f->npar; i++)
		append(&pstr, &pl, i ? ",%s=%.17g" : "%s=%.17g", f->par[i].def, f->par[i].name);
	for (int i = 0; i < f->nst; i++)
		append(&sstr, &sl, i ? ",%s=%.17g" : "%s=%.17g", f->st[i].init, f->st[i].name);
	uint64_t key = kx_key(kir, KVCC_VERSION, recfeat, spec->dtype, spec->head_dim, spec->group, spec->target, W);
	LLVMTypeRef fields[] = { g.i64, g.i32, g.i32, g.ptr, g.i64, g.i64, g.ptr, g.ptr, g.ptr,
	                         g.i32, g.i32, g.i32, g.i32, g.i32, g.i32, g.ptr, g.ptr, g.ptr, g.ptr };
	int nf = (int)(sizeof fields / sizeof fields[0]);
	LLVMTypeRef dt = LLVMStructTypeInContext(g.cx, fields, (unsigned)nf, 0);
	LLVMValueRef vals[] = {
		LLVMConstInt(g.i64, KVCC_MAGIC, 0), LLVMConstInt(g.i32, KVCC_ABI, 0),
		LLVMConstInt(g.i32, sizeof(kvcc_artifact), 0), gstr(&g, KVCC_VERSION, "kv.version"),
		LLVMConstInt(g.i64, key, 0), LLVMConstInt(g.i64, ki_fnv(kir, strlen(kir), 0xcbf29ce484222325ull), 0),
		gstr(&g, f->name, "kv.name"), gstr(&g, pstr ? pstr : "", "kv.params"), gstr(&g, sstr ? sstr : "", "kv.state"),
		LLVMConstInt(g.i32, (unsigned)spec->dtype, 0), LLVMConstInt(g.i32, (unsigned)spec->head_dim, 0),
		LLVMConstInt(g.i32, (unsigned)spec->group, 0), LLVMConstInt(g.i32, (unsigned)spec->target, 0),
		LLVMConstInt(g.i32, (unsigned)W, 0), LLVMConstInt(g.i32, 0, 0),
		gstr(&g, recfeat, "kv.features"), gstr(&g, kir, "kv.kir"), qk, cvt,
	};
	LLVMValueRef desc = LLVMAddGlobal(g.m, dt, KVCC_DESC_SYMBOL);
	LLVMSetInitializer(desc, LLVMConstNamedStruct(dt, vals, (unsigned)nf));
	LLVMSetGlobalConstant(desc, 1);
	LLVMSetVisibility(desc, LLVMDefaultVisibility);
	free(kir), free(pstr), free(sstr);

	int rc = -1;
	char objpath[] = "/tmp/kvcc-XXXXXX.o";
	LLVMMemoryBufferRef buf = NULL;
	if (LLVMVerifyModule(g.m, LLVMReturnStatusAction, &err)) {
		kc_error(e, f->src, 0, 0, "internal: generated LLVM IR does not verify: %.300s", err);
		goto out;
	}
	LLVMDisposeMessage(err), err = NULL;
	LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
	LLVMErrorRef perr = LLVMRunPasses(g.m, "default<O2>", tm, po);
	LLVMDisposePassBuilderOptions(po);
	if (perr) {
		char *m = LLVMGetErrorMessage(perr);
		kc_error(e, f->src, 0, 0, "LLVM passes: %s", m);
		LLVMDisposeErrorMessage(m);
		goto out;
	}
	if (verbose > 1) {
		char *ir = LLVMPrintModuleToString(g.m);
		fputs(ir, stderr);
		LLVMDisposeMessage(ir);
	}
	if (LLVMTargetMachineEmitToMemoryBuffer(tm, g.m, LLVMObjectFile, &err, &buf)) {
		kc_error(e, f->src, 0, 0, "LLVM codegen: %s", err);
		goto out;
	}
	int fd = mkstemps(objpath, 2);
	if (fd < 0) {
		kc_error(e, f->src, 0, 0, "cannot create a temporary object file");
		goto out;
	}
	size_t sz = LLVMGetBufferSize(buf);
	const char *p = LLVMGetBufferStart(buf);
	FILE *fo = fdopen(fd, "wb");
	int ok = fo && fwrite(p, 1, sz, fo) == sz;
	if (fo ? fclose(fo) != 0 : close(fd) != 0)
		ok = 0;
	if (!ok) {
		kc_error(e, f->src, 0, 0, "cannot write %s", objpath);
		unlink(objpath);
		goto out;
	}
	rc = run_cc(objpath, out_so, e);
	unlink(objpath);
	if (verbose)
		fprintf(stderr, "kvcc: %s: %s, cpu %s, %d-lane f32 vectors, dtype %s, head_dim %d, group %d, key %016llx\n",
		        out_so, kx_targetname(spec->target), cpu, W, ki_dtypename(spec->dtype), spec->head_dim,
		        spec->group, (unsigned long long)key);
out:
	if (err)
		LLVMDisposeMessage(err);
	if (buf)
		LLVMDisposeMemoryBuffer(buf);
	LLVMDisposeBuilder(g.b);
	LLVMDisposeModule(g.m);
	LLVMDisposeTargetData(td);
	LLVMContextDispose(g.cx);
	LLVMDisposeTargetMachine(tm);
	LLVMDisposeMessage(triple);
	free(host), free(feats);
	if (ms)
		*ms = now_ms() - t0;
	return rc;
}
