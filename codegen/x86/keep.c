/*
** select keep (issue 13): int64 kvcc_keepn(const kvcc_tmap_ctx *c), the tokens the instance
** (c->layer, c->head) with c->n tokens keeps. Without a keep expression: the budget's count
** (kvcc_nkeep, kern.c). With one: the expression in double, as the reference interpreter
** evaluates it (interp.c evalins; compiler/keep.c says which instructions come here), then
** compiler/select.c ki_counts' clamp: floor, then 0..n; a value that is not finite returns
** -1 (NaN), -2 (+inf) or -3 (-inf) and the runtime reports it at the select rule.
** Elementwise ops are the loops' (kx_ew, in f64); reductions over out loop over c->nout
** (1 when no weight has an out axis, as the interpreter's size); reductions over token of a
** [token] row loop over its c->n values in c->vals[its instruction] (the instance's values as
** the token_map loops left them: runtime/compress.c runinst calls keepn after the instance's
** last stage and keeps the count; the score row since session 10, any computed [token] row the
** plan stores for it since session 12, KVCC_ABI 19), in position order as the interpreter.
*/
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include "codegen/x86/gen.h"
#include "compiler/keep.h"
#include "runtime/artifact.h"

typedef struct Kx {
	Gen *g;
	const KiFn *f;
	LLVMTypeRef dt;
	LLVMValueRef ctx, n, nout, o;   /* o: the out index inside a reduction over out */
	LLVMValueRef *sv;               /* [nins] scalar values (computed in instruction order) */
	LLVMValueRef *ov;               /* [nins] out-axis values at index o (the current loop's) */
} Kx;

#define FLD(K, name, t) ld((K)->g, (t), (K)->ctx, ci((K)->g, (long)(offsetof(kvcc_tmap_ctx, name) / 8)), 8)

static LLVMValueRef kval(Kx *K, KiRef r);

/* the size of weight axis a at this instance */
static LLVMValueRef kwsize(Kx *K, int a)
{
	Gen *g = K->g;
	return a == WA_layer ? FLD(K, layers, g->i64) : a == WA_head ? FLD(K, heads, g->i64) : a == WA_out ? FLD(K, nout, g->i64)
	     : ci(g, a == WA_group ? g->G : g->d);
}

/* weight in->aux at this (layer, head) and out index o in the packed buffer (KaWeight: the
** weights in declaration order, each row-major over its axes; as tmap.c tm_weight) */
static LLVMValueRef kweight(Kx *K, const KiIns *in)
{
	Gen *g = K->g;
	LLVMBuilderRef b = g->b;
	const KiFn *f = K->f;
	LLVMValueRef off = ci(g, 0);
	for (int k = 0; k < (int)in->aux; k++) {        /* the weights before it */
		LLVMValueRef cnt = ci(g, 1);
		for (int j = 0; j < f->w[k].ndim; j++)
			cnt = LLVMBuildMul(b, cnt, kwsize(K, f->w[k].ax[j]), "");
		off = LLVMBuildAdd(b, off, cnt, "");
	}
	const KiWeight *w = &f->w[in->aux];
	LLVMValueRef idx = ci(g, 0);
	for (int j = 0; j < w->ndim; j++) {             /* layer, head, out (compiler/keep.c) */
		LLVMValueRef iv = w->ax[j] == WA_layer ? FLD(K, layer, g->i64) : w->ax[j] == WA_head ? FLD(K, head, g->i64)
		                : K->o ? K->o : ci(g, 0);
		idx = LLVMBuildAdd(b, LLVMBuildMul(b, idx, kwsize(K, w->ax[j]), ""), iv, "");
	}
	return LLVMBuildFPExt(b, ldf(g, FLD(K, wts, g->ptr), LLVMBuildAdd(b, off, idx, "")), K->dt, "");
}

/* x.ratio: the ratio, or 1 - min(budget, n)/n with a budget (interp.c ratioof) */
static LLVMValueRef kratio(Kx *K)
{
	Gen *g = K->g;
	LLVMBuilderRef b = g->b;
	LLVMValueRef ratio = FLD(K, ratio, K->dt), budget = FLD(K, budget, g->i64);
	LLVMValueRef bmin = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, budget, K->n, ""), budget, K->n, "");
	LLVMValueRef byb = LLVMBuildFSub(b, LLVMConstReal(K->dt, 1),
	                                 LLVMBuildFDiv(b, LLVMBuildSIToFP(b, bmin, K->dt, ""), LLVMBuildSIToFP(b, K->n, K->dt, ""), ""), "");
	byb = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, K->n, ci(g, 0), ""), byb, LLVMConstReal(K->dt, 0), "");
	return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, budget, ci(g, 0), ""), ratio, byb, "");
}

