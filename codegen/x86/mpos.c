/*
** The pair evaluator of the positional and run merges (issue 12; DESIGN §3 "Merge semantics"):
** one generated function, mrow, that evaluates a root of the merge rule at one pair of rows
** given by pointers (storage dtype, head_dim elements each), every value of the pair
** expressions computed there (no row-scalar tables, no tiled product):
**
**   mrow(which, EK, EV, KK, KV, sim, absorbed, ntargets, ecount, kcount, par)
**     which 0 the threshold, 1 the weight w_e, 2 the self weight w_k, 3 the similarity;
**     erow(K / V) reads EK / EV, krow(K / V) reads KK / KV, pinfo the scalars given.
**
** Merge runs (KVMerger) uses it for the similarity of neighbouring rows, the threshold, the
** weights (runtime/mpos.c drives it); any [chan] value of one row or of both (e.K - k.K ...)
** and reductions over chan of them, as compiler/mplan.c mposkernels allows. f32 arithmetic,
** elementwise ops as the token_map loops' (kx_ew), reductions over chan by the op table's
** map / comb / fin.
*/
#include <stdlib.h>
#include <string.h>
#include "codegen/x86/gen.h"
#include "compiler/mplan.h"

typedef struct Mp {
	Gen *g;
	const KiFn *f;
	LLVMValueRef *val;       /* [nins] scalar values at the current root (NULL: not yet) */
	char *need;
	LLVMValueRef EK, EV, KK, KV, par;
	LLVMValueRef vals, et, kt, tg, ntg;   /* ordinary [token] values (next, CaM): vals[i][t] */
	LLVMValueRef pi[PI_NUM]; /* sim, absorbed, ntargets, ecount, kcount */
} Mp;

static LLVMValueRef scal(Mp *M, KiRef r);

/* instruction a's stored [token] values of the instance (vals[a]) */
static LLVMValueRef tokarr(Mp *M, int a)
{
	Gen *g = M->g;
	return LLVMBuildLoad2(g->b, g->ptr, gep(g, g->ptr, M->vals, ci(g, a)), "");
}

/* the mean of vals[a] over e's targets tg[0 .. ntg) (NaN without targets) */
static LLVMValueRef tmeanv(Mp *M, int a)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	LLVMValueRef arr = tokarr(M, a), acc = entry_alloca(g, g->f32);
	LLVMBuildStore(b, cfv(g, 0, 1), acc);
	Loop lu;
	LLVMValueRef u = loop_begin2(g, ci(g, 0), M->ntg, 1, 1, &lu);
	LLVMValueRef t = LLVMBuildSExt(b, ld(g, g->i32, M->tg, u, 4), g->i64, "");
	LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, g->f32, acc, ""), ldf(g, arr, t), ""), acc);
	loop_end(g, &lu);
	LLVMValueRef s = LLVMBuildLoad2(b, g->f32, acc, "");
	LLVMValueRef n = LLVMBuildSIToFP(b, M->ntg, g->f32, "");
	LLVMValueRef none = LLVMBuildICmp(b, LLVMIntSLE, M->ntg, ci(g, 0), "");
	return LLVMBuildSelect(b, none, cfv(g, NAN, 1), LLVMBuildFDiv(b, s, n, ""), "");
}

static LLVMValueRef mppar(Mp *M, int p)
{
	Gen *g = M->g;
	LLVMValueRef v = LLVMBuildLoad2(g->b, LLVMDoubleTypeInContext(g->cx),
	                                gep(g, LLVMDoubleTypeInContext(g->cx), M->par, ci(g, p)), "");
	return LLVMBuildFPTrunc(g->b, v, g->f32, "");
}

