/*
** The fixed kernels of every artifact (C ABI; runtime/artifact.h lists their contracts),
** specialized on the storage dtype, head_dim d, group G and vector width W: the Q·K tiles of
** attn_score and decode, storage → f32 conversion, the softmax statistics and accumulation,
** select (keys, radix select, kept lists, chunks), in-place compaction, the head_mean barrier,
** the budget schedule of the policy's select rule (nkeep) and decode query rounding.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "codegen/x86/gen.h"
#include "compiler/interp.h"

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

void kx_gen_cvt(Gen *g)
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

/* Decode's bf16 rows as 32-bit pairs (`pr`: bf16 storage, 16 lanes, d a multiple of 32): the
** row's "pair chunk" c holds channels 32*(c/2) + 2i + c%2 (i < 16). The queries and the
** accumulators are kept in the same order (pairperm), so every dot product and every output
** channel is the same sum. Each chunk by the load ports alone (16 lanes: avx512bw): a zero-masked
** load of the odd 16-bit positions — the odd channels land in the 32-bit words' high halves, the
** low halves zero, which is each channel's f32 value — and for the even channels the same load 2
** bytes earlier (word i's high half is then channel 2i). Until session 12 one load of 16 words
** and a shift (x << 16, even) or a mask (x & 0xffff0000, odd): one vector ALU op per 16 values on
** the ports the FMAs use, which bound decode when K/V are in cache (session 12: -5 % there, the
** same f32 values). The lane masked off 2 bytes before the row is not read (AVX-512 masked loads
** suppress it, faults included). */
static LLVMValueRef ldpair(Gen *g, LLVMValueRef base, LLVMValueRef row, int c)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef vt = LLVMVectorType(g->i16, 32), tys[2] = { vt, g->ptr };
	LLVMValueRef p = gep(g, g->i16, base, LLVMBuildAdd(b, row, ci(g, 32L * (c / 2) - (c % 2 ? 0 : 1)), ""));
	unsigned id = LLVMLookupIntrinsicID("llvm.masked.load", 16);
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->m, id, tys, 2);
	LLVMTypeRef ft = LLVMIntrinsicGetType(g->cx, id, tys, 2);
	LLVMValueRef on[32];
	for (int l = 0; l < 32; l++)
		on[l] = LLVMConstInt(LLVMInt1TypeInContext(g->cx), (unsigned)(l % 2), 0);
	LLVMValueRef args[4] = { p, LLVMConstInt(g->i32, 2, 0), LLVMConstVector(on, 32), LLVMConstNull(vt) };
	return LLVMBuildBitCast(b, LLVMBuildCall2(b, ft, fn, args, 4, ""), g->vf, "");
}

/* rows of d floats from src + off to dst + off, between the channel order and the pair order
** (to: channel order -> pair chunks; else back) */
static void pairperm(Gen *g, LLVMValueRef src, LLVMValueRef dst, long off, int rows, int to)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef m0[16], m1[16];
	for (int i = 0; i < 16; i++) {
		m0[i] = LLVMConstInt(g->i32, (unsigned)(to ? 2 * i : i / 2 + (i % 2) * 16), 0);
		m1[i] = LLVMConstInt(g->i32, (unsigned)(to ? 2 * i + 1 : 8 + i / 2 + (i % 2) * 16), 0);
	}
	LLVMValueRef k0 = LLVMConstVector(m0, 16), k1 = LLVMConstVector(m1, 16);
	for (int a = 0; a < rows; a++)
		for (int c = 0; c < g->d; c += 32) {
			long o = off + (long)a * g->d + c;
			LLVMValueRef x = loadf(g, src, ci(g, o), 16), y = loadf(g, src, ci(g, o + 16), 16);
			storef(g, LLVMBuildShuffleVector(b, x, y, k0, ""), dst, ci(g, o));
			storef(g, LLVMBuildShuffleVector(b, x, y, k1, ""), dst, ci(g, o + 16));
		}
}

/*
** The decode logits of TB tokens x QB queries (TB * QB = 16, 16 lanes) without a horizontal
** reduction per (token, query): the 16 accumulators (r = a*TB + t) are folded by a transpose-
** reduce (4 levels: each pair of vectors gives one, half its lanes' partial sums from each, by
** two shuffles and one add: 15 adds and 30 shuffles instead of 16 reductions of 4 steps each),
** and query a's TB logits are lanes a*TB .. a*TB+TB-1 of the result, stored at S[a*nt + j].
*/
static void qk_block_tr(Gen *g, LLVMValueRef K, LLVMValueRef ldk, LLVMValueRef nt, LLVMValueRef Q,
                        LLVMValueRef S, LLVMValueRef j, int QB, int TB, int pr)
{
	LLVMBuilderRef b = g->b;
	int W = 16, nc = g->d / W, n = QB * TB;
	LLVMValueRef acc[16], krow[16];
	for (int r = 0; r < n; r++)
		acc[r] = LLVMConstNull(g->vf);
	for (int t = 0; t < TB; t++)
		krow[t] = LLVMBuildMul(b, LLVMBuildAdd(b, j, ci(g, t), ""), ldk, "");
	for (int c = 0; c < nc; c++) {
		LLVMValueRef kv[16], qv[16];
		for (int t = 0; t < TB; t++)
			kv[t] = pr ? ldpair(g, K, krow[t], c) : loadconv(g, K, LLVMBuildAdd(b, krow[t], ci(g, (long)c * W), ""), W);
		for (int a = 0; a < QB; a++)
			qv[a] = loadf(g, Q, ci(g, (long)a * g->d + (long)c * W), W);
		for (int a = 0; a < QB; a++)
			for (int t = 0; t < TB; t++) {
				LLVMValueRef args[3] = { qv[a], kv[t], acc[a * TB + t] };
				acc[a * TB + t] = LLVMBuildCall2(b, g->fma_ty, g->fma, args, 3, "");
			}
	}
	for (int B = 16; B > 1; B /= 2) {          /* B: partial lanes per source before this level */
		int ns = 16 / B, h = B / 2;
		LLVMValueRef lo[16], hi[16];
		for (int s = 0; s < 2 * ns; s++)
			for (int k = 0; k < h; k++) {
				int base = s < ns ? s * B : 16 + (s - ns) * B;
				lo[s * h + k] = LLVMConstInt(g->i32, (unsigned)(base + k), 0);
				hi[s * h + k] = LLVMConstInt(g->i32, (unsigned)(base + h + k), 0);
			}
		LLVMValueRef ml = LLVMConstVector(lo, 16), mh = LLVMConstVector(hi, 16);
		for (int p = 0; p < n / 2; p++) {
			LLVMValueRef x = LLVMBuildShuffleVector(b, acc[2 * p], acc[2 * p + 1], ml, "");
			LLVMValueRef y = LLVMBuildShuffleVector(b, acc[2 * p], acc[2 * p + 1], mh, "");
			acc[p] = LLVMBuildFAdd(b, x, y, "");
		}
		n /= 2;
	}
	for (int a = 0; a < QB; a++) {
		LLVMValueRef m[16];
		for (int t = 0; t < TB; t++)
			m[t] = LLVMConstInt(g->i32, (unsigned)(a * TB + t), 0);
		LLVMValueRef v = TB == 16 ? acc[0] : LLVMBuildShuffleVector(b, acc[0], LLVMGetPoison(g->vf), LLVMConstVector(m, (unsigned)TB), "");
		LLVMValueRef p = gep(g, g->f32, S, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, a), nt, ""), j, ""));
		LLVMSetAlignment(LLVMBuildStore(b, v, p), 4);
	}
}

/* --- decode attention ------------------------------------------------------------------------ */










#define VCHAINS 16   /* most accumulators of the decode V pass (of 32 vector registers) */

/* The running max of one query after a decode tile: maxnum(mo, max of the tile's logits sv),
** the max tested, not reduced: one vector compare of the DT logits against mo, and only a tile
** with a logit above mo (the first tiles, then rarely) takes the horizontal max. A tile without
** one gives mo, which is what maxnum gives there too (NaN logits compare false and maxnum
** ignores them), so the result is the same value either way. */
static LLVMValueRef dec_tilemax(Gen *g, LLVMValueRef sv, LLVMValueRef mo)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef gt = LLVMBuildFCmp(b, LLVMRealOGT, sv, splat(g, mo, DT), "");
	LLVMValueRef any = LLVMBuildICmp(b, LLVMIntNE, LLVMBuildBitCast(b, gt, LLVMIntTypeInContext(g->cx, DT), ""),
	                                 LLVMConstInt(LLVMIntTypeInContext(g->cx, DT), 0, 0), "");
	LLVMBasicBlockRef cur = LLVMGetInsertBlock(b);
	LLVMBasicBlockRef grow = LLVMAppendBasicBlockInContext(g->cx, g->fn, "grow"), join = LLVMAppendBasicBlockInContext(g->cx, g->fn, "join");
	LLVMBuildCondBr(b, any, grow, join);
	LLVMPositionBuilderAtEnd(b, grow);
	LLVMValueRef tm = intr(g, "llvm.vector.reduce.fmax", fty(g, DT), &sv, 1);
	LLVMValueRef mm[2] = { mo, tm };
	LLVMValueRef mg = intr(g, "llvm.maxnum", g->f32, mm, 2);
	LLVMBuildBr(b, join);
	LLVMPositionBuilderAtEnd(b, join);
	LLVMValueRef mn = LLVMBuildPhi(b, g->f32, "mn");
	LLVMValueRef vs[2] = { mo, mg };
	LLVMBasicBlockRef bs[2] = { cur, grow };
	LLVMAddIncoming(mn, vs, bs, 2);
	return mn;
}

