/*
** The policy's expressions as generated code: the fused token_map loops of the plan (tmap), the
** observe hook of decode (observe) and the attn_score logits' multipliers (ascale). The runtime
** evaluates nothing: it calls these with a kvcc_tmap_ctx (runtime/artifact.h).
*/
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "codegen/x86/gen.h"
#include "compiler/interp.h"

/*
** tmap(gid, ctx): the plan's fused token_map loops (plan.h tgen/tout), one switch case per loop,
** entered with its first instruction's index; ctx = kvcc_tmap_ctx (runtime/artifact.h). A loop evaluates its
** values without a token axis once (size, info, [chan] values and their reductions), then makes
** one pass over the tokens, then finishes its token reductions. Over the tokens it runs W-lane
** token chunks and a scalar tail, or, when a value has the chan axis (K / V rows), one token
** per step with chan in W-lane chunks. A value is an array of elements: group (G, unrolled:
** reductions over group stay in registers) × chan chunk (d/W); leaves (x.t, x.pos, K / V rows,
** state, rand) are computed where read. Same arithmetic as the reference interpreter in f32
** (interp.c evalins): exp/log/pow are the libm calls, max/min propagate NaN, comparisons give 1/0,
** rand is ki_rand; sums over chan / token lanes are reassociated (within the f32 tolerance).
*/
/* a constant of type t (f32 or f64, scalar or vector) */
static LLVMValueRef tm_cst(LLVMTypeRef t, double v)
{
	if (LLVMGetTypeKind(t) != LLVMVectorTypeKind)
		return LLVMConstReal(t, v);
	LLVMValueRef es[64];
	unsigned w = LLVMGetVectorSize(t);
	for (unsigned i = 0; i < w && i < 64; i++)
		es[i] = LLVMConstReal(LLVMGetElementType(t), v);
	return LLVMConstVector(es, w < 64 ? w : 64);
}

/* one elementwise op in the type of its first operand: the loops' f32 lanes, or the f64 scalars
** of the select keep count (keep.c) */
static LLVMValueRef tm_bin(Gen *g, int op, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c, int w)
{
	LLVMBuilderRef bd = g->b;
	LLVMTypeRef t = LLVMTypeOf(a);
	int dbl = LLVMGetTypeKind(w == 1 ? t : LLVMGetElementType(t)) == LLVMDoubleTypeKind;
	LLVMRealPredicate pr = LLVMRealOLT;
	switch (op) {
	case KO_neg: return LLVMBuildFNeg(bd, a, "");
	case KO_exp: return intr(g, "llvm.exp", t, &a, 1);
	case KO_log: return intr(g, "llvm.log", t, &a, 1);
	case KO_sqrt: return intr(g, "llvm.sqrt", t, &a, 1);
	case KO_abs: return intr(g, "llvm.fabs", t, &a, 1);
	case KO_sin: return intr(g, "llvm.sin", t, &a, 1);
	case KO_cos: return intr(g, "llvm.cos", t, &a, 1);
	case KO_floor: return intr(g, "llvm.floor", t, &a, 1);
	case KO_rint: return intr(g, "llvm.roundeven", t, &a, 1);   /* ties to even, whatever the mode */
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
		LLVMTypeRef et = dbl ? g->i64 : g->i32, it = w == 1 ? et : LLVMVectorType(et, (unsigned)w);
		LLVMValueRef neg = LLVMBuildICmp(bd, LLVMIntSLT, LLVMBuildBitCast(bd, a, it, ""), LLVMConstNull(it), "");
		LLVMValueRef r = LLVMBuildSelect(bd, neg, mx ? b : a, mx ? a : b, "");
		r = LLVMBuildSelect(bd, lt, b, r, "");
		r = LLVMBuildSelect(bd, gt, a, r, "");
		LLVMValueRef un = LLVMBuildFCmp(bd, LLVMRealUNO, a, b, "");
		return LLVMBuildSelect(bd, un, tm_cst(t, NAN), r, "");
	}
	case KO_lt: pr = LLVMRealOLT; break;
	case KO_le: pr = LLVMRealOLE; break;
	case KO_eq: pr = LLVMRealOEQ; break;
	case KO_ne: pr = LLVMRealUNE; break;
	case KO_where:
		return LLVMBuildSelect(bd, LLVMBuildFCmp(bd, LLVMRealUNE, a, tm_cst(t, 0.0), ""), b, c, "");
	default: return tm_cst(t, NAN);
	}
	return LLVMBuildUIToFP(bd, LLVMBuildFCmp(bd, pr, a, b, ""), t, "");
}

/* context fields (kvcc_tmap_ctx: 8 bytes each) */
enum { TC_vals, TC_par, TC_K, TC_V, TC_pos, TC_state, TC_n, TC_ldk, TC_sstride, TC_layer, TC_head, TC_layers,
       TC_heads, TC_step, TC_obs, TC_attn, TC_lda, TC_err, TC_roff, TC_ratio, TC_budget, TC_wts, TC_nout };

typedef struct Tm {
	Gen *g;
	const KiFn *f;
	const uint8_t *tgen, *tout;   /* the loops: the plan's token_map or observe-hook loops */
	int s, e;                 /* the loop's instructions */
	int row;                  /* one token per step, chan in W-lane chunks */
	int w;                    /* token lanes of the current step (1 when row) */
	LLVMValueRef ctx, n, t;   /* t: the step's first token */
	LLVMValueRef *pv;         /* [nins] vals[j] */
	LLVMValueRef *sc;         /* [npar] parameters (f32) */
	LLVMValueRef **pre;       /* [nins] values without a token axis */
	LLVMValueRef **cur;       /* [nins] the step's values */
	LLVMValueRef **acc;       /* [nins] token reductions: accumulators (W-lane set, then tail set) */
	LLVMValueRef *pk;         /* [nins] pools: kernel (i64); segment ops: size; shift: offset */
	LLVMValueRef *ps;         /* [nins] segment ops: start, clipped to n (i64) */
	LLVMValueRef **ck, **cv;  /* [nins] segment ops: per element, the cached segment's start and value */
	LLVMValueRef *hc, *hu;    /* [nins] scans: the carry (f32 alloca) and the first token to scan (i64) */
	LLVMValueRef o;           /* inside a reduction over out: the out index (i64), else NULL */
	LLVMValueRef **oc;        /* [nins] out-axis values at index o (computed in the loop over out) */
	jmp_buf *oom;             /* where a failed allocation goes (tm_loops) */
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

/* n zeroed values; out of memory leaves the loops being built (tm_loops) */
static LLVMValueRef *tm_calloc(Tm *T, size_t n)
{
	LLVMValueRef *p = calloc(n, sizeof *p);
	if (!p)
		longjmp(*T->oom, 1);
	return p;
}

/* room for instruction i's elements (group × chan chunk) in tab */
static void tm_new(Tm *T, int i, LLVMValueRef **tab)
{
	uint8_t ax = T->f->ins[i].axes;
	if (!tab[i])
		tab[i] = tm_calloc(T, (size_t)(tm_ng(T, ax) * tm_nc(T, ax)));
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

/* x.ratio (the instance's removed fraction: the ratio, or 1 - min(budget, n)/n with a budget) and
** x.nkeep (the generated kvcc_nkeep: the budget schedule) in double, as the reference (interp.c
** ratioof, ki_nkeep), rounded to f32; ctx ratio / budget are the call's kvcc_args */
static LLVMValueRef tm_budget(Tm *T, int inf)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	LLVMTypeRef dt = LLVMDoubleTypeInContext(g->cx);
	LLVMValueRef ratio = tm_field(T, TC_ratio, dt), budget = tm_field(T, TC_budget, g->i64);
	if (inf == INF_nkeep) {
		LLVMValueRef nk = LLVMGetNamedFunction(g->m, "kvcc_nkeep");
		LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->i64, dt, g->i64 };
		LLVMValueRef av[6] = { tm_field(T, TC_par, g->ptr), tm_field(T, TC_layer, g->i64), tm_field(T, TC_layers, g->i64),
		                       T->n, ratio, budget };
		LLVMValueRef k = LLVMBuildCall2(b, LLVMFunctionType(g->i64, ps, 6, 0), nk, av, 6, "");
		return LLVMBuildSIToFP(b, k, g->f32, "");
	}
	LLVMValueRef nd = LLVMBuildSIToFP(b, T->n, dt, "");
	LLVMValueRef bmin = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, budget, T->n, ""), budget, T->n, "");
	LLVMValueRef byb = LLVMBuildFSub(b, LLVMConstReal(dt, 1), LLVMBuildFDiv(b, LLVMBuildSIToFP(b, bmin, dt, ""), nd, ""), "");
	byb = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, T->n, ci(g, 0), ""), byb, LLVMConstReal(dt, 0), "");
	LLVMValueRef r = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, budget, ci(g, 0), ""), ratio, byb, "");
	return LLVMBuildFPTrunc(b, r, g->f32, "");
}

