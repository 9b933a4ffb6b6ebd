/*
** Issue 12 (session 10): the f32 similarity of merge nearest with bf16x3 products on AMX tiles
** (doc/merge-f32-amx.md; runtime/merge.c similarity3 drives them). Only for an f32 policy whose
** similarity is the cosine of the keys as kv.nearest writes it (compiler/mplan.h ki_mcosine), with
** no threshold and no weight reading m.sim (the path yields the arg-max only), on a native x86
** target whose CPU has amx-tile + amx-bf16 and 16 lanes, head_dim a multiple of 32; KVCC_MERGE_AMX=0
** at compile time turns it off (part of the cache key). Elsewhere both are stubs and the
** runtime never calls them (KaHdr.flags without KA_FAMX3).
**
**   msplit(K, ldk, cnt, side, H, L, nrm, kmin, kmax)  per row i < cnt of K (f32, token stride
**     ldk): n = sqrt(sum of squares) in f32; y = x / n (x * (1/n)); H = bf16(y), L = bf16(y - H)
**     (round to nearest even; y - H is exact in f32). side 0 (evicted rows): H, L [cnt][d] row-major
**     (the A tiles' layout), nrm[i] = n when the row may take the approximate path (n kmin >= 2c and
**     n kmax <= 1e37: finite, and the exact cosine's clamp max(|e| |k|, c) not active for any kept
**     row), else NaN and H = L = 0. side 1 (kept rows): H, L as 32-bit pairs in the VNNI layout of
**     a tdpbf16ps B operand per 64-token tile, [i/64][d/2][64] (the pair (c, c+1) of token i at
**     ((i/64)*(d/2) + c/2)*64 + i%64), nrm[i] = n (the runtime checks them: kmin, kmax); written
**     16 tokens at a time (a channel pair gathered across them, one 16-slot store; lanes past cnt
**     repeat token cnt-1, past the tile's nt tokens).
**   mtop2(EH, EL, ne, KH, KL, nt, j0, v1, v2, i1)  one 64-token tile of the kept rows (KH, KL its
**     VNNI pairs, nt <= 64 valid tokens, the first kept index j0) against ne evicted rows (a
**     multiple of 16; EH, EL row-major): C = EH.KH + EH.KL + EL.KH, three tdpbf16ps accumulating
**     in f32 per 16 x 16 tile (4 C tiles: 16 rows x 64 tokens), stored to a stack buffer, then per
**     row and lane l (tokens j = j0 + 16s + l) the running best v1, its index i1 and the runner-up
**     v2 = max(v2, min(x, v1)) (v1 = max(v1, x), a strictly greater x takes the index): [ne][16];
**     the lanes past nt masked (only on a partial tile, nt < 64).
** The runtime reduces the lanes once per row and re-checks with the exact f32 path (qkt, mbest)
** every row whose best does not beat every other candidate by more than 2B (the bound: doc).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/x86/gen.h"
#include "compiler/mplan.h"

/* the expression at r reads pinfo sim (the path yields no exact similarity) */
static int readsim(const KiFn *f, KiRef r)
{
	if (KI_RKIND(r) != RK_INS)
		return 0;
	const KiIns *in = &f->ins[KI_RIDX(r)];
	if (in->op == KO_pinfo)
		return in->aux == PI_sim;
	for (int k = 0; k < 3; k++)
		if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < KI_RIDX(r) && readsim(f, in->arg[k]))
			return 1;
	return 0;
}

int kx_mamx3(const KiFn *f, const kvcc_spec *spec, const char *host, int W, double *c)
{
	const char *e = getenv("KVCC_MERGE_AMX");
	const KiMerge *m = &f->merge;
	double cc = 0;
	int on = f->merge.kind == MG_nearest && m->thr == MT_none && !readsim(f, m->weight) && !readsim(f, m->self) &&
	         ki_mcosine(f, m->sim, &cc) && kx_amx3(spec, host, W) && !(e && !strcmp(e, "0"));
	if (c)
		*c = on ? cc : 0;
	return on;
}

