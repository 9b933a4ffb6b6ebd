/*
** Selection rules beyond top-k in generated code (issue 13; DESIGN §3 "Selection rules"):
**
**   tfilter   threshold τ: the candidates of one (layer, head) — its protected tokens and the
**             others whose score is >= τ (compared in double, as the reference; NaN never) —
**             keep their selkeys key, the rest get key 0, below every candidate. The runtime
**             then takes the top min(count, candidates) keys of the scope group with the
**             radix select (topk), as for top-k.
*/
#include "codegen/x86/gen.h"

/* i64 tfilter(score, n, S, R, tau, key): key[i] = 0 for every unprotected token i (S <= i <
** n - R) whose score is not >= tau; returns the number of keys left (the candidates) */
void kx_gen_tfilter(Gen *g)
{
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[6] = { g->ptr, g->i64, g->i64, g->i64, f64, g->ptr };
	newfn(g, "kvcc_tfilter", g->i64, ps, 6);
	LLVMValueRef sc = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), S = LLVMGetParam(g->fn, 2);
	LLVMValueRef R = LLVMGetParam(g->fn, 3), tau = LLVMGetParam(g->fn, 4), key = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMValueRef nr = LLVMBuildSub(b, n, R, ""), mp = entry_alloca(g, g->i64);
	LLVMBuildStore(b, ci(g, 0), mp);
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef prot = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, i, S, ""), LLVMBuildICmp(b, LLVMIntSGE, i, nr, ""), "");
	LLVMValueRef ge = LLVMBuildFCmp(b, LLVMRealOGE, LLVMBuildFPExt(b, ld(g, g->f32, sc, i, 4), f64, ""), tau, "");
	LLVMValueRef in = LLVMBuildOr(b, prot, ge, "");
	st_(g, g->i64, LLVMBuildSelect(b, in, ld(g, g->i64, key, i, 8), ci(g, 0), ""), key, i, 8);
	LLVMBuildStore(b, LLVMBuildAdd(b, LLVMBuildLoad2(b, g->i64, mp, ""), LLVMBuildZExt(b, in, g->i64, ""), ""), mp);
	loop_end(g, &lp);
	LLVMBuildRet(b, LLVMBuildLoad2(b, g->i64, mp, ""));
}
