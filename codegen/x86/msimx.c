/*
** msimx (issue 12, session 10): the evicted × kept similarity of merge nearest and its arg-max
** in one AMX kernel, for the similarities whose ranking over the kept tokens of one evicted row
** needs no pair epilogue per element:
**
**   cosine  sim = e·k / max(A B, c) or e·k / (A B), A a scalar of the evicted row and B one of
**           the kept row (kv.nearest's default: A = |e|, B = |k|, c = 1e-8; MergingPress's
**           max(|e|, 1e-6) max(|k|, 1e-6)): when every A B is normal, finite and >= c (checked:
**           B normal positive finite, fl(A min B) >= c and fl(A max B) finite for every evicted
**           row), sim is e·k / B times the positive 1/A of the row, so the kept token of the
**           greatest key(e, k) = fl(e·k * fl(1/B)) is the arg-max up to the rounding of the two
**           forms: a row whose best two keys lie within 2^-20 (relative, 4x the bound; see
**           neartie) is marked (bkey NaN) and the caller re-checks it by the qkt + mbest path
**           (session 12), so every target is that path's bit for bit
**   dot     sim = e·k: key = e·k
**
** The kept tokens are the tile rows (M) and the evicted rows the columns (N), both packed once per
** head (the kept rows tile by tile, 1 KiB per A tile; the evicted rows into the VNNI pairs a
** tdpbf16ps B operand wants), so after tilestored each 16-float row of a C tile is one kept
** token against 16 evicted rows: the running arg-max over the kept tokens is elementwise (a
** multiply, a compare, two selects, and the runner-up key's min and max) with the state of 32
** evicted rows in 6 vectors and no horizontal step. Kept tokens in increasing order with a
** strictly greater key replacing the best: ties → the lower kept index. Blocking: groups of EGB
** bytes of packed evicted rows (L2) × chunks of KCB bytes of kept rows (L2) × evicted blocks of
** 32 × kept tiles of 32 (2 × 2 C tiles, 4 tile loads per 4 tdpbf16ps); the arg-max of a pair of C tiles runs one step later, its rows
** interleaved with the next pair's tdpbf16ps. Measured (session 10, 1 thread, n = 4096, one
** head): 0.70 ms of tiles alone, 0.88 ms with the arg-max (0.99 with the arg-max after the
** tiles instead of interleaved, 1.25 with the kept rows read from the cache in place).
** The kernel returns the best key (NaN: a near tie), its dot e·k (recomputed after the pass for the
** winner alone by the same tdpbf16ps sequence: windots) and kept index per evicted row; the runtime
** evaluates the policy's similarity of that pair once (mpair 3: the same f32 operations mbest
** applies to the same dot). It returns 1 (nothing written that the caller reads) when it does
** not apply: a stub for every other policy or config, the cosine check failing, an evicted row
** without a winner (NaN keys): the caller then runs qkt + mbest.
**
** msimx(K, ldk, m, EK, nE, es, ks, Ep, kinv, bkey, bdot, bidx): K the m kept rows (token stride
** ldk elements), EK the nE evicted rows [nE][d], es / ks the row-scalar tables (lde = nE, ldks =
** m), workspace Ep ((round32(nE) + round32(m)) * d bf16: the packed evicted, then kept, rows),
** kinv (round32(m) floats), bkey / bdot / bidx (round32(nE) each).
*/
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include "codegen/x86/gen.h"
#include "compiler/mplan.h"

/* bytes of packed kept rows per chunk (L2, beside an evicted group): 1024 kept tokens at d = 128.
** Session 12 (one head, the kernel alone, interleaved, load ~10): chunks of 128 tokens (32 KiB, L1)
** -> 256 / 512 / 1024 ran 2.5-6.5 % / 2.5-5 % / 3-6 % faster each step (n = 4096 and 32768), 2048 as
** 1024 within noise: each chunk costs a step of arg-max alone and the state's loads and stores per
** evicted block, and the A tiles load as fast from L2 */
#define KCB (256L * 1024)
#define EGB (512L * 1024)  /* bytes of packed evicted rows per group (in L2 while the kept chunks pass) */