/* bf16 of finite f32 lanes, rounded to nearest even: (u + 0x7fff + lsb) >> 16 */
static LLVMValueRef rne16(Gen *g, LLVMValueRef y)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef it = LLVMVectorType(g->i32, 16);
	LLVMValueRef u = LLVMBuildBitCast(b, y, it, "");
	LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, u, civ(g, 16, 16), ""), civ(g, 1, 16), "");
	LLVMValueRef r = LLVMBuildAdd(b, u, LLVMBuildAdd(b, lsb, civ(g, 0x7fff, 16), ""), "");
	return LLVMBuildTrunc(b, LLVMBuildLShr(b, r, civ(g, 16, 16), ""), LLVMVectorType(g->i16, 16), "");
}

/* the f32 value of bf16 lanes h (h << 16) */
static LLVMValueRef hi32(Gen *g, LLVMValueRef h)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef z = LLVMBuildZExt(b, h, LLVMVectorType(g->i32, 16), "");
	return LLVMBuildBitCast(b, LLVMBuildShl(b, z, civ(g, 16, 16), ""), fty(g, 16), "");
}

/* 16 lanes of the integer x */
static LLVMValueRef splati(Gen *g, LLVMValueRef x)
{
	LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(x), 16);
	LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vt), x, LLVMConstInt(g->i32, 0, 0), "");
	return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vt), LLVMConstNull(LLVMVectorType(g->i32, 16)), "");
}

/* 16 elements of type et at base[ix] (ix: 16 x i64, every one in bounds) */
static LLVMValueRef gather(Gen *g, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef ix)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef vt = LLVMVectorType(et, 16), tys[2] = { vt, LLVMVectorType(g->ptr, 16) };
	LLVMValueRef p = LLVMBuildGEP2(b, et, base, &ix, 1, "");
	unsigned id = LLVMLookupIntrinsicID("llvm.masked.gather", 18);
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, tys, 2);
	LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, tys, 2);
	LLVMValueRef on[16];
	for (int l = 0; l < 16; l++)
		on[l] = LLVMConstInt(LLVMInt1TypeInContext(g->cx), 1, 0);
	LLVMValueRef args[4] = { p, LLVMConstInt(g->i32, 4, 0), LLVMConstVector(on, 16), LLVMGetPoison(vt) };
	return LLVMBuildCall2(b, ft, fn, args, 4, "");
}

