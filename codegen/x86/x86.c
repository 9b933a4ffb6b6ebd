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
#include <math.h>
#include <llvm-c/Core.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h>   /* temporary metadata nodes: self-referential llvm.loop */
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include "codegen/x86/x86.h"
#include "compiler/interp.h"
#include "compiler/plan.h"

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

/* The attn_score Q·K tile uses vdpbf16ps: bf16 storage, native target with avx512bf16, 16 lanes
** (KVCC_BF16DOT=0 turns it off, e.g. to compare; it is part of the compile-cache key). */
int kx_bf16dot(const kvcc_spec *s, const char *fs, int W)
{
	const char *e = getenv("KVCC_BF16DOT");
	return s->dtype == KVCC_BF16 && s->target == KVCC_TARGET_NATIVE && W == 16 && hasfeat(fs, "avx512bf16") &&
	       !(e && !strcmp(e, "0"));
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

void kx_keyfill(KxKey *k, const char *kir, const char *version, const char *features, int dtype, int head_dim,
                int group, int target, int vec_width)
{
	unsigned maj = 0, mi = 0, pa = 0;
	LLVMGetVersion(&maj, &mi, &pa);
	snprintf(k->llvm, sizeof k->llvm, "%u.%u", maj, mi);
	char *tri = LLVMGetDefaultTargetTriple();
	snprintf(k->triple, sizeof k->triple, "%s", tri);
	LLVMDisposeMessage(tri);
	k->kir = kir, k->version = version, k->features = features, k->options = getenv("KVCC_BF16DOT") && !strcmp(getenv("KVCC_BF16DOT"), "0") ? KX_OPTIONS ",nobf16dot" : KX_OPTIONS, k->build = KX_BUILD;
	k->dtype = dtype, k->head_dim = head_dim, k->group = group, k->target = target, k->vec_width = vec_width;
	k->abi = KVCC_ABI;
}

static uint64_t fnvs(const char *s, uint64_t h) { return ki_fnv(s, strlen(s), h); }

uint64_t kx_keyhash(const KxKey *k)
{
	char buf[200];
	uint64_t h = fnvs(k->kir, 0xcbf29ce484222325ull);
	h = fnvs(k->version, h);
	h = fnvs(k->features, h);
	snprintf(buf, sizeof buf, "llvm%s|%s|dt%d|d%d|g%d|t%d|w%d|abi%d|%s|%s|%zu", k->llvm, k->triple, k->dtype,
	         k->head_dim, k->group, k->target, k->vec_width, k->abi, k->options, k->build, sizeof(kvcc_artifact));
	return fnvs(buf, h);
}

void kx_keydesc(const KxKey *k, char *buf, size_t n)
{
	char build[64];
	snprintf(build, sizeof build, "%s", k->build);
	for (char *c = build; *c; c++)
		if (*c == ' ')
			*c = '_';
	snprintf(buf, n, "kir=%016llx version=%s build=%s llvm=%s triple=%s features=%016llx dtype=%s head_dim=%d "
	         "group=%d target=%s width=%d abi=%d options=%s",
	         (unsigned long long)fnvs(k->kir, 0xcbf29ce484222325ull), k->version, build, k->llvm, k->triple,
	         (unsigned long long)fnvs(k->features, 0xcbf29ce484222325ull), ki_dtypename(k->dtype), k->head_dim,
	         k->group, kx_targetname(k->target), k->vec_width, k->abi, k->options);
}

uint64_t kx_key(const char *kir, const char *version, const char *features, int dtype, int head_dim,
                int group, int target, int vec_width)
{
	KxKey k;
	kx_keyfill(&k, kir, version, features, dtype, head_dim, group, target, vec_width);
	return kx_keyhash(&k);
}

int kx_speckey(const KiFn *f, const kvcc_spec *spec, KxKey *k, char **kir, char **host)
{
	*kir = NULL;
	*host = kx_hostfeatures();
	if (!*host)
		return -1;
	int W = kx_vecwidth(spec, *host);
	if (!W)
		return -1;
	*kir = ki_print(f);
	if (!*kir)
		return -1;
	kx_keyfill(k, *kir, KVCC_VERSION, spec->target == KVCC_TARGET_NATIVE ? *host : kx_targetname(spec->target),
	           spec->dtype, spec->head_dim, spec->group, spec->target, W);
	return 0;
}

/* --- IR building -------------------------------------------------------------------------- */

typedef struct Gen {
	LLVMContextRef cx;
	LLVMModuleRef m;
	LLVMBuilderRef b;
	LLVMTypeRef f32, i16, i32, i64, ptr, half, vf, vi16, vi32, vh, fma_ty, red_ty;
	LLVMValueRef fma, red;
	int W, d, dtype;
	int G;                 /* query heads per KV head */
	int bf16dot;           /* bf16 storage on a CPU with avx512bf16: qkt uses vdpbf16ps */
	LLVMValueRef fn;
} Gen;

typedef struct Loop {
	LLVMBasicBlockRef head, body, exit;
	LLVMValueRef iv, latch;
	int step;
} Loop;

/* for (iv = start; iv + step <= limit; iv += step), or with `partial` iv < limit */
static LLVMValueRef loop_begin2(Gen *g, LLVMValueRef start, LLVMValueRef limit, int step, int partial, Loop *lp)
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
	LLVMValueRef c;
	if (partial)
		c = LLVMBuildICmp(g->b, LLVMIntSLT, lp->iv, limit, "");
	else
		c = LLVMBuildICmp(g->b, LLVMIntSLE, LLVMBuildAdd(g->b, lp->iv, LLVMConstInt(g->i64, (unsigned)step, 0), ""),
		                  limit, "");
	LLVMBuildCondBr(g->b, c, lp->body, lp->exit);
	LLVMPositionBuilderAtEnd(g->b, lp->body);
	return lp->iv;
}

static LLVMValueRef loop_begin(Gen *g, LLVMValueRef start, LLVMValueRef limit, int step, Loop *lp)
{
	return loop_begin2(g, start, limit, step, 0, lp);
}

static void loop_end(Gen *g, Loop *lp)
{
	LLVMValueRef nx = LLVMBuildAdd(g->b, lp->iv, LLVMConstInt(g->i64, (unsigned)lp->step, 0), "");
	LLVMBasicBlockRef cur = LLVMGetInsertBlock(g->b);
	LLVMAddIncoming(lp->iv, &nx, &cur, 1);
	lp->latch = LLVMBuildBr(g->b, lp->head);
	LLVMPositionBuilderAtEnd(g->b, lp->exit);
}

/* Mark a closed loop as cold code: neither unrolled nor vectorized by the O2 pipeline
** (edge cases that run a few times per head; copies of them only cost compile time). */
static void loop_plain(Gen *g, Loop *lp)
{
	LLVMMetadataRef tmp = LLVMTemporaryMDNode(g->cx, NULL, 0);
	LLVMMetadataRef un = LLVMMDStringInContext2(g->cx, "llvm.loop.unroll.disable", 24);
	LLVMMetadataRef vk[2] = { LLVMMDStringInContext2(g->cx, "llvm.loop.vectorize.enable", 26),
	                          LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(g->cx), 0, 0)) };
	LLVMMetadataRef ops[3] = { tmp, LLVMMDNodeInContext2(g->cx, &un, 1), LLVMMDNodeInContext2(g->cx, vk, 2) };
	LLVMMetadataRef md = LLVMMDNodeInContext2(g->cx, ops, 3);
	LLVMMetadataReplaceAllUsesWith(tmp, md);
	LLVMSetMetadata(lp->latch, LLVMGetMDKindIDInContext(g->cx, "llvm.loop", 9), LLVMMetadataAsValue(g->cx, md));
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
	LLVMValueRef acc[8][2];
	LLVMTypeRef vt = W == 1 ? g->f32 : g->vf;
	for (int a = 0; a < QB; a++)
		for (int t = 0; t < TB; t++)
			acc[a][t] = LLVMConstNull(vt);
	LLVMValueRef krow[2], qrow[8];
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

/* --- decode attention ------------------------------------------------------------------------ */

#define DT 16   /* decode token tile (a multiple of every vector width) */

static LLVMValueRef intr(Gen *g, const char *name, LLVMTypeRef ot, LLVMValueRef *args, int nargs)
{
	unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, &ot, 1);
	LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, &ot, 1);
	return LLVMBuildCall2(g->b, ft, fn, args, (unsigned)nargs, "");
}

static LLVMTypeRef fty(Gen *g, int w) { return w == 1 ? g->f32 : LLVMVectorType(g->f32, (unsigned)w); }

static LLVMValueRef cfv(Gen *g, double v, int w)
{
	LLVMValueRef k = LLVMConstReal(g->f32, v), ks[64];
	if (w == 1)
		return k;
	for (int i = 0; i < w; i++)
		ks[i] = k;
	return LLVMConstVector(ks, (unsigned)w);
}

static LLVMValueRef civ(Gen *g, long v, int w)
{
	LLVMValueRef k = LLVMConstInt(g->i32, (unsigned long long)v, 1), ks[64];
	if (w == 1)
		return k;
	for (int i = 0; i < w; i++)
		ks[i] = k;
	return LLVMConstVector(ks, (unsigned)w);
}

static LLVMValueRef splat(Gen *g, LLVMValueRef x, int w)
{
	if (w == 1)
		return x;
	LLVMTypeRef vt = fty(g, w);
	LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vt), x, LLVMConstInt(g->i32, 0, 0), "");
	LLVMValueRef z[64];
	for (int i = 0; i < w; i++)
		z[i] = LLVMConstInt(g->i32, 0, 0);
	return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vt), LLVMConstVector(z, (unsigned)w), "");
}

/* exp(x) for w lanes: Cephes expf polynomial, 2^n through the exponent bits;
** exact 0 below -87.3 (and for -inf), clamped at 88. No libm call. */
static LLVMValueRef vexp(Gen *g, LLVMValueRef x, int w)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef hi = cfv(g, 88.0, w);
	x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), hi, x, "");
	LLVMValueRef big = cfv(g, 12582912.0, w);
	LLVMValueRef nf = LLVMBuildFSub(b, LLVMBuildFAdd(b, LLVMBuildFMul(b, x, cfv(g, 1.44269504088896341, w), ""), big, ""),
	                                big, "");
	LLVMValueRef r = LLVMBuildFSub(b, x, LLVMBuildFMul(b, nf, cfv(g, 0.693359375, w), ""), "");
	r = LLVMBuildFSub(b, r, LLVMBuildFMul(b, nf, cfv(g, -2.12194440e-4, w), ""), "");
	static const double c[] = { 1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2,
	                            1.6666665459E-1, 5.0000001201E-1 };
	LLVMValueRef p = cfv(g, c[0], w);
	for (int i = 1; i < 6; i++)
		p = LLVMBuildFAdd(b, LLVMBuildFMul(b, p, r, ""), cfv(g, c[i], w), "");
	LLVMValueRef y = LLVMBuildFAdd(b, LLVMBuildFAdd(b, LLVMBuildFMul(b, p, LLVMBuildFMul(b, r, r, ""), ""), r, ""),
	                               cfv(g, 1.0, w), "");
	LLVMTypeRef it = w == 1 ? g->i32 : LLVMVectorType(g->i32, (unsigned)w);
	LLVMValueRef ni = LLVMBuildFPToSI(b, nf, it, "");
	LLVMValueRef e = LLVMBuildShl(b, LLVMBuildAdd(b, ni, civ(g, 127, w), ""), civ(g, 23, w), "");
	LLVMValueRef res = LLVMBuildFMul(b, y, LLVMBuildBitCast(b, e, fty(g, w), ""), "");
	return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealULT, x, cfv(g, -87.3, w), ""), cfv(g, 0.0, w), res, "");
}

static LLVMValueRef gep(Gen *g, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef idx)
{
	return LLVMBuildGEP2(g->b, et, base, &idx, 1, "");
}

static LLVMValueRef ldf(Gen *g, LLVMValueRef base, LLVMValueRef idx) { return loadf(g, base, idx, 1); }

