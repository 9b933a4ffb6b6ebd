/*
** gen.h — codegen/x86's private header: the LLVM IR builder state (Gen) shared by the
** generator files, and the small IR helpers they all use (static inline: each file its copy).
**
**   key.c    targets, CPU features, the compile-cache key
**   kern.c   the fixed kernels: Q·K tiles, storage conversion, decode attention, softmax
**            statistics, select keys / radix select / kept lists, compaction, head_mean, the
**            budget schedule (nkeep), decode query rounding
**   tmap.c   the policy's expressions: fused token_map loops, the observe hook, the attn_score
**            multipliers
**   merge.c  compact_merge: the merge rule's row scalars, similarity tiles, pair values, updates
**   sel.c    selection rules beyond top-k: the threshold filter (tfilter, ctfilter), mass (mtotal, ksum, cmass)
**   desc.c   the artifact's descriptor blob
**   emit.c   target machine, module, descriptor, passes, object; linking
*/
#ifndef KVCC_X86_GEN_H
#define KVCC_X86_GEN_H

#include <math.h>
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>   /* temporary metadata nodes: self-referential llvm.loop */
#include "codegen/x86/exppoly.h"
#include "codegen/x86/x86.h"
#include "compiler/plan.h"

#define DT 16   /* decode token tile (a multiple of every vector width; runtime DTILE) */
#define AT 64   /* attn_score token tile (runtime TILE) */

typedef struct Gen {
	LLVMContextRef cx;
	LLVMModuleRef m;
	LLVMBuilderRef b;
	LLVMTypeRef f32, i16, i32, i64, ptr, half, vf, vi16, vi32, vh, fma_ty, red_ty;
	LLVMValueRef fma, red;
	int W, d, dtype;
	int G;                 /* query heads per KV head */
	int bf16dot;           /* bf16 storage on a CPU with avx512bf16: qkt uses vdpbf16ps */
	KxConfig c;            /* the resolved tuning config (codegen/x86/cfg.c) */
	int amx3;              /* issue 12: the f32 merge similarity on AMX (kx_mamx3) */
	LLVMValueRef fn;
} Gen;

typedef struct Loop {
	LLVMBasicBlockRef head, body, exit;
	LLVMValueRef iv, latch;
	int step;
} Loop;

/* for (iv = start; iv + step <= limit; iv += step), or with `partial` iv < limit */
static inline LLVMValueRef loop_begin2(Gen *g, LLVMValueRef start, LLVMValueRef limit, int step, int partial, Loop *lp)
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

static inline LLVMValueRef loop_begin(Gen *g, LLVMValueRef start, LLVMValueRef limit, int step, Loop *lp)
{
	return loop_begin2(g, start, limit, step, 0, lp);
}

static inline void loop_end(Gen *g, Loop *lp)
{
	LLVMValueRef nx = LLVMBuildAdd(g->b, lp->iv, LLVMConstInt(g->i64, (unsigned)lp->step, 0), "");
	LLVMBasicBlockRef cur = LLVMGetInsertBlock(g->b);
	LLVMAddIncoming(lp->iv, &nx, &cur, 1);
	lp->latch = LLVMBuildBr(g->b, lp->head);
	LLVMPositionBuilderAtEnd(g->b, lp->exit);
}

/* Mark a closed loop as cold code: neither unrolled nor vectorized by the O2 pipeline
** (edge cases that run a few times per head; copies of them only cost compile time). */
static inline void loop_plain(Gen *g, Loop *lp)
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

/* Ask the pipeline to unroll a closed loop n times (a remainder loop when the trip count is not a
** multiple): emit.c's pipeline unrolls nothing partially or at run time unless a loop asks. */
static inline void loop_unroll(Gen *g, Loop *lp, int n)
{
	LLVMMetadataRef tmp = LLVMTemporaryMDNode(g->cx, NULL, 0);
	LLVMMetadataRef ct[2] = { LLVMMDStringInContext2(g->cx, "llvm.loop.unroll.count", 22),
	                          LLVMValueAsMetadata(LLVMConstInt(LLVMInt32TypeInContext(g->cx), (unsigned)n, 0)) };
	LLVMMetadataRef ops[2] = { tmp, LLVMMDNodeInContext2(g->cx, ct, 2) };
	LLVMMetadataRef md = LLVMMDNodeInContext2(g->cx, ops, 2);
	LLVMMetadataReplaceAllUsesWith(tmp, md);
	LLVMSetMetadata(lp->latch, LLVMGetMDKindIDInContext(g->cx, "llvm.loop", 9), LLVMMetadataAsValue(g->cx, md));
}