/* The K and V rows of tokens j+f·p .. j+f·p+TB-1 (p: the config's pf as bytes, below) prefetched together,
** so that the requests of both streams are spread evenly over the tile's time (V's in the V pass
** instead came in bursts, none during the logits, the statistics or the V pass's second chunk
** group), into L2: the near ones (f = 1, prefetcht1) in the logits loop, the far ones (f = 4,
** prefetcht2) in the V pass's first chunk group, one token per iteration (session 12: they were in
** the logits loop too, a burst of 2·TB rows per block; in the V pass they come between its FMAs).
** One core's read rate is bounded by the misses it keeps in flight; L2 prefetches free the L1
** fill buffers sooner and the far ones start the DRAM reads earlier. Session 11 (1 thread, n =
** 32768, 8 KV heads, G 4, d 128, interleaved runs, load 4-13): bf16 60-65 % -> 67-71 % (K+V
** together) -> 68-80 % (L2, far), f32 71-75 % -> 73-80 % -> 77-84 % of the 1-thread read peak;
** session 12 (far in the V pass, load 8-10): f32 best 24.2 -> 23.0 ms, bf16 -4 % (runtime/STATUS.md). */
static void dec_prefetch(Gen *g, LLVMValueRef Kt, LLVMValueRef Vt, LLVMValueRef ldk, LLVMValueRef j, int TB, int esz,
                         LLVMValueRef left, int f)
{
	LLVMBuilderRef b = g->b;
	if (!g->c.pf)
		return;
	/* the distance in bytes: pf·128 bytes of each stream ahead (pf 64: 8 KiB; d = 128: 32 tokens of
	** bf16 / f16, 16 of f32). Session 12, 1 thread, n = 32768, d 128, best of 15, interleaved: f32
	** 16 / 24 / 32 tokens 17.5-17.9 ms, 48 18.3-18.6, 64 18.4-19.0, 96 / 128 19.1-20.5; bf16 16 / 32
	** tokens 9.35-9.39 ms, 64 9.36-9.59, 96 / 128 9.6-9.8 (until then pf tokens whatever the row) */
	long rb = (long)g->d * esz, pf = (long)g->c.pf * 128 / rb > 0 ? (long)g->c.pf * 128 / rb : 1;
	/* only rows of this call (left: its tokens from the tile's start on): a paged run's next
	** rows are another page's, and prefetching them cost paged decode 13-20 % */
	LLVMValueRef in = LLVMBuildICmp(b, LLVMIntSLT, LLVMBuildAdd(b, j, ci(g, pf * f + TB - 1), ""), left, "");
	LLVMBasicBlockRef pb = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pf"), jb = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pfj");
	LLVMBuildCondBr(b, in, pb, jb);
	LLVMPositionBuilderAtEnd(b, pb);
	for (int t = 0; t < TB; t++) {
		LLVMValueRef o = LLVMBuildMul(b, LLVMBuildAdd(b, j, ci(g, pf * f + t), ""), LLVMBuildMul(b, ldk, ci(g, esz), ""), "");
		prefetchl(g, Kt, o, g->d * esz, f == 1 ? 2 : 1);
		prefetchl(g, Vt, o, g->d * esz, f == 1 ? 2 : 1);
	}
	LLVMBuildBr(b, jb);
	LLVMPositionBuilderAtEnd(b, jb);
}

/*
** decode(K, V, ldk, nt, q, S, lds, st): one chunk of single-query attention for the
** G query heads of one KV head. q [G][d] f32, already scaled by 1/sqrt(d).
** S[g*lds + j] receives the logit of token j (padded with -inf to a multiple of DT:
** the caller leaves room). st = m[G], l[G], acc[G][d], initialized by the caller
** (m = -inf, l = 0, acc = 0) and updated online: per DT-token tile, logits through
** the Q·K register block, tile max, rescale, probabilities (vector exp), V
** accumulation with the chan chunk outer and the tile's tokens inner.
** bias (kvcc_decodeb, a merge with count_bias): a 9th argument cnt, token j's member count
** cnt[j]; log(cnt[j]) is added to its logits before the statistics (DESIGN §3 "Count bias").
*/
void kx_gen_decode(Gen *g, int G, int bias)
{
	LLVMTypeRef ps[9] = { g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->i64, g->ptr, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, bias ? 9 : 8, 0);
	g->fn = LLVMAddFunction(g->m, bias ? "kvcc_decodeb" : "kvcc_decode", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), V = LLVMGetParam(g->fn, 1), ldk = LLVMGetParam(g->fn, 2);
	LLVMValueRef nt = LLVMGetParam(g->fn, 3), q = LLVMGetParam(g->fn, 4), S = LLVMGetParam(g->fn, 5);
	LLVMValueRef lds = LLVMGetParam(g->fn, 6), st = LLVMGetParam(g->fn, 7);
	LLVMBuilderRef b = g->b;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	int W = g->W, nc = g->d / W, esz = g->dtype == KVCC_F32 ? 4 : 2;
	LLVMTypeRef et = g->dtype == KVCC_F32 ? g->f32 : g->dtype == KVCC_F16 ? g->half : g->i16;
	LLVMTypeRef vt = fty(g, W), tv = fty(g, DT);
	LLVMValueRef P = LLVMBuildArrayAlloca(b, g->f32, LLVMConstInt(g->i32, (unsigned)(G * DT), 0), "P");
	LLVMSetAlignment(P, 64);
	LLVMValueRef scl[8], accv[8];
	for (int a = 0; a < G; a++) {
		scl[a] = LLVMBuildAlloca(b, g->f32, "scl");
		accv[a] = LLVMBuildAlloca(b, vt, "acc");
	}
	/* bf16 rows read as pairs: q in pair order (a copy: other chunks read q), the accumulators
	** in st put in pair order for the call and back at its end */
	int pr = g->dtype == KVCC_BF16 && W == 16 && g->d % 32 == 0;
	LLVMValueRef Qp = NULL;
	if (pr) {
		Qp = LLVMBuildArrayAlloca(b, g->f32, LLVMConstInt(g->i32, (unsigned)(G * g->d), 0), "Qp");
		LLVMSetAlignment(Qp, 64);
		pairperm(g, q, Qp, 0, G, 1);
		pairperm(g, st, st, 2L * G, G, 1);
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
	/* 16/G tokens x G queries, transpose-reduce: bf16 (with the pairs: in L2 17-23 % faster,
	** at n = 32768 0-8 %) and f16 (session 11: with dec_prefetch's pattern 12.0-13.8 -> 10.1-12.1
	** ms at n = 32768, one thread; sessions 8 and 10 had found it 2-15 % slower there with the
	** old prefetches); f32 keeps the 2-token blocks (with it: within the noise) */
	if (W == 16 && 16 % G == 0 && G <= 8 && g->dtype != KVCC_F32) {
		int TB = 16 / G;
		Loop lj;
		LLVMValueRef j = loop_begin(g, jstart, nj, TB, &lj);
		dec_prefetch(g, Kt, Vt, ldk, j, TB, esz, rem, 1);
		qk_block_tr(g, Kt, ldk, lds, pr ? Qp : q, St, j, G, TB, pr);
		loop_end(g, &lj);
		jstart = lj.iv;
	}
	for (int TB = 2; TB >= 1; TB--) {
		Loop lj;
		LLVMValueRef j = loop_begin(g, jstart, nj, TB, &lj);
		dec_prefetch(g, Kt, Vt, ldk, j, TB, esz, rem, 1);
		qk_block(g, Kt, ldk, lds, q, St, ci(g, 0), j, G, TB);
		loop_end(g, &lj);
		jstart = lj.iv;
	}
	if (bias) {     /* decodeb: the merge count bias, log(count[t]) added to token t's logits */
		Loop lb;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nj, 1, 1, &lb);
		LLVMValueRef c = ldf(g, LLVMGetParam(g->fn, 8), LLVMBuildAdd(b, t0, j, ""));
		LLVMValueRef lc = intr(g, "llvm.log", g->f32, &c, 1);
		for (int a = 0; a < G; a++) {
			LLVMValueRef ix = LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, a), lds, ""), j, "");
			storef(g, LLVMBuildFAdd(b, ldf(g, St, ix), lc, ""), St, ix);
		}
		loop_end(g, &lb);
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
		LLVMValueRef mo = ldf(g, st, ci(g, a));
		LLVMValueRef mn = dec_tilemax(g, sv, mo);
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
	/* V accumulation: chan chunks outer (unrolled), tokens inner; CB chunks per token loop, so
	** that one broadcast of a token's probability serves CB chunks and G*CB accumulators
	** (independent FMA chains) are in flight; each accumulator's order of additions is the
	** tokens' order as before */
	int CB = 1;
	while (CB * 2 * G <= VCHAINS && nc % (CB * 2) == 0)
		CB *= 2;
	LLVMValueRef accs[16];
	for (int k = 0; k < CB * G; k++)
		accs[k] = k < G ? accv[k] : entry_alloca(g, vt);
	for (int c0 = 0; c0 < nc; c0 += CB) {
		for (int cc = 0; cc < CB; cc++)
			for (int a = 0; a < G; a++) {
				int c = c0 + cc;
				LLVMValueRef av = loadf(g, st, ci(g, 2L * G + (long)a * g->d + (long)c * W), W);
				LLVMValueRef sc = LLVMBuildLoad2(b, g->f32, scl[a], "");
				LLVMBuildStore(b, LLVMBuildFMul(b, av, splat(g, sc, W), ""), accs[cc * G + a]);
			}
		Loop lj;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nj, 1, 1, &lj);
		if (c0 == 0)    /* the far rows, one token per iteration (dec_prefetch) */
			dec_prefetch(g, Kt, Vt, ldk, j, 1, esz, rem, 4);
		LLVMValueRef pj[8];
		for (int a = 0; a < G; a++)
			pj[a] = splat(g, ldf(g, P, LLVMBuildAdd(b, ci(g, (long)a * DT), j, "")), W);
		for (int cc = 0; cc < CB; cc++) {
			LLVMValueRef v = pr ? ldpair(g, Vt, LLVMBuildMul(b, j, ldk, ""), c0 + cc)
			                    : loadconv(g, Vt, LLVMBuildAdd(b, LLVMBuildMul(b, j, ldk, ""), ci(g, (long)(c0 + cc) * W), ""), W);
			for (int a = 0; a < G; a++) {
				LLVMValueRef args[3] = { pj[a], v, LLVMBuildLoad2(b, vt, accs[cc * G + a], "") };
				LLVMBuildStore(b, LLVMBuildCall2(b, g->fma_ty, g->fma, args, 3, ""), accs[cc * G + a]);
			}
		}
		loop_end(g, &lj);
		/* the unroll count LLVM's O2 picked for this loop (emit.c's pipeline unrolls only on
		** request): about 4 FMA chains of 16 lanes (8 of 8) per iteration, half that at G = 1
		** when each row needs a conversion */
		int un = W == 1 ? 1 : (W >= 16 ? 4 : 8) / (G * CB);
		if (G * CB == 1 && g->dtype != KVCC_F32)
			un /= 2;
		if (un > 1)
			loop_unroll(g, &lj, un);
		for (int cc = 0; cc < CB; cc++)
			for (int a = 0; a < G; a++)
				storef(g, LLVMBuildLoad2(b, vt, accs[cc * G + a], ""), st, ci(g, 2L * G + (long)a * g->d + (long)(c0 + cc) * W));
	}
	loop_end(g, &lt);
	if (pr)
		pairperm(g, st, st, 2L * G, G, 0);
	LLVMBuildRetVoid(b);
}

/* --- attn_score: packed Q·Kᵀ tile and the fused softmax epilogue ------------------------------- */