/*
** decode(K, V, ldk, nt, q, S, lds, st): one chunk of single-query attention for the
** G query heads of one KV head. q [G][d] f32, already scaled by 1/sqrt(d).
** S[g*lds + j] receives the logit of token j (padded with -inf to a multiple of DT:
** the caller leaves room). st = m[G], l[G], acc[G][d], initialized by the caller
** (m = -inf, l = 0, acc = 0) and updated online: per DT-token tile, logits through
** the Q·K register block, tile max, rescale, probabilities (vector exp), V
** accumulation with the chan chunk outer and the tile's tokens inner.
*/
static void gen_decode(Gen *g, int G)
{
	LLVMTypeRef ps[8] = { g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->i64, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 8, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_decode", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), V = LLVMGetParam(g->fn, 1), ldk = LLVMGetParam(g->fn, 2);
	LLVMValueRef nt = LLVMGetParam(g->fn, 3), q = LLVMGetParam(g->fn, 4), S = LLVMGetParam(g->fn, 5);
	LLVMValueRef lds = LLVMGetParam(g->fn, 6), st = LLVMGetParam(g->fn, 7);
	LLVMBuilderRef b = g->b;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	int W = g->W, nc = g->d / W;
	LLVMTypeRef et = g->dtype == KI_F32 ? g->f32 : g->dtype == KI_F16 ? g->half : g->i16;
	LLVMTypeRef vt = fty(g, W), tv = fty(g, DT);
	LLVMValueRef P = LLVMBuildArrayAlloca(b, g->f32, LLVMConstInt(g->i32, (unsigned)(G * DT), 0), "P");
	LLVMSetAlignment(P, 64);
	LLVMValueRef scl[8], accv[8];
	for (int a = 0; a < G; a++) {
		scl[a] = LLVMBuildAlloca(b, g->f32, "scl");
		accv[a] = LLVMBuildAlloca(b, vt, "acc");
	}
	Loop lt;
	LLVMValueRef t0 = loop_begin2(g, ci(g, 0), nt, DT, 1, &lt);
	LLVMValueRef rem = LLVMBuildSub(b, nt, t0, "");
	LLVMValueRef nj = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, rem, ci(g, DT), ""), rem, ci(g, DT), "nj");
	LLVMValueRef Kt = gep(g, et, K, LLVMBuildMul(b, t0, ldk, ""));
	LLVMValueRef Vt = gep(g, et, V, LLVMBuildMul(b, t0, ldk, ""));
	LLVMValueRef St = gep(g, g->f32, S, t0);
	/* logits */
	LLVMValueRef jstart = ci(g, 0);
	for (int TB = 2; TB >= 1; TB--) {
		Loop lj;
		LLVMValueRef j = loop_begin(g, jstart, nj, TB, &lj);
		qk_block(g, Kt, ldk, lds, q, St, ci(g, 0), j, G, TB);
		loop_end(g, &lj);
		jstart = lj.iv;
	}
	{
		Loop lp;
		LLVMValueRef j = loop_begin2(g, nj, ci(g, DT), 1, 1, &lp);
		for (int a = 0; a < G; a++)
			storef(g, LLVMConstReal(g->f32, -INFINITY), St, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, a), lds, ""), j, ""));
		loop_end(g, &lp);
	}
	/* online softmax statistics and this tile's probabilities */
	for (int a = 0; a < G; a++) {
		LLVMValueRef sv = loadf(g, St, LLVMBuildMul(b, ci(g, a), lds, ""), DT);
		LLVMValueRef tm = intr(g, "llvm.vector.reduce.fmax", tv, &sv, 1);
		LLVMValueRef mo = ldf(g, st, ci(g, a));
		LLVMValueRef mm[2] = { mo, tm };
		LLVMValueRef mn = intr(g, "llvm.maxnum", g->f32, mm, 2);
		LLVMValueRef sc = vexp(g, LLVMBuildFSub(b, mo, mn, ""), 1);
		LLVMValueRef pv = vexp(g, LLVMBuildFSub(b, sv, splat(g, mn, DT), ""), DT);
		storef(g, pv, P, ci(g, (long)a * DT));
		LLVMValueRef ra[2] = { LLVMConstReal(g->f32, -0.0), pv };
		LLVMValueRef ps_ = intr(g, "llvm.vector.reduce.fadd", tv, ra, 2);
		LLVMSetFastMathFlags(ps_, LLVMFastMathAllowReassoc);
		LLVMValueRef l = ldf(g, st, ci(g, G + a));
		storef(g, LLVMBuildFAdd(b, LLVMBuildFMul(b, l, sc, ""), ps_, ""), st, ci(g, G + a));
		storef(g, mn, st, ci(g, a));
		LLVMBuildStore(b, sc, scl[a]);
	}
	/* V accumulation: chan chunk outer (unrolled), tokens inner */
	for (int c = 0; c < nc; c++) {
		for (int a = 0; a < G; a++) {
			LLVMValueRef av = loadf(g, st, ci(g, 2L * G + (long)a * g->d + (long)c * W), W);
			LLVMValueRef sc = LLVMBuildLoad2(b, g->f32, scl[a], "");
			LLVMBuildStore(b, LLVMBuildFMul(b, av, splat(g, sc, W), ""), accv[a]);
		}
		Loop lj;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nj, 1, 1, &lj);
		LLVMValueRef v = loadconv(g, Vt, LLVMBuildAdd(b, LLVMBuildMul(b, j, ldk, ""), ci(g, (long)c * W), ""), W);
		for (int a = 0; a < G; a++) {
			LLVMValueRef pj = ldf(g, P, LLVMBuildAdd(b, ci(g, (long)a * DT), j, ""));
			LLVMValueRef args[3] = { splat(g, pj, W), v, LLVMBuildLoad2(b, vt, accv[a], "") };
			LLVMBuildStore(b, LLVMBuildCall2(b, g->fma_ty, g->fma, args, 3, ""), accv[a]);
		}
		loop_end(g, &lj);
		for (int a = 0; a < G; a++)
			storef(g, LLVMBuildLoad2(b, vt, accv[a], ""), st, ci(g, 2L * G + (long)a * g->d + (long)c * W));
	}
	loop_end(g, &lt);
	LLVMBuildRetVoid(b);
}

/* --- attn_score: packed Q·Kᵀ tile and the fused softmax epilogue ------------------------------- */

#define AT 64   /* attn_score token tile (runtime/rt.c ATILE) */

static LLVMValueRef entry_alloca(Gen *g, LLVMTypeRef t)
{
	LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(g->fn);
	LLVMBuilderRef b = LLVMCreateBuilderInContext(g->cx);
	LLVMValueRef first = LLVMGetFirstInstruction(entry);
	if (first)
		LLVMPositionBuilderBefore(b, first);
	else
		LLVMPositionBuilderAtEnd(b, entry);
	LLVMValueRef a = LLVMBuildAlloca(b, t, "");
	LLVMDisposeBuilder(b);
	return a;
}

/*
** qkt with bf16 dot products (bf16 storage, avx512bf16, 16 lanes): the tile is packed as 32-bit
** words, Kp[c2*AT + j] = (K[j][2c2], K[j][2c2+1]) — a transpose of the raw bf16 pairs, no
** conversion; the micro-kernel broadcasts Q's pair (Q[q][2c2], Q[q][2c2+1]) as bf16 (Q is
** bf16 storage converted to f32, so taking its high halves is exact) and accumulates
** 6 queries × 64 tokens with llvm.x86.avx512bf16.dpbf16ps.512 (f32 accumulate; products of
** bf16 are exact in f32; denormal inputs/outputs flush to zero). Each Q element is read once
** per tile (the 64-token block is the whole tile).
*/
static void st_(Gen *g, LLVMTypeRef t, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, unsigned align);

static void gen_qkt_bf16(Gen *g, LLVMValueRef K, LLVMValueRef ldk, LLVMValueRef nt, LLVMValueRef Q, LLVMValueRef nq,
                         LLVMValueRef S, LLVMValueRef Kp)
{
	LLVMBuilderRef b = g->b;
	int d = g->d, d2 = d / 2, NV = 4, QB = 6, W = 16;
	LLVMTypeRef vi = LLVMVectorType(g->i32, 16), vt = fty(g, 16);
	unsigned id = LLVMLookupIntrinsicID("llvm.x86.avx512bf16.dpbf16ps.512", 32);
	LLVMValueRef dp = LLVMGetIntrinsicDeclaration(g->m, id, NULL, 0);
	LLVMTypeRef dpt = LLVMIntrinsicGetType(g->cx, id, NULL, 0);
	LLVMTypeRef pts[3];
	LLVMGetParamTypes(dpt, pts);
	LLVMTypeRef bt = pts[1];   /* <32 x bfloat> in LLVM 19 (<16 x i32> before) */
	/* pack */
	{
		Loop lt, lc;
		int w = d2 % 16 == 0 ? 16 : d2 % 8 == 0 ? 8 : 4;
		LLVMTypeRef wv = LLVMVectorType(g->i32, (unsigned)w);
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nt, 1, 1, &lt);
		LLVMValueRef row = gep(g, g->i16, K, LLVMBuildMul(b, j, ldk, ""));
		LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d2), w, &lc);
		LLVMValueRef v = LLVMBuildLoad2(b, wv, gep(g, g->i32, row, c), "");
		LLVMSetAlignment(v, 2);
		for (int k = 0; k < w; k++) {
			LLVMValueRef e = LLVMBuildExtractElement(b, v, LLVMConstInt(g->i32, (unsigned)k, 0), "");
			LLVMValueRef idx = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, c, ci(g, k), ""), ci(g, AT), ""), j, "");
			st_(g, g->i32, e, Kp, idx, 4);
		}
		loop_end(g, &lc);
		loop_end(g, &lt);
		Loop lz, lz2;
		LLVMValueRef jz = loop_begin2(g, nt, ci(g, AT), 1, 1, &lz);
		LLVMValueRef cz = loop_begin(g, ci(g, 0), ci(g, d2), 1, &lz2);
		st_(g, g->i32, LLVMConstInt(g->i32, 0, 0), Kp, LLVMBuildAdd(b, LLVMBuildMul(b, cz, ci(g, AT), ""), jz, ""), 4);
		loop_end(g, &lz2);
		loop_end(g, &lz);
	}
	LLVMValueRef acc[6][4];
	for (int a = 0; a < QB; a++)
		for (int v = 0; v < NV; v++)
			acc[a][v] = entry_alloca(g, vt);
	LLVMTypeRef v2f = LLVMVectorType(g->f32, 2), v2i = LLVMVectorType(g->i32, 2), v2s = LLVMVectorType(g->i16, 2);
	LLVMValueRef sh16 = civ(g, 16, 2), zi[16];
	for (int i = 0; i < 16; i++)
		zi[i] = LLVMConstInt(g->i32, 0, 0);
	LLVMValueRef zmask = LLVMConstVector(zi, 16);
	LLVMValueRef qstart = ci(g, 0);
	for (int qb = QB; qb >= 1; qb = qb > 1 ? 1 : 0) {
		Loop lq;
		LLVMValueRef q = loop_begin(g, qstart, nq, qb, &lq);
		for (int a = 0; a < qb; a++)
			for (int v = 0; v < NV; v++)
				LLVMBuildStore(b, LLVMConstNull(vt), acc[a][v]);
		Loop lc;
		int U = 4;   /* pairs per iteration; d/2 is a multiple of 4 */
		LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d2), U, &lc);
		LLVMValueRef av[6][4];
		for (int a = 0; a < qb; a++)
			for (int v = 0; v < NV; v++)
				av[a][v] = LLVMBuildLoad2(b, vt, acc[a][v], "");
		for (int u = 0; u < U; u++) {
			LLVMValueRef cu = LLVMBuildAdd(b, c, ci(g, u), "");
			LLVMValueRef kv[4];
			for (int v = 0; v < NV; v++) {
				LLVMValueRef x = LLVMBuildLoad2(b, vi, gep(g, g->i32, Kp, LLVMBuildAdd(b, LLVMBuildMul(b, cu, ci(g, AT), ""),
				                                                                        ci(g, v * W), "")), "");
				LLVMSetAlignment(x, 4);
				kv[v] = LLVMBuildBitCast(b, x, bt, "");
			}
			for (int a = 0; a < qb; a++) {
				LLVMValueRef qi = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, ci(g, a), ""), ci(g, d), ""),
				                               LLVMBuildMul(b, cu, ci(g, 2), ""), "");
				LLVMValueRef qp = LLVMBuildLoad2(b, v2f, gep(g, g->f32, Q, qi), "");
				LLVMSetAlignment(qp, 4);
				LLVMValueRef hi = LLVMBuildTrunc(b, LLVMBuildLShr(b, LLVMBuildBitCast(b, qp, v2i, ""), sh16, ""), v2s, "");
				LLVMValueRef pr = LLVMBuildBitCast(b, hi, g->i32, "");
				LLVMValueRef bc = LLVMBuildInsertElement(b, LLVMGetPoison(vi), pr, LLVMConstInt(g->i32, 0, 0), "");
				bc = LLVMBuildShuffleVector(b, bc, LLVMGetPoison(vi), zmask, "");
				LLVMValueRef qbv = LLVMBuildBitCast(b, bc, bt, "");
				for (int v = 0; v < NV; v++) {
					LLVMValueRef args[3] = { av[a][v], qbv, kv[v] };
					av[a][v] = LLVMBuildCall2(b, dpt, dp, args, 3, "");
				}
			}
		}
		for (int a = 0; a < qb; a++)
			for (int v = 0; v < NV; v++)
				LLVMBuildStore(b, av[a][v], acc[a][v]);
		loop_end(g, &lc);
		for (int a = 0; a < qb; a++)
			for (int v = 0; v < NV; v++) {
				LLVMValueRef idx = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, ci(g, a), ""), ci(g, AT), ""),
				                                ci(g, (long)v * W), "");
				storef(g, LLVMBuildLoad2(b, vt, acc[a][v], ""), S, idx);
			}
		loop_end(g, &lq);
		qstart = lq.iv;
		if (qb == 1)
			break;
	}
	LLVMBuildRetVoid(b);
}