static LLVMValueRef kleaf(Kx *K, const KiIns *in)
{
	Gen *g = K->g;
	LLVMBuilderRef b = g->b;
	LLVMTypeRef dt = K->dt;
	switch (in->op) {
	case KO_weight:
		return kweight(K, in);
	case KO_index:                               /* over out (compiler/keep.c) */
		return LLVMBuildSIToFP(b, K->o ? K->o : ci(g, 0), dt, "");
	case KO_size: {
		LLVMValueRef v = in->axis == AX_token ? K->n : in->axis == AX_out ? K->nout : in->axis == AX_obs ?
		                 FLD(K, obs, g->i64) : ci(g, in->axis == AX_group ? g->G : g->d);
		return LLVMBuildSIToFP(b, v, dt, "");
	}
	case KO_info:
		switch (in->aux) {
		case INF_scale: return LLVMConstReal(dt, 1.0 / sqrt((double)g->d));
		case INF_layer: return LLVMBuildSIToFP(b, FLD(K, layer, g->i64), dt, "");
		case INF_head: return LLVMBuildSIToFP(b, FLD(K, head, g->i64), dt, "");
		case INF_nlayers: return LLVMBuildSIToFP(b, FLD(K, layers, g->i64), dt, "");
		case INF_nheads: return LLVMBuildSIToFP(b, FLD(K, heads, g->i64), dt, "");
		case INF_step: return LLVMBuildSIToFP(b, FLD(K, step, g->i64), dt, "");
		case INF_ratio: return kratio(K);
		case INF_nkeep: {                        /* the budget's count (kern.c kvcc_nkeep) */
			LLVMValueRef nk = LLVMGetNamedFunction(g->m, "kvcc_nkeep");
			LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->i64, dt, g->i64 };
			LLVMValueRef av[6] = { FLD(K, par, g->ptr), FLD(K, layer, g->i64), FLD(K, layers, g->i64), K->n,
			                       FLD(K, ratio, dt), FLD(K, budget, g->i64) };
			return LLVMBuildSIToFP(b, LLVMBuildCall2(b, LLVMFunctionType(g->i64, ps, 6, 0), nk, av, 6, ""), dt, "");
		}
		}
	}
	return LLVMConstReal(dt, NAN);
}

/* token t of a keep count's [token] row: the f32 row's value widened, or x.pos's position (the
** plan's positions, NULL: t), as double */
static LLVMValueRef ktokv(Kx *K, const KiIns *src, LLVMValueRef row, LLVMValueRef t)
{
	Gen *g = K->g;
	LLVMBuilderRef b = g->b;
	if (src->op != KO_input)
		return LLVMBuildFPExt(b, ldf(g, row, t), K->dt, "");
	LLVMBasicBlockRef bn = LLVMGetInsertBlock(b);
	LLVMBasicBlockRef bl = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pos"), bj = LLVMAppendBasicBlockInContext(g->cx, g->fn, "posj");
	LLVMBuildCondBr(b, LLVMBuildIsNull(b, row, ""), bj, bl);
	LLVMPositionBuilderAtEnd(b, bl);
	LLVMValueRef v = LLVMBuildSExt(b, ld(g, g->i32, row, t, 4), g->i64, "");
	LLVMBuildBr(b, bj);
	LLVMPositionBuilderAtEnd(b, bj);
	LLVMValueRef ph = LLVMBuildPhi(b, g->i64, ""), in[2] = { t, v };
	LLVMBasicBlockRef from[2] = { bn, bl };
	LLVMAddIncoming(ph, in, from, 2);
	return LLVMBuildSIToFP(b, ph, K->dt, "");
}