/* msplit(K, ldk, cnt, side, H, L, nrm, kmin, kmax) */
static void gen_msplit(Gen *g, double c)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef ps[9] = { g->ptr, g->i64, g->i64, g->i64, g->ptr, g->ptr, g->ptr, g->f32, g->f32 };
	newfn(g, "kvcc_msplit", LLVMVoidTypeInContext(g->cx), ps, 9);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), ldk = LLVMGetParam(g->fn, 1), cnt = LLVMGetParam(g->fn, 2);
	LLVMValueRef side = LLVMGetParam(g->fn, 3), H = LLVMGetParam(g->fn, 4), L = LLVMGetParam(g->fn, 5);
	LLVMValueRef nrm = LLVMGetParam(g->fn, 6), kmin = LLVMGetParam(g->fn, 7), kmax = LLVMGetParam(g->fn, 8);
	int d = g->d;
	LLVMTypeRef v16s = LLVMVectorType(g->i16, 16);
	LLVMValueRef ev = LLVMBuildICmp(b, LLVMIntEQ, side, ci(g, 0), "");
	Loop lr;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), cnt, 1, 1, &lr);
	LLVMValueRef row = gep(g, g->f32, K, LLVMBuildMul(b, i, ldk, ""));
	LLVMValueRef acc = cfv(g, 0, 16);
	for (int ch = 0; ch < d; ch += 16) {
		LLVMValueRef x = loadf(g, row, ci(g, ch), 16);
		acc = fmadd(g, x, x, acc, 16);
	}
	LLVMValueRef sum = cfv(g, 0, 1);
	for (int l = 0; l < 16; l++)
		sum = LLVMBuildFAdd(b, sum, LLVMBuildExtractElement(b, acc, LLVMConstInt(g->i32, (unsigned)l, 0), ""), "");
	LLVMValueRef n = intr(g, "llvm.sqrt", g->f32, &sum, 1);
	/* evicted: finite, the clamp inactive for every kept row, no overflow; kept: finite and > 0 */
	LLVMValueRef oke = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGE, LLVMBuildFMul(b, n, kmin, ""), cfv(g, 2 * c, 1), ""),
	                                LLVMBuildFCmp(b, LLVMRealOLE, LLVMBuildFMul(b, n, kmax, ""), cfv(g, 1e37, 1), ""), "");
	LLVMValueRef okk = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGT, n, cfv(g, 0, 1), ""),
	                                LLVMBuildFCmp(b, LLVMRealOLT, n, cfv(g, INFINITY, 1), ""), "");
	LLVMValueRef ok = LLVMBuildSelect(b, ev, oke, okk, "");
	storef(g, LLVMBuildSelect(b, LLVMBuildAnd(b, ev, LLVMBuildNot(b, oke, ""), ""), cfv(g, NAN, 1), n, ""), nrm, i);
	LLVMBasicBlockRef bm = LLVMAppendBasicBlockInContext(g->cx, g->fn, "rowmajor");
	LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "stored");
	LLVMBuildCondBr(b, ev, bm, bj);
	LLVMPositionBuilderAtEnd(b, bm);         /* evicted: [cnt][d] */
	LLVMValueRef r = splat(g, LLVMBuildSelect(b, ok, LLVMBuildFDiv(b, cfv(g, 1, 1), n, ""), cfv(g, 0, 1), ""), 16);
	LLVMValueRef okv = splat(g, LLVMBuildSelect(b, ok, cfv(g, 1, 1), cfv(g, 0, 1), ""), 16);
	okv = LLVMBuildFCmp(b, LLVMRealONE, okv, cfv(g, 0, 16), "");
	for (int ch = 0; ch < d; ch += 16) {   /* hi = bf16(y), lo = bf16(y - hi) */
		LLVMValueRef y = LLVMBuildSelect(b, okv, LLVMBuildFMul(b, loadf(g, row, ci(g, ch), 16), r, ""), cfv(g, 0, 16), "");
		LLVMValueRef h = rne16(g, y), l = rne16(g, LLVMBuildFSub(b, y, hi32(g, h), ""));
		LLVMValueRef o = LLVMBuildAdd(b, LLVMBuildMul(b, i, ci(g, d), ""), ci(g, ch), "");
		st_(g, v16s, h, gep(g, g->i16, H, o), ci(g, 0), 2);
		st_(g, v16s, l, gep(g, g->i16, L, o), ci(g, 0), 2);
	}
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bj);
	loop_end(g, &lr);
	/* kept: 16 tokens at a time, a channel pair per step (the VNNI layout's 16 consecutive 32-bit
	** slots of the tokens i0 .. i0+15: ((i0/64)(d/2) + c/2)*64 + i0%64), the channels gathered
	** across the tokens (token stride ldk); lanes past cnt repeat token cnt-1 (their slots are past
	** the tile's nt tokens: mtop2 masks them). The same operations per element as the rows above */
	LLVMBasicBlockRef bk = LLVMAppendBasicBlockInContext(g->cx, g->fn, "vnni");
	LLVMBasicBlockRef bx = LLVMAppendBasicBlockInContext(g->cx, g->fn, "done");
	LLVMBuildCondBr(b, ev, bx, bk);
	LLVMPositionBuilderAtEnd(b, bk);
	LLVMTypeRef v16i = LLVMVectorType(g->i32, 16);
	LLVMValueRef io[16];
	for (int l = 0; l < 16; l++)
		io[l] = LLVMConstInt(g->i64, (unsigned)l, 0);
	LLVMValueRef iota = LLVMConstVector(io, 16), last = splati(g, LLVMBuildSub(b, cnt, ci(g, 1), ""));
	Loop lk;
	LLVMValueRef i0 = loop_begin2(g, ci(g, 0), cnt, 16, 1, &lk);
	LLVMValueRef tk = LLVMBuildAdd(b, splati(g, i0), iota, "");
	tk = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, tk, last, ""), last, tk, "");
	LLVMValueRef nv = gather(g, g->f32, nrm, tk);
	LLVMValueRef okk2 = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGT, nv, cfv(g, 0, 16), ""),
	                                 LLVMBuildFCmp(b, LLVMRealOLT, nv, cfv(g, INFINITY, 16), ""), "");
	LLVMValueRef rv = LLVMBuildSelect(b, okk2, LLVMBuildFDiv(b, cfv(g, 1, 16), nv, ""), cfv(g, 0, 16), "");
	LLVMValueRef rb = LLVMBuildMul(b, tk, splati(g, ldk), "");
	LLVMValueRef kb = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildUDiv(b, i0, ci(g, 64), ""), ci(g, (long)d / 2 * 64), ""),
	                               LLVMBuildURem(b, i0, ci(g, 64), ""), "");
	/* the channel pairs as a loop, not d / 2 copies (issue 13, session 11: unrolled, d = 128 gave
	** 128 gathers that took ~150 ms of instruction selection, half of the policy's compile) */
	Loop lc;
	LLVMValueRef ch = loop_begin(g, ci(g, 0), ci(g, d), 2, &lc);
	{
		LLVMValueRef hp[2], lp[2];
		for (int k = 0; k < 2; k++) {
			LLVMValueRef x = gather(g, g->f32, K, LLVMBuildAdd(b, rb, splati(g, LLVMBuildAdd(b, ch, ci(g, k), "")), ""));
			LLVMValueRef y = LLVMBuildSelect(b, okk2, LLVMBuildFMul(b, x, rv, ""), cfv(g, 0, 16), "");
			LLVMValueRef h = rne16(g, y);
			hp[k] = LLVMBuildZExt(b, h, v16i, "");
			lp[k] = LLVMBuildZExt(b, rne16(g, LLVMBuildFSub(b, y, hi32(g, h), "")), v16i, "");
		}
		LLVMValueRef o = LLVMBuildAdd(b, kb, LLVMBuildMul(b, ch, ci(g, 32), ""), "");
		st_(g, v16i, LLVMBuildOr(b, hp[0], LLVMBuildShl(b, hp[1], civ(g, 16, 16), ""), ""), gep(g, g->i32, H, o), ci(g, 0), 4);
		st_(g, v16i, LLVMBuildOr(b, lp[0], LLVMBuildShl(b, lp[1], civ(g, 16, 16), ""), ""), gep(g, g->i32, L, o), ci(g, 0), 4);
	}
	loop_end(g, &lc);
	loop_plain(g, &lc);
	loop_end(g, &lk);
	LLVMBuildBr(b, bx);
	LLVMPositionBuilderAtEnd(b, bx);
	LLVMBuildRetVoid(b);
}