/*
** qkt(K, ldk, nt, Q, nq, S, Kp): S[q*AT + j] = sum_c Q[q*d + c] * f32(K[j*ldk + c]) for j < AT
** (columns nt..AT-1 are 0). K's tile is first packed, converted and transposed, into
** Kp[c*AT + j]; then a register-blocked outer-product micro-kernel: QB query rows × NV
** vectors of W tokens, broadcast Q[q][c] × Kp row, no horizontal reductions.
*/
static void gen_qkt(Gen *g)
{
	LLVMTypeRef ps[7] = { g->ptr, g->i64, g->i64, g->ptr, g->i64, g->ptr, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 7, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_qkt", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), ldk = LLVMGetParam(g->fn, 1), nt = LLVMGetParam(g->fn, 2);
	LLVMValueRef Q = LLVMGetParam(g->fn, 3), nq = LLVMGetParam(g->fn, 4), S = LLVMGetParam(g->fn, 5);
	LLVMValueRef Kp = LLVMGetParam(g->fn, 6);
	LLVMBuilderRef b = g->b;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	if (g->bf16dot) {
		gen_qkt_bf16(g, K, ldk, nt, Q, nq, S, Kp);
		return;
	}
	int W = g->W, d = g->d;
	int NV = W == 16 ? 4 : W == 8 ? 2 : 4, QB = W == 16 ? 6 : W == 8 ? 6 : 4, TB = NV * W;
	LLVMTypeRef vt = fty(g, W);
	/* pack: Kp[c][j] = f32(K[j][c]), zero beyond nt */
	{
		Loop lt, lc;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nt, 1, 1, &lt);
		LLVMValueRef row = LLVMBuildMul(b, j, ldk, "");
		int w = W > 1 ? W : 1;
		LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d), w, &lc);
		LLVMValueRef v = loadconv(g, K, LLVMBuildAdd(b, row, c, ""), w);
		for (int k = 0; k < w; k++) {
			LLVMValueRef e = w == 1 ? v : LLVMBuildExtractElement(b, v, LLVMConstInt(g->i32, (unsigned)k, 0), "");
			LLVMValueRef idx = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, c, ci(g, k), ""), ci(g, AT), ""), j, "");
			storef(g, e, Kp, idx);
		}
		loop_end(g, &lc);
		loop_end(g, &lt);
		Loop lz, lz2;
		LLVMValueRef jz = loop_begin2(g, nt, ci(g, AT), 1, 1, &lz);
		LLVMValueRef cz = loop_begin(g, ci(g, 0), ci(g, d), 1, &lz2);
		storef(g, LLVMConstReal(g->f32, 0), Kp, LLVMBuildAdd(b, LLVMBuildMul(b, cz, ci(g, AT), ""), jz, ""));
		loop_end(g, &lz2);
		loop_end(g, &lz);
	}
	LLVMValueRef acc[8][4];
	for (int a = 0; a < QB; a++)
		for (int v = 0; v < NV; v++)
			acc[a][v] = entry_alloca(g, vt);
	LLVMValueRef qstart = ci(g, 0);
	for (int qb = QB; qb >= 1; qb = qb > 1 ? 1 : 0) {
		Loop lq;
		LLVMValueRef q = loop_begin(g, qstart, nq, qb, &lq);
		for (int tb = 0; tb < AT / TB; tb++) {
			for (int a = 0; a < qb; a++)
				for (int v = 0; v < NV; v++)
					LLVMBuildStore(b, LLVMConstNull(vt), acc[a][v]);
			Loop lc;
			int U = 4;
			LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d), U, &lc);
			LLVMValueRef av[8][4];
			for (int a = 0; a < qb; a++)
				for (int v = 0; v < NV; v++)
					av[a][v] = LLVMBuildLoad2(b, vt, acc[a][v], "");
			for (int u = 0; u < U; u++) {
				LLVMValueRef cu = LLVMBuildAdd(b, c, ci(g, u), "");
				LLVMValueRef kv[4];
				for (int v = 0; v < NV; v++)
					kv[v] = loadf(g, Kp, LLVMBuildAdd(b, LLVMBuildMul(b, cu, ci(g, AT), ""), ci(g, (long)tb * TB + v * W), ""), W);
				for (int a = 0; a < qb; a++) {
					LLVMValueRef qi = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, ci(g, a), ""), ci(g, d), ""), cu, "");
					LLVMValueRef qs = splat(g, ldf(g, Q, qi), W);
					for (int v = 0; v < NV; v++) {
						LLVMValueRef args[3] = { qs, kv[v], av[a][v] };
						av[a][v] = LLVMBuildCall2(b, g->fma_ty, g->fma, args, 3, "");
					}
				}
			}
			for (int a = 0; a < qb; a++)
				for (int v = 0; v < NV; v++)
					LLVMBuildStore(b, av[a][v], acc[a][v]);
			loop_end(g, &lc);
			for (int a = 0; a < qb; a++)
				for (int v = 0; v < NV; v++) {
					LLVMValueRef idx = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, ci(g, a), ""), ci(g, AT), ""),
					                                ci(g, (long)tb * TB + v * W), "");
					storef(g, LLVMBuildLoad2(b, vt, acc[a][v], ""), S, idx);
				}
		}
		loop_end(g, &lq);
		qstart = lq.iv;
		if (qb == 1)
			break;
	}
	LLVMBuildRetVoid(b);
}

/* x[k] = vj > k*16+lane ? a * S[row + k*16 + lane] : -inf, for the AT/16 vectors of a row */
static void rowlogits(Gen *g, LLVMValueRef S, LLVMValueRef q, LLVMValueRef vj, LLVMValueRef a, LLVMValueRef *x)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef vjv = LLVMBuildTrunc(b, vj, g->i32, "");
	LLVMValueRef vjs = LLVMBuildInsertElement(b, LLVMGetPoison(LLVMVectorType(g->i32, DT)), vjv, LLVMConstInt(g->i32, 0, 0), "");
	LLVMValueRef z[DT], lane[DT];
	for (int i = 0; i < DT; i++)
		z[i] = LLVMConstInt(g->i32, 0, 0);
	vjs = LLVMBuildShuffleVector(b, vjs, LLVMGetPoison(LLVMVectorType(g->i32, DT)), LLVMConstVector(z, DT), "");
	for (int k = 0; k < AT / DT; k++) {
		for (int i = 0; i < DT; i++)
			lane[i] = LLVMConstInt(g->i32, (unsigned)(k * DT + i), 0);
		LLVMValueRef m = LLVMBuildICmp(b, LLVMIntSLT, LLVMConstVector(lane, DT), vjs, "");
		LLVMValueRef s = loadf(g, S, LLVMBuildAdd(b, LLVMBuildMul(b, q, ci(g, AT), ""), ci(g, k * DT), ""), DT);
		x[k] = LLVMBuildSelect(b, m, LLVMBuildFMul(b, s, splat(g, a, DT), ""), cfv(g, -INFINITY, DT), "");
	}
}

/* sstat(S, nq, vj, a, m, l): online max / sum of exp over each row's first vj[q] logits a*S */
static void gen_sstat(Gen *g)
{
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->ptr, g->f32, g->ptr, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 6, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_sstat", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef S = LLVMGetParam(g->fn, 0), nq = LLVMGetParam(g->fn, 1), vjp = LLVMGetParam(g->fn, 2);
	LLVMValueRef a = LLVMGetParam(g->fn, 3), M = LLVMGetParam(g->fn, 4), Lp = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	LLVMTypeRef tv = fty(g, DT);
	Loop lq;
	LLVMValueRef q = loop_begin2(g, ci(g, 0), nq, 1, 1, &lq);
	LLVMValueRef vj = LLVMBuildSExt(b, LLVMBuildLoad2(b, g->i32, gep(g, g->i32, vjp, q), ""), g->i64, "");
	LLVMValueRef x[AT / DT];
	rowlogits(g, S, q, vj, a, x);
	LLVMValueRef mx = x[0];
	for (int k = 1; k < AT / DT; k++) {
		mx = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, mx, x[k], ""), mx, x[k], "");
	}
	LLVMValueRef tm = intr(g, "llvm.vector.reduce.fmax", tv, &mx, 1);
	LLVMSetFastMathFlags(tm, LLVMFastMathNoNaNs);
	LLVMValueRef mo = ldf(g, M, q);
	LLVMValueRef mm[2] = { mo, tm };
	LLVMValueRef mn = intr(g, "llvm.maxnum", g->f32, mm, 2);
	LLVMValueRef sum = cfv(g, 0, DT);
	for (int k = 0; k < AT / DT; k++)
		sum = LLVMBuildFAdd(b, sum, vexp(g, LLVMBuildFSub(b, x[k], splat(g, mn, DT), ""), DT), "");
	LLVMValueRef ra[2] = { LLVMConstReal(g->f32, -0.0), sum };
	LLVMValueRef ts = intr(g, "llvm.vector.reduce.fadd", tv, ra, 2);
	LLVMSetFastMathFlags(ts, LLVMFastMathAllowReassoc);
	LLVMValueRef sc = vexp(g, LLVMBuildFSub(b, mo, mn, ""), 1);
	LLVMValueRef l = LLVMBuildFAdd(b, LLVMBuildFMul(b, ldf(g, Lp, q), sc, ""), ts, "");
	storef(g, l, Lp, q);
	storef(g, mn, M, q);
	loop_end(g, &lq);
	LLVMBuildRetVoid(b);
}

/* sacc(S, nq, vj, a, mp, acc): acc[j] += sum_q exp(a*S[q][j] - mp[q]) over j < vj[q] */
static void gen_sacc(Gen *g)
{
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->ptr, g->f32, g->ptr, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 6, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_sacc", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef S = LLVMGetParam(g->fn, 0), nq = LLVMGetParam(g->fn, 1), vjp = LLVMGetParam(g->fn, 2);
	LLVMValueRef a = LLVMGetParam(g->fn, 3), MP = LLVMGetParam(g->fn, 4), acc = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	LLVMTypeRef tv = fty(g, DT);
	LLVMValueRef av[AT / DT];
	for (int k = 0; k < AT / DT; k++) {
		av[k] = entry_alloca(g, tv);
		LLVMBuildStore(b, cfv(g, 0, DT), av[k]);
	}
	Loop lq;
	LLVMValueRef q = loop_begin2(g, ci(g, 0), nq, 1, 1, &lq);
	LLVMValueRef vj = LLVMBuildSExt(b, LLVMBuildLoad2(b, g->i32, gep(g, g->i32, vjp, q), ""), g->i64, "");
	LLVMValueRef x[AT / DT];
	rowlogits(g, S, q, vj, a, x);
	LLVMValueRef mp = splat(g, ldf(g, MP, q), DT);
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef p = vexp(g, LLVMBuildFSub(b, x[k], mp, ""), DT);
		LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, tv, av[k], ""), p, ""), av[k]);
	}
	loop_end(g, &lq);
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef o = loadf(g, acc, ci(g, k * DT), DT);
		storef(g, LLVMBuildFAdd(b, o, LLVMBuildLoad2(b, tv, av[k], ""), ""), acc, ci(g, k * DT));
	}
	LLVMBuildRetVoid(b);
}