static inline LLVMValueRef ci(Gen *g, long v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }

/* Load w (W or 1) storage elements at element index `idx` of `base` as f32. */
static inline LLVMValueRef loadconv(Gen *g, LLVMValueRef base, LLVMValueRef idx, int w)
{
	LLVMTypeRef et = g->dtype == KVCC_F32 ? g->f32 : g->dtype == KVCC_F16 ? g->half : g->i16;
	LLVMValueRef p = LLVMBuildGEP2(g->b, et, base, &idx, 1, "");
	LLVMTypeRef vt = w == 1 ? et : LLVMVectorType(et, (unsigned)w);
	LLVMValueRef v = LLVMBuildLoad2(g->b, vt, p, "");
	LLVMSetAlignment(v, g->dtype == KVCC_F32 ? 4 : 2);
	LLVMTypeRef ft = w == 1 ? g->f32 : LLVMVectorType(g->f32, (unsigned)w);
	if (g->dtype == KVCC_F16)
		return LLVMBuildFPExt(g->b, v, ft, "");
	if (g->dtype == KVCC_BF16) {
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

static inline LLVMValueRef loadf(Gen *g, LLVMValueRef base, LLVMValueRef idx, int w)
{
	LLVMValueRef p = LLVMBuildGEP2(g->b, g->f32, base, &idx, 1, "");
	LLVMValueRef v = LLVMBuildLoad2(g->b, w == 1 ? g->f32 : LLVMVectorType(g->f32, (unsigned)w), p, "");
	LLVMSetAlignment(v, 4);
	return v;
}

static inline void storef(Gen *g, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx)
{
	LLVMValueRef p = LLVMBuildGEP2(g->b, g->f32, base, &idx, 1, "");
	LLVMValueRef s = LLVMBuildStore(g->b, v, p);
	LLVMSetAlignment(s, 4);
}

static inline LLVMValueRef intr(Gen *g, const char *name, LLVMTypeRef ot, LLVMValueRef *args, int nargs)
{
	unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, &ot, 1);
	LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, &ot, 1);
	return LLVMBuildCall2(g->b, ft, fn, args, (unsigned)nargs, "");
}

static inline LLVMTypeRef fty(Gen *g, int w) { return w == 1 ? g->f32 : LLVMVectorType(g->f32, (unsigned)w); }

static inline LLVMValueRef cfv(Gen *g, double v, int w)
{
	LLVMValueRef k = LLVMConstReal(g->f32, v), ks[64];
	if (w == 1)
		return k;
	for (int i = 0; i < w; i++)
		ks[i] = k;
	return LLVMConstVector(ks, (unsigned)w);
}

static inline LLVMValueRef civ(Gen *g, long v, int w)
{
	LLVMValueRef k = LLVMConstInt(g->i32, (unsigned long long)v, 1), ks[64];
	if (w == 1)
		return k;
	for (int i = 0; i < w; i++)
		ks[i] = k;
	return LLVMConstVector(ks, (unsigned)w);
}

static inline LLVMValueRef splat(Gen *g, LLVMValueRef x, int w)
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

/* a*b + c, fused where the target has FMA (llvm.fmuladd) */
static inline LLVMValueRef fmadd(Gen *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c, int w)
{
	LLVMValueRef args[3] = { a, b, c };
	return intr(g, "llvm.fmuladd", fty(g, w), args, 3);
}

/* exp(x) for w lanes: Cephes expf polynomial, 2^n through the exponent bits (vscalefps for 16 lanes
** on AVX-512);
** exact 0 below -87.3 (and for -inf), clamped at 88. No libm call. The multiply-adds are
** fused where the target has FMA (the softmax epilogues' cost: sstat, sacc, probs, decode). */
static inline LLVMValueRef vexpk(Gen *g, LLVMValueRef x, int w, int nanp);
static inline LLVMValueRef vexp(Gen *g, LLVMValueRef x, int w) { return vexpk(g, x, w, 0); }