/* The end of a score register block (qkt, both dot kinds): the chan loop's accumulators av
** stored back and the loop closed, then the qb x NV results written to S's rows q + a at
** token column col + v*W (W: the block's lanes, 16 on the bf16 path whatever g->W). */
static void blockend(Gen *g, LLVMValueRef av[8][4], LLVMValueRef acc[8][4], int qb, int NV, Loop *lc,
                     LLVMTypeRef vt, LLVMValueRef S, LLVMValueRef q, long col, int W)
{
	LLVMBuilderRef b = g->b;
	for (int a = 0; a < qb; a++)
		for (int v = 0; v < NV; v++)
			LLVMBuildStore(b, av[a][v], acc[a][v]);
	loop_end(g, lc);
	for (int a = 0; a < qb; a++)
		for (int v = 0; v < NV; v++) {
			LLVMValueRef idx = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, ci(g, a), ""), ci(g, AT), ""),
			                                ci(g, col + (long)v * W), "");
			storef(g, LLVMBuildLoad2(b, vt, acc[a][v], ""), S, idx);
		}
}

/*
** qkt with bf16 dot products (bf16 storage, avx512bf16, 16 lanes): the tile is packed as 32-bit
** words, Kp[c2*AT + j] = (K[j][2c2], K[j][2c2+1]) — a transpose of the raw bf16 pairs, no
** conversion; the micro-kernel broadcasts Q's pair (Q[q][2c2], Q[q][2c2+1]) as bf16 — a 32-bit
** broadcast load from Q's bf16 rows (nq < 0) or from the block's pairs narrowed from the f32 rows
** (Q is bf16 storage converted to f32, so taking its high halves is exact) — and accumulates
** QB queries × NV vectors of 16 tokens (the config's qb × nv; 6 × 4 = the whole 64-token tile
** by default) with llvm.x86.avx512bf16.dpbf16ps.512 (f32 accumulate; products of
** bf16 are exact in f32; denormal inputs/outputs flush to zero). Each Q element is read once
** per tile (the 64-token block is the whole tile).
*/

static void gen_qkt_bf16(Gen *g, LLVMValueRef K, LLVMValueRef ldk, LLVMValueRef nt, LLVMValueRef Q, LLVMValueRef nq,
                         LLVMValueRef S, LLVMValueRef Kp)
{
	LLVMBuilderRef b = g->b;
	int d = g->d, d2 = d / 2, NV = g->c.nv, QB = g->c.qb, W = 16, TB = NV * W;
	LLVMTypeRef vi = LLVMVectorType(g->i32, 16), vt = fty(g, 16);
	unsigned id = LLVMLookupIntrinsicID("llvm.x86.avx512bf16.dpbf16ps.512", 32);
	LLVMValueRef dp = LLVMGetIntrinsicDeclaration(g->m, id, NULL, 0);
	LLVMTypeRef dpt = LLVMIntrinsicGetType(g->cx, id, NULL, 0);
	LLVMTypeRef pts[3];
	LLVMGetParamTypes(dpt, pts);
	LLVMTypeRef bt = pts[1];   /* <32 x bfloat> in LLVM 19 (<16 x i32> before) */
	/* pack: a full tile with d/2 a multiple of 16 by 16 x 16 transposes of 32-bit pairs (issue 15,
	** session 12: 64 two-source shuffles and 16 vector stores per block, where the scalar path
	** below takes 256 extracts and 256 scalar stores), anything else pair by pair */
	LLVMBasicBlockRef bjoin = NULL;
	if (d2 % 16 == 0) {
		LLVMBasicBlockRef bfull = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kpfull");
		LLVMBasicBlockRef bpart = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kppart");
		bjoin = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kpjoin");
		LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, nt, ci(g, AT), ""), bfull, bpart);
		LLVMPositionBuilderAtEnd(b, bfull);
		Loop lj, lc;
		LLVMValueRef j0 = loop_begin(g, ci(g, 0), ci(g, AT), 16, &lj);
		LLVMValueRef c0 = loop_begin(g, ci(g, 0), ci(g, d2), 16, &lc);
		LLVMValueRef r[16];
		for (int i = 0; i < 16; i++) {
			LLVMValueRef ji = LLVMBuildAdd(b, j0, ci(g, i), "");
			if (g->c.pf)   /* the row pf tokens ahead (the next tiles'), once per row */
				prefetch(g, K, LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, ji, ci(g, g->c.pf), ""),
				                                            LLVMBuildMul(b, ldk, ci(g, 2), ""), ""),
				                            LLVMBuildMul(b, c0, ci(g, 4), ""), ""), 64);
			LLVMValueRef row = gep(g, g->i16, K, LLVMBuildMul(b, ji, ldk, ""));
			r[i] = LLVMBuildLoad2(b, vi, gep(g, g->i32, row, c0), "");
			LLVMSetAlignment(r[i], 2);
		}
		kx_tr16(g, r);
		for (int k = 0; k < 16; k++)
			st_(g, vi, r[k], Kp, LLVMBuildUDiv(b, LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, c0, ci(g, k), ""), ci(g, AT), ""), j0, ""),
			                                  ci(g, 16), ""), 4);
		loop_end(g, &lc);
		loop_end(g, &lj);
		LLVMBuildBr(b, bjoin);
		LLVMPositionBuilderAtEnd(b, bpart);
	}
	{
		Loop lt, lc;
		int w = d2 % 16 == 0 ? 16 : d2 % 8 == 0 ? 8 : 4;
		LLVMTypeRef wv = LLVMVectorType(g->i32, (unsigned)w);
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nt, 1, 1, &lt);
		LLVMValueRef row = gep(g, g->i16, K, LLVMBuildMul(b, j, ldk, ""));
		if (g->c.pf)       /* the row pf tokens ahead (the next tiles') */
			prefetch(g, K, LLVMBuildMul(b, LLVMBuildAdd(b, j, ci(g, g->c.pf), ""), LLVMBuildMul(b, ldk, ci(g, 2), ""), ""), d * 2);
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
	if (bjoin) {
		LLVMBuildBr(b, bjoin);
		LLVMPositionBuilderAtEnd(b, bjoin);
	}
	LLVMValueRef acc[8][4];
	for (int a = 0; a < QB; a++)
		for (int v = 0; v < NV; v++)
			acc[a][v] = entry_alloca(g, vt);
	LLVMValueRef zi[16];
	for (int i = 0; i < 16; i++)
		zi[i] = LLVMConstInt(g->i32, 0, 0);
	LLVMValueRef zmask = LLVMConstVector(zi, 16);
	/* the query block's rows as bf16 pairs, Qp[a*d2 + c2] = (Q[q+a][2c2], Q[q+a][2c2+1]) (the
	** high halves of Q's f32 values: exact), packed once per block and tile, so that the
	** micro-kernel's Q operand is a 32-bit broadcast load that vdpbf16ps takes as its memory
	** operand ({1to16}: no shuffle per pair and query; issue 15, session 12) */
	LLVMValueRef Qp = entry_alloca(g, LLVMArrayType(g->i32, (unsigned)(QB * d2)));
	LLVMSetAlignment(Qp, 64);
	int pw = d2 % 16 == 0 ? 16 : d2 % 8 == 0 ? 8 : 4;
	LLVMTypeRef pwf = LLVMVectorType(g->f32, (unsigned)(2 * pw)), pwi = LLVMVectorType(g->i32, (unsigned)(2 * pw));
	LLVMTypeRef pws = LLVMVectorType(g->i16, (unsigned)(2 * pw)), pwp = LLVMVectorType(g->i32, (unsigned)pw);
	/* nq < 0 (KA_FQBF16, issue 15 session 12; the runtime passes it as for AMX): Q is the -nq rows'
	** bf16 storage, whose pairs the micro-kernel reads in place (no pack) */
	LLVMValueRef raw = LLVMBuildICmp(b, LLVMIntSLT, nq, ci(g, 0), "");
	nq = LLVMBuildSelect(b, raw, LLVMBuildNeg(b, nq, ""), nq, "");
	LLVMValueRef qstart = ci(g, 0);
	for (int qb = QB; qb >= 1; qb = qb > 1 ? 1 : 0) {
		Loop lq;
		LLVMValueRef q = loop_begin(g, qstart, nq, qb, &lq);
		LLVMBasicBlockRef bpk = LLVMAppendBasicBlockInContext(g->cx, g->fn, "qpack");
		LLVMBasicBlockRef bqj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "qjoin");
		LLVMBasicBlockRef braw = LLVMGetInsertBlock(b);
		LLVMValueRef Qr = gep(g, g->i32, Q, LLVMBuildMul(b, q, ci(g, d2), ""));   /* row q's pairs in place */
		LLVMBuildCondBr(b, raw, bqj, bpk);
		LLVMPositionBuilderAtEnd(b, bpk);
		for (int a = 0; a < qb; a++) {
			Loop lp;
			LLVMValueRef c2 = loop_begin(g, ci(g, 0), ci(g, d2), pw, &lp);
			LLVMValueRef qi = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, ci(g, a), ""), ci(g, d), ""),
			                               LLVMBuildMul(b, c2, ci(g, 2), ""), "");
			LLVMValueRef x = LLVMBuildLoad2(b, pwf, gep(g, g->f32, Q, qi), "");
			LLVMSetAlignment(x, 4);
			x = LLVMBuildTrunc(b, LLVMBuildLShr(b, LLVMBuildBitCast(b, x, pwi, ""), civ(g, 16, 2 * pw), ""), pws, "");
			st_(g, pwp, LLVMBuildBitCast(b, x, pwp, ""), Qp, LLVMBuildUDiv(b, LLVMBuildAdd(b, c2, ci(g, (long)a * d2), ""),
			                                                              ci(g, pw), ""), 4);
			loop_end(g, &lp);
		}
		LLVMBasicBlockRef bpe = LLVMGetInsertBlock(b);
		LLVMBuildBr(b, bqj);
		LLVMPositionBuilderAtEnd(b, bqj);
		LLVMValueRef Qb = phi2(g, g->ptr, Qr, braw, Qp, bpe, "qrows");
		for (int tb = 0; tb < AT / TB; tb++) {
			for (int a = 0; a < qb; a++)
				for (int v = 0; v < NV; v++)
					LLVMBuildStore(b, LLVMConstNull(vt), acc[a][v]);
			Loop lc;
			int U = 4;   /* pairs per iteration; d/2 is a multiple of 4 */
			LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d2), U, &lc);
			LLVMValueRef av[8][4];
			for (int a = 0; a < qb; a++)
				for (int v = 0; v < NV; v++)
					av[a][v] = LLVMBuildLoad2(b, vt, acc[a][v], "");
			for (int u = 0; u < U; u++) {
				LLVMValueRef cu = LLVMBuildAdd(b, c, ci(g, u), "");
				LLVMValueRef kv[4];
				for (int v = 0; v < NV; v++) {
					LLVMValueRef x = LLVMBuildLoad2(b, vi, gep(g, g->i32, Kp, LLVMBuildAdd(b, LLVMBuildMul(b, cu, ci(g, AT), ""),
					                                                                        ci(g, (long)tb * TB + v * W), "")), "");
					LLVMSetAlignment(x, 4);
					kv[v] = LLVMBuildBitCast(b, x, bt, "");
				}
				for (int a = 0; a < qb; a++) {
					LLVMValueRef pr = ld(g, g->i32, Qb, LLVMBuildAdd(b, cu, ci(g, (long)a * d2), ""), 2);
					LLVMValueRef bc = LLVMBuildInsertElement(b, LLVMGetPoison(vi), pr, LLVMConstInt(g->i32, 0, 0), "");
					bc = LLVMBuildShuffleVector(b, bc, LLVMGetPoison(vi), zmask, "");
					LLVMValueRef qbv = LLVMBuildBitCast(b, bc, bt, "");
					for (int v = 0; v < NV; v++) {   /* Q third: the operand that may be a broadcast load */
						LLVMValueRef args[3] = { av[a][v], kv[v], qbv };
						av[a][v] = LLVMBuildCall2(b, dpt, dp, args, 3, "");
					}
				}
			}
			blockend(g, av, acc, qb, NV, &lc, vt, S, q, (long)tb * TB, W);
		}
		loop_end(g, &lq);
		qstart = lq.iv;
		if (qb == 1)
			break;
	}
	LLVMBuildRetVoid(b);
}