/* probs(S, n, m, il): S[i] = exp(S[i] - m) * il (softmax normalization, in place). */
static void gen_probs(Gen *g)
{
	LLVMTypeRef ps[4] = { g->ptr, g->i64, g->f32, g->f32 };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 4, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_probs", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef S = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1);
	LLVMValueRef m = LLVMGetParam(g->fn, 2), il = LLVMGetParam(g->fn, 3);
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	LLVMValueRef start = ci(g, 0);
	for (int w = DT; w >= 1; w = w > 1 ? 1 : 0) {
		Loop lp;
		LLVMValueRef i = loop_begin(g, start, n, w, &lp);
		LLVMValueRef x = LLVMBuildFSub(g->b, loadf(g, S, i, w), splat(g, m, w), "");
		storef(g, LLVMBuildFMul(g->b, vexp(g, x, w), splat(g, il, w), ""), S, i);
		loop_end(g, &lp);
		start = lp.iv;
		if (w == 1)
			break;
	}
	LLVMBuildRetVoid(g->b);
}

/* --- select and compact_merge: keys, radix select, kept list, in-place stable compaction ------- */

static LLVMValueRef ld(Gen *g, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx, unsigned align)
{
	LLVMValueRef v = LLVMBuildLoad2(g->b, t, gep(g, t, base, idx), "");
	LLVMSetAlignment(v, align);
	return v;
}

static void st_(Gen *g, LLVMTypeRef t, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, unsigned align)
{
	LLVMValueRef s = LLVMBuildStore(g->b, v, gep(g, t, base, idx));
	LLVMSetAlignment(s, align);
}

static LLVMValueRef newfn(Gen *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *ps, int np)
{
	LLVMTypeRef ft = LLVMFunctionType(ret, ps, (unsigned)np, 0);
	g->fn = LLVMAddFunction(g->m, name, ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	return g->fn;
}

/*
** The 64-bit candidate key of score v (f32), the same order as the reference's (protected first,
** higher score, NaN lowest, -0 = +0, then lower instance/position):
** prot << 63 | u << 31 | (0x7fffffff - (id & 0x7fffffff)), id = instance·capacity + position.
** A protected candidate's u is its rank pk instead of its score (protkey: sinks, then the
** newest of the recent window; DESIGN §3).
*/
static LLVMValueRef selkey(Gen *g, LLVMValueRef v, LLVMValueRef prot, LLVMValueRef pk, LLVMValueRef id)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef u = LLVMBuildBitCast(b, v, g->i32, "");
	LLVMValueRef zero = LLVMConstInt(g->i32, 0, 0), sgn = LLVMConstInt(g->i32, 0x80000000u, 0);
	u = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOEQ, v, LLVMConstReal(g->f32, 0), ""), zero, u, "");
	LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, u, zero, "");
	u = LLVMBuildSelect(b, neg, LLVMBuildNot(b, u, ""), LLVMBuildOr(b, u, sgn, ""), "");
	u = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, v, v, ""), zero, u, "");
	u = LLVMBuildSelect(b, prot, pk, u, "");
	id = LLVMBuildAnd(b, id, LLVMConstInt(g->i32, 0x7fffffff, 0), "");
	id = LLVMBuildSub(b, LLVMConstInt(g->i32, 0x7fffffff, 0), id, "");
	LLVMValueRef k = LLVMBuildOr(b, LLVMBuildShl(b, LLVMBuildZExt(b, prot, g->i64, ""), ci(g, 63), ""),
	                             LLVMBuildShl(b, LLVMBuildZExt(b, u, g->i64, ""), ci(g, 31), ""), "");
	return LLVMBuildOr(b, k, LLVMBuildZExt(b, id, g->i64, ""), "");
}

/* The rank of a protected candidate [t0, t1) of n tokens (i32): a sink (t0 < S) 2^31 + (2^31 - 2
** - t0), lower positions first (never all ones: with the id bits that is threshold's "none");
** else (the recent window) 2^31 - 1 - (n - t1), the newest first. */
static LLVMValueRef protkey(Gen *g, LLVMValueRef t0, LLVMValueRef t1, LLVMValueRef n, LLVMValueRef S)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef top = LLVMConstInt(g->i32, 0x7fffffff, 0);
	LLVMValueRef sk = LLVMBuildOr(b, LLVMBuildSub(b, LLVMConstInt(g->i32, 0x7ffffffe, 0),
	                                              LLVMBuildTrunc(b, t0, g->i32, ""), ""),
	                              LLVMConstInt(g->i32, 0x80000000u, 0), "");
	LLVMValueRef rk = LLVMBuildSub(b, top, LLVMBuildTrunc(b, LLVMBuildSub(b, n, t1, ""), g->i32, ""), "");
	return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, t0, S, ""), sk, rk, "");
}

/* selkeys(score, n, S, R, base, key): key[i] of token i of one (layer, head), id base + i */
static void gen_selkeys(Gen *g)
{
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->i64, g->i32, g->ptr };
	newfn(g, "kvcc_selkeys", LLVMVoidTypeInContext(g->cx), ps, 6);
	LLVMValueRef sc = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), S = LLVMGetParam(g->fn, 2);
	LLVMValueRef R = LLVMGetParam(g->fn, 3), base = LLVMGetParam(g->fn, 4), key = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMValueRef nr = LLVMBuildSub(b, n, R, "");
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef prot = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, i, S, ""), LLVMBuildICmp(b, LLVMIntSGE, i, nr, ""), "");
	LLVMValueRef id = LLVMBuildAdd(b, base, LLVMBuildTrunc(b, i, g->i32, ""), "");
	LLVMValueRef pk = protkey(g, i, LLVMBuildAdd(b, i, ci(g, 1), ""), n, S);
	st_(g, g->i64, selkey(g, ld(g, g->f32, sc, i, 4), prot, pk, id), key, i, 8);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}

/*
** ckeys(score, n, S, R, base, chunk, key): chunk candidates of one (layer, head): key[j] for the
** tokens t0 = j·chunk .. min(t0 + chunk, n) - 1 (the last chunk may be partial), j < ceil(n/chunk).
** The score is the reference's mean: a double sum in token order divided by the length (NaN if
** any token is NaN), rounded to f32; protected if any of its tokens is; id base + t0.
*/
static void gen_ckeys(Gen *g)
{
	LLVMTypeRef ps[7] = { g->ptr, g->i64, g->i64, g->i64, g->i32, g->i64, g->ptr };
	newfn(g, "kvcc_ckeys", LLVMVoidTypeInContext(g->cx), ps, 7);
	LLVMValueRef sc = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), S = LLVMGetParam(g->fn, 2);
	LLVMValueRef R = LLVMGetParam(g->fn, 3), base = LLVMGetParam(g->fn, 4), ch = LLVMGetParam(g->fn, 5);
	LLVMValueRef key = LLVMGetParam(g->fn, 6);
	LLVMBuilderRef b = g->b;
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMValueRef sp = entry_alloca(g, f64);
	LLVMValueRef nr = LLVMBuildSub(b, n, R, "");
	LLVMValueRef nc = LLVMBuildSDiv(b, LLVMBuildSub(b, LLVMBuildAdd(b, n, ch, ""), ci(g, 1), ""), ch, "");
	Loop lp, lt;
	LLVMValueRef j = loop_begin2(g, ci(g, 0), nc, 1, 1, &lp);
	LLVMValueRef t0 = LLVMBuildMul(b, j, ch, "");
	LLVMValueRef e = LLVMBuildAdd(b, t0, ch, "");
	e = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, e, n, ""), e, n, "");
	LLVMBuildStore(b, LLVMConstReal(f64, 0), sp);
	LLVMValueRef t = loop_begin2(g, t0, e, 1, 1, &lt);
	LLVMValueRef v = LLVMBuildFPExt(b, ld(g, g->f32, sc, t, 4), f64, "");
	LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, f64, sp, ""), v, ""), sp);
	loop_end(g, &lt);
	LLVMValueRef mean = LLVMBuildFDiv(b, LLVMBuildLoad2(b, f64, sp, ""),
	                                  LLVMBuildSIToFP(b, LLVMBuildSub(b, e, t0, ""), f64, ""), "");
	LLVMValueRef prot = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, t0, S, ""),
	                                LLVMBuildICmp(b, LLVMIntSGT, e, nr, ""), "");
	LLVMValueRef id = LLVMBuildAdd(b, base, LLVMBuildTrunc(b, t0, g->i32, ""), "");
	st_(g, g->i64, selkey(g, LLVMBuildFPTrunc(b, mean, g->f32, ""), prot, protkey(g, t0, e, n, S), id), key, j, 8);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}

/*
** topk(key, n, want): radix select, MSB first, 11-bit digits (6 histogram passes: 5 × 11 + 9):
** per pass a histogram of the digit over the keys matching the prefix so far, then the digit
** where the `want` largest end. Returns the smallest kept key (keys are distinct, so exactly
** `want` keys are >= it). 1 <= want <= n.
*/
#define RBITS 11
static void gen_topk(Gen *g)
{
	LLVMTypeRef ps[3] = { g->ptr, g->i64, g->i64 };
	newfn(g, "kvcc_topk", g->i64, ps, 3);
	LLVMValueRef key = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), want = LLVMGetParam(g->fn, 2);
	LLVMBuilderRef b = g->b;
	LLVMValueRef hist = LLVMBuildArrayAlloca(b, g->i64, LLVMConstInt(g->i32, 1u << RBITS, 0), "hist");
	LLVMSetAlignment(hist, 64);
	LLVMValueRef wantp = LLVMBuildAlloca(b, g->i64, "want"), bp = LLVMBuildAlloca(b, g->i64, "digit");
	LLVMBuildStore(b, want, wantp);
	LLVMValueRef prefix = ci(g, 0), mask = ci(g, 0);
	for (int shift = 64 - RBITS; shift > -RBITS; shift -= RBITS) {
		int w = shift < 0 ? RBITS + shift : RBITS, sh = shift < 0 ? 0 : shift;
		long dm = (1L << w) - 1;
		LLVMBuildMemSet(b, hist, LLVMConstInt(LLVMInt8TypeInContext(g->cx), 0, 0), ci(g, (dm + 1) * 8), 64);
		Loop lp;
		LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
		LLVMValueRef k = ld(g, g->i64, key, i, 8);
		LLVMValueRef in = LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildAnd(b, k, mask, ""), prefix, "");
		LLVMValueRef dg = LLVMBuildAnd(b, LLVMBuildLShr(b, k, ci(g, sh), ""), ci(g, dm), "");
		LLVMValueRef h = ld(g, g->i64, hist, dg, 8);
		st_(g, g->i64, LLVMBuildAdd(b, h, LLVMBuildZExt(b, in, g->i64, ""), ""), hist, dg, 8);
		loop_end(g, &lp);
		/* scan down from the top digit */
		LLVMBuildStore(b, ci(g, dm), bp);
		LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scan");
		LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scanb");
		LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scane");
		LLVMBuildBr(b, head);
		LLVMPositionBuilderAtEnd(b, head);
		LLVMValueRef bv = LLVMBuildLoad2(b, g->i64, bp, ""), wv = LLVMBuildLoad2(b, g->i64, wantp, "");
		LLVMValueRef hv = ld(g, g->i64, hist, bv, 8);
		LLVMValueRef go = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGT, bv, ci(g, 0), ""),
		                               LLVMBuildICmp(b, LLVMIntULT, hv, wv, ""), "");
		LLVMBuildCondBr(b, go, body, exit);
		LLVMPositionBuilderAtEnd(b, body);
		LLVMBuildStore(b, LLVMBuildSub(b, wv, hv, ""), wantp);
		LLVMBuildStore(b, LLVMBuildSub(b, bv, ci(g, 1), ""), bp);
		LLVMBuildBr(b, head);
		LLVMPositionBuilderAtEnd(b, exit);
		LLVMValueRef dsel = LLVMBuildLoad2(b, g->i64, bp, "");
		prefix = LLVMBuildOr(b, prefix, LLVMBuildShl(b, dsel, ci(g, sh), ""), "");
		mask = LLVMBuildOr(b, mask, ci(g, (long)((unsigned long)dm << sh)), "");
	}
	LLVMBuildRet(b, prefix);
}