/* vexp, and with nanp a NaN x gives NaN instead of 0 (issue 15, session 12: the softmax
** statistics' sums, KX_EXPNAN below) */
static inline LLVMValueRef vexpk(Gen *g, LLVMValueRef x, int w, int nanp)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef hi = cfv(g, 88.0, w);
	x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), hi, x, "");
	LLVMValueRef big = cfv(g, 12582912.0, w);
	LLVMValueRef nf = LLVMBuildFSub(b, fmadd(g, x, cfv(g, 1.44269504088896341, w), big, w), big, "");
	LLVMValueRef r = fmadd(g, nf, cfv(g, -0.693359375, w), x, w);
	r = fmadd(g, nf, cfv(g, 2.12194440e-4, w), r, w);
	static const double c[] = { 1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2,
	                            1.6666665459E-1, 5.0000001201E-1 };
	LLVMValueRef p = cfv(g, c[0], w);
	for (int i = 1; i < 6; i++)
		p = fmadd(g, p, r, cfv(g, c[i], w), w);
	LLVMValueRef y = LLVMBuildFAdd(b, fmadd(g, p, LLVMBuildFMul(b, r, r, ""), r, w), cfv(g, 1.0, w), "");
	LLVMValueRef res;
	if (w == 16 && g->W == 16) {
		/* AVX-512 (issue 15): y * 2^n in one vscalefps; n is integral and >= -126 wherever the
		** select below keeps the result, so the same value as the exponent-bit construction */
		unsigned id = LLVMLookupIntrinsicID("llvm.x86.avx512.mask.scalef.ps.512", 34);
		LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, NULL, 0);
		LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, NULL, 0);
		LLVMValueRef a[5] = { y, nf, cfv(g, 0.0, w), LLVMConstInt(g->i16, 0xffff, 0), LLVMConstInt(g->i32, 4, 0) };
		res = LLVMBuildCall2(b, ft, fn, a, 5, "");
	} else {
		LLVMTypeRef it = w == 1 ? g->i32 : LLVMVectorType(g->i32, (unsigned)w);
		LLVMValueRef ni = LLVMBuildFPToSI(b, nf, it, "");
		LLVMValueRef e = LLVMBuildShl(b, LLVMBuildAdd(b, ni, civ(g, 127, w), ""), civ(g, 23, w), "");
		res = LLVMBuildFMul(b, y, LLVMBuildBitCast(b, e, fty(g, w), ""), "");
		/* fptosi of a NaN is poison in LLVM IR: with nanp, the NaN is chosen here, not left to
		** what the conversion happens to give (vscalefps above is defined on NaN) */
		if (nanp)
			res = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, x, x, ""), x, res, "");
	}
	return LLVMBuildSelect(b, LLVMBuildFCmp(b, nanp ? LLVMRealOLT : LLVMRealULT, x, cfv(g, -87.3, w), ""), cfv(g, 0.0, w),
	                       res, "");
}

/* vexpn's third argument: KX_EXPNAN (no clamp, a NaN x gives NaN; -inf still 0): the sums of the
** softmax statistics (sstat, sstate), so that a row with a visible NaN logit (a NaN key or query
** value, or inf - inf) gets a NaN sum, as the interpreter's (compiler/interp.c evalsoftmax: the
** max skips NaN, the sum is NaN, and `sum > 0` fails: every probability of the row is 0). The
** runtime turns a row sum that is not > 0 into mp = +inf, and sacce / sacc then add nothing of the
** row. (Session 11 and before: NaN gave 0, so the row's other tokens kept their probabilities.) */
#define KX_EXPNAN 2

/* exp(x) of the softmax epilogues' x - max (issue 15, session 11): x <= 0, or -inf / NaN (-> 0);
** clamp: x also clamped at 88 (a caller whose x may be positive: an engine's lse). 16 lanes on
** AVX-512: base-2 reduction x·log2e = n + r, |r| <= 1/2, with log2e in two parts (r = x·hi - n
** fused, + x·lo), a degree-6 minimax polynomial of 2^r (relative error 1.9e-9 in exact arithmetic;
** in f32 over [-87.3, 0] at most 1.6 ulp against vexp's 1.4, measured), 2^n and the underflow
** (0 below -87.3, -inf, NaN) in one masked vscalefps: 12 vector instructions per exp where vexp
** has 16 (its range reduction needs 2 more, its polynomial form 2, the select 1). Else vexp. */
static inline LLVMValueRef vexpn(Gen *g, LLVMValueRef x, int w, int clamp)
{
	if (!(w == 16 && g->W == 16))
		return vexpk(g, x, w, clamp == KX_EXPNAN);
	LLVMBuilderRef b = g->b;
	if (clamp == 1) {
		LLVMValueRef hi = cfv(g, 88.0, w);
		x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), hi, x, "");
	}
	const double l2e = 1.44269504088896341;
	LLVMValueRef big = cfv(g, 12582912.0, w);
	LLVMValueRef nf = LLVMBuildFSub(b, fmadd(g, x, cfv(g, l2e, w), big, w), big, "");
	LLVMValueRef r = fmadd(g, x, cfv(g, l2e, w), LLVMBuildFNeg(b, nf, ""), w);
	r = fmadd(g, x, cfv(g, l2e - (double)(float)l2e, w), r, w);
	LLVMValueRef p = cfv(g, kx_expn_poly[0], w);
	for (int i = 1; i < 7; i++)
		p = fmadd(g, p, r, cfv(g, kx_expn_poly[i], w), w);
	LLVMValueRef keep = LLVMBuildBitCast(b, LLVMBuildFCmp(b, clamp == KX_EXPNAN ? LLVMRealUGE : LLVMRealOGE, x,
	                                                     cfv(g, KX_EXPN_LO, w), ""), g->i16, "");   /* UGE: NaN kept */
	unsigned id = LLVMLookupIntrinsicID("llvm.x86.avx512.mask.scalef.ps.512", 34);
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, NULL, 0);
	LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, NULL, 0);
	LLVMValueRef a[5] = { p, nf, cfv(g, 0.0, w), keep, LLVMConstInt(g->i32, 4, 0) };
	return LLVMBuildCall2(b, ft, fn, a, 5, "");
}