/* a [chan] (or scalar, broadcast) value at channel ch */
static LLVMValueRef chanv(Mp *M, KiRef r, LLVMValueRef ch)
{
	Gen *g = M->g;
	if (KI_RKIND(r) != RK_INS || !(M->f->ins[KI_RIDX(r)].axes & AXM(AX_chan)))
		return scal(M, r);
	const KiIns *in = &M->f->ins[KI_RIDX(r)];
	if (in->op == KO_erow || in->op == KO_krow) {
		int v = M->f->ins[KI_RIDX(in->arg[0])].aux == IN_V;
		LLVMValueRef base = in->op == KO_erow ? (v ? M->EV : M->EK) : (v ? M->KV : M->KK);
		return loadconv(g, base, ch, 1);
	}
	return kx_ew(g, in->op, chanv(M, in->arg[0], ch), chanv(M, in->arg[1], ch), chanv(M, in->arg[2], ch), 1);
}

/* a reduction over chan of [chan] values */
static LLVMValueRef chanred(Mp *M, const KiIns *in)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	const KiSem *sem = ki_sem(in->op);
	LLVMValueRef acc = entry_alloca(g, g->f32);
	LLVMBuildStore(b, cfv(g, sem->init, 1), acc);
	Loop lc;
	LLVMValueRef ch = loop_begin(g, ci(g, 0), ci(g, g->d), 1, &lc);
	LLVMValueRef x = chanv(M, in->arg[0], ch);
	if (sem->map == MAP_SQ)
		x = LLVMBuildFMul(b, x, x, "");
	else if (sem->map == MAP_MUL)
		x = LLVMBuildFMul(b, x, chanv(M, in->arg[1], ch), "");
	LLVMValueRef a = LLVMBuildLoad2(b, g->f32, acc, ""), r;
	if (sem->comb == CMB_ADD)
		r = LLVMBuildFAdd(b, a, x, "");
	else {      /* v if v beats acc or v is NaN (a NaN stays) */
		LLVMValueRef better = LLVMBuildFCmp(b, sem->comb == CMB_MAX ? LLVMRealUGT : LLVMRealULT, x, a, "");
		LLVMValueRef anan = LLVMBuildFCmp(b, LLVMRealUNO, a, a, "");
		r = LLVMBuildSelect(b, LLVMBuildAnd(b, better, LLVMBuildNot(b, anan, ""), ""), x, a, "");
	}
	LLVMBuildStore(b, r, acc);
	loop_end(g, &lc);
	LLVMValueRef v = LLVMBuildLoad2(b, g->f32, acc, "");
	LLVMValueRef n = cfv(g, g->d, 1);
	switch (sem->fin) {
	case FIN_MEAN: return LLVMBuildFDiv(b, v, n, "");
	case FIN_SQRT: return intr(g, "llvm.sqrt", g->f32, &v, 1);
	case FIN_RMS: {
		LLVMValueRef q = LLVMBuildFDiv(b, v, n, "");
		return intr(g, "llvm.sqrt", g->f32, &q, 1);
	}
	}
	return v;
}

/* a scalar value: constants, params, or an instruction already made (scalroot orders them) */
static LLVMValueRef scal(Mp *M, KiRef r)
{
	switch (KI_RKIND(r)) {
	case RK_CON: return cfv(M->g, M->f->con[KI_RIDX(r)], 1);
	case RK_PAR: return mppar(M, KI_RIDX(r));
	case RK_INS: {
		int i = KI_RIDX(r);
		if (M->val[i])
			return M->val[i];
		const KiIns *in = &M->f->ins[i];
		LLVMValueRef v;
		if (in->op == KO_pinfo)
			v = M->pi[in->aux < PI_NUM ? in->aux : 0];
		else if (in->op == KO_erow || in->op == KO_krow)   /* an ordinary [token] value at e / k */
			v = ldf(M->g, tokarr(M, KI_RIDX(in->arg[0])), in->op == KO_erow ? M->et : M->kt);
		else if (in->op == KO_tmean)
			v = tmeanv(M, KI_RIDX(in->arg[0]));
		else if (ki_sem(in->op)->kind == SEM_RED)
			v = chanred(M, in);
		else
			v = kx_ew(M->g, in->op, scal(M, in->arg[0]), scal(M, in->arg[1]), scal(M, in->arg[2]), 1);
		return M->val[i] = v;
	}
	}
	return cfv(M->g, NAN, 1);
}