/* a reduction over out: a loop over o < nout of its operand(s) (computed in the loop); a reduction
** over token of a [token] row (compiler/keep.c ki_keeptok: the score or another value the plan
** stores, ki_keepvals): a loop over t < n of that row, vals[its instruction] (f32, widened), or of
** x.pos's positions; std first a loop for the mean, sum of v / n in order (interp.c's first pass) */
static LLVMValueRef kred(Kx *K, int i)
{
	Gen *g = K->g;
	LLVMBuilderRef b = g->b;
	const KiIns *in = &K->f->ins[i];
	const KiSem *sem = ki_sem(in->op);
	int tok = ki_keeptok(K->f, in);
	const KiIns *src = tok ? &K->f->ins[KI_RIDX(in->arg[0])] : NULL;
	LLVMValueRef cnt = tok ? K->n : K->nout;
	LLVMValueRef m = LLVMBuildSIToFP(b, cnt, K->dt, ""), nz = LLVMBuildFCmp(b, LLVMRealONE, m, LLVMConstReal(K->dt, 0), "");
	LLVMValueRef acc = entry_alloca(g, K->dt);
	LLVMBuildStore(b, LLVMConstReal(K->dt, sem->init), acc);
	LLVMValueRef *saved = K->ov, o0 = K->o;
	K->ov = calloc((size_t)K->f->nins + 1, sizeof *K->ov);
	if (!K->ov) {
		K->ov = saved;
		return LLVMConstReal(K->dt, NAN);       /* kx_gen_keepn reports it */
	}
	Loop lp;
	LLVMValueRef row = !tok ? NULL : src->op == KO_input ? FLD(K, pos, g->ptr)
	                 : ld(g, g->ptr, FLD(K, vals, g->ptr), ci(g, KI_RIDX(in->arg[0])), 8);
	LLVMValueRef mu = NULL;
	if (tok && sem->map == MAP_DEV) {       /* std's mean: the interpreter's first pass */
		LLVMValueRef ma = entry_alloca(g, K->dt);
		LLVMBuildStore(b, LLVMConstReal(K->dt, 0), ma);
		LLVMValueRef t = loop_begin2(g, ci(g, 0), cnt, 1, 1, &lp);
		LLVMValueRef q = LLVMBuildFDiv(b, ktokv(K, src, row, t), m, "");
		LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, K->dt, ma, ""), q, ""), ma);
		loop_end(g, &lp);
		loop_plain(g, &lp);
		mu = LLVMBuildLoad2(b, K->dt, ma, "");
	}
	LLVMValueRef t = loop_begin2(g, ci(g, 0), cnt, 1, 1, &lp);
	if (!tok)
		K->o = t;
	LLVMValueRef v = tok ? ktokv(K, src, row, t) : kval(K, in->arg[0]);
	if (sem->map == MAP_SQ)
		v = LLVMBuildFMul(b, v, v, "");
	else if (sem->map == MAP_MUL)
		v = LLVMBuildFMul(b, v, kval(K, in->arg[1]), "");
	else if (sem->map == MAP_DEV) {
		LLVMValueRef dv = LLVMBuildFSub(b, v, mu, "");
		v = LLVMBuildFMul(b, dv, dv, "");
	}
	LLVMValueRef a = LLVMBuildLoad2(b, K->dt, acc, "");
	if (sem->comb == CMB_ADD)
		a = LLVMBuildFAdd(b, a, v, "");
	else {        /* max / min: v when it is better or NaN (ki_combine) */
		LLVMValueRef better = LLVMBuildOr(b, LLVMBuildFCmp(b, LLVMRealUNO, v, v, ""),
		                                  LLVMBuildFCmp(b, sem->comb == CMB_MAX ? LLVMRealOGT : LLVMRealOLT, v, a, ""), "");
		a = LLVMBuildSelect(b, better, v, a, "");
	}
	LLVMBuildStore(b, a, acc);
	loop_end(g, &lp);
	loop_plain(g, &lp);
	free(K->ov);
	K->ov = saved, K->o = o0;
	a = LLVMBuildLoad2(b, K->dt, acc, "");
	switch (sem->fin) {      /* ki_finish */
	case FIN_MEAN: return LLVMBuildSelect(b, nz, LLVMBuildFDiv(b, a, m, ""), LLVMConstReal(K->dt, NAN), "");
	case FIN_SQRT: return intr(g, "llvm.sqrt", K->dt, &a, 1);
	case FIN_RMS: {
		LLVMValueRef q = LLVMBuildFDiv(b, a, m, "");
		return LLVMBuildSelect(b, nz, intr(g, "llvm.sqrt", K->dt, &q, 1), LLVMConstReal(K->dt, NAN), "");
	}
	case FIN_DIVK: return LLVMBuildFDiv(b, a, m, "");
	}
	return a;
}

/* instruction i: scalars from sv (computed in order), out-axis values inside their loop (ov) */
static LLVMValueRef keval(Kx *K, int i)
{
	const KiIns *in = &K->f->ins[i];
	switch (ki_rule(in->op)) {
	case AR_EW: {
		LLVMValueRef a = kval(K, in->arg[0]);
		LLVMValueRef b = ki_nargs(in->op) > 1 ? kval(K, in->arg[1]) : a;
		LLVMValueRef c = ki_nargs(in->op) > 2 ? kval(K, in->arg[2]) : a;
		return kx_ew(K->g, in->op, a, b, c, 1);
	}
	case AR_RED:
	case AR_DOT:
		return kred(K, i);
	}
	return kleaf(K, in);
}