/* prefetch (read) the `bytes` bytes at byte offset `off` of `base`, one per 64-byte line, with
** llvm.prefetch's locality loc (3: prefetcht0, into L1; 2: t1 and 1: t2, into L2 on x86); no-op
** addresses past the end are harmless (prefetches never fault) */
static inline void prefetchl(Gen *g, LLVMValueRef base, LLVMValueRef off, int bytes, int loc)
{
	LLVMTypeRef i8 = LLVMInt8TypeInContext(g->cx);
	unsigned id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
	LLVMTypeRef ot = g->ptr;
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, &ot, 1);
	LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, &ot, 1);
	for (int l = 0; l < bytes; l += 64) {
		LLVMValueRef o = LLVMBuildAdd(g->b, off, LLVMConstInt(g->i64, (unsigned)l, 0), "");
		LLVMValueRef a[4] = { LLVMBuildGEP2(g->b, i8, base, &o, 1, ""), LLVMConstInt(g->i32, 0, 0),
		                      LLVMConstInt(g->i32, (unsigned)loc, 0), LLVMConstInt(g->i32, 1, 0) };
		LLVMBuildCall2(g->b, ft, fn, a, 4, "");
	}
}

/* prefetch into all levels (prefetcht0) */
static inline void prefetch(Gen *g, LLVMValueRef base, LLVMValueRef off, int bytes)
{
	prefetchl(g, base, off, bytes, 3);
}

static inline LLVMValueRef gep(Gen *g, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef idx)
{
	return LLVMBuildGEP2(g->b, et, base, &idx, 1, "");
}

static inline LLVMValueRef ldf(Gen *g, LLVMValueRef base, LLVMValueRef idx) { return loadf(g, base, idx, 1); }

/* a phi of t at the builder's block: v0 from block b0, v1 from b1 */
static inline LLVMValueRef phi2(Gen *g, LLVMTypeRef t, LLVMValueRef v0, LLVMBasicBlockRef b0, LLVMValueRef v1,
                                LLVMBasicBlockRef b1, const char *name)
{
	LLVMValueRef p = LLVMBuildPhi(g->b, t, name), v[2] = { v0, v1 };
	LLVMBasicBlockRef bb[2] = { b0, b1 };
	LLVMAddIncoming(p, v, bb, 2);
	return p;
}

static inline LLVMValueRef entry_alloca(Gen *g, LLVMTypeRef t)
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

static inline LLVMValueRef ld(Gen *g, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx, unsigned align)
{
	LLVMValueRef v = LLVMBuildLoad2(g->b, t, gep(g, t, base, idx), "");
	LLVMSetAlignment(v, align);
	return v;
}

static inline void st_(Gen *g, LLVMTypeRef t, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, unsigned align)
{
	LLVMValueRef s = LLVMBuildStore(g->b, v, gep(g, t, base, idx));
	LLVMSetAlignment(s, align);
}