/* the ranking form: 0 none, 1 cosine (the slots of |e|, |k| and the clamp c), 2 plain dot */
static int simform(const KiFn *f, int *sa, int *sb, double *c)
{
	KiMSim sf;
	ki_msimform(f, f->merge.sim, &sf);
	if (!sf.fast || KI_RKIND(f->merge.sim) != RK_INS)
		return 0;
	int r = KI_RIDX(f->merge.sim);
	if (r == sf.dot)
		return 2;
	const KiIns *dv = &f->ins[r];
	if (dv->op != KO_div || KI_RKIND(dv->arg[0]) != RK_INS || KI_RIDX(dv->arg[0]) != sf.dot ||
	    KI_RKIND(dv->arg[1]) != RK_INS)
		return 0;
	/* the denominator: max(A B, c) (c > 0; the cosine) or A B (no clamp: then every product must
	** be a normal f32, c = FLT_MIN in the check) */
	const KiIns *mu = &f->ins[KI_RIDX(dv->arg[1])];
	*c = FLT_MIN;
	if (mu->op == KO_max) {
		int ci0 = KI_RKIND(mu->arg[1]) == RK_CON ? 1 : KI_RKIND(mu->arg[0]) == RK_CON ? 0 : -1;
		if (ci0 < 0 || KI_RKIND(mu->arg[1 - ci0]) != RK_INS || !(f->con[KI_RIDX(mu->arg[ci0])] >= FLT_MIN))
			return 0;
		*c = f->con[KI_RIDX(mu->arg[ci0])];
		mu = &f->ins[KI_RIDX(mu->arg[1 - ci0])];
	}
	if (mu->op != KO_mul || KI_RKIND(mu->arg[0]) != RK_INS || KI_RKIND(mu->arg[1]) != RK_INS)
		return 0;
	int *slot = malloc(((size_t)f->nins + 1) * sizeof *slot), nes, nks, ok = 0;
	uint8_t *side = malloc((size_t)f->nins + 1);
	if (slot && side && ki_mslots(f, slot, &nes, &nks) == 0) {
		ki_msides(f, side);
		int a = KI_RIDX(mu->arg[0]), bq = KI_RIDX(mu->arg[1]);
		if (side[a] == KI_MK)
			a = KI_RIDX(mu->arg[1]), bq = KI_RIDX(mu->arg[0]);
		/* a scalar of the evicted row and one of the kept row (their signs checked at run time) */
		ok = side[a] == KI_ME && side[bq] == KI_MK && slot[a] >= 0 && slot[bq] >= 0;
		*sa = slot[a], *sb = slot[bq];
	}
	free(slot), free(side);
	return ok ? 1 : 0;
}

/* x (i32) in 16 lanes */
static LLVMValueRef isplat(Gen *g, LLVMValueRef x)
{
	LLVMTypeRef vt = LLVMVectorType(g->i32, 16);
	LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vt), x, LLVMConstInt(g->i32, 0, 0), "");
	return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vt), LLVMConstNull(vt), "");
}

static LLVMValueRef tsz(Gen *g, int t) { return LLVMConstInt(LLVMInt8TypeInContext(g->cx), (unsigned)t, 0); }


/* tileloadd64 / tilestored64 of tile t at ptr p, row stride st bytes (a value) */
static void tio(Gen *g, const char *name, int t, LLVMValueRef p, LLVMValueRef st)
{
	LLVMValueRef a[3] = { tsz(g, t), p, st };
	amx(g, name, a, 3);
}

/* the kernel's loop state */
typedef struct Mx {
	LLVMValueRef kinv, Kp, Ct, Eb, sk, sd, si;
	int d;
	/* reduce: the running best key / runner-up key / kept index of the two evicted halves, Ct[p]'s rows */
	LLVMValueRef vk[2], vd[2], vi[2], C, kt;
} Mx;