/* c under the lane mask vm[s] (vm NULL: every lane valid) */
static LLVMValueRef lanes(Gen *g, const LLVMValueRef *vm, int s, LLVMValueRef c)
{
	return vm ? LLVMBuildAnd(g->b, vm[s], c, "") : c;
}

/* mtop2's per row and lane best / index / runner-up over the stored C tiles Cb of rows r0 .. r0+15 */
static void top2rows(Gen *g, LLVMValueRef r0, LLVMValueRef Cb, LLVMValueRef V1, LLVMValueRef V2, LLVMValueRef I1,
                     const LLVMValueRef *vm, const LLVMValueRef *jv)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef v16 = fty(g, 16), v16i = LLVMVectorType(g->i32, 16);
	Loop lr;
	LLVMValueRef r = loop_begin(g, ci(g, 0), ci(g, 16), 1, &lr);
	LLVMValueRef o = LLVMBuildMul(b, LLVMBuildAdd(b, r0, r, ""), ci(g, 16), "");
	LLVMValueRef a = loadf(g, V1, o, 16), c2 = loadf(g, V2, o, 16);
	LLVMValueRef ix = ld(g, v16i, gep(g, g->i32, I1, o), ci(g, 0), 4);
	for (int s = 0; s < 4; s++) {
		LLVMValueRef x = ld(g, v16, gep(g, g->f32, Cb, LLVMBuildAdd(b, LLVMBuildMul(b, r, ci(g, 64), ""), ci(g, 16L * s), "")),
		                    ci(g, 0), 64);
		LLVMValueRef mn = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, a, ""), x, a, "");
		LLVMValueRef up = lanes(g, vm, s, LLVMBuildFCmp(b, LLVMRealOGT, mn, c2, ""));
		c2 = LLVMBuildSelect(b, up, mn, c2, "");
		LLVMValueRef gt = lanes(g, vm, s, LLVMBuildFCmp(b, LLVMRealOGT, x, a, ""));
		a = LLVMBuildSelect(b, gt, x, a, "");
		ix = LLVMBuildSelect(b, gt, jv[s], ix, "");
	}
	storef(g, a, V1, o);
	storef(g, c2, V2, o);
	st_(g, v16i, ix, gep(g, g->i32, I1, o), ci(g, 0), 4);
	loop_end(g, &lr);
}

