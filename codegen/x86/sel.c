/*
** Selection rules beyond top-k in generated code (issue 13; DESIGN §3 "Selection rules"):
**
**   tfilter   threshold τ: the candidates of one (layer, head) — its protected tokens and the
**             others whose score is >= τ (compared in double, as the reference; NaN never) —
**             keep their selkeys key, the rest get key 0, below every candidate. The runtime
**             then takes the top min(count, candidates) keys of the scope group with the
**             radix select (topk), as for top-k.
**   ctfilter  threshold τ with chunk > 1: the same over ckeys' chunk keys, a chunk's mean (double)
**             against τ; returns the tokens of the chunks left. The runtime leaves a filtered
**             shorter last chunk out and caps the group's budget at those tokens (chunkgreedy).
**   mtotal    mass p: the sum of the unprotected scores of one (layer, head) (double, token
**   ksum      order) and the first one that is not >= 0 (a run-time error); ksum, the sum of the
**             unprotected scores whose key is >= a threshold. The runtime bisects the count k of
**             the best unprotected tokens (topk per probe) for the smallest k whose sum reaches
**             p of the total, then keeps the best min(cap, protected + k) as for top-k.
**   cmass     mass p with chunk > 1: over ckeys' chunk keys, the sum of the scores of the
**             unprotected chunks whose key is >= a threshold and the first one that is not
**             >= 0; the runtime bisects the count of the group's best unprotected chunks (the
**             instances' full chunks and their shorter last ones, topk) for the smallest one
**             whose sum reaches p of the total (cmass at threshold 0), then keeps the protected
**             chunks and those, whole chunks while they fit (the chunk greedy of topk).
**   kfloor    floor α (scope layer, chunk 1): the runtime radix-selects each head's own top
**             ⌊α·n_keep⌋ keys (its threshold); kfloor lifts them above every key of the layer
**             (top 33 bits all ones; the id bits keep them distinct), so that the layer's top-k
**             over Σ n_keep keeps them and gives the rest to one ranking of what is left.
**   kcut      merge summary at scope layer / model (session 10): an instance without a summary
**             block in an evicting group keeps at most its n - C best rows; the runtime
**             radix-selects that count's threshold (topk), kcut gives the keys below it key 0,
**             below every key the group's top-k takes (compress.c sumgroup).
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

/* i64 ctfilter(score, n, S, R, chunk, tau, key), after ckeys: key[j] = 0 for every unprotected
** chunk j (tokens t0 = j·chunk .. min(t0 + chunk, n) - 1, the last one may be shorter) whose mean
** (a double sum in token order over its length, the reference's; NaN if a token is) is not >= tau;
** returns the tokens of the chunks left (protected or candidates) */
void kx_gen_ctfilter(Gen *g)
{
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[7] = { g->ptr, g->i64, g->i64, g->i64, g->i64, f64, g->ptr };
	newfn(g, "kvcc_ctfilter", g->i64, ps, 7);
	LLVMValueRef sc = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), S = LLVMGetParam(g->fn, 2);
	LLVMValueRef R = LLVMGetParam(g->fn, 3), ch = LLVMGetParam(g->fn, 4), tau = LLVMGetParam(g->fn, 5);
	LLVMValueRef key = LLVMGetParam(g->fn, 6);
	LLVMBuilderRef b = g->b;
	LLVMValueRef sp = entry_alloca(g, f64), mp = entry_alloca(g, g->i64);
	LLVMBuildStore(b, ci(g, 0), mp);
	LLVMValueRef nr = LLVMBuildSub(b, n, R, "");
	LLVMValueRef nc = LLVMBuildSDiv(b, LLVMBuildSub(b, LLVMBuildAdd(b, n, ch, ""), ci(g, 1), ""), ch, "");
	Loop lp;
	LLVMValueRef j = loop_begin2(g, ci(g, 0), nc, 1, 1, &lp), t0, e;
	LLVMValueRef mean = kx_chunkmean(g, sc, n, ch, j, sp, &t0, &e), len = LLVMBuildSub(b, e, t0, "");
	LLVMValueRef prot = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, t0, S, ""),
	                                LLVMBuildICmp(b, LLVMIntSGT, e, nr, ""), "");
	LLVMValueRef in = LLVMBuildOr(b, prot, LLVMBuildFCmp(b, LLVMRealOGE, mean, tau, ""), "");
	st_(g, g->i64, LLVMBuildSelect(b, in, ld(g, g->i64, key, j, 8), ci(g, 0), ""), key, j, 8);
	LLVMBuildStore(b, LLVMBuildAdd(b, LLVMBuildLoad2(b, g->i64, mp, ""), LLVMBuildSelect(b, in, len, ci(g, 0), ""), ""),
	               mp);
	loop_end(g, &lp);
	LLVMBuildRet(b, LLVMBuildLoad2(b, g->i64, mp, ""));
}