/* the running arg-max over kept rows r0 .. r1-1 of the reduced pair of tiles (X->C, kept tokens
** X->kt..): per kept row and evicted half, key = dot * kinv[k]; a strictly greater key takes
** the best key and k; the runner-up key (vd) = max(runner-up, min(key, best before)): the
** second greatest key (the best's own value again when two keys tie). A NaN key (kept rows
** past m) changes nothing. */
static void rrows(Gen *g, Mx *X, int r0, int r1)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef v16f = fty(g, 16);
	for (int r = r0; r < r1 && X->C; r++) {
		LLVMValueRef kr = LLVMBuildAdd(b, X->kt, ci(g, r), "");
		LLVMValueRef f = splat(g, ldf(g, X->kinv, kr), 16);
		/* the row's index in 16 lanes once for both halves (then a masked move each) */
		LLVMValueRef ix = isplat(g, LLVMBuildTrunc(b, kr, g->i32, ""));
		{   /* opaque to the optimizer: else it folds the broadcast back into each masked move */
			LLVMTypeRef vi = LLVMVectorType(g->i32, 16), ft = LLVMFunctionType(vi, &vi, 1, 0);
			LLVMValueRef asmv = LLVMGetInlineAsm(ft, "", 0, "=v,0", 4, 0, 0, LLVMInlineAsmDialectATT, 0);
			ix = LLVMBuildCall2(b, ft, asmv, &ix, 1, "");
		}
		for (int t = 0; t < 2; t++) {
			LLVMValueRef c = ld(g, v16f, X->C, ci(g, (long)r * 2 + t), 64);
			LLVMValueRef key = LLVMBuildFMul(b, c, f, "");
			LLVMValueRef gt = LLVMBuildFCmp(b, LLVMRealOGT, key, X->vk[t], "");
			/* key >= best: the best before; else the key (a NaN key, a kept row past m, gives NaN,
			** which the OGT below never takes: the runner-up stays) */
			LLVMValueRef lo = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGE, key, X->vk[t], ""), X->vk[t], key, "");
			X->vd[t] = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, lo, X->vd[t], ""), lo, X->vd[t], "");
			X->vk[t] = LLVMBuildSelect(b, gt, key, X->vk[t], "");
			X->vi[t] = LLVMBuildSelect(b, gt, ix, X->vi[t], "");
		}
	}
}

/* One step: the 32 kept rows kt.. × the 32 evicted rows of Eb into Ct[p] ([32][32] floats: C
** tile (i, j) at rows 16i.., columns 16j..; kt NULL: none), and the running arg-max over the
** pair of tiles stored one step before, Ct[rp] of the kept tokens rkt.. (rkt NULL: none), its
** rows interleaved with the tdpbf16ps (two per product): the tile unit and the vector units
** work side by side, no long run of vector work holds the next products back in the
** reorder buffer */
static void step(Gen *g, Mx *X, LLVMValueRef kt, LLVMValueRef p, LLVMValueRef rkt, LLVMValueRef rp)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef v16f = fty(g, 16), v16i = LLVMVectorType(g->i32, 16);
	int d = X->d, d2 = d / 2, rs = 32 / (d / 32 * 4);   /* reduced rows per product */
	X->C = rkt ? gep(g, g->f32, X->Ct, LLVMBuildMul(b, rp, ci(g, 32 * 32), "")) : NULL, X->kt = rkt;
	for (int t = 0; t < 2 && rkt; t++) {
		X->vk[t] = ld(g, v16f, X->sk, ci(g, t), 64);
		X->vd[t] = ld(g, v16f, X->sd, ci(g, t), 64);
		X->vi[t] = ld(g, v16i, X->si, ci(g, t), 64);
	}
	if (kt) {
		LLVMValueRef Ab = gep(g, g->i16, X->Kp, LLVMBuildMul(b, kt, ci(g, d), ""));   /* tiles kt/16, kt/16 + 1 */
		LLVMValueRef A1 = gep(g, g->i16, Ab, ci(g, 16L * d)), As = ci(g, 64);
		for (int t = 0; t < 4; t++) {
			LLVMValueRef a = tsz(g, t);
			amx(g, "llvm.x86.tilezero", &a, 1);
		}
		for (int k = 0, r = 0; k < d / 32; k++) {
			/* A tiles 4, 5: kept rows 0-15, 16-31; B tiles 6, 7: evicted 0-15, 16-31 */
			static const int ta[4] = { 4, 4, 5, 5 }, tb[4] = { 6, 7, 6, 7 };
			for (int t = 0; t < 4; t++) {
				if (t == 0)
					tio(g, "llvm.x86.tileloadd64", 4, gep(g, g->i16, Ab, ci(g, 512L * k)), As);
				if (t < 2)
					tio(g, "llvm.x86.tileloadd64", tb[t], gep(g, g->i32, X->Eb, ci(g, t * 16L * d2 + (long)k * 256)),
					    ci(g, 64));
				if (t == 2)
					tio(g, "llvm.x86.tileloadd64", 5, gep(g, g->i16, A1, ci(g, 512L * k)), As);
				LLVMValueRef a[3] = { tsz(g, t), tsz(g, ta[t]), tsz(g, tb[t]) };
				amx(g, "llvm.x86.tdpbf16ps", a, 3);
				rrows(g, X, r, r + rs);
				r += rs;
			}
		}
		LLVMValueRef C = gep(g, g->f32, X->Ct, LLVMBuildMul(b, p, ci(g, 32 * 32), ""));
		for (int t = 0; t < 4; t++)
			tio(g, "llvm.x86.tilestored64", t, gep(g, g->f32, C, ci(g, (t / 2) * 16L * 32 + (t % 2) * 16)), ci(g, 128));
		rrows(g, X, d / 32 * 4 * rs, 32);
	} else
		rrows(g, X, 0, 32);
	for (int t = 0; t < 2 && rkt; t++) {
		st_(g, v16f, X->vk[t], X->sk, ci(g, t), 64);
		st_(g, v16f, X->vd[t], X->sd, ci(g, t), 64);
		st_(g, v16i, X->vi[t], X->si, ci(g, t), 64);
	}
}