/* Weight in->aux at this instance: its elements (group × chan chunks) from the packed buffer
** ctx.wts (runtime/artifact.h KaWeight: declaration order, each row-major over its declared
** axes, layer = layers, head = heads, group = G, chan = d). A chan chunk is one vector load when
** chan is the last axis, else W strided loads. */
static void tm_weight(Tm *T, const KiIns *in, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiFn *f = T->f;
	LLVMValueRef L = tm_field(T, TC_layers, g->i64), H = tm_field(T, TC_heads, g->i64);
	LLVMValueRef NO = tm_field(T, TC_nout, g->i64);
	LLVMValueRef off = ci(g, 0);
	for (int k = 0; k <= (int)in->aux; k++) {        /* the weights before it, then its own size */
		const KiWeight *w = &f->w[k];
		LLVMValueRef cnt = ci(g, 1);
		for (int j = 0; j < w->ndim && k < (int)in->aux; j++)
			cnt = LLVMBuildMul(b, cnt, w->ax[j] == WA_layer ? L : w->ax[j] == WA_head ? H : w->ax[j] == WA_out ? NO
			                                     : ci(g, w->ax[j] == WA_group ? g->G : g->d), "");
		if (k < (int)in->aux)
			off = LLVMBuildAdd(b, off, cnt, "");
	}
	/* row-major strides of its axes, and the instance's offset (layer, head) */
	const KiWeight *w = &f->w[in->aux];
	LLVMValueRef st[KI_MAXWDIM], s = ci(g, 1), sg = ci(g, 0), sc = ci(g, 0);
	int cstride1 = w->ax[w->ndim - 1] == WA_chan;
	if (T->o == NULL)
		for (int j = 0; j < w->ndim; j++)
			if (w->ax[j] == WA_out)
				longjmp(*T->oom, 2);            /* the plan keeps out values inside their reduction */
	for (int j = w->ndim - 1; j >= 0; j--) {
		st[j] = s;
		s = LLVMBuildMul(b, s, w->ax[j] == WA_layer ? L : w->ax[j] == WA_head ? H : w->ax[j] == WA_out ? NO
		                       : ci(g, w->ax[j] == WA_group ? g->G : g->d), "");
	}
	for (int j = 0; j < w->ndim; j++) {
		if (w->ax[j] == WA_layer)
			off = LLVMBuildAdd(b, off, LLVMBuildMul(b, tm_field(T, TC_layer, g->i64), st[j], ""), "");
		else if (w->ax[j] == WA_head)
			off = LLVMBuildAdd(b, off, LLVMBuildMul(b, tm_field(T, TC_head, g->i64), st[j], ""), "");
		else if (w->ax[j] == WA_group)
			sg = st[j];
		else if (w->ax[j] == WA_out)        /* inside the reduction over out (plan.c gen_ok) */
			off = LLVMBuildAdd(b, off, LLVMBuildMul(b, T->o ? T->o : ci(g, 0), st[j], ""), "");
		else
			sc = st[j];
	}
	LLVMValueRef base = tm_field(T, TC_wts, g->ptr);
	int ng = tm_ng(T, in->axes), nc = tm_nc(T, in->axes), wc = (in->axes & AXM(AX_chan)) ? g->W : 1;
	for (int gg = 0; gg < ng; gg++)
		for (int c = 0; c < nc; c++) {
			LLVMValueRef o = LLVMBuildAdd(b, off, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, gg), sg, ""),
			                                                   LLVMBuildMul(b, ci(g, (long)c * wc), sc, ""), ""), "");
			if (wc == 1 || cstride1) {
				out[gg * nc + c] = loadf(g, base, o, wc);
				continue;
			}
			LLVMValueRef v = LLVMGetPoison(fty(g, wc));
			for (int l = 0; l < wc; l++)
				v = LLVMBuildInsertElement(b, v, ldf(g, base, LLVMBuildAdd(b, o, LLVMBuildMul(b, ci(g, l), sc, ""), "")),
				                           LLVMConstInt(g->i32, (unsigned long long)l, 0), "");
			out[gg * nc + c] = v;
		}
}

static LLVMValueRef tm_opnd(Tm *T, KiRef r, int g, int c, int want);

/* A scalar operand in double: the seed of kv.random is read at full precision when it is a
** constant or a param (as the interpreter reads it), else the f32 value widened. */
static LLVMValueRef tm_dscalar(Tm *T, KiRef r)
{
	Gen *g = T->g;
	LLVMTypeRef dt = LLVMDoubleTypeInContext(g->cx);
	switch (KI_RKIND(r)) {
	case RK_CON: return LLVMConstReal(dt, T->f->con[KI_RIDX(r)]);
	case RK_PAR: return LLVMGetOperand(T->sc[KI_RIDX(r)], 0);    /* the load sc truncates */
	}
	return LLVMBuildFPExt(g->b, tm_opnd(T, r, 0, 0, 1), dt, "");
}

/* ki_rand(ki_seed(seed), layer, head, pos) for the step's tokens */
static LLVMValueRef tm_rand(Tm *T, LLVMValueRef seed)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	int w = T->w;
	LLVMTypeRef it = w == 1 ? g->i64 : LLVMVectorType(g->i64, (unsigned)w);
	LLVMValueRef pos = LLVMBuildSExt(b, tm_pos(T), it, "");
	LLVMValueRef lh = LLVMBuildXor(b, LLVMBuildShl(b, tm_field(T, TC_layer, g->i64), ci(g, 40), ""),
	                               LLVMBuildShl(b, tm_field(T, TC_head, g->i64), ci(g, 24), ""), "");
	LLVMValueRef fab = intr(g, "llvm.fabs", LLVMTypeOf(seed), &seed, 1);   /* ki_seed */
	LLVMValueRef ok = LLVMBuildFCmp(b, LLVMRealOLT, fab, LLVMConstReal(LLVMTypeOf(seed), 0x1p63), "");
	LLVMValueRef sd = LLVMBuildSelect(b, ok, LLVMBuildFPToSI(b, seed, g->i64, ""), ci(g, 0), "");
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
static LLVMValueRef tm_opnd(Tm *T, KiRef r, int g, int c, int want)
{
	Gen *G = T->g;
	int j = KI_RIDX(r);
	switch (KI_RKIND(r)) {
	case RK_CON: return cfv(G, (double)(float)T->f->con[j], want);
	case RK_PAR: return splat(G, T->sc[j], want);
	}
	uint8_t ax = ki_refaxes(T->f, r);
	LLVMValueRef x = tm_val(T, j)[((ax & AXM(AX_group)) ? g : 0) * tm_nc(T, ax) + ((ax & AXM(AX_chan)) ? c : 0)];
	return tm_wid(T, ax) == 1 && want > 1 ? splat(G, x, want) : x;
}