static inline LLVMValueRef newfn(Gen *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *ps, int np)
{
	LLVMTypeRef ft = LLVMFunctionType(ret, ps, (unsigned)np, 0);
	g->fn = LLVMAddFunction(g->m, name, ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	return g->fn;
}

/* kern.c: the fixed kernels (each defines one function and leaves it in g->fn) */
KC_FUNC void kx_gen_cvt(Gen *g);
KC_FUNC void kx_gen_decode(Gen *g, int G, int bias);
KC_FUNC void kx_gen_probs(Gen *g);
KC_FUNC void kx_gen_qkt(Gen *g);
KC_FUNC void kx_gen_sstat(Gen *g);
KC_FUNC void kx_gen_sacc(Gen *g);
KC_FUNC void kx_gen_sstate(Gen *g);   /* issue 15: one exp per logit */
KC_FUNC void kx_gen_sacce(Gen *g);
KC_FUNC void kx_gen_selkeys(Gen *g);
KC_FUNC void kx_gen_topk(Gen *g);
KC_FUNC void kx_gen_keepidx(Gen *g);
KC_FUNC void kx_gen_ckeys(Gen *g);
KC_FUNC LLVMValueRef kx_chunkmean(Gen *g, LLVMValueRef sc, LLVMValueRef n, LLVMValueRef ch, LLVMValueRef j,
                                  LLVMValueRef sp, LLVMValueRef *t0p, LLVMValueRef *ep);
KC_FUNC void kx_gen_kcount(Gen *g);
KC_FUNC void kx_gen_ckeepidx(Gen *g);
KC_FUNC void kx_gen_compact(Gen *g);
KC_FUNC void kx_gen_nkeep(Gen *g, const KiFn *f);
/* keep.c (issue 13): kvcc_keepn, the select keep count (after kx_gen_nkeep, which it calls) */
KC_FUNC int kx_gen_keepn(Gen *g, const KiFn *f, KiErr *e);
KC_FUNC void kx_gen_hmean(Gen *g);
KC_FUNC void kx_gen_qround(Gen *g);
/* sel.c: selection rules beyond top-k */
KC_FUNC void kx_gen_tfilter(Gen *g);
KC_FUNC void kx_gen_ctfilter(Gen *g);
KC_FUNC void kx_gen_cmass(Gen *g);
KC_FUNC void kx_gen_mtotal(Gen *g);
KC_FUNC void kx_gen_ksum(Gen *g);
KC_FUNC void kx_gen_kfloor(Gen *g);
KC_FUNC void kx_gen_kcut(Gen *g);   /* merge summary's cap at scope layer / model (session 10) */
/* sched.c: the prefix / dynamic schedules' counts (sel: selkeys, topk, kcount, mtotal, ksum) */
KC_FUNC void kx_gen_schedcnt(Gen *g, const KiFn *f, const LLVMValueRef *sel);
/* tmap.c: the policy's expressions (0, or -1: out of memory) */
KC_FUNC int kx_gen_tmap(Gen *g, const KiFn *f, const KiPlan *p);
KC_FUNC int kx_gen_observe(Gen *g, const KiFn *f, const KiPlan *p);
KC_FUNC void kx_gen_ascale(Gen *g, const KiFn *f, const KiPlan *p);
KC_FUNC LLVMValueRef kx_ew(Gen *g, int op, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c, int w);
/* merge.c: the compact_merge kernels of merge nearest (mscal, mbest, mpair, mupd; stubs for
** drop), into fn[0..3]; 0, or -1: out of memory */
KC_FUNC int kx_gen_merge(Gen *g, const KiFn *f, LLVMValueRef fn[4]);
/* msimx.c (issue 12, session 10): the AMX similarity + arg-max of merge nearest (a stub returning 1
** where it does not apply); kern.c: a call of one of LLVM's AMX intrinsics by tile number */
KC_FUNC void kx_gen_msimx(Gen *g, const KiFn *f);
KC_FUNC void kx_amxcfg(Gen *g);
KC_FUNC void kx_tr16(Gen *g, LLVMValueRef *r);
KC_FUNC void kx_tr16round(Gen *g, LLVMValueRef *r);
KC_FUNC void kx_gen_mstore(Gen *g);
/* issue 12 (session 10): AMX intrinsic calls (kern.c) and the f32 merge similarity on AMX (mamx3.c):
** msplit and mtop2 into fn[0], fn[1], generated when `on` (kx_mamx3), else stubs */
KC_FUNC void amx(Gen *g, const char *name, LLVMValueRef *args, int n);
KC_FUNC LLVMValueRef tmm(Gen *g, int t);
KC_FUNC void tileio(Gen *g, const char *name, int t, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef idx, long stride);
KC_FUNC void kx_gen_mamx3(Gen *g, const KiFn *f, int on, LLVMValueRef fn[2]);
/* mpos.c: merge runs' pair evaluator (mrow; a NaN stub for other policies) */
KC_FUNC int kx_gen_mrow(Gen *g, const KiFn *f, LLVMValueRef *fn);

#endif