/* a call of one of LLVM's AMX intrinsics (the forms with tile register numbers: no x86_amx values,
** so no tile-shape passes; the kernel configures the tiles itself with ldtilecfg) */
void amx(Gen *g, const char *name, LLVMValueRef *args, int n)
{
	unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
	LLVMValueRef f = LLVMGetIntrinsicDeclaration(g->m, id, NULL, 0);
	LLVMBuildCall2(g->b, LLVMIntrinsicGetType(g->cx, id, NULL, 0), f, args, (unsigned)n, "");
}

/* r[0..15], 16 vectors of 16 i32, transposed (r[i][j] ← r[j][i]) with four rounds of two-source
** interleaves (vpermt2d) */
void kx_tr16(Gen *g, LLVMValueRef *r)
{
	for (int round = 0; round < 4; round++)
		kx_tr16round(g, r);
}

/* one of kx_tr16's four rounds (the same every round: four of them transpose; issue 12, session
** 11: mscal runs them in a loop) */
void kx_tr16round(Gen *g, LLVMValueRef *r)
{
	LLVMValueRef lo[16], hi[16], n[16];
	for (int i = 0; i < 8; i++) {
		lo[2 * i] = LLVMConstInt(g->i32, (unsigned)i, 0), lo[2 * i + 1] = LLVMConstInt(g->i32, (unsigned)(16 + i), 0);
		hi[2 * i] = LLVMConstInt(g->i32, (unsigned)(8 + i), 0), hi[2 * i + 1] = LLVMConstInt(g->i32, (unsigned)(24 + i), 0);
	}
	LLVMValueRef mlo = LLVMConstVector(lo, 16), mhi = LLVMConstVector(hi, 16);
	for (int i = 0; i < 8; i++) {
		n[2 * i] = LLVMBuildShuffleVector(g->b, r[i], r[i + 8], mlo, "");
		n[2 * i + 1] = LLVMBuildShuffleVector(g->b, r[i], r[i + 8], mhi, "");
	}
	memcpy(r, n, sizeof n);
}

/* the tile config of every AMX kernel (qkt, msimx, mtop2): palette 1, tiles 0-7 of 16 rows × 64
** bytes, in an entry-block buffer, loaded with ldtilecfg where the builder stands */
void kx_amxcfg(Gen *g)
{
	LLVMTypeRef i8 = LLVMInt8TypeInContext(g->cx);
	LLVMValueRef cfg = entry_alloca(g, LLVMArrayType(i8, 64));
	LLVMSetAlignment(cfg, 64);
	LLVMBuildMemSet(g->b, cfg, LLVMConstInt(i8, 0, 0), ci(g, 64), 64);
	st_(g, i8, LLVMConstInt(i8, 1, 0), cfg, ci(g, 0), 1);
	for (int t = 0; t < 8; t++) {
		st_(g, g->i16, LLVMConstInt(g->i16, 64, 0), cfg, ci(g, 8 + t), 2);   /* colsb[t] at byte 16 + 2t */
		st_(g, i8, LLVMConstInt(i8, 16, 0), cfg, ci(g, 48 + t), 1);          /* rows[t] at byte 48 + t */
	}
	amx(g, "llvm.x86.ldtilecfg", &cfg, 1);
}

LLVMValueRef tmm(Gen *g, int t) { return LLVMConstInt(LLVMInt8TypeInContext(g->cx), (unsigned)t, 0); }

/* tileloadd64 / tilestored64 of tile t at base + idx elements of et, row stride `stride` bytes */
void tileio(Gen *g, const char *name, int t, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef idx, long stride)
{
	LLVMValueRef a[3] = { tmm(g, t), gep(g, et, base, idx), ci(g, stride) };
	amx(g, name, a, 3);
}

/* Q's rows q0 .. q0+15 narrowed to bf16 (the high halves) into Qb [16][d], or with bf copied from
** Q's bf16 rows; rows past nq repeat the last row (their results are never stored) */
static void packq(Gen *g, LLVMValueRef Q, LLVMValueRef nq, LLVMValueRef q0, LLVMValueRef Qb, int d, int bf)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef v16f = fty(g, 16), v32s = LLVMVectorType(g->i16, 32);
	LLVMValueRef odd[32];
	for (int i = 0; i < 32; i++)
		odd[i] = LLVMConstInt(g->i32, (unsigned)(2 * i + 1), 0);
	LLVMValueRef modd = LLVMConstVector(odd, 32), last = LLVMBuildSub(b, nq, ci(g, 1), "");
	Loop lr;
	LLVMValueRef r = loop_begin(g, ci(g, 0), ci(g, 16), 1, &lr);
	LLVMValueRef qr = LLVMBuildAdd(b, q0, r, "");
	qr = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, qr, nq, ""), qr, last, "");
	LLVMValueRef src = gep(g, bf ? g->i16 : g->f32, Q, LLVMBuildMul(b, qr, ci(g, d), ""));
	LLVMValueRef dst = gep(g, g->i16, Qb, LLVMBuildMul(b, r, ci(g, d), ""));
	for (int c = 0; c < d && bf; c += 32)
		st_(g, v32s, ld(g, v32s, src, ci(g, c / 32), 2), dst, ci(g, c / 32), 64);
	for (int c = 0; c < d && !bf; c += 32) {   /* vpermt2w: the odd halfwords of two vectors */
		LLVMValueRef x0 = LLVMBuildBitCast(b, ld(g, v16f, src, ci(g, c / 16), 4), v32s, "");
		LLVMValueRef x1 = LLVMBuildBitCast(b, ld(g, v16f, src, ci(g, c / 16 + 1), 4), v32s, "");
		st_(g, v32s, LLVMBuildShuffleVector(b, x0, x1, modd, ""), dst, ci(g, c / 32), 64);
	}
	loop_end(g, &lr);
}