/* Reductions are built from the op table's sem column (compiler/ops.h KS_RED: init, map, comb,
** fin), one piece of code per kind, not per op; MAP_DEV (std) is refused by the plan. */
static LLVMValueRef tm_redinit(Gen *g, int op, int w) { return cfv(g, ki_sem(op)->init, w); }

/* comb(acc, v): CMB_ADD acc + v; CMB_MAX / CMB_MIN v if v > acc (v < acc) or v is NaN */
static LLVMValueRef tm_comb(Gen *g, int comb, LLVMValueRef acc, LLVMValueRef v)
{
	LLVMBuilderRef bd = g->b;
	if (comb == CMB_ADD)
		return LLVMBuildFAdd(bd, acc, v, "");
	LLVMValueRef better = LLVMBuildFCmp(bd, comb == CMB_MAX ? LLVMRealOGT : LLVMRealOLT, v, acc, "");
	better = LLVMBuildOr(bd, better, LLVMBuildFCmp(bd, LLVMRealUNO, v, v, ""), "");
	return LLVMBuildSelect(bd, better, v, acc, "");
}

/* one more element a (b: dot's other factor) into a reduction: comb(acc, map(a, b)); merge =
** combine partials (no map) */
static LLVMValueRef tm_redstep(Gen *g, int op, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b, int merge)
{
	const KiSem *s = ki_sem(op);
	if (!merge && s->map == MAP_SQ)
		a = LLVMBuildFMul(g->b, a, a, "");
	else if (!merge && s->map == MAP_MUL)
		a = LLVMBuildFMul(g->b, a, b, "");
	return tm_comb(g, s->comb, acc, a);
}

/* fin(x) with m elements (w lanes) */
static LLVMValueRef tm_redfin(Gen *g, int op, LLVMValueRef x, LLVMValueRef m, int w)
{
	switch (ki_sem(op)->fin) {
	case FIN_MEAN:
	case FIN_DIVK: return LLVMBuildFDiv(g->b, x, splat(g, m, w), "");
	case FIN_SQRT: return intr(g, "llvm.sqrt", fty(g, w), &x, 1);
	case FIN_RMS: {
		LLVMValueRef q = LLVMBuildFDiv(g->b, x, splat(g, m, w), "");
		return intr(g, "llvm.sqrt", fty(g, w), &q, 1);
	}
	}
	return x;
}

/* the lanes of a partial merged into a scalar: sums by a reassociating vector reduction,
** max / min lane by lane in order (their NaN rule) */
static LLVMValueRef tm_lanes(Gen *g, int op, LLVMValueRef acc, LLVMValueRef v, int w)
{
	if (w == 1)
		return tm_redstep(g, op, acc, v, NULL, 1);
	if (ki_sem(op)->comb == CMB_ADD && w == g->W) {
		LLVMValueRef args[2] = { LLVMConstReal(g->f32, -0.0), v };
		LLVMValueRef r = LLVMBuildCall2(g->b, g->red_ty, g->red, args, 2, "");
		LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc);
		return LLVMBuildFAdd(g->b, acc, r, "");
	}
	for (int k = 0; k < w; k++)
		acc = tm_redstep(g, op, acc, LLVMBuildExtractElement(g->b, v, LLVMConstInt(g->i32, (unsigned)k, 0), ""), NULL, 1);
	return acc;
}

/* reduction over out (weights with an out axis): a loop over o = 0 .. nout-1 that computes the
** out-axis values it reads at o (tm_val: T->oc) and accumulates them, element by element. The
** values first computed inside the loop are forgotten after it (they live in its body). */
static void tm_redout(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiFn *f = T->f;
	const KiIns *in = &f->ins[i];
	uint8_t ax = in->axes;
	KiRef bb = ki_nargs(in->op) > 1 ? in->arg[1] : KI_NIL;
	int w = tm_wid(T, ax), ne = tm_ng(T, ax) * tm_nc(T, ax);
	uint8_t *had = malloc((size_t)f->nins + 1);
	LLVMValueRef *acc = tm_calloc(T, (size_t)ne);
	if (!had)
		free(acc), longjmp(*T->oom, 1);
	for (int j = 0; j < f->nins; j++)
		had[j] = T->cur[j] != NULL;
	for (int k = 0; k < ne; k++) {
		acc[k] = entry_alloca(g, fty(g, w));
		LLVMBuildStore(b, tm_redinit(g, in->op, w), acc[k]);
	}
	LLVMValueRef no = tm_field(T, TC_nout, g->i64), so = T->o;
	Loop lo;
	T->o = loop_begin2(g, ci(g, 0), no, 1, 1, &lo);
	for (int gg = 0; gg < tm_ng(T, ax); gg++)
		for (int c = 0; c < tm_nc(T, ax); c++) {
			LLVMValueRef p = acc[gg * tm_nc(T, ax) + c];
			LLVMValueRef x = tm_redstep(g, in->op, LLVMBuildLoad2(b, fty(g, w), p, ""), tm_opnd(T, in->arg[0], gg, c, w),
			                            bb ? tm_opnd(T, bb, gg, c, w) : NULL, 0);
			LLVMBuildStore(b, x, p);
		}
	loop_end(g, &lo);
	T->o = so;
	for (int j = 0; j < f->nins; j++) {
		if (!had[j] && T->cur[j])
			free(T->cur[j]), T->cur[j] = NULL;
		if (!so && T->oc[j])
			free(T->oc[j]), T->oc[j] = NULL;
	}
	free(had);
	LLVMValueRef nf = LLVMBuildSIToFP(b, no, g->f32, "");
	for (int k = 0; k < ne; k++)
		out[k] = tm_redfin(g, in->op, LLVMBuildLoad2(b, fty(g, w), acc[k], ""), nf, w);
	free(acc);
}

/* shift along chan of a [group?, token, chan] value (one token per step): each group's row in a
** stack buffer between two rows of the fill, read back at the offset (clipped to +-d: all fill) */
static void tm_shiftchan(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	int d = g->d, W = g->W, nc = d / W;
	LLVMValueRef k = T->pk[i];
	k = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, k, ci(g, -d), ""), ci(g, -d), k, "");
	k = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, k, ci(g, d), ""), ci(g, d), k, "");
	LLVMValueRef fill = tm_opnd(T, in->arg[2], 0, 0, W);
	for (int gg = 0; gg < tm_ng(T, in->axes); gg++) {
		LLVMValueRef buf = entry_alloca(g, LLVMArrayType(g->f32, (unsigned)(3 * d)));
		for (int c = 0; c < nc; c++) {
			storef(g, fill, buf, ci(g, (long)c * W));
			storef(g, fill, buf, ci(g, 2L * d + (long)c * W));
			storef(g, tm_opnd(T, in->arg[0], gg, c, W), buf, ci(g, (long)d + (long)c * W));
		}
		for (int c = 0; c < nc; c++)
			out[gg * nc + c] = loadf(g, buf, LLVMBuildAdd(b, k, ci(g, (long)d + (long)c * W), ""), W);
	}
}