/* keepidx(key, n, thr, idx): idx[m++] = i for key[i] >= thr (unsigned), in order; returns m */
static void gen_keepidx(Gen *g)
{
	LLVMTypeRef ps[4] = { g->ptr, g->i64, g->i64, g->ptr };
	newfn(g, "kvcc_keepidx", g->i64, ps, 4);
	LLVMValueRef key = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), thr = LLVMGetParam(g->fn, 2);
	LLVMValueRef idx = LLVMGetParam(g->fn, 3);
	LLVMBuilderRef b = g->b;
	LLVMValueRef mp = LLVMBuildAlloca(b, g->i64, "m");
	LLVMBuildStore(b, ci(g, 0), mp);
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef c = LLVMBuildICmp(b, LLVMIntUGE, ld(g, g->i64, key, i, 8), thr, "");
	LLVMValueRef m = LLVMBuildLoad2(b, g->i64, mp, "");
	st_(g, g->i32, LLVMBuildTrunc(b, i, g->i32, ""), idx, m, 4);
	LLVMBuildStore(b, LLVMBuildAdd(b, m, LLVMBuildZExt(b, c, g->i64, ""), ""), mp);
	loop_end(g, &lp);
	LLVMBuildRet(b, LLVMBuildLoad2(b, g->i64, mp, ""));
}

/* kcount(key, n, thr): the number of key[i] >= thr (unsigned) */
static void gen_kcount(Gen *g)
{
	LLVMTypeRef ps[3] = { g->ptr, g->i64, g->i64 };
	newfn(g, "kvcc_kcount", g->i64, ps, 3);
	LLVMValueRef key = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), thr = LLVMGetParam(g->fn, 2);
	LLVMBuilderRef b = g->b;
	LLVMValueRef mp = entry_alloca(g, g->i64);
	LLVMBuildStore(b, ci(g, 0), mp);
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef c = LLVMBuildICmp(b, LLVMIntUGE, ld(g, g->i64, key, i, 8), thr, "");
	LLVMBuildStore(b, LLVMBuildAdd(b, LLVMBuildLoad2(b, g->i64, mp, ""), LLVMBuildZExt(b, c, g->i64, ""), ""), mp);
	loop_end(g, &lp);
	LLVMBuildRet(b, LLVMBuildLoad2(b, g->i64, mp, ""));
}

/*
** ckeepidx(key, n, chunk, thr, last, idx): the sorted kept list of one (layer, head) from its
** full chunks' keys (j < n / chunk: kept if key[j] >= thr) and, when n % chunk != 0, the partial
** last chunk (kept if last != 0); returns its length. Branch-free: every chunk's positions are
** written at the current end of the list (so nothing past index n - 1) and the end advances
** only when the chunk is kept.
*/
static void gen_ckeepidx(Gen *g)
{
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->i64, g->i64, g->ptr };
	newfn(g, "kvcc_ckeepidx", g->i64, ps, 6);
	LLVMValueRef key = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), ch = LLVMGetParam(g->fn, 2);
	LLVMValueRef thr = LLVMGetParam(g->fn, 3), last = LLVMGetParam(g->fn, 4), idx = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMValueRef mp = entry_alloca(g, g->i64);
	LLVMBuildStore(b, ci(g, 0), mp);
	LLVMValueRef nf = LLVMBuildSDiv(b, n, ch, ""), tf = LLVMBuildMul(b, nf, ch, "");
	Loop lp, lc, lt;
	LLVMValueRef j = loop_begin2(g, ci(g, 0), nf, 1, 1, &lp);
	LLVMValueRef t0 = LLVMBuildMul(b, j, ch, "");
	LLVMValueRef m = LLVMBuildLoad2(b, g->i64, mp, "");
	LLVMValueRef c = loop_begin2(g, ci(g, 0), ch, 1, 1, &lc);
	st_(g, g->i32, LLVMBuildTrunc(b, LLVMBuildAdd(b, t0, c, ""), g->i32, ""), idx, LLVMBuildAdd(b, m, c, ""), 4);
	loop_end(g, &lc);
	LLVMValueRef kept = LLVMBuildICmp(b, LLVMIntUGE, ld(g, g->i64, key, j, 8), thr, "");
	LLVMBuildStore(b, LLVMBuildAdd(b, m, LLVMBuildSelect(b, kept, ch, ci(g, 0), ""), ""), mp);
	loop_end(g, &lp);
	m = LLVMBuildLoad2(b, g->i64, mp, "");
	LLVMValueRef t = loop_begin2(g, tf, n, 1, 1, &lt);
	st_(g, g->i32, LLVMBuildTrunc(b, t, g->i32, ""), idx, LLVMBuildAdd(b, m, LLVMBuildSub(b, t, tf, ""), ""), 4);
	loop_end(g, &lt);
	LLVMValueRef keep = LLVMBuildICmp(b, LLVMIntNE, last, ci(g, 0), "");
	LLVMBuildRet(b, LLVMBuildAdd(b, m, LLVMBuildSelect(b, keep, LLVMBuildSub(b, n, tf, ""), ci(g, 0), ""), ""));
}

/*
** compact(K, V, ldk, idx, m, pos, state, nst, sstride): stable in-place gather of the kept rows
** of one (layer, head). idx is strictly increasing, so idx[i] >= i and row idx[i] is never
** overwritten before it is read. Rows move as whole vectors of bits (never through f32):
** d·esz bytes in 64/32/8-byte chunks (by target), fully unrolled (dtype and d are compile-time).
*/
static void gen_compact(Gen *g)
{
	LLVMTypeRef ps[9] = { g->ptr, g->ptr, g->i64, g->ptr, g->i64, g->ptr, g->ptr, g->i64, g->i64 };
	newfn(g, "kvcc_compact", LLVMVoidTypeInContext(g->cx), ps, 9);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), V = LLVMGetParam(g->fn, 1), ldk = LLVMGetParam(g->fn, 2);
	LLVMValueRef idx = LLVMGetParam(g->fn, 3), m = LLVMGetParam(g->fn, 4), pos = LLVMGetParam(g->fn, 5);
	LLVMValueRef state = LLVMGetParam(g->fn, 6), nst = LLVMGetParam(g->fn, 7), sstr = LLVMGetParam(g->fn, 8);
	LLVMBuilderRef b = g->b;
	int esz = g->dtype == KI_F32 ? 4 : 2, rowb = g->d * esz;
	int cb = g->W == 16 ? 64 : g->W == 8 ? 32 : 8;
	while (rowb % cb)
		cb /= 2;
	LLVMTypeRef i8 = LLVMInt8TypeInContext(g->cx), ct = LLVMVectorType(g->i32, (unsigned)(cb / 4));
	LLVMValueRef ldb = LLVMBuildMul(b, ldk, ci(g, esz), "");
	LLVMValueRef hasp = LLVMBuildICmp(b, LLVMIntNE, pos, LLVMConstNull(g->ptr), "");
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), m, 1, 1, &lp);
	LLVMValueRef s = LLVMBuildSExt(b, ld(g, g->i32, idx, i, 4), g->i64, "");
	LLVMBasicBlockRef mv = LLVMAppendBasicBlockInContext(g->cx, g->fn, "move");
	LLVMBasicBlockRef pm = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pos");
	LLVMBasicBlockRef sm = LLVMAppendBasicBlockInContext(g->cx, g->fn, "state");
	LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(g->cx, g->fn, "next");
	LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntNE, s, i, ""), mv, cont);
	LLVMPositionBuilderAtEnd(b, mv);
	LLVMValueRef so = LLVMBuildMul(b, s, ldb, ""), dof = LLVMBuildMul(b, i, ldb, "");
	LLVMValueRef bufs[2] = { K, V };
	for (int a = 0; a < 2; a++) {
		LLVMValueRef src = gep(g, i8, bufs[a], so), dst = gep(g, i8, bufs[a], dof);
		LLVMValueRef vs[128];
		int nc = rowb / cb;
		for (int c = 0; c < nc; c++) {
			vs[c] = LLVMBuildLoad2(b, ct, gep(g, i8, src, ci(g, (long)c * cb)), "");
			LLVMSetAlignment(vs[c], (unsigned)esz);
		}
		for (int c = 0; c < nc; c++) {
			LLVMValueRef stv = LLVMBuildStore(b, vs[c], gep(g, i8, dst, ci(g, (long)c * cb)));
			LLVMSetAlignment(stv, (unsigned)esz);
		}
	}
	LLVMBuildCondBr(b, hasp, pm, sm);
	LLVMPositionBuilderAtEnd(b, pm);
	st_(g, g->i32, ld(g, g->i32, pos, s, 4), pos, i, 4);
	LLVMBuildBr(b, sm);
	LLVMPositionBuilderAtEnd(b, sm);
	{
		Loop ls;
		LLVMValueRef t = loop_begin2(g, ci(g, 0), nst, 1, 1, &ls);
		LLVMValueRef row = LLVMBuildMul(b, t, sstr, "");
		LLVMValueRef x = ld(g, g->i32, state, LLVMBuildAdd(b, row, s, ""), 4);
		st_(g, g->i32, x, state, LLVMBuildAdd(b, row, i, ""), 4);
		loop_end(g, &ls);
	}
	LLVMBuildBr(b, cont);
	LLVMPositionBuilderAtEnd(b, cont);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}

/*
** tmap(gid, ctx): the plan's fused token_map loops (plan.h tgen/tout), one switch case per loop,
** entered with its first instruction's index; ctx = kvcc_tmap_ctx (kvcc.h). A loop evaluates its
** values without a token axis once (size, info, [chan] values and their reductions), then makes
** one pass over the tokens, then finishes its token reductions. Over the tokens it runs W-lane
** token chunks and a scalar tail, or, when a value has the chan axis (K / V rows), one token
** per step with chan in W-lane chunks. A value is an array of elements: group (G, unrolled:
** reductions over group stay in registers) × chan chunk (d/W); leaves (x.t, x.pos, K / V rows,
** state, rand) are computed where read. Same arithmetic as the runtime's C evaluator (rt.c
** evalmat): exp/log/pow are the libm calls, max/min propagate NaN, comparisons give 1/0,
** rand is ki_rand; sums over chan / token lanes are reassociated (within the f32 tolerance).
*/
static LLVMValueRef tm_bin(Gen *g, int op, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c, int w)
{
	LLVMBuilderRef bd = g->b;
	LLVMTypeRef t = fty(g, w);
	LLVMRealPredicate pr = LLVMRealOLT;
	switch (op) {
	case KO_neg: return LLVMBuildFNeg(bd, a, "");
	case KO_exp: return intr(g, "llvm.exp", t, &a, 1);
	case KO_log: return intr(g, "llvm.log", t, &a, 1);
	case KO_sqrt: return intr(g, "llvm.sqrt", t, &a, 1);
	case KO_abs: return intr(g, "llvm.fabs", t, &a, 1);
	case KO_add: return LLVMBuildFAdd(bd, a, b, "");
	case KO_sub: return LLVMBuildFSub(bd, a, b, "");
	case KO_mul: return LLVMBuildFMul(bd, a, b, "");
	case KO_div: return LLVMBuildFDiv(bd, a, b, "");
	case KO_pow: {
		LLVMValueRef ab[2] = { a, b };
		return intr(g, "llvm.pow", t, ab, 2);
	}
	case KO_max:
	case KO_min: {
		/* the reference's (ir.c ki_evalew): a if strictly better, b if strictly better, else
		** max(+0, -0) = +0 and min = -0 */
		int mx = op == KO_max;
		LLVMValueRef gt = LLVMBuildFCmp(bd, mx ? LLVMRealOGT : LLVMRealOLT, a, b, "");
		LLVMValueRef lt = LLVMBuildFCmp(bd, mx ? LLVMRealOLT : LLVMRealOGT, a, b, "");
		LLVMTypeRef it = w == 1 ? g->i32 : LLVMVectorType(g->i32, (unsigned)w);
		LLVMValueRef neg = LLVMBuildICmp(bd, LLVMIntSLT, LLVMBuildBitCast(bd, a, it, ""), civ(g, 0, w), "");
		LLVMValueRef r = LLVMBuildSelect(bd, neg, mx ? b : a, mx ? a : b, "");
		r = LLVMBuildSelect(bd, lt, b, r, "");
		r = LLVMBuildSelect(bd, gt, a, r, "");
		LLVMValueRef un = LLVMBuildFCmp(bd, LLVMRealUNO, a, b, "");
		return LLVMBuildSelect(bd, un, cfv(g, NAN, w), r, "");
	}
	case KO_lt: pr = LLVMRealOLT; break;
	case KO_le: pr = LLVMRealOLE; break;
	case KO_eq: pr = LLVMRealOEQ; break;
	case KO_ne: pr = LLVMRealUNE; break;
	case KO_where:
		return LLVMBuildSelect(bd, LLVMBuildFCmp(bd, LLVMRealUNE, a, cfv(g, 0.0, w), ""), b, c, "");
	default: return cfv(g, NAN, w);
	}
	return LLVMBuildUIToFP(bd, LLVMBuildFCmp(bd, pr, a, b, ""), t, "");
}