/*
** qkt with AMX tiles (bf16 storage, kx_amx: amx-tile + amx-bf16 in the CPU and the OS, head_dim a
** multiple of 32, config amx1). The K tile is packed as for vdpbf16ps, Kp[c2*AT + j] = the bf16
** pair (K[j][2c2], K[j][2c2+1]) — the VNNI layout a tdpbf16ps B operand wants: 16 rows of pairs ×
** 16 tokens per tile, row stride AT*4 bytes. A full tile (nt = AT) is transposed in 16 × 16 blocks
** of 32-bit words with four rounds of two-source interleaves (vpermt2d); a partial tile word by
** word. Q's rows are narrowed to bf16 (the high halves: Q is bf16 storage converted to f32, so
** this is exact) 16 at a time into Qb [2][16][d] (rows past nq repeat the last row; their results
** are not stored), the next block's half while the current block's tiles compute (a tile load
** right after the stores of its rows stalls: measured, it halved the kernel's rate). C tiles tmm0-3 (16 queries × 16 tokens each, the whole
** 64-token tile) accumulate d/32 steps of A = Qb's 32 channels (tmm4) times B = Kp's 16 pair rows
** (tmm5-7, tmm5 twice), and are stored into S's rows (through Ct [16][AT] for a block of fewer
** than 16 rows). Products of bf16 are exact in f32; tdpbf16ps accumulates in f32 with denormal
** inputs and outputs flushed to zero, as vdpbf16ps. ldtilecfg at entry (every tile 16 rows ×
** 64 bytes), tilerelease at exit. The runtime asks Linux for the tile state at plan creation
** (KA_FAMX).
** nq < 0 (issue 15, session 8; the runtime passes it for a KA_FAMX artifact): Q is the query rows'
** bf16 storage itself, [-nq][d] contiguous, so the A tiles of full 16-row blocks load straight
** from it and no row is narrowed per tile (packq read 256 f32 rows for every 64-token tile); a
** last block of fewer than 16 rows is copied into Qb (its rows past -nq repeat the last row).
*/
static void gen_qkt_amx(Gen *g, LLVMValueRef K, LLVMValueRef ldk, LLVMValueRef nt, LLVMValueRef Q, LLVMValueRef nq,
                        LLVMValueRef S, LLVMValueRef Kp)
{
	LLVMBuilderRef b = g->b;
	int d = g->d, d2 = d / 2;
	LLVMTypeRef vi = LLVMVectorType(g->i32, 16);
	LLVMValueRef Qb = entry_alloca(g, LLVMArrayType(g->i16, (unsigned)(32 * d)));
	LLVMSetAlignment(Qb, 64);
	LLVMValueRef Ct = entry_alloca(g, LLVMArrayType(g->f32, 16 * AT));
	LLVMSetAlignment(Ct, 64);
	kx_amxcfg(g);
	/* pack */
	LLVMBasicBlockRef bfull = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kfull");
	LLVMBasicBlockRef bpart = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kpart");
	LLVMBasicBlockRef bdone = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kdone");
	LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, nt, ci(g, AT), ""), bfull, bpart);
	LLVMPositionBuilderAtEnd(b, bfull);
	{
		Loop lc;
		LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d2), 16, &lc);
		for (int jb = 0; jb < AT / 16; jb++) {
			LLVMValueRef r[16];
			for (int i = 0; i < 16; i++) {
				LLVMValueRef row = gep(g, g->i16, K, LLVMBuildMul(b, ci(g, jb * 16 + i), ldk, ""));
				r[i] = ld(g, vi, gep(g, g->i32, row, c), ci(g, 0), 2);
			}
			kx_tr16(g, r);
			for (int i = 0; i < 16; i++)
				st_(g, vi, r[i], gep(g, g->i32, Kp, LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, c, ci(g, i), ""), ci(g, AT), ""),
				                                                   ci(g, jb * 16), "")), ci(g, 0), 4);
		}
		loop_end(g, &lc);
		LLVMBuildBr(b, bdone);
	}
	LLVMPositionBuilderAtEnd(b, bpart);
	{
		Loop lt, lc;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nt, 1, 1, &lt);
		LLVMValueRef row = gep(g, g->i16, K, LLVMBuildMul(b, j, ldk, ""));
		LLVMValueRef c = loop_begin(g, ci(g, 0), ci(g, d2), 1, &lc);
		st_(g, g->i32, ld(g, g->i32, row, c, 2), Kp, LLVMBuildAdd(b, LLVMBuildMul(b, c, ci(g, AT), ""), j, ""), 4);
		loop_end(g, &lc);
		loop_end(g, &lt);
		Loop lz, lz2;
		LLVMValueRef jz = loop_begin2(g, nt, ci(g, AT), 1, 1, &lz);
		LLVMValueRef cz = loop_begin(g, ci(g, 0), ci(g, d2), 1, &lz2);
		st_(g, g->i32, LLVMConstInt(g->i32, 0, 0), Kp, LLVMBuildAdd(b, LLVMBuildMul(b, cz, ci(g, AT), ""), jz, ""), 4);
		loop_end(g, &lz2);
		loop_end(g, &lz);
		LLVMBuildBr(b, bdone);
	}
	LLVMPositionBuilderAtEnd(b, bdone);
	/* query blocks of 16 rows, their bf16 rows double-buffered in Qb [2][16][d] (nq > 0), or read
	** from the bf16 rows Q (nq < 0) */
	LLVMTypeRef v16f = fty(g, 16);
	LLVMValueRef raw = LLVMBuildICmp(b, LLVMIntSLT, nq, ci(g, 0), "");
	nq = LLVMBuildSelect(b, raw, LLVMBuildNeg(b, nq, ""), nq, "");
	{   /* block 0 into Qb[0] (none when nq = 0 or the rows are bf16) */
		LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(g->cx, g->fn, "q0");
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "q0done");
		LLVMBuildCondBr(b, LLVMBuildAnd(b, LLVMBuildNot(b, raw, ""), LLVMBuildICmp(b, LLVMIntSGT, nq, ci(g, 0), ""), ""), bp, bn);
		LLVMPositionBuilderAtEnd(b, bp);
		packq(g, Q, nq, ci(g, 0), Qb, d, 0);
		LLVMBuildBr(b, bn);
		LLVMPositionBuilderAtEnd(b, bn);
	}
	Loop lq;
	LLVMValueRef q = loop_begin2(g, ci(g, 0), nq, 16, 1, &lq);
	LLVMValueRef rem = LLVMBuildSub(b, nq, q, "");
	LLVMValueRef cur = LLVMBuildMul(b, LLVMBuildAnd(b, LLVMBuildLShr(b, q, ci(g, 4), ""), ci(g, 1), ""), ci(g, 16L * d), "");
	LLVMValueRef nxt = LLVMBuildSub(b, ci(g, 16L * d), cur, "");
	LLVMValueRef full = LLVMBuildICmp(b, LLVMIntSGE, rem, ci(g, 16), "");
	LLVMValueRef C = LLVMBuildSelect(b, full, gep(g, g->f32, S, LLVMBuildMul(b, q, ci(g, AT), "")), Ct, "");
	{   /* bf16 rows: a partial block copied into Qb[0] */
		LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(g->cx, g->fn, "qraw");
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "qrawdone");
		LLVMBuildCondBr(b, LLVMBuildAnd(b, raw, LLVMBuildNot(b, full, ""), ""), bp, bn);
		LLVMPositionBuilderAtEnd(b, bp);
		packq(g, Q, nq, q, Qb, d, 1);
		LLVMBuildBr(b, bn);
		LLVMPositionBuilderAtEnd(b, bn);
	}
	/* the A rows: Qb's current half, or Q's rows q.. (a full block of bf16 rows), or Qb[0] */
	LLVMValueRef Ab = LLVMBuildSelect(b, raw, LLVMBuildSelect(b, full, gep(g, g->i16, Q, LLVMBuildMul(b, q, ci(g, d), "")), Qb, ""),
	                                  gep(g, g->i16, Qb, cur), "");
	for (int t = 0; t < 4; t++) {
		LLVMValueRef a = tmm(g, t);
		amx(g, "llvm.x86.tilezero", &a, 1);
	}
	for (int k = 0; k < d / 32; k++) {
		tileio(g, "llvm.x86.tileloadd64", 4, g->i16, Ab, ci(g, (long)k * 32), (long)d * 2);
		for (int t = 0; t < 4; t++) {
			int bt = 5 + t % 3;
			tileio(g, "llvm.x86.tileloadd64", bt, g->i32, Kp, ci(g, (long)k * 16 * AT + t * 16), AT * 4);
			LLVMValueRef a[3] = { tmm(g, t), tmm(g, 4), tmm(g, bt) };
			amx(g, "llvm.x86.tdpbf16ps", a, 3);
		}
	}
	{   /* the next block's rows into the other half while the tiles compute */
		LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(g->cx, g->fn, "qnext");
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "qdone");
		LLVMValueRef q2 = LLVMBuildAdd(b, q, ci(g, 16), "");
		LLVMBuildCondBr(b, LLVMBuildAnd(b, LLVMBuildNot(b, raw, ""), LLVMBuildICmp(b, LLVMIntSLT, q2, nq, ""), ""), bp, bn);
		LLVMPositionBuilderAtEnd(b, bp);
		packq(g, Q, nq, q2, gep(g, g->i16, Qb, nxt), d, 0);
		LLVMBuildBr(b, bn);
		LLVMPositionBuilderAtEnd(b, bn);
	}
	for (int t = 0; t < 4; t++)
		tileio(g, "llvm.x86.tilestored64", t, g->f32, C, ci(g, t * 16), AT * 4);
	{
		LLVMBasicBlockRef bcp = LLVMAppendBasicBlockInContext(g->cx, g->fn, "ccopy");
		LLVMBasicBlockRef bnx = LLVMAppendBasicBlockInContext(g->cx, g->fn, "cnext");
		LLVMBuildCondBr(b, full, bnx, bcp);
		LLVMPositionBuilderAtEnd(b, bcp);
		Loop lr;
		LLVMValueRef r = loop_begin2(g, ci(g, 0), rem, 1, 1, &lr);
		for (int v = 0; v < AT / 16; v++) {
			LLVMValueRef x = ld(g, v16f, Ct, LLVMBuildAdd(b, LLVMBuildMul(b, r, ci(g, AT / 16), ""), ci(g, v), ""), 64);
			storef(g, x, S, LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, q, r, ""), ci(g, AT), ""), ci(g, v * 16), ""));
		}
		loop_end(g, &lr);
		LLVMBuildBr(b, bnx);
		LLVMPositionBuilderAtEnd(b, bnx);
	}
	loop_end(g, &lq);
	amx(g, "llvm.x86.tilerelease", NULL, 0);
	LLVMBuildRetVoid(b);
}

/*
** qkt(K, ldk, nt, Q, nq, S, Kp): S[q*AT + j] = sum_c Q[q*d + c] * f32(K[j*ldk + c]) for j < AT
** (columns nt..AT-1 are 0). K's tile is first packed, converted and transposed, into
** Kp[c*AT + j]; then a register-blocked outer-product micro-kernel: QB query rows × NV
** vectors of W tokens, broadcast Q[q][c] × Kp row, no horizontal reductions.
*/
void kx_gen_qkt(Gen *g)
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
	if (!g->c.noamx) {
		gen_qkt_amx(g, K, ldk, nt, Q, nq, S, Kp);
		return;
	}
	if (g->bf16dot) {
		gen_qkt_bf16(g, K, ldk, nt, Q, nq, S, Kp);
		return;
	}
	int W = g->W, d = g->d;
	int NV = g->c.nv, QB = g->c.qb, TB = NV * W;   /* defaults: 4 × 6 (16 lanes), 2 × 6 (8), 4 × 4 (scalar) */
	LLVMTypeRef vt = fty(g, W);
	/* pack: Kp[c][j] = f32(K[j][c]), zero beyond nt */
	{
		Loop lt, lc;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), nt, 1, 1, &lt);
		LLVMValueRef row = LLVMBuildMul(b, j, ldk, "");
		int w = W > 1 ? W : 1, esz = g->dtype == KVCC_F32 ? 4 : 2;
		if (g->c.pf)       /* the row pf tokens ahead (the next tiles') */
			prefetch(g, K, LLVMBuildMul(b, LLVMBuildAdd(b, j, ci(g, g->c.pf), ""), LLVMBuildMul(b, ldk, ci(g, esz), ""), ""),
			         d * esz);
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
			blockend(g, av, acc, qb, NV, &lc, vt, S, q, (long)tb * TB, W);
		}
		loop_end(g, &lq);
		qstart = lq.iv;
		if (qb == 1)
			break;
	}
	LLVMBuildRetVoid(b);
}

/* x[k] = bit k*16+i of the row's visibility mask vm ? a * S[row + k*16 + i] : -inf, for the AT/16
** vectors of a row (the runtime's masks: a prefix for positions in order, any set otherwise). A
** row whose 64 tokens are all visible (most rows of a long context) skips the mask: the same
** values with a third of the vector instructions. */
static void rowlogits_mask(Gen *g, LLVMValueRef S, LLVMValueRef q, LLVMValueRef vm, LLVMValueRef a, LLVMValueRef *x);
static void rowlogits(Gen *g, LLVMValueRef S, LLVMValueRef q, LLVMValueRef vm, LLVMValueRef a, LLVMValueRef *x)
{
	LLVMBuilderRef b = g->b;
	LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(g->cx, g->fn, "rfull");
	LLVMBasicBlockRef bm = LLVMAppendBasicBlockInContext(g->cx, g->fn, "rmask");
	LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "rjoin");
	LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, vm, LLVMConstInt(g->i64, ~0ull, 0), ""), bf, bm);
	LLVMPositionBuilderAtEnd(b, bf);
	LLVMValueRef xf[AT / DT], xm[AT / DT];
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef s = loadf(g, S, LLVMBuildAdd(b, LLVMBuildMul(b, q, ci(g, AT), ""), ci(g, k * DT), ""), DT);
		xf[k] = LLVMBuildFMul(b, s, splat(g, a, DT), "");
	}
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bm);
	rowlogits_mask(g, S, q, vm, a, xm);
	LLVMBasicBlockRef bme = LLVMGetInsertBlock(b);
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bj);
	for (int k = 0; k < AT / DT; k++) {
		x[k] = LLVMBuildPhi(b, fty(g, DT), "");
		LLVMValueRef in[2] = { xf[k], xm[k] };
		LLVMBasicBlockRef from[2] = { bf, bme };
		LLVMAddIncoming(x[k], in, from, 2);
	}
}