/* reduction over group or chan (in one step) */
static void tm_red(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	const KiIns *in = &T->f->ins[i];
	uint8_t ax = in->axes, aa = ki_refaxes(T->f, in->arg[0]);
	KiRef b = ki_nargs(in->op) > 1 ? in->arg[1] : KI_NIL;
	if (in->axis == AX_out) {
		tm_redout(T, i, out);
		return;
	}
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
	if (in->op == KO_std) {     /* over chan: the mean, then the mean squared deviation (two passes) */
		for (int gg = 0; gg < tm_ng(T, ax); gg++) {
			LLVMValueRef a = tm_redinit(g, KO_sum, g->W);
			for (int c = 0; c < tm_nc(T, aa); c++)
				a = tm_redstep(g, KO_sum, a, tm_opnd(T, in->arg[0], gg, c, g->W), NULL, 0);
			LLVMValueRef df = LLVMConstReal(g->f32, g->d);
			LLVMValueRef mu = splat(g, LLVMBuildFDiv(g->b, tm_lanes(g, KO_sum, tm_redinit(g, KO_sum, 1), a, g->W), df, ""), g->W);
			a = tm_redinit(g, KO_sum, g->W);
			for (int c = 0; c < tm_nc(T, aa); c++) {
				LLVMValueRef y = LLVMBuildFSub(g->b, tm_opnd(T, in->arg[0], gg, c, g->W), mu, "");
				a = tm_redstep(g, KO_sum, a, LLVMBuildFMul(g->b, y, y, ""), NULL, 0);
			}
			out[gg] = tm_redfin(g, KO_std, tm_lanes(g, KO_sum, tm_redinit(g, KO_sum, 1), a, g->W), df, 1);
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
	LLVMBuildStore(b, tm_redinit(g, op, 1), a);
	Loop lj;
	LLVMValueRef j = loop_begin2(g, lo, hi, 1, 1, &lj);
	LLVMBuildStore(b, tm_redstep(g, op, LLVMBuildLoad2(b, g->f32, a, ""), ldf(g, src, j), NULL, 0), a);
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
	LLVMValueRef src = T->pv[KI_RIDX(in->arg[0])], k = T->pk[i];
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
			LLVMBuildStore(b, tm_redinit(g, in->op, w), a);
			Loop lo_;
			LLVMValueRef o = loop_begin2(g, ci(g, 0), k, 1, 1, &lo_);
			LLVMValueRef v = loadf(g, base, LLVMBuildAdd(b, lo, o, ""), w);
			LLVMBuildStore(b, tm_redstep(g, in->op, LLVMBuildLoad2(b, fty(g, w), a, ""), v, NULL, 0), a);
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
		out[gg] = tm_redfin(g, in->op, r, kf, w);
	}
}

static int isseg(int op) { return ki_rule(op) == AR_SEG; }

/* a < b in ascending rank order (interp.c rankless): NaN above every number, ties by position */
static LLVMValueRef tm_rankless(Gen *g, LLVMValueRef a, LLVMValueRef ta, LLVMValueRef b, LLVMValueRef tb)
{
	LLVMBuilderRef bd = g->b;
	LLVMValueRef na = LLVMBuildFCmp(bd, LLVMRealUNO, a, a, ""), nb = LLVMBuildFCmp(bd, LLVMRealUNO, b, b, "");
	LLVMValueRef tie = LLVMBuildICmp(bd, LLVMIntSLT, ta, tb, "");
	LLVMValueRef num = LLVMBuildSelect(bd, LLVMBuildFCmp(bd, LLVMRealOEQ, a, b, ""), tie,
	                                   LLVMBuildFCmp(bd, LLVMRealOLT, a, b, ""), "");
	LLVMValueRef same = LLVMBuildSelect(bd, na, tie, num, "");         /* both NaN or both numbers */
	return LLVMBuildSelect(bd, LLVMBuildICmp(bd, LLVMIntNE, na, nb, ""), nb, same, "");
}

/* segment op / shift i at token tt (scalar) of the stored value src (its group's rows; row stride
** rs: 1, or d for [token, chan] values), wc lanes at chan offset coff: the reference's (interp.c
** evalseg, evalshift) segments [0, start), then size tokens at a time (the last one to n; one
** segment when size reaches n - start), reduced in position order. A segment's reduction is
** computed once per segment (cache kp / vp: the segment start it holds and its value; tokens
** come in order); rank is per token. */
static LLVMValueRef tm_stencil1(Tm *T, int i, LLVMValueRef src, LLVMValueRef tt, int rs, int wc, int coff,
                                LLVMValueRef kp, LLVMValueRef vp)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	LLVMTypeRef ft = fty(g, wc);
	if (in->op == KO_shift) {
		LLVMValueRef s = LLVMBuildAdd(b, tt, T->pk[i], "");
		LLVMValueRef ok = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, s, ci(g, 0), ""),
		                               LLVMBuildICmp(b, LLVMIntSLT, s, T->n, ""), "");
		LLVMValueRef sc = LLVMBuildSelect(b, ok, s, ci(g, 0), "");   /* row 0 exists whenever tt does */
		LLVMValueRef v = loadf(g, src, LLVMBuildAdd(b, LLVMBuildMul(b, sc, ci(g, rs), ""), ci(g, coff), ""), wc);
		return LLVMBuildSelect(b, ok, v, splat(g, tm_opnd(T, in->arg[2], 0, 0, 1), wc), "");
	}
	LLVMValueRef st = T->ps[i], sz = T->pk[i];
	LLVMValueRef before = LLVMBuildICmp(b, LLVMIntSLT, tt, st, "");
	LLVMValueRef one = LLVMBuildICmp(b, LLVMIntSGE, sz, LLVMBuildSub(b, T->n, st, ""), "");
	LLVMValueRef szs = LLVMBuildSelect(b, one, ci(g, 1), sz, "");    /* no division by a huge size */
	LLVMValueRef rel = LLVMBuildSub(b, tt, st, "");
	LLVMValueRef c0 = LLVMBuildAdd(b, st, LLVMBuildMul(b, LLVMBuildSDiv(b, rel, szs, ""), szs, ""), "");
	LLVMValueRef c1 = LLVMBuildAdd(b, c0, szs, "");
	c1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, c1, T->n, ""), c1, T->n, "");
	LLVMValueRef s0 = LLVMBuildSelect(b, before, ci(g, 0), LLVMBuildSelect(b, one, st, c0, ""), "");
	LLVMValueRef s1 = LLVMBuildSelect(b, before, st, LLVMBuildSelect(b, one, T->n, c1, ""), "");
	int rank = in->op == KO_srank;
	LLVMBasicBlockRef bj = NULL;
	if (!rank) {      /* the cached segment? */
		LLVMBasicBlockRef bc = LLVMAppendBasicBlockInContext(g->cx, g->fn, "seg.new");
		bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "seg.join");
		LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildLoad2(b, g->i64, kp, ""), s0, ""), bj, bc);
		LLVMPositionBuilderAtEnd(b, bc);
	}
	LLVMValueRef a = entry_alloca(g, ft);
	LLVMBuildStore(b, rank ? cfv(g, 0, 1) : tm_redinit(g, in->op, wc), a);
	LLVMValueRef v = rank ? ldf(g, src, tt) : NULL;
	Loop lj;
	LLVMValueRef j = loop_begin2(g, s0, s1, 1, 1, &lj);
	LLVMValueRef x = loadf(g, src, LLVMBuildAdd(b, LLVMBuildMul(b, j, ci(g, rs), ""), ci(g, coff), ""), wc);
	LLVMValueRef acc = LLVMBuildLoad2(b, ft, a, "");
	if (rank)
		acc = LLVMBuildFAdd(b, acc, LLVMBuildUIToFP(b, tm_rankless(g, x, j, v, tt), g->f32, ""), "");
	else
		acc = tm_redstep(g, in->op, acc, x, NULL, 0);
	LLVMBuildStore(b, acc, a);
	loop_end(g, &lj);
	loop_plain(g, &lj);
	LLVMValueRef r = LLVMBuildLoad2(b, ft, a, "");
	if (rank)
		return r;
	r = tm_redfin(g, in->op, r, LLVMBuildSIToFP(b, LLVMBuildSub(b, s1, s0, ""), g->f32, ""), wc);
	LLVMBuildStore(b, r, vp);
	LLVMBuildStore(b, s0, kp);
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bj);
	return LLVMBuildLoad2(b, ft, vp, "");
}