/* context fields (kvcc_tmap_ctx: 8 bytes each) */
enum { TC_vals, TC_par, TC_K, TC_V, TC_pos, TC_state, TC_n, TC_ldk, TC_sstride, TC_layer, TC_head, TC_layers,
       TC_heads, TC_step, TC_obs };

typedef struct Tm {
	Gen *g;
	const KiFn *f;
	const KpPlan *p;
	int s, e;                 /* the loop's instructions */
	int row;                  /* one token per step, chan in W-lane chunks */
	int w;                    /* token lanes of the current step (1 when row) */
	LLVMValueRef ctx, n, t;   /* t: the step's first token */
	LLVMValueRef *pv;         /* [nins] vals[j] */
	LLVMValueRef *sc;         /* [npar] parameters (f32) */
	LLVMValueRef **pre;       /* [nins] values without a token axis */
	LLVMValueRef **cur;       /* [nins] the step's values */
	LLVMValueRef **acc;       /* [nins] token reductions: accumulators (W-lane set, then tail set) */
	LLVMValueRef *pk;         /* [nins] pools: kernel (i64) */
} Tm;

static int tm_ng(const Tm *T, uint8_t ax) { return (ax & AXM(AX_group)) ? T->g->G : 1; }
static int tm_nc(const Tm *T, uint8_t ax) { return (ax & AXM(AX_chan)) ? T->g->d / T->g->W : 1; }

/* lanes of one element of a value with axes ax in the current step */
static int tm_wid(const Tm *T, uint8_t ax)
{
	if (ax & AXM(AX_chan))
		return T->g->W;
	return (ax & AXM(AX_token)) ? T->w : 1;
}

static LLVMValueRef tm_field(Tm *T, int k, LLVMTypeRef t) { return ld(T->g, t, T->ctx, ci(T->g, k), 8); }

/* room for instruction i's elements (group × chan chunk) in tab */
static void tm_new(Tm *T, int i, LLVMValueRef **tab)
{
	uint8_t ax = T->f->ins[i].axes;
	if (!tab[i])
		tab[i] = calloc((size_t)(tm_ng(T, ax) * tm_nc(T, ax)), sizeof(LLVMValueRef));
}

/* element index of (g, chan chunk c) in vals[i] for the current step */
static LLVMValueRef tm_idx(Tm *T, uint8_t ax, int g, int c)
{
	Gen *G = T->g;
	LLVMValueRef k = ci(G, 0);
	if (ax & AXM(AX_group))
		k = ci(G, g);
	if (ax & AXM(AX_token))
		k = LLVMBuildAdd(G->b, LLVMBuildMul(G->b, k, T->n, ""), T->t, "");
	if (ax & AXM(AX_chan))
		k = LLVMBuildAdd(G->b, LLVMBuildMul(G->b, k, ci(G, G->d), ""), ci(G, (long)c * G->W), "");
	return k;
}

static LLVMValueRef tm_iota(Gen *g, LLVMValueRef t, int w, LLVMTypeRef et)
{
	LLVMValueRef t32 = LLVMBuildTrunc(g->b, t, et, "");
	if (w == 1)
		return t32;
	LLVMValueRef io[64], z[64];
	for (int k = 0; k < w; k++)
		io[k] = LLVMConstInt(et, (unsigned)k, 0), z[k] = LLVMConstInt(g->i32, 0, 0);
	LLVMTypeRef it = LLVMVectorType(et, (unsigned)w);
	LLVMValueRef sv = LLVMBuildInsertElement(g->b, LLVMGetPoison(it), t32, LLVMConstInt(g->i32, 0, 0), "");
	sv = LLVMBuildShuffleVector(g->b, sv, LLVMGetPoison(it), LLVMConstVector(z, (unsigned)w), "");
	return LLVMBuildAdd(g->b, sv, LLVMConstVector(io, (unsigned)w), "");
}

/* w elements of type et at base[idx], or dflt when base is NULL */
static LLVMValueRef tm_ldnull(Gen *g, LLVMValueRef base, LLVMTypeRef et, LLVMValueRef idx, int w, LLVMValueRef dflt)
{
	LLVMBasicBlockRef bn = LLVMGetInsertBlock(g->b);
	LLVMBasicBlockRef bl = LLVMAppendBasicBlockInContext(g->cx, g->fn, "load");
	LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "join");
	LLVMBuildCondBr(g->b, LLVMBuildIsNull(g->b, base, ""), bj, bl);
	LLVMPositionBuilderAtEnd(g->b, bl);
	LLVMValueRef v = ld(g, w == 1 ? et : LLVMVectorType(et, (unsigned)w), gep(g, et, base, idx), ci(g, 0), 4);
	LLVMBuildBr(g->b, bj);
	LLVMPositionBuilderAtEnd(g->b, bj);
	LLVMValueRef ph = LLVMBuildPhi(g->b, LLVMTypeOf(dflt), "");
	LLVMValueRef in[2] = { dflt, v };
	LLVMBasicBlockRef from[2] = { bn, bl };
	LLVMAddIncoming(ph, in, from, 2);
	return ph;
}

/* positions of the step's tokens (i32 lanes) */
static LLVMValueRef tm_pos(Tm *T)
{
	Gen *g = T->g;
	return tm_ldnull(g, tm_field(T, TC_pos, g->ptr), g->i32, T->t, T->w, tm_iota(g, T->t, T->w, g->i32));
}

static LLVMValueRef tm_i64(Gen *g, unsigned long long v, int w)
{
	LLVMValueRef k = LLVMConstInt(g->i64, v, 0), ks[64];
	if (w == 1)
		return k;
	for (int i = 0; i < w; i++)
		ks[i] = k;
	return LLVMConstVector(ks, (unsigned)w);
}

/* ki_rand(seed, layer, head, pos) for the step's tokens */
static LLVMValueRef tm_rand(Tm *T, LLVMValueRef seed)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	int w = T->w;
	LLVMTypeRef it = w == 1 ? g->i64 : LLVMVectorType(g->i64, (unsigned)w);
	LLVMValueRef pos = LLVMBuildSExt(b, tm_pos(T), it, "");
	LLVMValueRef lh = LLVMBuildXor(b, LLVMBuildShl(b, tm_field(T, TC_layer, g->i64), ci(g, 40), ""),
	                               LLVMBuildShl(b, tm_field(T, TC_head, g->i64), ci(g, 24), ""), "");
	LLVMValueRef sd = LLVMBuildFPToSI(b, seed, g->i64, "");
	if (w > 1) {
		LLVMValueRef z[64];
		for (int k = 0; k < w; k++)
			z[k] = LLVMConstInt(g->i32, 0, 0);
		LLVMValueRef m = LLVMConstVector(z, (unsigned)w);
		lh = LLVMBuildShuffleVector(b, LLVMBuildInsertElement(b, LLVMGetPoison(it), lh, z[0], ""), LLVMGetPoison(it), m, "");
		sd = LLVMBuildShuffleVector(b, LLVMBuildInsertElement(b, LLVMGetPoison(it), sd, z[0], ""), LLVMGetPoison(it), m, "");
	}
	LLVMValueRef c = LLVMBuildXor(b, lh, pos, "");
	LLVMValueRef z = LLVMBuildAdd(b, sd, LLVMBuildMul(b, c, tm_i64(g, 0x9E3779B97F4A7C15ull, w), ""), "");
	z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, tm_i64(g, 30, w), ""), ""), tm_i64(g, 0xBF58476D1CE4E5B9ull, w), "");
	z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, tm_i64(g, 27, w), ""), ""), tm_i64(g, 0x94D049BB133111EBull, w), "");
	z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, tm_i64(g, 31, w), ""), "");
	LLVMValueRef u = LLVMBuildUIToFP(b, LLVMBuildLShr(b, z, tm_i64(g, 40, w), ""), fty(g, w), "");
	return LLVMBuildFMul(b, u, cfv(g, 1.0 / 16777216.0, w), "");
}

static LLVMValueRef *tm_val(Tm *T, int j);

/* operand r at element (group g, chan chunk c), broadcast to `want` lanes */
static LLVMValueRef tm_opnd(Tm *T, KcRef r, int g, int c, int want)
{
	Gen *G = T->g;
	int j = KC_RIDX(r);
	switch (KC_RKIND(r)) {
	case RK_CON: return cfv(G, (double)(float)T->f->con[j], want);
	case RK_PAR: return splat(G, T->sc[j], want);
	}
	uint8_t ax = ki_refaxes(T->f, r);
	LLVMValueRef x = tm_val(T, j)[((ax & AXM(AX_group)) ? g : 0) * tm_nc(T, ax) + ((ax & AXM(AX_chan)) ? c : 0)];
	return tm_wid(T, ax) == 1 && want > 1 ? splat(G, x, want) : x;
}

static LLVMValueRef tm_redinit(Gen *g, int op, int w)
{
	return cfv(g, op == KO_rmax ? -INFINITY : op == KO_rmin ? INFINITY : 0.0, w);
}

/* one more element a (b: dot's other factor) into a reduction; merge = combine partials */
static LLVMValueRef tm_redstep(Gen *g, int op, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b, int merge)
{
	LLVMBuilderRef bd = g->b;
	if (op == KO_rmax || op == KO_rmin) {
		LLVMValueRef better = LLVMBuildFCmp(bd, op == KO_rmax ? LLVMRealUGT : LLVMRealULT, a, acc, "");
		/* unordered: a NaN a wins; a NaN acc stays unless a is NaN (isnan(v) || v > acc) */
		LLVMValueRef an = LLVMBuildFCmp(bd, LLVMRealUNO, a, a, "");
		LLVMValueRef cn = LLVMBuildFCmp(bd, LLVMRealUNO, acc, acc, "");
		better = LLVMBuildSelect(bd, cn, an, better, "");
		return LLVMBuildSelect(bd, better, a, acc, "");
	}
	if (!merge && op == KO_norm)
		a = LLVMBuildFMul(bd, a, a, "");
	else if (!merge && op == KO_dot)
		a = LLVMBuildFMul(bd, a, b, "");
	return LLVMBuildFAdd(bd, acc, a, "");
}

static LLVMValueRef tm_redfin(Gen *g, int op, LLVMValueRef x, LLVMValueRef m, int w)
{
	if (op == KO_mean)
		return LLVMBuildFDiv(g->b, x, splat(g, m, w), "");
	if (op == KO_norm)
		return intr(g, "llvm.sqrt", fty(g, w), &x, 1);
	return x;
}