static void rowlogits_mask(Gen *g, LLVMValueRef S, LLVMValueRef q, LLVMValueRef vm, LLVMValueRef a, LLVMValueRef *x)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef vi = LLVMVectorType(g->i32, DT);
	LLVMValueRef z[DT], lane[DT];
	for (int i = 0; i < DT; i++)
		z[i] = LLVMConstInt(g->i32, 0, 0), lane[i] = LLVMConstInt(g->i32, 1u << i, 0);
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef bits = LLVMBuildTrunc(b, LLVMBuildLShr(b, vm, ci(g, k * DT), ""), g->i32, "");
		bits = LLVMBuildInsertElement(b, LLVMGetPoison(vi), bits, z[0], "");
		bits = LLVMBuildShuffleVector(b, bits, LLVMGetPoison(vi), LLVMConstVector(z, DT), "");
		LLVMValueRef m = LLVMBuildICmp(b, LLVMIntNE, LLVMBuildAnd(b, bits, LLVMConstVector(lane, DT), ""),
		                               LLVMConstVector(z, DT), "");
		LLVMValueRef s = loadf(g, S, LLVMBuildAdd(b, LLVMBuildMul(b, q, ci(g, AT), ""), ci(g, k * DT), ""), DT);
		x[k] = LLVMBuildSelect(b, m, LLVMBuildFMul(b, s, splat(g, a, DT), ""), cfv(g, -INFINITY, DT), "");
	}
}

/* sstat(S, nq, vm, a, m, l): online max / sum of exp over each row's visible logits a*S (the bits
** of vm[q]) */
/* the statistics kernels' shared start: fn(S, nq, vm, a, m, l[, E, mt]) (np parameters), the
** loop over the nq rows begun, row q's logits in x; returns q */
static LLVMValueRef stat_begin(Gen *g, const char *name, int np, Loop *lq, LLVMValueRef *x, LLVMValueRef *neg)
{
	LLVMTypeRef ps[8] = { g->ptr, g->i64, g->ptr, g->f32, g->ptr, g->ptr, g->ptr, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, (unsigned)np, 0);
	g->fn = LLVMAddFunction(g->m, name, ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef S = LLVMGetParam(g->fn, 0), nq = LLVMGetParam(g->fn, 1), vjp = LLVMGetParam(g->fn, 2);
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	if (neg) {   /* nq < 0: -nq rows, and the flag (sstate: E's stores non-temporal) */
		*neg = LLVMBuildICmp(g->b, LLVMIntSLT, nq, ci(g, 0), "");
		nq = LLVMBuildSelect(g->b, *neg, LLVMBuildNeg(g->b, nq, ""), nq, "");
	}
	LLVMValueRef q = loop_begin2(g, ci(g, 0), nq, 1, 1, lq);
	rowlogits(g, S, q, LLVMBuildLoad2(g->b, g->i64, gep(g, g->i64, vjp, q), ""), LLVMGetParam(g->fn, 3), x);
	return q;
}

/* NaN logits in the statistics (issue 15, session 12; gen.h KX_EXPNAN): the tile's lane-wise max
** reduced across the lanes with its NaN lanes taken as -inf (a lane is NaN only where its logits
** were; the reduction's nnan flag then holds) ... */
static LLVMValueRef rowmax(Gen *g, LLVMValueRef mv)
{
	LLVMTypeRef tv = fty(g, DT);
	LLVMValueRef ok = LLVMBuildFCmp(g->b, LLVMRealORD, mv, mv, "");
	mv = LLVMBuildSelect(g->b, ok, mv, cfv(g, -INFINITY, DT), "");
	LLVMValueRef tm = intr(g, "llvm.vector.reduce.fmax", tv, &mv, 1);
	LLVMSetFastMathFlags(tm, LLVMFastMathNoNaNs);
	return tm;
}

/* ... and the max that the exponentials subtract, at least the lowest finite f32: a row with no
** visible number yet (max -inf) then gets exp(-inf - m) = 0 for its invisible logits, not the
** NaN of -inf - (-inf), while a NaN logit stays NaN (and +inf - +inf is NaN, as the interpreter's) */
static LLVMValueRef submax(Gen *g, LLVMValueRef m)
{
	LLVMValueRef a[2] = { m, LLVMConstReal(g->f32, -3.4028234663852886e38) };
	return splat(g, intr(g, "llvm.maxnum", g->f32, a, 2), DT);
}

static void gen_sstat(Gen *g)
{
	Loop lq;
	LLVMValueRef x[AT / DT];
	LLVMValueRef q = stat_begin(g, "kvcc_sstat", 6, &lq, x, NULL);
	LLVMValueRef M = LLVMGetParam(g->fn, 4), Lp = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMTypeRef tv = fty(g, DT);
	LLVMValueRef mx = x[0];
	for (int k = 1; k < AT / DT; k++) {
		mx = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, mx, x[k], ""), mx, x[k], "");
	}
	LLVMValueRef tm = rowmax(g, mx);
	LLVMValueRef mo = ldf(g, M, q);
	LLVMValueRef mm[2] = { mo, tm };
	LLVMValueRef mn = intr(g, "llvm.maxnum", g->f32, mm, 2);
	LLVMValueRef sum = cfv(g, 0, DT), ms = submax(g, mn);
	for (int k = 0; k < AT / DT; k++) {
		/* an invisible logit is -inf: exp(-inf - ms) = 0; a NaN logit makes the sum NaN */
		LLVMValueRef e = vexpn(g, LLVMBuildFSub(b, x[k], ms, ""), DT, KX_EXPNAN);
		sum = LLVMBuildFAdd(b, sum, e, "");
	}
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

void kx_gen_sstat(Gen *g) { gen_sstat(g); }

/* sstate(S, nq, vm, a, m, L, E, mt) (issue 15: one exp per logit; KVCC_ABI 16: the sum per
** lane, the max only where it grows): the online max m[q] and sum of exp over each row's visible
** logits a*S (the bits of vm[q]), with the sum kept per (row, lane): L[q*16 + i] over the columns
** j = i (mod 16), all relative to the row's max m[q] (the runtime adds the 16 lanes once per
** head). A row whose tile has no logit above m[q] (every tile after the first few: the running
** max of a row grows a handful of times over a long context) takes no horizontal reduction and
** no rescale: a lane-wise max, one vector compare, then the exponentials. Only where a logit
** exceeds m[q] the tile's max is reduced across the lanes and L rescaled by exp(m_old - m_new).
** E[q*64 + j] = exp(a*S[q][j] - m[q]) with the row's max after this tile (0 for an invisible j)
** and mt[q] = that max, for sacce. */
/* sstate's non-temporal stores of E (issue 15, session 9; the caller asks with nq < 0: a head
** whose exponentials exceed the cache, runtime/compress.c attnscore1): they are read back only
** after the head's last tile, by sacce, so caching them on the way out costs a read-for-ownership
** of every line and evicts K. Measured (kvcc-bench --amx, "score phase by kernel", one head,
** 1 thread CPU): sstate 3.3-3.7 → 2.4-2.5 ms at n = 32768 (32 MiB of E), sacce unchanged; at
** n = 4096 (4 MiB) sacce then reads E from memory instead of the cache (+0.1 ms per head), so
** a head that small keeps cached stores. The workspace is 64-byte aligned (runtime/api.c make_ws)
** and every row is 64 floats: each 16-float store is one aligned line (vmovntps). Same values. */
static void storent(Gen *g, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx)
{
	LLVMValueRef p = LLVMBuildGEP2(g->b, g->f32, base, &idx, 1, "");
	LLVMValueRef s = LLVMBuildStore(g->b, v, p);
	LLVMSetAlignment(s, 64);
	LLVMMetadataRef one = LLVMValueAsMetadata(LLVMConstInt(g->i32, 1, 0));
	LLVMSetMetadata(s, LLVMGetMDKindIDInContext(g->cx, "nontemporal", 11),
	                LLVMMetadataAsValue(g->cx, LLVMMDNodeInContext2(g->cx, &one, 1)));
}