/* near ties (the cosine form): the pass ranks by key = fl(e·k * fl(1/B)); the policy's
** similarity, the qkt + mbest path's, is fl(e·k / fl(A B)) (A B >= c checked), so A·sim = key
** (1 + θ) with |θ| <= 4u (u = 2^-24: two roundings each side). The best key k1 is also the best
** similarity, strictly, when k1 - k2 > 4u (|k1| + |k2|) for the runner-up key k2 (then for every
** other key too). Marked (bkey[e] NaN: the caller re-checks the row by the exact path) unless
** gap = k1 - k2 > 2^-20 (2 |k1| + gap) + A 2^-110 + 2^-140, computed as gap (1 - 2^-20) >
** 2^-19 |k1| + ...: four times that bound (|k2| <= |k1| + gap), plus the absolute error a
** subnormal similarity or key may add. Exact ties (gap 0) and NaN gaps are marked; the rows
** of one kept token (k2 = -inf: gap inf) are not. */
static void neartie(Gen *g, LLVMValueRef e, LLVMValueRef a, LLVMValueRef bkey, LLVMValueRef bsec)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef k1 = ldf(g, bkey, e), gap = LLVMBuildFSub(b, k1, ldf(g, bsec, e), "");
	LLVMValueRef ak = intr(g, "llvm.fabs", g->f32, &k1, 1);
	LLVMValueRef mg = LLVMBuildFMul(b, cfv(g, 0x1p-19, 1), ak, "");
	mg = LLVMBuildFAdd(b, mg, LLVMBuildFAdd(b, LLVMBuildFMul(b, a, cfv(g, 0x1p-110, 1), ""), cfv(g, 0x1p-140, 1), ""), "");
	LLVMValueRef far = LLVMBuildFCmp(b, LLVMRealOGT, LLVMBuildFMul(b, gap, cfv(g, 1 - 0x1p-20, 1), ""), mg, "");
	storef(g, LLVMBuildSelect(b, far, k1, cfv(g, NAN, 1), ""), bkey, e);
}