/* the lanes of a partial merged into a scalar: sums by a reassociating vector reduction,
** max / min lane by lane in order (their NaN rule) */
static LLVMValueRef tm_lanes(Gen *g, int op, LLVMValueRef acc, LLVMValueRef v, int w)
{
	if (w == 1)
		return tm_redstep(g, op, acc, v, NULL, 1);
	if (op != KO_rmax && op != KO_rmin && w == g->W) {
		LLVMValueRef args[2] = { LLVMConstReal(g->f32, -0.0), v };
		LLVMValueRef r = LLVMBuildCall2(g->b, g->red_ty, g->red, args, 2, "");
		LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc);
		return LLVMBuildFAdd(g->b, acc, r, "");
	}
	for (int k = 0; k < w; k++)
		acc = tm_redstep(g, op, acc, LLVMBuildExtractElement(g->b, v, LLVMConstInt(g->i32, (unsigned)k, 0), ""), NULL, 1);
	return acc;
}

/* reduction over group or chan (in one step) */
static void tm_red(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	const KiIns *in = &T->f->ins[i];
	uint8_t ax = in->axes, aa = ki_refaxes(T->f, in->arg[0]);
	KcRef b = ki_nargs(in->op) > 1 ? in->arg[1] : KC_NIL;
	if (in->axis == AX_group) {
		int w = tm_wid(T, ax);
		for (int c = 0; c < tm_nc(T, ax); c++) {
			LLVMValueRef a = tm_redinit(g, in->op, w);
			for (int gg = 0; gg < g->G; gg++)
				a = tm_redstep(g, in->op, a, tm_opnd(T, in->arg[0], gg, c, w), b ? tm_opnd(T, b, gg, c, w) : NULL, 0);
			out[c] = tm_redfin(g, in->op, a, LLVMConstReal(g->f32, g->G), w);
		}
		return;
	}
	/* over chan: W-lane partials over the chunks, then their lanes */
	uint8_t ab = aa | (b ? ki_refaxes(T->f, b) : 0);
	for (int gg = 0; gg < tm_ng(T, ax); gg++) {
		LLVMValueRef a = tm_redinit(g, in->op, g->W);
		for (int c = 0; c < tm_nc(T, ab); c++)
			a = tm_redstep(g, in->op, a, tm_opnd(T, in->arg[0], gg, c, g->W), b ? tm_opnd(T, b, gg, c, g->W) : NULL, 0);
		LLVMValueRef s = tm_lanes(g, in->op, tm_redinit(g, in->op, 1), a, g->W);
		out[gg] = tm_redfin(g, in->op, s, LLVMConstReal(g->f32, g->d), 1);
	}
}

static LLVMValueRef tm_poolstep(Gen *g, int op, LLVMValueRef acc, LLVMValueRef v)
{
	if (op == KO_avgpool)
		return LLVMBuildFAdd(g->b, acc, v, "");
	/* v > acc || isnan(v) */
	LLVMValueRef tk = LLVMBuildOr(g->b, LLVMBuildFCmp(g->b, LLVMRealOGT, v, acc, ""), LLVMBuildFCmp(g->b, LLVMRealUNO, v, v, ""), "");
	return LLVMBuildSelect(g->b, tk, v, acc, "");
}

/* the pool's window at token tt (scalar): the reference's clipped window, count_include_pad */
static LLVMValueRef tm_poolwin(Tm *T, int i, LLVMValueRef src, LLVMValueRef tt)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	int op = T->f->ins[i].op;
	LLVMValueRef k = T->pk[i], p = LLVMBuildSDiv(b, k, ci(g, 2), "");
	LLVMValueRef lo = LLVMBuildSub(b, tt, p, ""), hi = LLVMBuildAdd(b, lo, k, "");
	lo = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, lo, ci(g, 0), ""), ci(g, 0), lo, "");
	hi = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, hi, T->n, ""), T->n, hi, "");
	LLVMValueRef a = entry_alloca(g, g->f32);
	LLVMBuildStore(b, op == KO_avgpool ? cfv(g, 0.0, 1) : cfv(g, -INFINITY, 1), a);
	Loop lj;
	LLVMValueRef j = loop_begin2(g, lo, hi, 1, 1, &lj);
	LLVMBuildStore(b, tm_poolstep(g, op, LLVMBuildLoad2(b, g->f32, a, ""), ldf(g, src, j)), a);
	loop_end(g, &lj);
	loop_plain(g, &lj);
	return LLVMBuildLoad2(b, g->f32, a, "");
}

/* avgpool / maxpool over token of a stored [group?, token] value */
static void tm_pool(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	uint8_t ax = in->axes;
	LLVMValueRef src = T->pv[KC_RIDX(in->arg[0])], k = T->pk[i];
	LLVMValueRef kf = LLVMBuildSIToFP(b, k, g->f32, "");
	int w = T->w;
	for (int gg = 0; gg < tm_ng(T, ax); gg++) {
		LLVMValueRef base = gep(g, g->f32, src, (ax & AXM(AX_group)) ? LLVMBuildMul(b, ci(g, gg), T->n, "") : ci(g, 0));
		LLVMValueRef r;
		if (w == 1)
			r = tm_poolwin(T, i, base, T->t);
		else {    /* whole windows inside [0, n): W-lane sums in order; else lane by lane */
			LLVMValueRef lo = LLVMBuildSub(b, T->t, LLVMBuildSDiv(b, k, ci(g, 2), ""), "");
			LLVMValueRef inb = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, lo, ci(g, 0), ""),
			                                LLVMBuildICmp(b, LLVMIntSLE, LLVMBuildAdd(b, lo, LLVMBuildAdd(b, k, ci(g, w - 1), ""), ""),
			                                              T->n, ""), "");
			LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pool.in");
			LLVMBasicBlockRef bs = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pool.edge");
			LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pool.join");
			LLVMBuildCondBr(b, inb, bf, bs);
			LLVMPositionBuilderAtEnd(b, bf);
			LLVMValueRef a = entry_alloca(g, fty(g, w));
			LLVMBuildStore(b, cfv(g, in->op == KO_avgpool ? 0.0 : -INFINITY, w), a);
			Loop lo_;
			LLVMValueRef o = loop_begin2(g, ci(g, 0), k, 1, 1, &lo_);
			LLVMValueRef v = loadf(g, base, LLVMBuildAdd(b, lo, o, ""), w);
			LLVMBuildStore(b, tm_poolstep(g, in->op, LLVMBuildLoad2(b, fty(g, w), a, ""), v), a);
			loop_end(g, &lo_);
			LLVMValueRef rf = LLVMBuildLoad2(b, fty(g, w), a, "");
			LLVMBasicBlockRef bfe = LLVMGetInsertBlock(b);
			LLVMBuildBr(b, bj);
			LLVMPositionBuilderAtEnd(b, bs);
			/* the edge lanes one after another in a loop (unrolled, the W windows cost
			** more compile time than the few edge chunks of a head ever run) */
			LLVMValueRef lanes = entry_alloca(g, fty(g, w));
			Loop ll;
			LLVMValueRef l = loop_begin2(g, ci(g, 0), ci(g, w), 1, 1, &ll);
			LLVMBuildStore(b, tm_poolwin(T, i, base, LLVMBuildAdd(b, T->t, l, "")), gep(g, g->f32, lanes, l));
			loop_end(g, &ll);
			loop_plain(g, &ll);
			LLVMValueRef rs = LLVMBuildLoad2(b, fty(g, w), lanes, "");
			LLVMBasicBlockRef bse = LLVMGetInsertBlock(b);
			LLVMBuildBr(b, bj);
			LLVMPositionBuilderAtEnd(b, bj);
			r = LLVMBuildPhi(b, fty(g, w), "");
			LLVMValueRef rv[2] = { rf, rs };
			LLVMBasicBlockRef rb[2] = { bfe, bse };
			LLVMAddIncoming(r, rv, rb, 2);
		}
		out[gg] = in->op == KO_avgpool ? LLVMBuildFDiv(b, r, splat(g, kf, w), "") : r;
	}
}

/* instruction i's elements: leaves, size / info, elementwise ops, reductions over group / chan,
** pools (token reductions accumulate in tm_step) */
static void tm_eval(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	uint8_t ax = in->axes;
	int w = tm_wid(T, ax);
	switch (in->op) {
	case KO_index:
		out[0] = LLVMBuildSIToFP(b, tm_iota(g, T->t, w, g->i32), fty(g, w), "");
		return;
	case KO_input:
		if (in->aux == IN_pos) {
			out[0] = LLVMBuildSIToFP(b, tm_pos(T), fty(g, w), "");
			return;
		}
		for (int c = 0; c < tm_nc(T, ax); c++) {       /* K / V row chunk, storage → f32 */
			LLVMValueRef row = LLVMBuildMul(b, T->t, tm_field(T, TC_ldk, g->i64), "");
			out[c] = loadconv(g, tm_field(T, in->aux == IN_K ? TC_K : TC_V, g->ptr), LLVMBuildAdd(b, row, ci(g, (long)c * g->W), ""), g->W);
		}
		return;
	case KO_state: {
		LLVMValueRef sb = tm_field(T, TC_state, g->ptr);
		LLVMValueRef off = LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, in->aux), tm_field(T, TC_sstride, g->i64), ""), T->t, "");
		out[0] = tm_ldnull(g, sb, g->f32, off, w, cfv(g, (double)(float)T->f->st[in->aux].init, w));
		return;
	}
	case KO_rand:
		out[0] = tm_rand(T, tm_opnd(T, in->arg[0], 0, 0, 1));
		return;
	case KO_size: {
		LLVMValueRef v = in->axis == AX_group ? ci(g, g->G) : in->axis == AX_chan ? ci(g, g->d)
		               : in->axis == AX_token ? T->n : tm_field(T, TC_obs, g->i64);
		out[0] = LLVMBuildSIToFP(b, v, g->f32, "");
		return;
	}
	case KO_info: {
		static const int fld[] = { [INF_layer] = TC_layer, [INF_head] = TC_head, [INF_nlayers] = TC_layers,
		                           [INF_nheads] = TC_heads, [INF_step] = TC_step };
		out[0] = in->aux == INF_scale ? cfv(g, (double)(float)(1.0 / sqrt((double)g->d)), 1)
		                              : LLVMBuildSIToFP(b, tm_field(T, fld[in->aux], g->i64), g->f32, "");
		return;
	}
	case KO_avgpool:
	case KO_maxpool:
		tm_pool(T, i, out);
		return;
	}
	if (ki_rule(in->op) != AR_EW) {
		tm_red(T, i, out);
		return;
	}
	for (int gg = 0; gg < tm_ng(T, ax); gg++)
		for (int c = 0; c < tm_nc(T, ax); c++) {
			LLVMValueRef x[3] = { NULL, NULL, NULL };
			for (int k = 0; k < ki_nargs(in->op); k++)
				x[k] = tm_opnd(T, in->arg[k], gg, c, w);
			out[gg * tm_nc(T, ax) + c] = tm_bin(g, in->op, x[0], x[1], x[2], w);
		}
}

static int tm_inloop(const KiIns *in) { return (in->axes & AXM(AX_token)) || kp_tokred(in); }

/* instruction j's elements where instruction (s..e) reads them: computed in this loop, a leaf
** recomputed here, or loaded from vals */
static LLVMValueRef *tm_val(Tm *T, int j)
{
	const KiIns *in = &T->f->ins[j];
	int here = j >= T->s && j <= T->e;
	if (!(in->axes & AXM(AX_token)))
		return T->pre[j];
	if (T->cur[j])
		return T->cur[j];
	tm_new(T, j, T->cur);
	if (here || (kp_isleaf(in) && T->p->tgen[j] && !T->p->tout[j]))
		tm_eval(T, j, T->cur[j]);
	else
		for (int gg = 0; gg < tm_ng(T, in->axes); gg++)
			for (int c = 0; c < tm_nc(T, in->axes); c++)
				T->cur[j][gg * tm_nc(T, in->axes) + c] =
					loadf(T->g, T->pv[j], tm_idx(T, in->axes, gg, c), tm_wid(T, in->axes));
	return T->cur[j];
}

/* the accumulators of token reduction i for the current step's width */
static LLVMValueRef *tm_acc(Tm *T, int i)
{
	int ne = tm_ng(T, T->f->ins[i].axes) * tm_nc(T, T->f->ins[i].axes);
	return T->acc[i] + (T->w > 1 ? 0 : ne);
}