static void gen_sstate_lanes(Gen *g)
{
	Loop lq;
	LLVMValueRef x[AT / DT];
	LLVMValueRef ntf;
	LLVMValueRef q = stat_begin(g, "kvcc_sstate", 8, &lq, x, &ntf);
	LLVMValueRef M = LLVMGetParam(g->fn, 4), Lp = LLVMGetParam(g->fn, 5);
	LLVMValueRef E = LLVMGetParam(g->fn, 6), MT = LLVMGetParam(g->fn, 7);
	LLVMBuilderRef b = g->b;
	LLVMTypeRef tv = fty(g, DT);
	LLVMValueRef lo = LLVMBuildMul(b, q, ci(g, DT), "");
	LLVMValueRef mv = x[0];
	for (int k = 1; k < AT / DT; k++) {   /* lane-wise; -inf (invisible) never wins over a number */
		LLVMValueRef mm[2] = { mv, x[k] };
		mv = intr(g, "llvm.maxnum", tv, mm, 2);
	}
	LLVMValueRef mo = ldf(g, M, q);
	LLVMValueRef up = LLVMBuildFCmp(b, LLVMRealOGT, mv, splat(g, mo, DT), "");
	LLVMValueRef any = LLVMBuildICmp(b, LLVMIntNE, LLVMBuildBitCast(b, up, LLVMIntTypeInContext(g->cx, DT), ""),
	                                 LLVMConstInt(LLVMIntTypeInContext(g->cx, DT), 0, 0), "");
	LLVMBasicBlockRef bfast = LLVMGetInsertBlock(b);
	LLVMBasicBlockRef bup = LLVMAppendBasicBlockInContext(g->cx, g->fn, "mgrow");
	LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "mjoin");
	LLVMBuildCondBr(b, any, bup, bj);
	LLVMPositionBuilderAtEnd(b, bup);   /* the row's max grows: reduce it, rescale the lanes' sums */
	LLVMValueRef tm = rowmax(g, mv);
	LLVMValueRef mm[2] = { mo, tm };
	LLVMValueRef mn = intr(g, "llvm.maxnum", g->f32, mm, 2);
	LLVMValueRef sc = splat(g, vexp(g, LLVMBuildFSub(b, mo, mn, ""), 1), DT);   /* 0 while mo is -inf */
	storef(g, LLVMBuildFMul(b, loadf(g, Lp, lo, DT), sc, ""), Lp, lo);
	storef(g, mn, M, q);
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bj);
	LLVMValueRef m = LLVMBuildPhi(b, g->f32, "m");
	LLVMValueRef in[2] = { mo, mn };
	LLVMBasicBlockRef from[2] = { bfast, bup };
	LLVMAddIncoming(m, in, from, 2);
	LLVMValueRef sum = NULL, ev[AT / DT], ms = submax(g, m);
	for (int k = 0; k < AT / DT; k++) {
		/* an invisible logit is -inf: exp(-inf - ms) = 0; a NaN logit makes E and the sum NaN
		** (the row's mp is then +inf: sacce skips it) */
		ev[k] = vexpn(g, LLVMBuildFSub(b, x[k], ms, ""), DT, KX_EXPNAN);
		sum = sum ? LLVMBuildFAdd(b, sum, ev[k], "") : ev[k];
	}
	{   /* E's row: non-temporal stores when the caller says so (nq < 0), else cached */
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "ent");
		LLVMBasicBlockRef bc = LLVMAppendBasicBlockInContext(g->cx, g->fn, "ecached");
		LLVMBasicBlockRef be = LLVMAppendBasicBlockInContext(g->cx, g->fn, "estored");
		LLVMBuildCondBr(b, ntf, bn, bc);
		for (int nt = 1; nt >= 0; nt--) {
			LLVMPositionBuilderAtEnd(b, nt ? bn : bc);
			for (int k = 0; k < AT / DT; k++) {
				LLVMValueRef ix = LLVMBuildAdd(b, LLVMBuildMul(b, q, ci(g, AT), ""), ci(g, k * DT), "");
				if (nt)
					storent(g, ev[k], E, ix);
				else
					storef(g, ev[k], E, ix);
			}
			LLVMBuildBr(b, be);
		}
		LLVMPositionBuilderAtEnd(b, be);
	}
	storef(g, LLVMBuildFAdd(b, loadf(g, Lp, lo, DT), sum, ""), Lp, lo);
	storef(g, m, MT, q);
	loop_end(g, &lq);
	LLVMBuildRetVoid(b);
}

void kx_gen_sstate(Gen *g) { gen_sstate_lanes(g); }

/* The AT-token accumulators of sacc / sacce: AT/DT vectors on the stack, zeroed at entry ... */
static void tileacc_zero(Gen *g, LLVMValueRef *av)
{
	for (int k = 0; k < AT / DT; k++) {
		av[k] = entry_alloca(g, fty(g, DT));
		LLVMBuildStore(g->b, cfv(g, 0, DT), av[k]);
	}
}

/* ... and added into acc[0..AT) at the end */
static void tileacc_flush(Gen *g, LLVMValueRef *av, LLVMValueRef acc)
{
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef o = loadf(g, acc, ci(g, k * DT), DT);
		storef(g, LLVMBuildFAdd(g->b, o, LLVMBuildLoad2(g->b, fty(g, DT), av[k], ""), ""), acc, ci(g, k * DT));
	}
}

/* sacce(E, nq, mt, mp, acc) (issue 15: one exp per logit): acc[j] += sum_q E[q*64 + j] *
** exp(mt[q] - mp[q]) for the 64 columns of a tile whose exponentials sstate kept: the same sum as
** sacc's exp(a*S[q][j] - mp[q]) = exp(a*S[q][j] - mt[q]) * exp(mt[q] - mp[q]), one scalar exp per
** row and tile instead of one per logit (E is 0 at the invisible j). */
void kx_gen_sacce(Gen *g)
{
	LLVMTypeRef ps[5] = { g->ptr, g->i64, g->ptr, g->ptr, g->ptr };
	LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(g->cx), ps, 5, 0);
	g->fn = LLVMAddFunction(g->m, "kvcc_sacce", ft);
	LLVMSetLinkage(g->fn, LLVMInternalLinkage);
	LLVMValueRef E = LLVMGetParam(g->fn, 0), nq = LLVMGetParam(g->fn, 1), MT = LLVMGetParam(g->fn, 2);
	LLVMValueRef MP = LLVMGetParam(g->fn, 3), acc = LLVMGetParam(g->fn, 4);
	LLVMBuilderRef b = g->b;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->cx, g->fn, "entry"));
	LLVMTypeRef tv = fty(g, DT);
	LLVMValueRef av[AT / DT];
	tileacc_zero(g, av);
	Loop lq;
	LLVMValueRef q = loop_begin2(g, ci(g, 0), nq, 1, 1, &lq);
	/* mt <= m <= mp: the factor is at most 1; a row with nothing visible (mt -inf) adds 0, and a
	** row whose factor is 0 is skipped: mp = +inf (a row sum that is not > 0: nothing visible, or
	** NaN from a NaN logit, whose E holds NaN) adds nothing, as the interpreter's row */
	LLVMValueRef fs = vexp(g, LLVMBuildFSub(b, ldf(g, MT, q), ldf(g, MP, q), ""), 1);
	LLVMBasicBlockRef brow = LLVMAppendBasicBlockInContext(g->cx, g->fn, "erow");
	LLVMBasicBlockRef bnext = LLVMAppendBasicBlockInContext(g->cx, g->fn, "enext");
	LLVMBuildCondBr(b, LLVMBuildFCmp(b, LLVMRealOEQ, fs, LLVMConstReal(g->f32, 0), ""), bnext, brow);
	LLVMPositionBuilderAtEnd(b, brow);
	LLVMValueRef f = splat(g, fs, DT);
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef e = loadf(g, E, LLVMBuildAdd(b, LLVMBuildMul(b, q, ci(g, AT), ""), ci(g, k * DT), ""), DT);
		LLVMBuildStore(b, fmadd(g, e, f, LLVMBuildLoad2(b, tv, av[k], ""), DT), av[k]);
	}
	LLVMBuildBr(b, bnext);
	LLVMPositionBuilderAtEnd(b, bnext);
	loop_end(g, &lq);
	tileacc_flush(g, av, acc);
	LLVMBuildRetVoid(b);
}

/* sacc(S, nq, vm, a, mp, acc): acc[j] += sum_q exp(a*S[q][j] - mp[q]) over the visible j (bits of
** vm[q]) */
void kx_gen_sacc(Gen *g)
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
	tileacc_zero(g, av);
	Loop lq;
	LLVMValueRef q = loop_begin2(g, ci(g, 0), nq, 1, 1, &lq);
	LLVMValueRef x[AT / DT];
	rowlogits(g, S, q, LLVMBuildLoad2(b, g->i64, gep(g, g->i64, vjp, q), ""), a, x);
	LLVMValueRef mp = splat(g, ldf(g, MP, q), DT);
	for (int k = 0; k < AT / DT; k++) {
		LLVMValueRef p = vexpn(g, LLVMBuildFSub(b, x[k], mp, ""), DT, 1);   /* mp: a given lse may be below a logit */
		LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, tv, av[k], ""), p, ""), av[k]);
	}
	loop_end(g, &lq);
	tileacc_flush(g, av, acc);
	LLVMBuildRetVoid(b);
}

/* probs(S, n, m, il): S[i] = exp(S[i] - m) * il (softmax normalization, in place). */
void kx_gen_probs(Gen *g)
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
void kx_gen_selkeys(Gen *g)
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

/* in a loop over the chunks j of n tokens (chunk ch): *t0 = j·ch, *e = min(*t0 + ch, n) and the
** reference's chunk mean, a double sum (the slot sp) in token order over e - t0 (NaN if a token is) */
LLVMValueRef kx_chunkmean(Gen *g, LLVMValueRef sc, LLVMValueRef n, LLVMValueRef ch, LLVMValueRef j, LLVMValueRef sp,
                          LLVMValueRef *t0p, LLVMValueRef *ep)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMValueRef t0 = LLVMBuildMul(b, j, ch, "");
	LLVMValueRef e = LLVMBuildAdd(b, t0, ch, "");
	e = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, e, n, ""), e, n, "");
	LLVMBuildStore(b, LLVMConstReal(f64, 0), sp);
	Loop lt;
	LLVMValueRef t = loop_begin2(g, t0, e, 1, 1, &lt);
	LLVMValueRef v = LLVMBuildFPExt(b, ld(g, g->f32, sc, t, 4), f64, "");
	LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, f64, sp, ""), v, ""), sp);
	loop_end(g, &lt);
	*t0p = t0, *ep = e;
	return LLVMBuildFDiv(b, LLVMBuildLoad2(b, f64, sp, ""), LLVMBuildSIToFP(b, LLVMBuildSub(b, e, t0, ""), f64, ""), "");
}

/*
** ckeys(score, n, S, R, base, chunk, key): chunk candidates of one (layer, head): key[j] for the
** tokens t0 = j·chunk .. min(t0 + chunk, n) - 1 (the last chunk may be partial), j < ceil(n/chunk).
** The score is the reference's mean: a double sum in token order divided by the length (NaN if
** any token is NaN), rounded to f32; protected if any of its tokens is; id base + t0.
*/
void kx_gen_ckeys(Gen *g)
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
	Loop lp;
	LLVMValueRef j = loop_begin2(g, ci(g, 0), nc, 1, 1, &lp), t0, e;
	LLVMValueRef mean = kx_chunkmean(g, sc, n, ch, j, sp, &t0, &e);
	LLVMValueRef prot = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, t0, S, ""),
	                                LLVMBuildICmp(b, LLVMIntSGT, e, nr, ""), "");
	LLVMValueRef id = LLVMBuildAdd(b, base, LLVMBuildTrunc(b, t0, g->i32, ""), "");
	st_(g, g->i64, selkey(g, LLVMBuildFPTrunc(b, mean, g->f32, ""), prot, protkey(g, t0, e, n, S), id), key, j, 8);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}