/* softmax over token of a stored [group?, token] value (interp.c evalsoftmax): before the loop, each
** group's max (NaN skipped) and sum of exp(z - max) (T->ck, T->cv: values); per token
** exp(z - max) / sum, 0 unless sum > 0 */
static void tm_softargs(Tm *T, int i)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	LLVMValueRef src = T->pv[KI_RIDX(in->arg[0])];
	int ng = tm_ng(T, in->axes);
	T->ck[i] = tm_calloc(T, (size_t)ng);
	T->cv[i] = tm_calloc(T, (size_t)ng);
	for (int gg = 0; gg < ng; gg++) {
		LLVMValueRef base = gep(g, g->f32, src, (in->axes & AXM(AX_group)) ? LLVMBuildMul(b, ci(g, gg), T->n, "") : ci(g, 0));
		LLVMValueRef m = entry_alloca(g, g->f32), sm = entry_alloca(g, g->f32);
		LLVMBuildStore(b, cfv(g, -INFINITY, 1), m);
		LLVMBuildStore(b, cfv(g, 0, 1), sm);
		Loop l1, l2;
		LLVMValueRef t = loop_begin2(g, ci(g, 0), T->n, 1, 1, &l1);
		LLVMValueRef v = ldf(g, base, t), mo = LLVMBuildLoad2(b, g->f32, m, "");
		LLVMBuildStore(b, LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, v, mo, ""), v, mo, ""), m);
		loop_end(g, &l1);
		LLVMValueRef mx = LLVMBuildLoad2(b, g->f32, m, "");
		t = loop_begin2(g, ci(g, 0), T->n, 1, 1, &l2);
		LLVMValueRef e = LLVMBuildFSub(b, ldf(g, base, t), mx, "");
		e = intr(g, "llvm.exp", g->f32, &e, 1);
		LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, g->f32, sm, ""), e, ""), sm);
		loop_end(g, &l2);
		T->ck[i][gg] = mx;
		T->cv[i][gg] = LLVMBuildLoad2(b, g->f32, sm, "");
	}
}

static void tm_soft(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	LLVMValueRef src = T->pv[KI_RIDX(in->arg[0])];
	int w = T->w;
	for (int gg = 0; gg < tm_ng(T, in->axes); gg++) {
		LLVMValueRef idx = LLVMBuildAdd(b, (in->axes & AXM(AX_group)) ? LLVMBuildMul(b, ci(g, gg), T->n, "") : ci(g, 0), T->t, "");
		LLVMValueRef z = loadf(g, src, idx, w);
		LLVMValueRef e = LLVMBuildFSub(b, z, splat(g, T->ck[i][gg], w), "");
		e = intr(g, "llvm.exp", fty(g, w), &e, 1);
		LLVMValueRef sm = T->cv[i][gg];
		LLVMValueRef p = LLVMBuildFDiv(b, e, splat(g, sm, w), "");
		LLVMValueRef pos = LLVMBuildFCmp(b, LLVMRealOGT, sm, cfv(g, 0, 1), "");
		out[gg] = LLVMBuildSelect(b, pos, p, cfv(g, 0, w), "");
	}
}

/* segment ops and shift along token of a stored [group?, token, chan?] value: [token] values
** lane by lane, [token, chan] ones (one token per step) chan chunk by chan chunk */
static void tm_stencil(Tm *T, int i, LLVMValueRef *out)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	LLVMValueRef src = T->pv[KI_RIDX(in->arg[0])];
	int w = T->w, chan = (in->axes & AXM(AX_chan)) != 0, rs = chan ? g->d : 1, nc = tm_nc(T, in->axes);
	for (int gg = 0; gg < tm_ng(T, in->axes); gg++) {
		LLVMValueRef base = src;
		if (in->axes & AXM(AX_group))
			base = gep(g, g->f32, src, LLVMBuildMul(b, ci(g, (long)gg * rs), T->n, ""));
		for (int c = 0; c < nc; c++) {
			int e = gg * nc + c;
			LLVMValueRef kp = T->ck[i] ? T->ck[i][e] : NULL, vp = T->cv[i] ? T->cv[i][e] : NULL;
			if (chan || w == 1) {
				out[e] = tm_stencil1(T, i, base, T->t, rs, chan ? g->W : 1, c * g->W, kp, vp);
				continue;
			}
			LLVMValueRef lanes = entry_alloca(g, fty(g, w));
			Loop ll;
			LLVMValueRef l = loop_begin2(g, ci(g, 0), ci(g, w), 1, 1, &ll);
			LLVMBuildStore(b, tm_stencil1(T, i, base, LLVMBuildAdd(b, T->t, l, ""), 1, 1, 0, kp, vp),
			               gep(g, g->f32, lanes, l));
			loop_end(g, &ll);
			loop_plain(g, &ll);
			out[e] = LLVMBuildLoad2(b, fty(g, w), lanes, "");
		}
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
		if (in->axis == AX_chan) {          /* x.c: chan chunk by chan chunk */
			for (int c = 0; c < tm_nc(T, ax); c++)
				out[c] = LLVMBuildSIToFP(b, tm_iota(g, ci(g, (long)c * g->W), g->W, g->i32), fty(g, g->W), "");
			return;
		}
		out[0] = LLVMBuildSIToFP(b, tm_iota(g, T->t, w, g->i32), fty(g, w), "");
		return;
	case KO_input:
		if (in->aux == IN_pos) {
			out[0] = LLVMBuildSIToFP(b, tm_pos(T), fty(g, w), "");
			return;
		}
		{       /* K / V row chunks, storage → f32; the row at roff[t] (paged caches) or t*ldk */
			LLVMValueRef row = tm_ldnull(g, tm_field(T, TC_roff, g->ptr), g->i64, T->t, 1,
			                             LLVMBuildMul(b, T->t, tm_field(T, TC_ldk, g->i64), ""));
			for (int c = 0; c < tm_nc(T, ax); c++)
				out[c] = loadconv(g, tm_field(T, in->aux == IN_K ? TC_K : TC_V, g->ptr),
				                  LLVMBuildAdd(b, row, ci(g, (long)c * g->W), ""), g->W);
		}
		return;
	case KO_state: {
		LLVMValueRef sb = tm_field(T, TC_state, g->ptr);
		LLVMValueRef off = LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, in->aux), tm_field(T, TC_sstride, g->i64), ""), T->t, "");
		out[0] = tm_ldnull(g, sb, g->f32, off, w, cfv(g, (double)(float)T->f->st[in->aux].init, w));
		return;
	}
	case KO_rand:
		out[0] = tm_rand(T, tm_dscalar(T, in->arg[0]));
		return;
	case KO_weight:
		tm_weight(T, in, out);
		return;
	case KO_attn: {          /* observe hook: this step's probabilities, [group][lda] */
		LLVMValueRef at = tm_field(T, TC_attn, g->ptr), lda = tm_field(T, TC_lda, g->i64);
		for (int gg = 0; gg < tm_ng(T, ax); gg++)
			out[gg] = loadf(g, at, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, gg), lda, ""), T->t, ""), w);
		return;
	}
	case KO_size: {
		LLVMValueRef v = in->axis == AX_group ? ci(g, g->G) : in->axis == AX_chan ? ci(g, g->d)
		               : in->axis == AX_token ? T->n : tm_field(T, TC_obs, g->i64);
		out[0] = LLVMBuildSIToFP(b, v, g->f32, "");
		return;
	}
	case KO_info: {
		static const int fld[] = { [INF_layer] = TC_layer, [INF_head] = TC_head, [INF_nlayers] = TC_layers,
		                           [INF_nheads] = TC_heads, [INF_step] = TC_step };
		if (in->aux == INF_ratio || in->aux == INF_nkeep) {
			out[0] = tm_budget(T, in->aux);
			return;
		}
		out[0] = in->aux == INF_scale ? cfv(g, (double)(float)(1.0 / sqrt((double)g->d)), 1)
		                              : LLVMBuildSIToFP(b, tm_field(T, fld[in->aux], g->i64), g->f32, "");
		return;
	}
	case KO_avgpool:
	case KO_maxpool:
		tm_pool(T, i, out);
		return;
	case KO_softmax:             /* over token, no obs (plan.c istsoft) */
		tm_soft(T, i, out);
		return;
	case KO_shift:
		if (in->axis == AX_chan) {
			tm_shiftchan(T, i, out);
			return;
		}
		/* fall through */
	case KO_ssum: case KO_smean: case KO_smax: case KO_smin: case KO_srank:
		tm_stencil(T, i, out);
		return;
	case KO_carry:
		out[0] = LLVMBuildLoad2(b, g->f32, T->hc[KI_RIDX(T->f->st[in->aux].update)], "");
		return;
	case KO_scan: {      /* interp.c evalscan: held scanned tokens keep their state, then the step */
		LLVMValueRef sp = gep(g, g->f32, tm_field(T, TC_state, g->ptr), LLVMBuildMul(b, ci(g, in->aux), tm_field(T, TC_sstride, g->i64), ""));
		LLVMValueRef old = tm_ldnull(g, tm_field(T, TC_state, g->ptr), g->f32,
		                             LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, in->aux), tm_field(T, TC_sstride, g->i64), ""), T->t, ""),
		                             1, cfv(g, NAN, 1));
		LLVMValueRef v = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, T->t, T->hu[i], ""), old,
		                                 tm_opnd(T, in->arg[0], 0, 0, 1), "");
		LLVMBuildStore(b, v, T->hc[i]);
		/* the state is the scan's value (compaction then moves it with its token) */
		LLVMValueRef has = LLVMBuildIsNotNull(b, tm_field(T, TC_state, g->ptr), "");
		LLVMBasicBlockRef bw = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scan.st");
		LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scan.next");
		LLVMBuildCondBr(b, has, bw, bn);
		LLVMPositionBuilderAtEnd(b, bw);
		storef(g, v, sp, T->t);
		LLVMBuildBr(b, bn);
		LLVMPositionBuilderAtEnd(b, bn);
		out[0] = v;
		return;
	}
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