/* root r: its scalar instructions in order (values made before any loop that reads them) */
static LLVMValueRef scalroot(Mp *M, KiRef r)
{
	if (KI_RKIND(r) != RK_INS)
		return scal(M, r);
	const KiFn *f = M->f;
	int top = KI_RIDX(r);
	memset(M->val, 0, (size_t)f->nins * sizeof *M->val);
	memset(M->need, 0, (size_t)top + 1);
	M->need[top] = 1;
	for (int i = top; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || in->op == KO_pinfo || in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean)
			continue;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
				M->need[KI_RIDX(in->arg[k])] = 1;
	}
	for (int i = 0; i <= top; i++)
		if (M->need[i] && !(f->ins[i].axes & AXM(AX_chan)))
			scal(M, KI_REF(RK_INS, i));
	return scal(M, r);
}

int kx_gen_mrow(Gen *g, const KiFn *f, LLVMValueRef *fn)
{
	LLVMBuilderRef b = g->b;
	LLVMTypeRef ps[16] = { g->i64, g->ptr, g->ptr, g->ptr, g->ptr, g->f32, g->f32, g->f32, g->f32, g->f32, g->ptr,
	                       g->ptr, g->i64, g->i64, g->ptr, g->i64 };
	newfn(g, "kvcc_mrow", g->f32, ps, 16);
	*fn = g->fn;
	if (f->merge.kind != MG_runs && f->merge.kind != MG_next) {        /* the runtime never calls it */
		LLVMBuildRet(b, cfv(g, NAN, 1));
		return 0;
	}
	Mp M = { .g = g, .f = f };
	M.val = calloc((size_t)f->nins + 1, sizeof *M.val);
	M.need = malloc((size_t)f->nins + 1);
	if (!M.val || !M.need) {
		free(M.val), free(M.need);
		return -1;
	}
	LLVMValueRef which = LLVMGetParam(g->fn, 0);
	M.EK = LLVMGetParam(g->fn, 1), M.EV = LLVMGetParam(g->fn, 2);
	M.KK = LLVMGetParam(g->fn, 3), M.KV = LLVMGetParam(g->fn, 4);
	for (int k = 0; k < PI_NUM; k++)
		M.pi[k] = LLVMGetParam(g->fn, 5 + (unsigned)k);
	M.par = LLVMGetParam(g->fn, 10);
	M.vals = LLVMGetParam(g->fn, 11), M.et = LLVMGetParam(g->fn, 12), M.kt = LLVMGetParam(g->fn, 13);
	M.tg = LLVMGetParam(g->fn, 14), M.ntg = LLVMGetParam(g->fn, 15);
	const KiMerge *m = &f->merge;
	KiRef roots[4] = { m->thr == MT_value ? m->threshold : KI_NIL, m->weight, m->self, m->sim };
	LLVMBasicBlockRef bb[4], bad = LLVMAppendBasicBlockInContext(g->cx, g->fn, "none");
	for (int r = 0; r < 4; r++)
		bb[r] = LLVMAppendBasicBlockInContext(g->cx, g->fn, "root");
	LLVMValueRef sw = LLVMBuildSwitch(b, which, bad, 4);
	for (int r = 0; r < 4; r++) {
		LLVMAddCase(sw, ci(g, r), bb[r]);
		LLVMPositionBuilderAtEnd(b, bb[r]);
		LLVMBuildRet(b, roots[r] == KI_NIL ? cfv(g, NAN, 1) : scalroot(&M, roots[r]));
	}
	LLVMPositionBuilderAtEnd(b, bad);
	LLVMBuildRet(b, cfv(g, NAN, 1));
	free(M.val), free(M.need);
	return 0;
}