/* i64 mtotal(score, n, S, R, tot): *tot = the sum (double, in token order) of the unprotected
** scores (S <= i < n - R); returns the first unprotected i whose score is not >= 0, or -1 */
void kx_gen_mtotal(Gen *g)
{
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[5] = { g->ptr, g->i64, g->i64, g->i64, g->ptr };
	newfn(g, "kvcc_mtotal", g->i64, ps, 5);
	LLVMValueRef sc = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), S = LLVMGetParam(g->fn, 2);
	LLVMValueRef R = LLVMGetParam(g->fn, 3), tot = LLVMGetParam(g->fn, 4);
	LLVMBuilderRef b = g->b;
	LLVMValueRef nr = LLVMBuildSub(b, n, R, ""), acc = entry_alloca(g, f64), bad = entry_alloca(g, g->i64);
	LLVMBuildStore(b, LLVMConstReal(f64, 0), acc);
	LLVMBuildStore(b, ci(g, -1), bad);
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef prot = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, i, S, ""), LLVMBuildICmp(b, LLVMIntSGE, i, nr, ""), "");
	LLVMValueRef v = LLVMBuildFPExt(b, ld(g, g->f32, sc, i, 4), f64, "");
	LLVMValueRef a = LLVMBuildLoad2(b, f64, acc, "");
	LLVMBuildStore(b, LLVMBuildSelect(b, prot, a, LLVMBuildFAdd(b, a, v, ""), ""), acc);
	LLVMValueRef neg = LLVMBuildAnd(b, LLVMBuildNot(b, prot, ""),
	                                LLVMBuildNot(b, LLVMBuildFCmp(b, LLVMRealOGE, v, LLVMConstReal(f64, 0), ""), ""), "");
	LLVMValueRef bv = LLVMBuildLoad2(b, g->i64, bad, "");
	LLVMValueRef first = LLVMBuildAnd(b, neg, LLVMBuildICmp(b, LLVMIntSLT, bv, ci(g, 0), ""), "");
	LLVMBuildStore(b, LLVMBuildSelect(b, first, i, bv, ""), bad);
	loop_end(g, &lp);
	st_(g, f64, LLVMBuildLoad2(b, f64, acc, ""), tot, ci(g, 0), 8);
	LLVMBuildRet(b, LLVMBuildLoad2(b, g->i64, bad, ""));
}

/* double ksum(key, score, n, thr): the sum (double, token order) of score[i] over the unprotected
** keys (bit 63 clear) >= thr */
void kx_gen_ksum(Gen *g)
{
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[4] = { g->ptr, g->ptr, g->i64, g->i64 };
	newfn(g, "kvcc_ksum", f64, ps, 4);
	LLVMValueRef key = LLVMGetParam(g->fn, 0), sc = LLVMGetParam(g->fn, 1), n = LLVMGetParam(g->fn, 2);
	LLVMValueRef thr = LLVMGetParam(g->fn, 3);
	LLVMBuilderRef b = g->b;
	LLVMValueRef acc = entry_alloca(g, f64);
	LLVMBuildStore(b, LLVMConstReal(f64, 0), acc);
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef k = ld(g, g->i64, key, i, 8);
	LLVMValueRef in = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntUGE, k, thr, ""),
	                               LLVMBuildICmp(b, LLVMIntSGE, k, ci(g, 0), ""), "");
	LLVMValueRef a = LLVMBuildLoad2(b, f64, acc, "");
	LLVMValueRef v = LLVMBuildFPExt(b, ld(g, g->f32, sc, i, 4), f64, "");
	LLVMBuildStore(b, LLVMBuildSelect(b, in, LLVMBuildFAdd(b, a, v, ""), a, ""), acc);
	loop_end(g, &lp);
	LLVMBuildRet(b, LLVMBuildLoad2(b, f64, acc, ""));
}