static int tm_inloop(const KiIns *in) { return (in->axes & AXM(AX_token)) || ki_tokred(in); }

/* instruction j's elements where instruction (s..e) reads them: computed in this loop, a leaf
** recomputed here, or loaded from vals */
static LLVMValueRef *tm_val(Tm *T, int j)
{
	const KiIns *in = &T->f->ins[j];
	int here = j >= T->s && j <= T->e;
	if (in->axes & AXM(AX_out)) {       /* inside the reduction over out: at T->o */
		if (!T->o)
			longjmp(*T->oom, 2);
		if (!T->oc[j]) {
			tm_new(T, j, T->oc);
			tm_eval(T, j, T->oc[j]);
		}
		return T->oc[j];
	}
	if (!(in->axes & AXM(AX_token)))
		return T->pre[j];
	if (T->cur[j])
		return T->cur[j];
	tm_new(T, j, T->cur);
	if (here || (ki_isleaf(in) && T->tgen[j] && !T->tout[j]))
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
		if (!T->tgen[i] || !tm_inloop(in) || (in->axes & AXM(AX_out)))   /* out values: in their reduction */
			continue;
		if (!ki_tokred(in)) {
			LLVMValueRef *v = tm_val(T, i);
			if (T->tout[i])
				for (int gg = 0; gg < tm_ng(T, in->axes); gg++)
					for (int c = 0; c < tm_nc(T, in->axes); c++)
						storef(g, v[gg * tm_nc(T, in->axes) + c], T->pv[i], tm_idx(T, in->axes, gg, c));
			continue;
		}
		LLVMValueRef *a = tm_acc(T, i);
		KiRef bb = ki_nargs(in->op) > 1 ? in->arg[1] : KI_NIL;
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

/* pool i's kernel size (i64), checked before the loop: a positive integer up to 1e6, else the
** function returns i + 1 with the offending value in ctx->err */
static LLVMValueRef tm_poolk(Tm *T, int i)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	LLVMValueRef kv = tm_opnd(T, T->f->ins[i].arg[1], 0, 0, 1);
	LLVMValueRef fl = intr(g, "llvm.floor", g->f32, &kv, 1);
	LLVMValueRef ok = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGE, kv, cfv(g, 1.0, 1), ""),
	                               LLVMBuildFCmp(b, LLVMRealOLE, kv, cfv(g, 1e6, 1), ""), "");
	ok = LLVMBuildAnd(b, ok, LLVMBuildFCmp(b, LLVMRealOEQ, kv, fl, ""), "");
	LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pool.bad");
	LLVMBasicBlockRef good = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pool.ok");
	LLVMBuildCondBr(b, ok, good, bad);
	LLVMPositionBuilderAtEnd(b, bad);
	st_(g, LLVMDoubleTypeInContext(g->cx), LLVMBuildFPExt(b, kv, LLVMDoubleTypeInContext(g->cx), ""), T->ctx,
	    ci(g, TC_err), 8);
	LLVMBuildRet(b, ci(g, i + 1));
	LLVMPositionBuilderAtEnd(b, good);
	return LLVMBuildFPToSI(b, kv, g->i64, "");
}

/* a segment op's size (pk) and start (ps, clipped to n), or a shift's offset (pk), checked
** before the loop as the reference checks them (size an integer >= 1 or inf, start >= 0 or inf,
** offset an integer in -1e9..1e9), else the function returns -(i + 1) with the value in ctx->err */
static void tm_stencilargs(Tm *T, int i)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	int nchk = in->op == KO_shift ? 1 : 2;
	LLVMValueRef res[2];
	for (int k = 0; k < nchk; k++) {
		LLVMValueRef v = tm_opnd(T, in->arg[1 + k], 0, 0, 1);
		LLVMValueRef fl = intr(g, "llvm.floor", g->f32, &v, 1);
		LLVMValueRef inf = LLVMBuildFCmp(b, LLVMRealOEQ, v, cfv(g, INFINITY, 1), "");
		double lo = in->op == KO_shift ? -1e9 : k == 0 ? 1 : 0;
		LLVMValueRef ok = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealOGE, v, cfv(g, lo, 1), ""),
		                               LLVMBuildFCmp(b, LLVMRealOEQ, v, fl, ""), "");
		if (in->op == KO_shift)
			ok = LLVMBuildAnd(b, ok, LLVMBuildFCmp(b, LLVMRealOLE, v, cfv(g, 1e9, 1), ""), "");
		else
			ok = LLVMBuildOr(b, ok, inf, "");
		LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(g->cx, g->fn, "stencil.bad");
		LLVMBasicBlockRef good = LLVMAppendBasicBlockInContext(g->cx, g->fn, "stencil.ok");
		LLVMBuildCondBr(b, ok, good, bad);
		LLVMPositionBuilderAtEnd(b, bad);
		st_(g, LLVMDoubleTypeInContext(g->cx), LLVMBuildFPExt(b, v, LLVMDoubleTypeInContext(g->cx), ""), T->ctx,
		    ci(g, TC_err), 8);
		LLVMBuildRet(b, ci(g, -(long)(i + 1)));
		LLVMPositionBuilderAtEnd(b, good);
		/* inf or anything from n up: n (both mean "to the end") */
		LLVMValueRef big = LLVMBuildOr(b, inf, LLVMBuildFCmp(b, LLVMRealOGE, v, LLVMBuildSIToFP(b, T->n, g->f32, ""), ""), "");
		LLVMValueRef iv = LLVMBuildFPToSI(b, LLVMBuildSelect(b, big, cfv(g, 0, 1), v, ""), g->i64, "");
		res[k] = in->op == KO_shift ? LLVMBuildFPToSI(b, v, g->i64, "") : LLVMBuildSelect(b, big, T->n, iv, "");
	}
	T->pk[i] = res[0];
	if (nchk > 1)
		T->ps[i] = res[1];
	if (in->op == KO_shift || in->op == KO_srank)
		return;
	int ne = tm_ng(T, in->axes) * tm_nc(T, in->axes), wc = (in->axes & AXM(AX_chan)) ? g->W : 1;
	T->ck[i] = tm_calloc(T, (size_t)ne);
	T->cv[i] = tm_calloc(T, (size_t)ne);
	for (int k = 0; k < ne; k++) {
		T->ck[i][k] = entry_alloca(g, g->i64);
		T->cv[i][k] = entry_alloca(g, fty(g, wc));
		LLVMBuildStore(b, ci(g, -1), T->ck[i][k]);
	}
}