/* mtop2(EH, EL, ne, KH, KL, nt, j0, v1, v2, i1) */
static void gen_mtop2(Gen *g)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef ps[10] = { g->ptr, g->ptr, g->i64, g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->ptr };
	newfn(g, "kvcc_mtop2", LLVMVoidTypeInContext(g->cx), ps, 10);
	LLVMValueRef EH = LLVMGetParam(g->fn, 0), EL = LLVMGetParam(g->fn, 1), ne = LLVMGetParam(g->fn, 2);
	LLVMValueRef KH = LLVMGetParam(g->fn, 3), KL = LLVMGetParam(g->fn, 4), nt = LLVMGetParam(g->fn, 5);
	LLVMValueRef j0 = LLVMGetParam(g->fn, 6), V1 = LLVMGetParam(g->fn, 7), V2 = LLVMGetParam(g->fn, 8);
	LLVMValueRef I1 = LLVMGetParam(g->fn, 9);
	int d = g->d;
	LLVMTypeRef v16i = LLVMVectorType(g->i32, 16);
	LLVMValueRef Cb = entry_alloca(g, LLVMArrayType(g->f32, 16 * 64));
	LLVMSetAlignment(Cb, 64);
	kx_amxcfg(g);   /* palette 1, tiles 0-7 of 16 rows x 64 bytes (as qkt) */
	LLVMValueRef io[16];
	for (int l = 0; l < 16; l++)
		io[l] = LLVMConstInt(g->i32, (unsigned)l, 0);
	LLVMValueRef iota = LLVMConstVector(io, 16), vm[4], jv[4];
	LLVMValueRef nt32 = LLVMBuildTrunc(b, nt, g->i32, ""), j032 = LLVMBuildTrunc(b, j0, g->i32, "");
	for (int s = 0; s < 4; s++) {
		LLVMValueRef lim = LLVMBuildSub(b, nt32, LLVMConstInt(g->i32, (unsigned)(16 * s), 0), "");
		vm[s] = LLVMBuildICmp(b, LLVMIntSLT, iota, LLVMBuildShuffleVector(b, LLVMBuildInsertElement(b,
		                      LLVMGetPoison(v16i), lim, io[0], ""), LLVMGetPoison(v16i), LLVMConstNull(v16i), ""), "");
		LLVMValueRef js = LLVMBuildAdd(b, j032, LLVMConstInt(g->i32, (unsigned)(16 * s), 0), "");
		jv[s] = LLVMBuildAdd(b, iota, LLVMBuildShuffleVector(b, LLVMBuildInsertElement(b, LLVMGetPoison(v16i), js, io[0], ""),
		                                                     LLVMGetPoison(v16i), LLVMConstNull(v16i), ""), "");
	}
	Loop lq;
	LLVMValueRef r0 = loop_begin(g, ci(g, 0), ne, 16, &lq);
	for (int t = 0; t < 4; t++) {
		LLVMValueRef a = tmm(g, t);
		amx(g, "llvm.x86.tilezero", &a, 1);
	}
	LLVMValueRef eo = LLVMBuildMul(b, r0, ci(g, d), "");
	for (int k = 0; k < d / 32; k++) {
		tileio(g, "llvm.x86.tileloadd64", 4, g->i16, EH, LLVMBuildAdd(b, eo, ci(g, (long)k * 32), ""), (long)d * 2);
		tileio(g, "llvm.x86.tileloadd64", 5, g->i16, EL, LLVMBuildAdd(b, eo, ci(g, (long)k * 32), ""), (long)d * 2);
		for (int t = 0; t < 4; t++) {
			tileio(g, "llvm.x86.tileloadd64", 6, g->i32, KH, ci(g, (long)k * 16 * 64 + t * 16), 64 * 4);
			tileio(g, "llvm.x86.tileloadd64", 7, g->i32, KL, ci(g, (long)k * 16 * 64 + t * 16), 64 * 4);
			LLVMValueRef a[3][3] = { { tmm(g, t), tmm(g, 4), tmm(g, 6) }, { tmm(g, t), tmm(g, 4), tmm(g, 7) },
			                         { tmm(g, t), tmm(g, 5), tmm(g, 6) } };
			for (int p = 0; p < 3; p++)
				amx(g, "llvm.x86.tdpbf16ps", a[p], 3);
		}
	}
	for (int t = 0; t < 4; t++)
		tileio(g, "llvm.x86.tilestored64", t, g->f32, Cb, ci(g, t * 16), 64 * 4);
	/* a full tile (nt = 64) without the lane masks; the last, partial one with them */
	LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(g->cx, g->fn, "full");
	LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(g->cx, g->fn, "partial");
	LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "rows");
	LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, nt, ci(g, 64), ""), bf, bp);
	LLVMPositionBuilderAtEnd(b, bf);
	top2rows(g, r0, Cb, V1, V2, I1, NULL, jv);
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bp);
	top2rows(g, r0, Cb, V1, V2, I1, vm, jv);
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bj);
	loop_end(g, &lq);
	amx(g, "llvm.x86.tilerelease", NULL, 0);
	LLVMBuildRetVoid(b);
}

void kx_gen_mamx3(Gen *g, const KiFn *f, int on, LLVMValueRef fn[2])
{
	LLVMTypeRef sp[9] = { g->ptr, g->i64, g->i64, g->i64, g->ptr, g->ptr, g->ptr, g->f32, g->f32 };
	LLVMTypeRef tp[10] = { g->ptr, g->ptr, g->i64, g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->ptr };
	double c = 0;
	if (on && ki_mcosine(f, f->merge.sim, &c)) {
		gen_msplit(g, c), fn[0] = g->fn;
		gen_mtop2(g), fn[1] = g->fn;
		return;
	}
	newfn(g, "kvcc_msplit", LLVMVoidTypeInContext(g->cx), sp, 9);
	LLVMBuildRetVoid(g->b);
	fn[0] = g->fn;
	newfn(g, "kvcc_mtop2", LLVMVoidTypeInContext(g->cx), tp, 10);
	LLVMBuildRetVoid(g->b);
	fn[1] = g->fn;
}