/* double cmass(score, key, n, chunk, thr, bad), after ckeys: the sum (double, token order) of the
** scores of every chunk j < ceil(n / chunk) (tokens j·chunk .. min(j·chunk + chunk, n) - 1) whose
** key is unprotected (bit 63 clear) and >= thr (unsigned); *bad = the first of those tokens whose
** score is not >= 0, else -1 */
void kx_gen_cmass(Gen *g)
{
	LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->cx);
	LLVMTypeRef ps[6] = { g->ptr, g->ptr, g->i64, g->i64, g->i64, g->ptr };
	newfn(g, "kvcc_cmass", f64, ps, 6);
	LLVMValueRef sc = LLVMGetParam(g->fn, 0), key = LLVMGetParam(g->fn, 1), n = LLVMGetParam(g->fn, 2);
	LLVMValueRef ch = LLVMGetParam(g->fn, 3), thr = LLVMGetParam(g->fn, 4), badp = LLVMGetParam(g->fn, 5);
	LLVMBuilderRef b = g->b;
	LLVMValueRef acc = entry_alloca(g, f64), bad = entry_alloca(g, g->i64);
	LLVMBuildStore(b, LLVMConstReal(f64, 0), acc);
	LLVMBuildStore(b, ci(g, -1), bad);
	Loop lp;
	LLVMValueRef t = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef k = ld(g, g->i64, key, LLVMBuildSDiv(b, t, ch, ""), 8);
	LLVMValueRef in = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntUGE, k, thr, ""),
	                               LLVMBuildICmp(b, LLVMIntSGE, k, ci(g, 0), ""), "");
	LLVMValueRef v = LLVMBuildFPExt(b, ld(g, g->f32, sc, t, 4), f64, "");
	LLVMValueRef a = LLVMBuildLoad2(b, f64, acc, "");
	LLVMBuildStore(b, LLVMBuildSelect(b, in, LLVMBuildFAdd(b, a, v, ""), a, ""), acc);
	LLVMValueRef neg = LLVMBuildAnd(b, in, LLVMBuildNot(b, LLVMBuildFCmp(b, LLVMRealOGE, v, LLVMConstReal(f64, 0), ""), ""), "");
	LLVMValueRef bv = LLVMBuildLoad2(b, g->i64, bad, "");
	LLVMValueRef first = LLVMBuildAnd(b, neg, LLVMBuildICmp(b, LLVMIntSLT, bv, ci(g, 0), ""), "");
	LLVMBuildStore(b, LLVMBuildSelect(b, first, t, bv, ""), bad);
	loop_end(g, &lp);
	st_(g, g->i64, LLVMBuildLoad2(b, g->i64, bad, ""), badp, ci(g, 0), 8);
	LLVMBuildRet(b, LLVMBuildLoad2(b, f64, acc, ""));
}

/* the keys of one (layer, head) against a threshold thr (unsigned), in place: name's
** void fn(key, n, thr) with key[i] = lift ? (key[i] >= thr ? lifted : key[i]) : (key[i] >= thr ? key[i] : 0) */
static void thrkeys(Gen *g, const char *name, int lift)
{
	LLVMTypeRef ps[3] = { g->ptr, g->i64, g->i64 };
	newfn(g, name, LLVMVoidTypeInContext(g->cx), ps, 3);
	LLVMValueRef key = LLVMGetParam(g->fn, 0), n = LLVMGetParam(g->fn, 1), thr = LLVMGetParam(g->fn, 2);
	LLVMBuilderRef b = g->b;
	Loop lp;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &lp);
	LLVMValueRef k = ld(g, g->i64, key, i, 8), ge = LLVMBuildICmp(b, LLVMIntUGE, k, thr, "");
	LLVMValueRef up = lift ? LLVMBuildOr(b, LLVMBuildAnd(b, k, ci(g, 0x7fffffff), ""), ci(g, (long)(~0ull << 31)), "") : k;
	st_(g, g->i64, LLVMBuildSelect(b, ge, up, lift ? k : ci(g, 0), ""), key, i, 8);
	loop_end(g, &lp);
	LLVMBuildRetVoid(b);
}

/* void kfloor(key, n, thr): key[i] = ~0 << 31 | (key[i] & 0x7fffffff) for every key[i] >= thr
** (unsigned): above every selkeys key (a protected one's rank never has all 32 bits set) */
void kx_gen_kfloor(Gen *g)
{
	thrkeys(g, "kvcc_kfloor", 1);
}

/* void kcut(key, n, thr): key[i] = 0 for every key[i] < thr (unsigned), the others unchanged */
void kx_gen_kcut(Gen *g)
{
	thrkeys(g, "kvcc_kcut", 0);
}