/* scan i before its loop: the first token to scan (after the last held token whose state is not
** NaN: a later compression continues from there; no state: 0) and the carry (the start value) */
static void tm_scaninit(Tm *T, int i)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &T->f->ins[i];
	T->hc[i] = entry_alloca(g, g->f32);
	LLVMBuildStore(b, tm_opnd(T, in->arg[1], 0, 0, 1), T->hc[i]);
	LLVMValueRef u = entry_alloca(g, g->i64);
	LLVMBuildStore(b, ci(g, 0), u);
	LLVMValueRef st = tm_field(T, TC_state, g->ptr);
	LLVMBasicBlockRef bs = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scan.u0");
	LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(g->cx, g->fn, "scan.go");
	LLVMBuildCondBr(b, LLVMBuildIsNotNull(b, st, ""), bs, bn);
	LLVMPositionBuilderAtEnd(b, bs);
	LLVMValueRef sp = gep(g, g->f32, st, LLVMBuildMul(b, ci(g, in->aux), tm_field(T, TC_sstride, g->i64), ""));
	Loop lp;
	LLVMValueRef t = loop_begin2(g, ci(g, 0), T->n, 1, 1, &lp);
	LLVMValueRef x = ldf(g, sp, t);
	LLVMValueRef num = LLVMBuildFCmp(b, LLVMRealORD, x, x, "");
	LLVMBuildStore(b, LLVMBuildSelect(b, num, LLVMBuildAdd(b, t, ci(g, 1), ""), LLVMBuildLoad2(b, g->i64, u, ""), ""), u);
	loop_end(g, &lp);
	LLVMBuildBr(b, bn);
	LLVMPositionBuilderAtEnd(b, bn);
	T->hu[i] = LLVMBuildLoad2(b, g->i64, u, "");
}

/* loop s..e (one switch case) */
static void tm_loop(Tm *T)
{
	Gen *g = T->g;
	LLVMBuilderRef b = g->b;
	const KiFn *f = T->f;
	LLVMValueRef vals = tm_field(T, TC_vals, g->ptr), par = tm_field(T, TC_par, g->ptr);
	T->n = tm_field(T, TC_n, g->i64);
	T->t = ci(g, 0);
	T->w = 1;
	int inloop = 0;
	T->row = 0;
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		uint8_t u = in->axes;
		if (!T->tgen[i])
			continue;
		for (int k = 0; k < ki_nargs(in->op); k++) {
			KiRef r = in->arg[k];
			int j = KI_RIDX(r);
			if (KI_RKIND(r) == RK_PAR && !T->sc[j])
				T->sc[j] = LLVMBuildFPTrunc(b, ld(g, LLVMDoubleTypeInContext(g->cx), par, ci(g, j), 8), g->f32, "");
			if (KI_RKIND(r) != RK_INS)
				continue;
			u |= f->ins[j].axes;
			if ((j < T->s || j > T->e) && !T->pv[j])
				T->pv[j] = ld(g, g->ptr, vals, ci(g, j), 8);
			if (j < T->s && !(f->ins[j].axes & (AXM(AX_token) | AXM(AX_out))) && !T->pre[j] && ki_isleaf(&f->ins[j])
			    && !T->tout[j]) {         /* an earlier loop's leaf: computed here */
				tm_new(T, j, T->pre);
				tm_eval(T, j, T->pre[j]);
			} else if (j < T->s && !(f->ins[j].axes & (AXM(AX_token) | AXM(AX_out))) && !T->pre[j]) {   /* earlier values, once */
				tm_new(T, j, T->pre);
				for (int gg = 0; gg < tm_ng(T, f->ins[j].axes); gg++)
					for (int c = 0; c < tm_nc(T, f->ins[j].axes); c++)
						T->pre[j][gg * tm_nc(T, f->ins[j].axes) + c] =
							loadf(g, T->pv[j], tm_idx(T, f->ins[j].axes, gg, c), tm_wid(T, f->ins[j].axes));
			}
		}
		if (T->tout[i])
			T->pv[i] = ld(g, g->ptr, vals, ci(g, i), 8);
		if (tm_inloop(in))
			inloop = 1, T->row |= ((u & AXM(AX_token)) && (u & AXM(AX_chan))) || in->op == KO_scan;
	}
	/* values without a token axis */
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		if (!T->tgen[i] || tm_inloop(in) || (in->axes & AXM(AX_out)))
			continue;
		tm_new(T, i, T->pre);
		tm_eval(T, i, T->pre[i]);
		if (T->tout[i])
			for (int gg = 0; gg < tm_ng(T, in->axes); gg++)
				for (int c = 0; c < tm_nc(T, in->axes); c++)
					storef(g, T->pre[i][gg * tm_nc(T, in->axes) + c], T->pv[i], tm_idx(T, in->axes, gg, c));
	}
	int stores = 0;
	for (int i = T->s; i <= T->e; i++)
		stores |= T->tgen[i] && T->tout[i];
	if (!inloop || !stores)      /* e.g. a leaf other loops recompute: nothing to do here */
		return;
	for (int i = T->s; i <= T->e; i++) {
		const KiIns *in = &f->ins[i];
		if (!T->tgen[i])
			continue;
		if (in->op == KO_avgpool || in->op == KO_maxpool)
			T->pk[i] = tm_poolk(T, i);
		if (in->op == KO_shift || isseg(in->op))
			tm_stencilargs(T, i);
		if (in->op == KO_softmax)
			tm_softargs(T, i);
		if (in->op == KO_scan)
			tm_scaninit(T, i);
		if (!ki_tokred(in))
			continue;
		int ne = tm_ng(T, in->axes) * tm_nc(T, in->axes);
		T->acc[i] = tm_calloc(T, (size_t)ne * 2);
		for (int k = 0; k < 2 * ne; k++) {
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
		if (!T->tgen[i] || !ki_tokred(in))
			continue;
		int ne = tm_ng(T, in->axes) * tm_nc(T, in->axes), wo = tm_wid(T, in->axes);
		for (int k = 0; k < ne; k++) {
			LLVMValueRef x = LLVMBuildLoad2(b, fty(g, wo), T->acc[i][ne + k], "");
			if (!T->row && g->W > 1)
				x = tm_lanes(g, in->op, x, LLVMBuildLoad2(b, fty(g, g->W), T->acc[i][k], ""), g->W);
			x = tm_redfin(g, in->op, x, nf, wo);
			if (T->tout[i])
				storef(g, x, T->pv[i], tm_idx(T, in->axes, k / tm_nc(T, in->axes), k % tm_nc(T, in->axes)));
		}
	}
}

/* T's tables for one set of loops (the function's second parameter is the context) */
static int tm_open(Tm *T, Gen *g, const KiFn *f, const uint8_t *tgen, const uint8_t *tout, LLVMValueRef ctx)
{
	size_t nv = (size_t)f->nins + (size_t)f->npar + 1;
	*T = (Tm){ .g = g, .f = f, .tgen = tgen, .tout = tout, .w = 1, .ctx = ctx,
	           .pv = calloc(nv, sizeof(LLVMValueRef)), .sc = calloc(nv, sizeof(LLVMValueRef)),
	           .pre = calloc(nv, sizeof(LLVMValueRef *)), .cur = calloc(nv, sizeof(LLVMValueRef *)),
	           .acc = calloc(nv, sizeof(LLVMValueRef *)), .pk = calloc(nv, sizeof(LLVMValueRef)),
	           .ps = calloc(nv, sizeof(LLVMValueRef)), .ck = calloc(nv, sizeof(LLVMValueRef *)),
	           .cv = calloc(nv, sizeof(LLVMValueRef *)), .hc = calloc(nv, sizeof(LLVMValueRef)),
	           .hu = calloc(nv, sizeof(LLVMValueRef)), .oc = calloc(nv, sizeof(LLVMValueRef *)) };
	return T->pv && T->sc && T->pre && T->cur && T->acc && T->pk && T->ps && T->ck && T->cv && T->hc && T->hu && T->oc ? 0 : -1;
}