/* one step over the tokens: every in-loop value, the stores, the token reductions */
static void tm_step(Tm *T, int w)
{
	Gen *g = T->g;
	const KiFn *f = T->f;
	T->w = w;
	for (int j = 0; j < f->nins; j++)
		free(T->cur[j]), T->cur[j] = NULL;
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		if (!T->p->tgen[i] || !tm_inloop(in))
			continue;
		if (!kp_tokred(in)) {
			LLVMValueRef *v = tm_val(T, i);
			if (T->p->tout[i])
				for (int gg = 0; gg < tm_ng(T, in->axes); gg++)
					for (int c = 0; c < tm_nc(T, in->axes); c++)
						storef(g, v[gg * tm_nc(T, in->axes) + c], T->pv[i], tm_idx(T, in->axes, gg, c));
			continue;
		}
		LLVMValueRef *a = tm_acc(T, i);
		KcRef bb = ki_nargs(in->op) > 1 ? in->arg[1] : KC_NIL;
		int aw = tm_wid(T, (uint8_t)(in->axes | AXM(AX_token)));
		for (int gg = 0; gg < tm_ng(T, in->axes); gg++)
			for (int c = 0; c < tm_nc(T, in->axes); c++) {
				LLVMValueRef p = a[gg * tm_nc(T, in->axes) + c];
				LLVMValueRef x = tm_redstep(g, in->op, LLVMBuildLoad2(g->b, fty(g, aw), p, ""),
				                            tm_opnd(T, in->arg[0], gg, c, aw), bb ? tm_opnd(T, bb, gg, c, aw) : NULL, 0);
				LLVMBuildStore(g->b, x, p);
			}
	}
}

/* loop s..e (one switch case) */
static void tm_loop(Tm *T)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiFn *f = T->f;
	const KpPlan *p = T->p;
	LLVMValueRef vals = tm_field(T, TC_vals, g->ptr), par = tm_field(T, TC_par, g->ptr);
	T->n = tm_field(T, TC_n, g->i64);
	T->t = ci(g, 0);
	T->w = 1;
	int inloop = 0;
	T->row = 0;
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		uint8_t u = in->axes;
		if (!p->tgen[i])
			continue;
		for (int k = 0; k < ki_nargs(in->op); k++) {
			KcRef r = in->arg[k];
			int j = KC_RIDX(r);
			if (KC_RKIND(r) == RK_PAR && !T->sc[j])
				T->sc[j] = LLVMBuildFPTrunc(b, ld(g, LLVMDoubleTypeInContext(g->cx), par, ci(g, j), 8), g->f32, "");
			if (KC_RKIND(r) != RK_INS)
				continue;
			u |= f->ins[j].axes;
			if ((j < T->s || j > T->e) && !T->pv[j])
				T->pv[j] = ld(g, g->ptr, vals, ci(g, j), 8);
			if (j < T->s && !(f->ins[j].axes & AXM(AX_token)) && !T->pre[j]) {   /* earlier values, once */
				tm_new(T, j, T->pre);
				for (int gg = 0; gg < tm_ng(T, f->ins[j].axes); gg++)
					for (int c = 0; c < tm_nc(T, f->ins[j].axes); c++)
						T->pre[j][gg * tm_nc(T, f->ins[j].axes) + c] =
							loadf(g, T->pv[j], tm_idx(T, f->ins[j].axes, gg, c), tm_wid(T, f->ins[j].axes));
			}
		}
		if (p->tout[i])
			T->pv[i] = ld(g, g->ptr, vals, ci(g, i), 8);
		if (tm_inloop(in))
			inloop = 1, T->row |= (u & AXM(AX_token)) && (u & AXM(AX_chan));
	}
	/* values without a token axis */
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		if (!p->tgen[i] || tm_inloop(in))
			continue;
		tm_new(T, i, T->pre);
		tm_eval(T, i, T->pre[i]);
		if (p->tout[i])
			for (int gg = 0; gg < tm_ng(T, in->axes); gg++)
				for (int c = 0; c < tm_nc(T, in->axes); c++)
					storef(g, T->pre[i][gg * tm_nc(T, in->axes) + c], T->pv[i], tm_idx(T, in->axes, gg, c));
	}
	int stores = 0;
	for (int i = T->s; i <= T->e; i++)
		stores |= p->tgen[i] && p->tout[i];
	if (!inloop || !stores)      /* e.g. a leaf other loops recompute: nothing to do here */
		return;
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		if (!p->tgen[i])
			continue;
		if (in->op == KO_avgpool || in->op == KO_maxpool)
			T->pk[i] = LLVMBuildFPToSI(b, tm_opnd(T, in->arg[1], 0, 0, 1), g->i64, "");
		if (!kp_tokred(in))
			continue;
		int ne = tm_ng(T, in->axes) * tm_nc(T, in->axes);
		T->acc[i] = calloc((size_t)ne * 2, sizeof(LLVMValueRef));
		for (int k = 0; k < 2 * ne && T->acc[i]; k++) {
			int aw = k < ne ? g->W : (in->axes & AXM(AX_chan)) ? g->W : 1;
			T->acc[i][k] = entry_alloca(g, fty(g, aw));
			LLVMBuildStore(b, tm_redinit(g, in->op, aw), T->acc[i][k]);
		}
	}
	Loop lv, lt;
	LLVMValueRef t0 = ci(g, 0);
	if (g->W > 1 && !T->row) {
		T->t = loop_begin(g, ci(g, 0), T->n, g->W, &lv);
		tm_step(T, g->W);
		loop_end(g, &lv);
		t0 = lv.iv;
	}
	T->t = loop_begin2(g, t0, T->n, 1, 1, &lt);
	tm_step(T, 1);
	loop_end(g, &lt);
	if (t0 != ci(g, 0))
		loop_plain(g, &lt);      /* the tail after the vector loop: fewer than W tokens */
	/* the token reductions' results */
	T->t = ci(g, 0), T->w = 1;
	LLVMValueRef nf = LLVMBuildSIToFP(b, T->n, g->f32, "");
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		if (!p->tgen[i] || !kp_tokred(in))
			continue;
		int ne = tm_ng(T, in->axes) * tm_nc(T, in->axes), wo = tm_wid(T, in->axes);
		for (int k = 0; k < ne; k++) {
			LLVMValueRef x = LLVMBuildLoad2(b, fty(g, wo), T->acc[i][ne + k], "");
			if (!T->row && g->W > 1)
				x = tm_lanes(g, in->op, x, LLVMBuildLoad2(b, fty(g, g->W), T->acc[i][k], ""), g->W);
			x = tm_redfin(g, in->op, x, nf, wo);
			if (p->tout[i])
				storef(g, x, T->pv[i], tm_idx(T, in->axes, k / tm_nc(T, in->axes), k % tm_nc(T, in->axes)));
		}
	}
}

static void gen_tmap(Gen *g, const KiFn *f, const KpPlan *p)
{
	LLVMTypeRef ps[2] = { g->i64, g->ptr };
	newfn(g, "kvcc_tmap", LLVMVoidTypeInContext(g->cx), ps, 2);
	LLVMValueRef gid = LLVMGetParam(g->fn, 0);
	LLVMBasicBlockRef def = LLVMAppendBasicBlockInContext(g->cx, g->fn, "none");
	LLVMValueRef sw = LLVMBuildSwitch(g->b, gid, def, (unsigned)p->ngen);
	LLVMPositionBuilderAtEnd(g->b, def);
	LLVMBuildRetVoid(g->b);
	size_t nv = (size_t)f->nins + (size_t)f->npar + 1;
	Tm T = { .g = g, .f = f, .p = p, .w = 1, .ctx = LLVMGetParam(g->fn, 1),
	         .pv = calloc(nv, sizeof(LLVMValueRef)), .sc = calloc(nv, sizeof(LLVMValueRef)),
	         .pre = calloc(nv, sizeof(LLVMValueRef *)), .cur = calloc(nv, sizeof(LLVMValueRef *)),
	         .acc = calloc(nv, sizeof(LLVMValueRef *)), .pk = calloc(nv, sizeof(LLVMValueRef)) };
	for (int s = 0; s < f->nins && T.pv && T.sc && T.pre && T.cur && T.acc && T.pk; s++) {
		if (p->tgen[s] != KP_GEN_START)
			continue;
		int e = kp_segend(p, s);
		LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(g->cx, g->fn, "tmap");
		LLVMAddCase(sw, LLVMConstInt(g->i64, (unsigned long long)s, 0), bb);
		LLVMPositionBuilderAtEnd(g->b, bb);
		T.s = s, T.e = e;
		tm_loop(&T);
		LLVMBuildRetVoid(g->b);
		for (size_t k = 0; k < nv; k++) {
			free(T.pre[k]), free(T.cur[k]), free(T.acc[k]);
			T.pre[k] = T.cur[k] = T.acc[k] = NULL, T.pv[k] = T.sc[k] = T.pk[k] = NULL;
		}
	}
	if (T.pre && T.cur && T.acc)
		for (size_t k = 0; k < nv; k++)
			free(T.pre[k]), free(T.cur[k]), free(T.acc[k]);
	free(T.pv), free(T.sc), free(T.pre), free(T.cur), free(T.acc), free(T.pk);
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

static int run_cc(const char *obj, const char *so, const char *const *extra, int nextra, KcErr *e)
{
	const char *cc = getenv("KVCC_CC");
	if (!cc || !*cc)
		cc = "cc";
	char *argv[16] = { (char *)cc, "-shared", "-o", (char *)so, (char *)obj };
	int na = 5;
	for (int i = 0; i < nextra && na < 14; i++)
		argv[na++] = (char *)extra[i];
	argv[na++] = "-lgcc";
	argv[na] = NULL;
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
	return kx_compile_ex(f, spec, out_so, verbose, ms, NULL, 0, e);
}

int kx_compile_ex(const KiFn *f, const kvcc_spec *spec, const char *out_so, int verbose, double *ms,
                  const char *const *extra_objs, int nextra, KcErr *e)
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
	g.W = W, g.d = spec->head_dim, g.dtype = spec->dtype, g.G = spec->group;
	g.bf16dot = kx_bf16dot(spec, host, W);
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
	gen_decode(&g, spec->group);
	LLVMValueRef dec = g.fn;
	gen_probs(&g);
	LLVMValueRef probs = g.fn;
	gen_qkt(&g);
	LLVMValueRef qkt = g.fn;
	gen_sstat(&g);
	LLVMValueRef sstat = g.fn;
	gen_sacc(&g);
	LLVMValueRef sacc = g.fn;
	gen_selkeys(&g);
	LLVMValueRef selkeys = g.fn;
	gen_topk(&g);
	LLVMValueRef topk = g.fn;
	gen_keepidx(&g);
	LLVMValueRef keepidx = g.fn;
	gen_ckeys(&g);
	LLVMValueRef ckeys = g.fn;
	gen_kcount(&g);
	LLVMValueRef kcount = g.fn;
	gen_ckeepidx(&g);
	LLVMValueRef ckeepidx = g.fn;
	gen_compact(&g);
	LLVMValueRef compact = g.fn;
	KpPlan kp;
	if (kp_build(f, &kp, e) != 0) {
		LLVMDisposeBuilder(g.b), LLVMDisposeModule(g.m), LLVMContextDispose(g.cx);
		LLVMDisposeTargetData(td), LLVMDisposeTargetMachine(tm);
		LLVMDisposeMessage(triple), free(host), free(feats);
		return -1;
	}
	gen_tmap(&g, f, &kp);
	LLVMValueRef tmap = g.fn;
	kp_free(&kp);

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
	                         g.i32, g.i32, g.i32, g.i32, g.i32, g.i32, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr,
	                         g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr, g.ptr };
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
		gstr(&g, recfeat, "kv.features"), gstr(&g, kir, "kv.kir"), qk, cvt, dec, probs, qkt, sstat, sacc,
		selkeys, topk, keepidx, compact, tmap, ckeys, kcount, ckeepidx,
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
	double tgen = now_ms();
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
	double topt = now_ms();
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
	double tcg = now_ms();
	rc = run_cc(objpath, out_so, extra_objs, nextra, e);
	unlink(objpath);
	if (verbose)
		fprintf(stderr, "kvcc: times: IR %.1f ms, passes %.1f ms, codegen %.1f ms, link %.1f ms\n", tgen - t0,
		        topt - tgen, tcg - topt, now_ms() - tcg);
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