/* bdot[e] = the dot of evicted row e with its winner bidx[e] (every row has one), 16 rows at a
** time: A tile k = channels 32k.. of the 16 winners' packed kept rows (Kp, 64 bytes each),
** B = the evicted block's packed pairs (Ep, as the pass reads them), C tile 0 from zero over
** k = 0 .. d/32 - 1 as in the pass; the diagonal is the winners' dots */
static void windots(Gen *g, LLVMValueRef Kp, LLVMValueRef Ep, LLVMValueRef bidx, LLVMValueRef bdot, LLVMValueRef nE)
{
	LLVMBuilderRef b = g->b;
	int d = g->d, d2 = d / 2;
	LLVMTypeRef v32s = LLVMVectorType(g->i16, 32);
	LLVMValueRef Ab = entry_alloca(g, LLVMArrayType(g->i16, (unsigned)(16 * d)));
	LLVMValueRef Cd = entry_alloca(g, LLVMArrayType(g->f32, 16 * 16));
	LLVMSetAlignment(Ab, 64), LLVMSetAlignment(Cd, 64);
	Loop le, li;
	LLVMValueRef e0 = loop_begin2(g, ci(g, 0), nE, 16, 1, &le);
	LLVMValueRef i = loop_begin(g, ci(g, 0), ci(g, 16), 1, &li);   /* rolled: cold compile time */
	{
		/* rows past nE: bidx -1 (the state's initial value over round32(nE)): kept row 0 */
		LLVMValueRef j = LLVMBuildSExt(b, ld(g, g->i32, bidx, LLVMBuildAdd(b, e0, i, ""), 4), g->i64, "");
		j = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, j, ci(g, 0), ""), ci(g, 0), j, "");
		LLVMValueRef src = LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildLShr(b, j, ci(g, 4), ""), ci(g, 16L * d), ""),
		                                LLVMBuildMul(b, LLVMBuildAnd(b, j, ci(g, 15), ""), ci(g, 32), ""), "");
		for (int k = 0; k < d / 32; k++)
			st_(g, v32s, ld(g, v32s, gep(g, g->i16, Kp, LLVMBuildAdd(b, src, ci(g, 512L * k), "")), ci(g, 0), 64),
			    Ab, LLVMBuildAdd(b, i, ci(g, 16L * k), ""), 64);
	}
	loop_end(g, &li);
	loop_plain(g, &li);
	LLVMValueRef z = tsz(g, 0);
	amx(g, "llvm.x86.tilezero", &z, 1);
	LLVMValueRef Eb = gep(g, g->i32, Ep, LLVMBuildMul(b, e0, ci(g, d2), ""));
	for (int k = 0; k < d / 32; k++) {
		tio(g, "llvm.x86.tileloadd64", 4, gep(g, g->i16, Ab, ci(g, 512L * k)), ci(g, 64));
		tio(g, "llvm.x86.tileloadd64", 6, gep(g, g->i32, Eb, ci(g, (long)k * 256)), ci(g, 64));
		LLVMValueRef a[3] = { tsz(g, 0), tsz(g, 4), tsz(g, 6) };
		amx(g, "llvm.x86.tdpbf16ps", a, 3);
	}
	tio(g, "llvm.x86.tilestored64", 0, Cd, ci(g, 64));
	/* the diagonal: element (i, i) of each row */
	Loop ld_;
	LLVMValueRef q = loop_begin(g, ci(g, 0), ci(g, 16), 1, &ld_);
	storef(g, ldf(g, Cd, LLVMBuildMul(b, q, ci(g, 17), "")), bdot, LLVMBuildAdd(b, e0, q, ""));
	loop_end(g, &ld_);
	loop_plain(g, &ld_);
	loop_end(g, &le);
}