static LLVMValueRef kval(Kx *K, KiRef r)
{
	switch (KI_RKIND(r)) {
	case RK_CON: return LLVMConstReal(K->dt, K->f->con[KI_RIDX(r)]);
	case RK_PAR: return ld(K->g, K->dt, FLD(K, par, K->g->ptr), ci(K->g, KI_RIDX(r)), 8);
	case RK_INS: break;
	default: return LLVMConstReal(K->dt, 0);
	}
	int i = KI_RIDX(r);
	if (!(K->f->ins[i].axes & AXM(AX_out)))
		return K->sv[i] ? K->sv[i] : LLVMConstReal(K->dt, NAN);
	if (!K->ov[i])
		K->ov[i] = keval(K, i);
	return K->ov[i];
}

int kx_gen_keepn(Gen *g, const KiFn *f, KiErr *e)
{
	LLVMTypeRef ps[1] = { g->ptr };
	newfn(g, "kvcc_keepn", g->i64, ps, 1);
	LLVMBuilderRef b = g->b;
	Kx K = { g, f, LLVMDoubleTypeInContext(g->cx), LLVMGetParam(g->fn, 0), NULL, NULL, NULL, NULL, NULL };
	K.n = FLD(&K, n, g->i64);
	if (KI_RKIND(f->sel.keep) == RK_NIL) {     /* the budget's count */
		LLVMTypeRef np[6] = { g->ptr, g->i64, g->i64, g->i64, K.dt, g->i64 };
		LLVMValueRef av[6] = { FLD(&K, par, g->ptr), FLD(&K, layer, g->i64), FLD(&K, layers, g->i64), K.n,
		                       FLD(&K, ratio, K.dt), FLD(&K, budget, g->i64) };
		LLVMBuildRet(b, LLVMBuildCall2(b, LLVMFunctionType(g->i64, np, 6, 0), LLVMGetNamedFunction(g->m, "kvcc_nkeep"),
		                               av, 6, ""));
		return 0;
	}
	LLVMValueRef no = FLD(&K, nout, g->i64);
	K.nout = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, no, ci(g, 0), ""), no, ci(g, 1), "");
	uint8_t *need = calloc((size_t)f->nins + 1, 1);
	K.sv = calloc((size_t)f->nins + 1, sizeof *K.sv);
	K.ov = calloc((size_t)f->nins + 1, sizeof *K.ov);
	if (!need || !K.sv || !K.ov) {
		free(need), free(K.sv), free(K.ov);
		ki_error(e, f->src, 0, 0, "out of memory (keep count)");
		return -1;
	}
	ki_keepneed(f, need);
	for (int i = 0; i < f->nins; i++)
		if (need[i] && !(f->ins[i].axes & AXM(AX_out)))
			K.sv[i] = keval(&K, i);
	LLVMValueRef v = kval(&K, f->sel.keep);
	free(need), free(K.sv), free(K.ov);
	/* compiler/select.c ki_counts: not finite: -1 NaN, -2 +inf, -3 -inf; else floor, 0..n */
	LLVMTypeRef dt = K.dt;
	LLVMValueRef inf = LLVMConstReal(dt, INFINITY), ninf = LLVMConstReal(dt, -INFINITY);
	LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, v, v, "");
	LLVMValueRef pinf = LLVMBuildFCmp(b, LLVMRealOEQ, v, inf, ""), minf = LLVMBuildFCmp(b, LLVMRealOEQ, v, ninf, "");
	LLVMValueRef fl = intr(g, "llvm.floor", dt, &v, 1), nd = LLVMBuildSIToFP(b, K.n, dt, "");
	LLVMValueRef lo = LLVMBuildFCmp(b, LLVMRealULT, fl, LLVMConstReal(dt, 0), "");
	LLVMValueRef hi = LLVMBuildFCmp(b, LLVMRealOGT, fl, nd, "");
	LLVMValueRef safe = LLVMBuildSelect(b, LLVMBuildOr(b, lo, hi, ""), LLVMConstReal(dt, 0), fl, "");
	LLVMValueRef k = LLVMBuildSelect(b, hi, K.n, LLVMBuildFPToSI(b, safe, g->i64, ""), "");
	k = LLVMBuildSelect(b, minf, ci(g, -3), k, "");
	k = LLVMBuildSelect(b, pinf, ci(g, -2), k, "");
	k = LLVMBuildSelect(b, nan, ci(g, -1), k, "");
	LLVMBuildRet(b, k);
	return 0;
}