/*
** topk(key, n, want): radix select, MSB first, 11-bit digits (6 histogram passes: 5 × 11 + 9;
** the config's rb: 8..12-bit digits):
** per pass a histogram of the digit over the keys matching the prefix so far, then the digit
** where the `want` largest end. Returns the smallest kept key (keys are distinct, so exactly
** `want` keys are >= it). 1 <= want <= n.
*/
void kx_gen_topk(Gen *g)
{
	const int RBITS = g->c.rbits;   /* 11 by default; the config's 8..12 */
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
void kx_gen_keepidx(Gen *g)
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
void kx_gen_kcount(Gen *g)
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
void kx_gen_ckeepidx(Gen *g)
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
void kx_gen_compact(Gen *g)
{
	LLVMTypeRef ps[9] = { g->ptr, g->ptr, g->i64, g->ptr, g->i64, g->ptr, g->ptr, g->i64, g->i64 };
	newfn(g, "kvcc_compact", LLVMVoidTypeInContext(g->cx), ps, 9);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), V = LLVMGetParam(g->fn, 1), ldk = LLVMGetParam(g->fn, 2);
	LLVMValueRef idx = LLVMGetParam(g->fn, 3), m = LLVMGetParam(g->fn, 4), pos = LLVMGetParam(g->fn, 5);
	LLVMValueRef state = LLVMGetParam(g->fn, 6), nst = LLVMGetParam(g->fn, 7), sstr = LLVMGetParam(g->fn, 8);
	LLVMBuilderRef b = g->b;
	int esz = g->dtype == KVCC_F32 ? 4 : 2, rowb = g->d * esz;
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
		loop_plain(g, &ls);                         /* nst is a few state slots */
	}
	LLVMBuildBr(b, cont);
	LLVMPositionBuilderAtEnd(b, cont);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}

/* a policy's count/param ref as a double: constant, param (par[i]) or the default */
static LLVMValueRef refd(Gen *g, const KiFn *f, LLVMValueRef par, KiRef r, double def)
{
	LLVMTypeRef dt = LLVMDoubleTypeInContext(g->cx);
	switch (KI_RKIND(r)) {
	case RK_CON: return LLVMConstReal(dt, f->con[KI_RIDX(r)]);
	case RK_PAR: return ld(g, dt, par, ci(g, KI_RIDX(r)), 8);
	}
	return LLVMConstReal(dt, def);
}

/*
** i64 nkeep(par, layer, nlayers, n, ratio, budget): the tokens a (layer, head) with n tokens keeps
** before selection — the budget (min(budget, n)) or floor(n (1 - ratio)), and with the pyramid
** schedule kvpress's PyramidKV layer budgets — in double, as the reference (interp.c ki_nkeep).
*/
void kx_gen_nkeep(Gen *g, const KiFn *f)
{
	LLVMTypeRef dt = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->i64, dt, g->i64 };
	newfn(g, "kvcc_nkeep", g->i64, ps, 6);
	LLVMBuilderRef b = g->b;
	LLVMValueRef par = LLVMGetParam(g->fn, 0), layer = LLVMGetParam(g->fn, 1), nl = LLVMGetParam(g->fn, 2);
	LLVMValueRef n = LLVMGetParam(g->fn, 3), ratio = LLVMGetParam(g->fn, 4), budget = LLVMGetParam(g->fn, 5);
	LLVMValueRef nd = LLVMBuildSIToFP(b, n, dt, ""), zero = LLVMConstReal(dt, 0), one = LLVMConstReal(dt, 1);
	LLVMValueRef hasb = LLVMBuildICmp(b, LLVMIntSGE, budget, ci(g, 0), "");
	LLVMValueRef bmin = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, budget, n, ""), budget, n, "");
	LLVMValueRef byr = LLVMBuildFMul(b, nd, LLVMBuildFSub(b, one, ratio, ""), "");
	LLVMValueRef keep = LLVMBuildSelect(b, hasb, LLVMBuildSIToFP(b, bmin, dt, ""), byr, "");
	LLVMValueRef nk = LLVMBuildSelect(b, hasb, keep, intr(g, "llvm.floor", dt, &keep, 1), "");
	if (f->sel.sched == SCH_pyramid) {
		/* PyramidKV as kvpress computes it; beta < 1 or a degenerate range: uniform budgets */
		LLVMValueRef w = refd(g, f, par, f->sel.keep_recent, 0), beta = refd(g, f, par, f->sel.beta, 20);
		LLVMValueRef T = LLVMBuildFAdd(b, w, keep, ""), tw = LLVMBuildFSub(b, T, w, "");
		LLVMValueRef mn = LLVMBuildFDiv(b, tw, beta, "");
		LLVMValueRef mx = LLVMBuildFSub(b, LLVMBuildFMul(b, tw, LLVMConstReal(dt, 2), ""), mn, "");
		LLVMValueRef nw = LLVMBuildFSub(b, nd, w, "");
		LLVMValueRef clip = LLVMBuildFCmp(b, LLVMRealOGE, mx, nw, "");
		mx = LLVMBuildSelect(b, clip, nw, mx, "");
		mn = LLVMBuildSelect(b, clip, LLVMBuildFSub(b, LLVMBuildFMul(b, tw, LLVMConstReal(dt, 2), ""), mx, ""), mn, "");
		LLVMValueRef ok = LLVMBuildFCmp(b, LLVMRealOGE, beta, one, "");
		ok = LLVMBuildAnd(b, ok, LLVMBuildFCmp(b, LLVMRealOGE, nd, mx, ""), "");
		ok = LLVMBuildAnd(b, ok, LLVMBuildFCmp(b, LLVMRealOGE, mx, mn, ""), "");
		ok = LLVMBuildAnd(b, ok, LLVMBuildFCmp(b, LLVMRealOGE, mn, w, ""), "");
		ok = LLVMBuildAnd(b, ok, LLVMBuildICmp(b, LLVMIntSGE, nl, ci(g, 2), ""), "");
		LLVMValueRef step = LLVMBuildFDiv(b, LLVMBuildFSub(b, mx, mn, ""),
		                                  LLVMBuildSIToFP(b, LLVMBuildSub(b, nl, ci(g, 1), ""), dt, ""), "");
		LLVMValueRef py = LLVMBuildFSub(b, mx, LLVMBuildFMul(b, LLVMBuildSIToFP(b, layer, dt, ""), step, ""), "");
		LLVMValueRef sel = LLVMBuildSelect(b, ok, py, keep, "");
		LLVMValueRef pk = intr(g, "llvm.roundeven", dt, &sel, 1);
		LLVMValueRef on = LLVMBuildOr(b, hasb, LLVMBuildFCmp(b, LLVMRealOGT, ratio, zero, ""), "");
		nk = LLVMBuildSelect(b, on, pk, nk, "");
	}
	/* !(nk >= 0) (also NaN): 0; above n: n */
	LLVMValueRef neg = LLVMBuildNot(b, LLVMBuildFCmp(b, LLVMRealOGE, nk, zero, ""), "");
	LLVMValueRef big = LLVMBuildFCmp(b, LLVMRealOGT, nk, nd, "");
	LLVMValueRef safe = LLVMBuildSelect(b, LLVMBuildOr(b, neg, big, ""), zero, nk, "");
	LLVMValueRef r = LLVMBuildSelect(b, big, n, LLVMBuildFPToSI(b, safe, g->i64, ""), "");
	LLVMBuildRet(b, LLVMBuildSelect(b, neg, ci(g, 0), r, ""));
}

/* hmean(src, H, cnt, dst): the head_mean barrier of one layer: dst[h][e] = (sum over the H heads of
** src[h][e], in double, in head order) / H for e < cnt (src, dst: H pointers each) */
void kx_gen_hmean(Gen *g)
{
	LLVMTypeRef dt = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[4] = { g->ptr, g->i64, g->i64, g->ptr };
	newfn(g, "kvcc_hmean", LLVMVoidTypeInContext(g->cx), ps, 4);
	LLVMBuilderRef b = g->b;
	LLVMValueRef src = LLVMGetParam(g->fn, 0), H = LLVMGetParam(g->fn, 1), cnt = LLVMGetParam(g->fn, 2);
	LLVMValueRef dst = LLVMGetParam(g->fn, 3);
	LLVMValueRef acc = entry_alloca(g, dt);
	Loop le, lh, ld_;
	LLVMValueRef e = loop_begin2(g, ci(g, 0), cnt, 1, 1, &le);
	LLVMBuildStore(b, LLVMConstReal(dt, 0), acc);
	LLVMValueRef h = loop_begin2(g, ci(g, 0), H, 1, 1, &lh);
	LLVMValueRef x = LLVMBuildFPExt(b, ldf(g, ld(g, g->ptr, src, h, 8), e), dt, "");
	LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, dt, acc, ""), x, ""), acc);
	loop_end(g, &lh);
	LLVMValueRef m = LLVMBuildFPTrunc(b, LLVMBuildFDiv(b, LLVMBuildLoad2(b, dt, acc, ""), LLVMBuildSIToFP(b, H, dt, ""), ""),
	                                  g->f32, "");
	LLVMValueRef h2 = loop_begin2(g, ci(g, 0), H, 1, 1, &ld_);
	storef(g, m, ld(g, g->ptr, dst, h2, 8), e);
	loop_end(g, &ld_);
	loop_end(g, &le);
	LLVMBuildRetVoid(b);
}

/* qround(q, out, n): decode queries rounded to the storage dtype (nearest even; the reference's
** rounding) and scaled by 1/sqrt(d) in f32 */
void kx_gen_qround(Gen *g)
{
	LLVMTypeRef ps[3] = { g->ptr, g->ptr, g->i64 };
	newfn(g, "kvcc_qround", LLVMVoidTypeInContext(g->cx), ps, 3);
	LLVMBuilderRef b = g->b;
	LLVMValueRef q = LLVMGetParam(g->fn, 0), out = LLVMGetParam(g->fn, 1), n = LLVMGetParam(g->fn, 2);
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef x = ldf(g, q, i);
	if (g->dtype == KVCC_F16)
		x = LLVMBuildFPExt(b, LLVMBuildFPTrunc(b, x, g->half, ""), g->f32, "");
	else if (g->dtype == KVCC_BF16) {      /* + 0x7fff + lsb, truncated; NaN stays (quiet) NaN */
		LLVMValueRef u = LLVMBuildBitCast(b, x, g->i32, "");
		LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, u, LLVMConstInt(g->i32, 16, 0), ""), LLVMConstInt(g->i32, 1, 0), "");
		LLVMValueRef r = LLVMBuildAdd(b, u, LLVMBuildAdd(b, lsb, LLVMConstInt(g->i32, 0x7fff, 0), ""), "");
		r = LLVMBuildAnd(b, r, LLVMConstInt(g->i32, 0xffff0000u, 0), "");
		LLVMValueRef nan = LLVMBuildICmp(b, LLVMIntUGT, LLVMBuildAnd(b, u, LLVMConstInt(g->i32, 0x7fffffff, 0), ""),
		                                 LLVMConstInt(g->i32, 0x7f800000, 0), "");
		r = LLVMBuildSelect(b, nan, LLVMBuildOr(b, u, LLVMConstInt(g->i32, 0x00400000, 0), ""), r, "");
		x = LLVMBuildBitCast(b, r, g->f32, "");
	}
	storef(g, LLVMBuildFMul(b, x, cfv(g, (double)(float)(1.0 / sqrt((double)g->d)), 1), ""), out, i);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}