void kx_gen_msimx(Gen *g, const KiFn *f)
{
	LLVMTypeRef ps[12] = { g->ptr, g->i64, g->i64, g->ptr, g->i64, g->ptr, g->ptr, g->ptr, g->ptr, g->ptr, g->ptr, g->ptr };
	newfn(g, "kvcc_msimx", g->i64, ps, 12);
	int sa = -1, sb = -1, form = 0;
	double cl = 0;
	if (f->merge.kind == MG_nearest && !g->c.noamx && g->dtype == KVCC_BF16 && g->d % 32 == 0 && g->d <= 512)
		form = simform(f, &sa, &sb, &cl);
	LLVMBuilderRef b = g->b;
	if (!form) {
		LLVMBuildRet(b, ci(g, 1));
		return;
	}
	LLVMValueRef K = LLVMGetParam(g->fn, 0), ldk = LLVMGetParam(g->fn, 1), m = LLVMGetParam(g->fn, 2);
	LLVMValueRef EK = LLVMGetParam(g->fn, 3), nE = LLVMGetParam(g->fn, 4), es = LLVMGetParam(g->fn, 5);
	LLVMValueRef ks = LLVMGetParam(g->fn, 6), Ep = LLVMGetParam(g->fn, 7), kinv = LLVMGetParam(g->fn, 8);
	LLVMValueRef bkey = LLVMGetParam(g->fn, 9), bdot = LLVMGetParam(g->fn, 10), bidx = LLVMGetParam(g->fn, 11);
	int d = g->d, d2 = d / 2;
	LLVMTypeRef v16f = fty(g, 16), v16i = LLVMVectorType(g->i32, 16);
	LLVMBasicBlockRef bfail = LLVMAppendBasicBlockInContext(g->cx, g->fn, "fail");
	LLVMBasicBlockRef brel = LLVMAppendBasicBlockInContext(g->cx, g->fn, "failrel");
	LLVMValueRef nE32 = LLVMBuildAnd(b, LLVMBuildAdd(b, nE, ci(g, 31), ""), ci(g, -32), "");
	LLVMValueRef m32 = LLVMBuildAnd(b, LLVMBuildAdd(b, m, ci(g, 31), ""), ci(g, -32), "");
	/* 1. the keys' kept factors: kinv[k] = 1/B_k (dot / (A B), after its check) or 1; NaN past m */
	if (form == 1) {
		/* min and max of B (llvm.minimum / maximum: a NaN stays, and the checks fail): B normal
		** positive and finite, and for every evicted row fl(A min B) >= c and fl(A max B) finite —
		** then every pair's denominator is A B (or c: never reached), normal and finite, A > 0, so
		** that the ranking of dot / den over k is the ranking of dot * fl(1/B) (up to rounding) */
		LLVMValueRef mn = entry_alloca(g, g->f32), mx = entry_alloca(g, g->f32);
		LLVMBuildStore(b, cfv(g, INFINITY, 1), mn);
		LLVMBuildStore(b, cfv(g, 0, 1), mx);
		Loop lk;
		LLVMValueRef k = loop_begin2(g, ci(g, 0), m, 1, 1, &lk);
		LLVMValueRef x = ldf(g, ks, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, sb), m, ""), k, ""));
		LLVMValueRef mm[2] = { x, LLVMBuildLoad2(b, g->f32, mn, "") }, mM[2] = { x, LLVMBuildLoad2(b, g->f32, mx, "") };
		LLVMBuildStore(b, intr(g, "llvm.minimum", g->f32, mm, 2), mn);
		LLVMBuildStore(b, intr(g, "llvm.maximum", g->f32, mM, 2), mx);
		storef(g, LLVMBuildFDiv(b, cfv(g, 1, 1), x, ""), kinv, k);
		loop_end(g, &lk);
		LLVMValueRef mb = LLVMBuildLoad2(b, g->f32, mn, ""), cc = cfv(g, (float)cl, 1), inf = cfv(g, INFINITY, 1);
		LLVMBasicBlockRef bfin = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kfinite");
		LLVMValueRef mB = LLVMBuildLoad2(b, g->f32, mx, "");
		LLVMBuildCondBr(b, LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOLT, mB, inf, ""),
		                                LLVMBuildFCmp(b, LLVMRealOGE, mb, cfv(g, FLT_MIN, 1), ""), ""), bfin, bfail);
		LLVMPositionBuilderAtEnd(b, bfin);
		Loop le;
		LLVMValueRef e = loop_begin2(g, ci(g, 0), nE, 1, 1, &le);
		LLVMValueRef a = ldf(g, es, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, sa), nE, ""), e, ""));
		LLVMValueRef ok = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGE, LLVMBuildFMul(b, a, mb, ""), cc, ""),
		                               LLVMBuildFCmp(b, LLVMRealOLT, LLVMBuildFMul(b, a, mB, ""), inf, ""), "");
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "cosok");
		LLVMBuildCondBr(b, ok, bn, bfail);
		LLVMPositionBuilderAtEnd(b, bn);
		loop_end(g, &le);
	} else {
		Loop lk;
		LLVMValueRef k = loop_begin2(g, ci(g, 0), m, 1, 1, &lk);
		storef(g, cfv(g, 1, 1), kinv, k);
		loop_end(g, &lk);
	}
	{
		Loop lk;
		LLVMValueRef k = loop_begin2(g, m, m32, 1, 1, &lk);
		storef(g, cfv(g, NAN, 1), kinv, k);
		loop_end(g, &lk);
	}
	/* 2. the evicted rows packed: Ep[(e/16 * d2 + c2) * 16 + e%16] = the bf16 pair (2c2, 2c2+1) of
	** row e (0 past nE), 16 rows × 16 pairs transposed at a time; the state: key -inf, index -1 */
	{
		Loop le, lc, ls;
		LLVMValueRef e0 = loop_begin2(g, ci(g, 0), nE32, 16, 1, &le);
		LLVMValueRef c2 = loop_begin(g, ci(g, 0), ci(g, d2), 16, &lc);
		LLVMValueRef r[16];
		for (int i = 0; i < 16; i++) {
			LLVMValueRef e = LLVMBuildAdd(b, e0, ci(g, i), ""), in = LLVMBuildICmp(b, LLVMIntSLT, e, nE, "");
			LLVMValueRef row = gep(g, g->i32, EK, LLVMBuildMul(b, LLVMBuildSelect(b, in, e, ci(g, 0), ""), ci(g, d2), ""));
			r[i] = LLVMBuildSelect(b, in, ld(g, v16i, gep(g, g->i32, row, c2), ci(g, 0), 2), LLVMConstNull(v16i), "");
		}
		kx_tr16(g, r);
		LLVMValueRef o = LLVMBuildMul(b, LLVMBuildAdd(b, LLVMBuildMul(b, e0, ci(g, d2 / 16), ""), c2, ""), ci(g, 16), "");
		for (int i = 0; i < 16; i++)
			st_(g, v16i, r[i], gep(g, g->i32, Ep, o), ci(g, i), 4);
		loop_end(g, &lc);
		loop_end(g, &le);
		LLVMValueRef e = loop_begin2(g, ci(g, 0), nE32, 1, 1, &ls);
		storef(g, cfv(g, -INFINITY, 1), bkey, e);
		storef(g, cfv(g, -INFINITY, 1), bdot, e);
		st_(g, g->i32, LLVMConstInt(g->i32, (unsigned long long)-1, 1), bidx, e, 4);
		loop_end(g, &ls);
	}
	/* the kept rows packed tile by tile: Kp[((j/16 * d/32 + k) * 16 + j%16) * 32 + c] = channel 32k + c
	** of kept row j (0 past m: their keys are NaN), so that each A tile is 1 KiB contiguous */
	LLVMValueRef Kp = gep(g, g->i16, Ep, LLVMBuildMul(b, nE32, ci(g, d), ""));
	{
		LLVMTypeRef v32s = LLVMVectorType(g->i16, 32);
		Loop lr;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), m32, 1, 1, &lr);
		LLVMValueRef in = LLVMBuildICmp(b, LLVMIntSLT, j, m, "");
		LLVMValueRef src = gep(g, g->i16, K, LLVMBuildMul(b, LLVMBuildSelect(b, in, j, ci(g, 0), ""), ldk, ""));
		LLVMValueRef dst = gep(g, g->i16, Kp, LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildLShr(b, j, ci(g, 4), ""), ci(g, 16L * d), ""),
		                                                    LLVMBuildMul(b, LLVMBuildAnd(b, j, ci(g, 15), ""), ci(g, 32), ""), ""));
		for (int k = 0; k < d / 32; k++) {
			LLVMValueRef x = LLVMBuildSelect(b, in, ld(g, v32s, gep(g, g->i16, src, ci(g, 32L * k)), ci(g, 0), 2),
			                                 LLVMConstNull(v32s), "");
			st_(g, v32s, x, dst, ci(g, 16L * k), 64);
		}
		loop_end(g, &lr);
	}
	LLVMValueRef Ct = entry_alloca(g, LLVMArrayType(g->f32, 2 * 32 * 32));
	LLVMSetAlignment(Ct, 64);
	kx_amxcfg(g);   /* palette 1, tiles 0-7 of 16 rows × 64 bytes */
	/* 3. kept chunks × evicted blocks of 32 × kept tiles of 32: C tiles 0-3 (2 × 2 blocks of 16 kept
	** × 16 evicted), A tiles 4-5 (the two 16-row kept halves), B tiles 6-7 (the two evicted
	** halves); each pair of tiles stored into Ct[b] is reduced one step later, after the next
	** pair's tdpbf16ps are issued (no load of a just-stored tile row; the vector work overlaps
	** the tile unit's) */
	Mx X = { .kinv = kinv, .Kp = Kp, .Ct = Ct, .d = d };
	Loop leg, lkc, leb, lkt;
	long EG = (EGB / (2L * d)) / 32 * 32;
	LLVMValueRef eg = loop_begin2(g, ci(g, 0), nE32, (int)EG, 1, &leg);
	LLVMValueRef ege = LLVMBuildAdd(b, eg, ci(g, EG), "");
	ege = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, ege, nE32, ""), ege, nE32, "");
	int KC = (int)(KCB / (2L * d)) / 32 * 32;
	LLVMValueRef kc = loop_begin2(g, ci(g, 0), m32, KC, 1, &lkc);
	LLVMValueRef kce = LLVMBuildAdd(b, kc, ci(g, KC), "");
	kce = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, kce, m32, ""), kce, m32, "");
	LLVMValueRef eb = loop_begin2(g, eg, ege, 32, 1, &leb);
	X.sk = entry_alloca(g, LLVMArrayType(v16f, 2)), X.sd = entry_alloca(g, LLVMArrayType(v16f, 2));
	X.si = entry_alloca(g, LLVMArrayType(v16i, 2));
	for (int t = 0; t < 2; t++) {
		LLVMValueRef o = LLVMBuildAdd(b, eb, ci(g, 16 * t), "");
		st_(g, v16f, ld(g, v16f, gep(g, g->f32, bkey, o), ci(g, 0), 4), X.sk, ci(g, t), 64);
		st_(g, v16f, ld(g, v16f, gep(g, g->f32, bdot, o), ci(g, 0), 4), X.sd, ci(g, t), 64);
		st_(g, v16i, ld(g, v16i, gep(g, g->i32, bidx, o), ci(g, 0), 4), X.si, ci(g, t), 64);
	}
	X.Eb = gep(g, g->i32, Ep, LLVMBuildMul(b, eb, ci(g, d2), ""));   /* blocks eb/16, eb/16 + 1 */
	step(g, &X, kc, ci(g, 0), NULL, NULL);
	LLVMValueRef kt = loop_begin2(g, LLVMBuildAdd(b, kc, ci(g, 32), ""), kce, 32, 1, &lkt);
	LLVMValueRef par = LLVMBuildAnd(b, LLVMBuildLShr(b, LLVMBuildSub(b, kt, kc, ""), ci(g, 5), ""), ci(g, 1), "");
	step(g, &X, kt, par, LLVMBuildSub(b, kt, ci(g, 32), ""), LLVMBuildXor(b, par, ci(g, 1), ""));
	loop_end(g, &lkt);
	LLVMValueRef last = LLVMBuildSub(b, kce, ci(g, 32), "");
	step(g, &X, NULL, NULL, last, LLVMBuildAnd(b, LLVMBuildLShr(b, LLVMBuildSub(b, last, kc, ""), ci(g, 5), ""), ci(g, 1), ""));
	for (int t = 0; t < 2; t++) {
		LLVMValueRef o = LLVMBuildAdd(b, eb, ci(g, 16 * t), "");
		st_(g, v16f, ld(g, v16f, X.sk, ci(g, t), 64), gep(g, g->f32, bkey, o), ci(g, 0), 4);
		st_(g, v16f, ld(g, v16f, X.sd, ci(g, t), 64), gep(g, g->f32, bdot, o), ci(g, 0), 4);
		st_(g, v16i, ld(g, v16i, X.si, ci(g, t), 64), gep(g, g->i32, bidx, o), ci(g, 0), 4);
	}
	loop_end(g, &leb);
	loop_end(g, &lkc);
	loop_end(g, &leg);
	/* 4. every evicted row has a winner (else: NaN keys, the caller's generic path); a near tie
	** (the cosine form) marked for the caller's exact re-check: bkey NaN */
	{
		Loop le;
		LLVMValueRef e = loop_begin2(g, ci(g, 0), nE, 1, 1, &le);
		LLVMValueRef ok = LLVMBuildICmp(b, LLVMIntSGE, ld(g, g->i32, bidx, e, 4), LLVMConstInt(g->i32, 0, 0), "");
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "won");
		LLVMBuildCondBr(b, ok, bn, brel);
		LLVMPositionBuilderAtEnd(b, bn);
		if (form == 1)
			neartie(g, e, ldf(g, es, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, sa), nE, ""), e, "")), bkey, bdot);
		loop_end(g, &le);
	}
	/* 5. the winners' dots: per 16 evicted rows, the winners' kept rows gathered into A tiles
	** against the same packed evicted rows (the same tdpbf16ps sequence as the pass: the
	** same f32 value, element (i, i) of the product) */
	windots(g, Kp, Ep, bidx, bdot, nE);
	amx(g, "llvm.x86.tilerelease", NULL, 0);
	LLVMBuildRet(b, ci(g, 0));
	LLVMPositionBuilderAtEnd(b, brel);   /* a row with no winner: after kx_amxcfg, so release the tiles */
	amx(g, "llvm.x86.tilerelease", NULL, 0);
	LLVMBuildBr(b, bfail);
	LLVMPositionBuilderAtEnd(b, bfail);
	LLVMBuildRet(b, ci(g, 1));
}