/* forget one loop's values (the next loop loads or recomputes what it reads) */
static void tm_reset(Tm *T)
{
	for (size_t k = 0; T->pre && T->cur && T->acc && T->ck && T->cv && T->oc && k < (size_t)T->f->nins + (size_t)T->f->npar + 1; k++) {
		free(T->pre[k]), free(T->cur[k]), free(T->acc[k]), free(T->ck[k]), free(T->cv[k]), free(T->oc[k]);
		T->pre[k] = T->cur[k] = T->acc[k] = T->ck[k] = T->cv[k] = T->oc[k] = NULL;
		if (T->pv && T->sc && T->pk && T->ps && T->hc && T->hu)
			T->pv[k] = T->sc[k] = T->pk[k] = T->ps[k] = T->hc[k] = T->hu[k] = NULL;
	}
}

/* Every loop of one set (tgen/tout of T, segment ends by `end`), each followed by `each`
** (a return for tmap's switch cases); -1 when memory runs out (the half-built function is
** never used: the compile fails with "out of memory"). */
static int tm_loops(Tm *T, int (*end)(const KiPlan *, int), const KiPlan *p, LLVMValueRef sw)
{
	jmp_buf jb;
	T->oom = &jb;
	if (setjmp(jb))          /* out of memory (1), or an out value outside its reduction (2: internal) */
		return -1;
	Gen *g = T->g;
	for (int s = 0; s < T->f->nins; s++) {
		if (T->tgen[s] != KI_GEN_START)
			continue;
		if (sw) {
			LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(g->cx, g->fn, "tmap");
			LLVMAddCase(sw, LLVMConstInt(g->i64, (unsigned long long)s, 0), bb);
			LLVMPositionBuilderAtEnd(g->b, bb);
		}
		T->s = s, T->e = end(p, s);
		tm_loop(T);
		if (sw)
			LLVMBuildRet(g->b, ci(g, 0));
		tm_reset(T);
	}
	return 0;
}

static void tm_close(Tm *T)
{
	tm_reset(T);
	free(T->pv), free(T->sc), free(T->pre), free(T->cur), free(T->acc), free(T->pk), free(T->ps), free(T->ck), free(T->cv), free(T->hc), free(T->hu), free(T->oc);
}

/* i64 tmap(gid, ctx): one switch case per fused token_map loop of the plan, entered with its first
** instruction's index; 0, or pool i's index + 1 when its kernel size is bad, -(i + 1) when segment
** op / shift i has a bad size, start or offset (the value in ctx->err) */
int kx_gen_tmap(Gen *g, const KiFn *f, const KiPlan *p)
{
	LLVMTypeRef ps[2] = { g->i64, g->ptr };
	newfn(g, "kvcc_tmap", g->i64, ps, 2);
	LLVMValueRef gid = LLVMGetParam(g->fn, 0);
	LLVMBasicBlockRef def = LLVMAppendBasicBlockInContext(g->cx, g->fn, "none");
	LLVMValueRef sw = LLVMBuildSwitch(g->b, gid, def, (unsigned)p->ngen);
	LLVMPositionBuilderAtEnd(g->b, def);
	LLVMBuildRet(g->b, ci(g, 0));
	Tm T;
	int rc = tm_open(&T, g, f, p->tgen, p->tout, LLVMGetParam(g->fn, 1));
	if (rc == 0)
		rc = tm_loops(&T, ki_segend, p, sw);
	tm_close(&T);
	return rc;
}

/*
** i64 observe(ctx): the decode step's observe hook for one (layer, head): the plan's observe loops
** in order (x.attn = ctx->attn, [group][lda]; the values they store go to ctx->vals), then each
** updated state s gets its new value: state[s*sstride + t] = update(t) for t < n (an update is a
** stored value, a constant or a param). 0, or a pool's index + 1 as tmap.
*/
int kx_gen_observe(Gen *g, const KiFn *f, const KiPlan *p)
{
	LLVMTypeRef ps[1] = { g->ptr };
	newfn(g, "kvcc_observe", g->i64, ps, 1);
	LLVMBuilderRef b = g->b;
	LLVMValueRef ctx = LLVMGetParam(g->fn, 0);
	Tm T;
	int rc = tm_open(&T, g, f, p->otgen, p->otout, ctx);
	if (rc == 0)
		rc = tm_loops(&T, ki_osegend, p, NULL);
	tm_close(&T);
	LLVMValueRef n = ld(g, g->i64, ctx, ci(g, TC_n), 8), st = ld(g, g->ptr, ctx, ci(g, TC_state), 8);
	LLVMValueRef ss = ld(g, g->i64, ctx, ci(g, TC_sstride), 8), vals = ld(g, g->ptr, ctx, ci(g, TC_vals), 8);
	LLVMValueRef par = ld(g, g->ptr, ctx, ci(g, TC_par), 8);
	for (int s = 0; s < f->nst; s++) {
		KiRef u = f->st[s].update;
		if (!u || ki_isscanstate(f, s))    /* scans run at compression (tmap) */
			continue;
		LLVMValueRef src = NULL, v = NULL;
		if (KI_RKIND(u) == RK_INS)
			src = ld(g, g->ptr, vals, ci(g, KI_RIDX(u)), 8);
		else if (KI_RKIND(u) == RK_PAR)
			v = LLVMBuildFPTrunc(b, ld(g, LLVMDoubleTypeInContext(g->cx), par, ci(g, KI_RIDX(u)), 8), g->f32, "");
		else
			v = cfv(g, (double)(float)f->con[KI_RIDX(u)], 1);
		LLVMValueRef dst = gep(g, g->f32, st, LLVMBuildMul(b, ci(g, s), ss, ""));
		Loop lp;
		LLVMValueRef t = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
		storef(g, src ? ldf(g, src, t) : v, dst, t);
		loop_end(g, &lp);
	}
	LLVMBuildRet(b, ci(g, 0));
	return rc;
}

/* float ascale(ctx): the attn_score logits' scalar multipliers (plan mul: constants, params as f32,
** scalar values of earlier loops), multiplied in order from 1 */
void kx_gen_ascale(Gen *g, const KiFn *f, const KiPlan *p)
{
	LLVMTypeRef ps[1] = { g->ptr };
	newfn(g, "kvcc_ascale", g->f32, ps, 1);
	LLVMBuilderRef b = g->b;
	LLVMValueRef ctx = LLVMGetParam(g->fn, 0), a = cfv(g, 1.0, 1);
	for (int k = 0; k < p->nmul; k++) {
		KiRef r = p->mul[k];
		LLVMValueRef v;
		if (KI_RKIND(r) == RK_CON)
			v = cfv(g, (double)(float)f->con[KI_RIDX(r)], 1);
		else if (KI_RKIND(r) == RK_PAR)
			v = LLVMBuildFPTrunc(b, ld(g, LLVMDoubleTypeInContext(g->cx), ld(g, g->ptr, ctx, ci(g, TC_par), 8),
			                            ci(g, KI_RIDX(r)), 8), g->f32, "");
		else
			v = ldf(g, ld(g, g->ptr, ld(g, g->ptr, ctx, ci(g, TC_vals), 8), ci(g, KI_RIDX(r)), 8), ci(g, 0));
		a = LLVMBuildFMul(b, a, v, "");
	}
	LLVMBuildRet(b, a);
}

/* One elementwise op of w lanes (merge.c's pair code: the same arithmetic as the loops'). */
LLVMValueRef kx_ew(Gen *g, int op, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c, int w)
{
	return tm_bin(g, op, a, b, c, w);
}
