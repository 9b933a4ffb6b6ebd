/*
** The model schedules' counts (issue 12 session 9; DESIGN §3 "Global rules"; compiler/select.c
** prefixsched / dynsched define them, tests/oracle/selref.py checks both): i64
** kvcc_schedcnt(kvcc_sched_ctx *c) sets every instance's count of one sequence, c->nk[LH], from
** all its scores, before the per-head top-k. The order of keys and every count come from the
** select kernels of the same module (selkeys, topk, kcount, mtotal, ksum: called, not copied);
** the bisections and the schedules' arithmetic are here, so the runtime evaluates nothing.
**   prefix   PrefixKV: per instance its scores' keys without protection and their total; for a
**            mass p the evictions n - m - protected (m: the smallest count of its best tokens whose
**            mass reaches p, by bisection over the count bracketed by the p bisection's bounds:
**            m is monotone in p); p bisected as the interpreter until the evictions are within
**            tol of the target; then the evictions scaled to the target and truncated.
**   dynamic  DynamicKV: the keys of every instance's first n - w tokens (ids in (layer, head,
**            token) order), one topk over the layers so far per round, kcount per layer, then
**            the DynamicKV code's arithmetic (float normalization, Python's float floor division).
** Returns 0, or: -1 prefix tol / iters out of range, -2 a score not finite and >= 0 (c->bad its
** instance, c->badt its token), -3 dynamic lengths differ, -4 dynamic ratio_max / every out of
** range; the runtime reports them at the select rule. A stub (0) for the other policies.
*/
#include <stddef.h>
#include <string.h>
#include "codegen/x86/gen.h"
#include "runtime/artifact.h"

typedef struct Sx {
	Gen *g;
	LLVMTypeRef f64, f32, i32, i1;
	LLVMValueRef c;                            /* the kvcc_sched_ctx */
	LLVMValueRef selkeys, topk, kcount, mtotal, ksum;
} Sx;

#define CF(X, name, t) ld((X)->g, (t), (X)->c, ci((X)->g, (long)(offsetof(kvcc_sched_ctx, name) / 8)), 8)
#define CP(X, name) gep((X)->g, (X)->g->i64, (X)->c, ci((X)->g, (long)(offsetof(kvcc_sched_ctx, name) / 8)))

/* mutable scalars: an alloca each (sroa makes them registers) */
static LLVMValueRef var(Sx *X, LLVMTypeRef t, LLVMValueRef init)
{
	LLVMValueRef a = entry_alloca(X->g, t);
	LLVMBuildStore(X->g->b, init, a);
	return a;
}
static LLVMValueRef get(Sx *X, LLVMTypeRef t, LLVMValueRef a) { return LLVMBuildLoad2(X->g->b, t, a, ""); }
static void set(Sx *X, LLVMValueRef a, LLVMValueRef v) { LLVMBuildStore(X->g->b, v, a); }
static LLVMValueRef ldi(Sx *X, LLVMValueRef p, LLVMValueRef i) { return ld(X->g, X->g->i64, p, i, 8); }
static void sti(Sx *X, LLVMValueRef p, LLVMValueRef i, LLVMValueRef v) { st_(X->g, X->g->i64, v, p, i, 8); }
static LLVMValueRef smin(Sx *X, LLVMValueRef a, LLVMValueRef b)
{
	return LLVMBuildSelect(X->g->b, LLVMBuildICmp(X->g->b, LLVMIntSLT, a, b, ""), a, b, "");
}
static LLVMValueRef icmp(Sx *X, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b)
{
	return LLVMBuildICmp(X->g->b, p, a, b, "");
}
static LLVMValueRef fcmp(Sx *X, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
	return LLVMBuildFCmp(X->g->b, p, a, b, "");
}
static LLVMValueRef cd(Sx *X, double v) { return LLVMConstReal(X->f64, v); }
static LLVMValueRef tod(Sx *X, LLVMValueRef i) { return LLVMBuildSIToFP(X->g->b, i, X->f64, ""); }
static LLVMValueRef call(Sx *X, LLVMValueRef fn, LLVMValueRef *a, int n)
{
	return LLVMBuildCall2(X->g->b, LLVMGlobalGetValueType(fn), fn, a, (unsigned)n, "");
}
static LLVMValueRef fintr(Sx *X, const char *name, LLVMValueRef x)
{
	return intr(X->g, name, X->f64, &x, 1);
}

/* if (cond) { ...: the builder in the then block; ifend closes it */
typedef struct If { LLVMBasicBlockRef then, done; } If;
static void ifbeg(Sx *X, LLVMValueRef cond, If *f)
{
	Gen *g = X->g;
	f->then = LLVMAppendBasicBlockInContext(g->cx, g->fn, "then");
	f->done = LLVMAppendBasicBlockInContext(g->cx, g->fn, "fi");
	LLVMBuildCondBr(g->b, cond, f->then, f->done);
	LLVMPositionBuilderAtEnd(g->b, f->then);
}
static void ifend(Sx *X, If *f)
{
	if (!LLVMGetBasicBlockTerminator(LLVMGetInsertBlock(X->g->b)))
		LLVMBuildBr(X->g->b, f->done);
	LLVMPositionBuilderAtEnd(X->g->b, f->done);
}
/* return v (a block of its own: code after it in the same C scope goes to a dead block) */
static void ret(Sx *X, LLVMValueRef v)
{
	LLVMBuildRet(X->g->b, v);
	LLVMPositionBuilderAtEnd(X->g->b, LLVMAppendBasicBlockInContext(X->g->cx, X->g->fn, "dead"));
}

/* while (cond) { ...: whbeg gives the body's builder position after the condition built by
** the caller in w->head; whend jumps back */
typedef struct While { LLVMBasicBlockRef head, body, exit; } While;
static void whhead(Sx *X, While *w)
{
	Gen *g = X->g;
	w->head = LLVMAppendBasicBlockInContext(g->cx, g->fn, "while");
	w->body = LLVMAppendBasicBlockInContext(g->cx, g->fn, "do");
	w->exit = LLVMAppendBasicBlockInContext(g->cx, g->fn, "done");
	LLVMBuildBr(g->b, w->head);
	LLVMPositionBuilderAtEnd(g->b, w->head);
}
static void whcond(Sx *X, While *w, LLVMValueRef cond)
{
	LLVMBuildCondBr(X->g->b, cond, w->body, w->exit);
	LLVMPositionBuilderAtEnd(X->g->b, w->body);
}
static void whend(Sx *X, While *w)
{
	LLVMBuildBr(X->g->b, w->head);
	LLVMPositionBuilderAtEnd(X->g->b, w->exit);
}

/* return code unless alo <= a <= ahi and blo <= bv <= bhi, bv an integer (the schedule's two
** arguments; NaN fails) */
static void argcheck(Sx *X, LLVMValueRef a, double alo, double ahi, LLVMValueRef bv, double blo, double bhi, long code)
{
	LLVMBuilderRef b = X->g->b;
	LLVMValueRef oka = LLVMBuildAnd(b, fcmp(X, LLVMRealOGE, a, cd(X, alo)), fcmp(X, LLVMRealOLE, a, cd(X, ahi)), "");
	LLVMValueRef okb = LLVMBuildAnd(b, LLVMBuildAnd(b, fcmp(X, LLVMRealOGE, bv, cd(X, blo)),
	                                                fcmp(X, LLVMRealOLE, bv, cd(X, bhi)), ""),
	                                fcmp(X, LLVMRealOEQ, bv, fintr(X, "llvm.floor.f64", bv)), "");
	If f;
	ifbeg(X, LLVMBuildNot(b, LLVMBuildAnd(b, oka, okb, ""), ""), &f);
	ret(X, ci(X->g, code));
	ifend(X, &f);
}

/* the evictions n - m - protected at count m, at least 0 */
static LLVMValueRef pfxevict(Sx *X, LLVMValueRef n, LLVMValueRef m, LLVMValueRef prot)
{
	LLVMBuilderRef b = X->g->b;
	LLVMValueRef k = LLVMBuildSub(b, LLVMBuildSub(b, n, m, ""), prot, "");
	return LLVMBuildSelect(b, icmp(X, LLVMIntSGT, k, ci(X->g, 0)), k, ci(X->g, 0), "");
}

static void prefix(Sx *X)
{
	Gen *g = X->g;
	LLVMBuilderRef b = g->b;
	LLVMValueRef L = CF(X, L, g->i64), H = CF(X, H, g->i64), LH = LLVMBuildMul(b, L, H, "");
	LLVMValueRef cap = CF(X, cap, g->i64), budget = CF(X, budget, g->i64);
	LLVMValueRef sc = CF(X, sc, g->ptr), len = CF(X, len, g->ptr), nk = CF(X, nk, g->ptr);
	LLVMValueRef ks = CF(X, ks, g->ptr), tot = CF(X, tot, g->ptr), ws = CF(X, ws, g->ptr);
	LLVMValueRef tol = CF(X, sa, X->f64), iters = CF(X, sb, X->f64);
	If f;
	argcheck(X, tol, 0, 1e9, iters, 0, 1e4, -1);
	LLVMValueRef target = var(X, X->f64, cd(X, 0)), ntot = var(X, X->f64, cd(X, 0));
	Loop lp;
	LLVMValueRef kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);
	{
		LLVMValueRef n = ldi(X, len, kk), s = ld(g, g->ptr, sc, kk, 8), tp = gep(g, X->f64, tot, kk);
		LLVMValueRef a[6] = { s, n, ci(g, 0), ci(g, 0), tp };
		LLVMValueRef bad = call(X, X->mtotal, a, 5), tv = LLVMBuildLoad2(b, X->f64, tp, "");
		LLVMValueRef fin = fcmp(X, LLVMRealONE, fintr(X, "llvm.fabs.f64", tv), cd(X, __builtin_inf()));
		ifbeg(X, LLVMBuildOr(b, icmp(X, LLVMIntSGE, bad, ci(g, 0)), LLVMBuildNot(b, fin, ""), ""), &f);
		{       /* the first token not finite and >= 0 */
			LLVMValueRef t = var(X, g->i64, ci(g, 0));
			While w;
			whhead(X, &w);
			LLVMValueRef tv2 = get(X, g->i64, t);
			LLVMValueRef v = LLVMBuildFPExt(b, ld(g, g->f32, s, smin(X, tv2, LLVMBuildSub(b, n, ci(g, 1), "")), 4), X->f64, "");
			LLVMValueRef good = LLVMBuildAnd(b, fcmp(X, LLVMRealOGE, v, cd(X, 0)),
			                                 fcmp(X, LLVMRealONE, fintr(X, "llvm.fabs.f64", v), cd(X, __builtin_inf())), "");
			whcond(X, &w, LLVMBuildAnd(b, icmp(X, LLVMIntSLT, tv2, n), good, ""));
			set(X, t, LLVMBuildAdd(b, get(X, g->i64, t), ci(g, 1), ""));
			whend(X, &w);
			LLVMBuildStore(b, kk, CP(X, bad));
			LLVMBuildStore(b, get(X, g->i64, t), CP(X, badt));
			ret(X, ci(g, -2));
		}
		ifend(X, &f);
		LLVMValueRef base = LLVMBuildMul(b, kk, cap, "");
		LLVMValueRef k[6] = { s, n, ci(g, 0), ci(g, 0), LLVMBuildTrunc(b, base, X->i32, ""), gep(g, g->i64, ks, base) };
		call(X, X->selkeys, k, 6);
		set(X, ntot, LLVMBuildFAdd(b, get(X, X->f64, ntot), tod(X, n), ""));
		set(X, target, LLVMBuildFAdd(b, get(X, X->f64, target),
		                             LLVMBuildFSub(b, tod(X, n), tod(X, smin(X, budget, n)), ""), ""));
	}
	loop_end(g, &lp);
	ifbeg(X, icmp(X, LLVMIntSLT, budget, ci(g, 0)), &f);       /* the code's sum(n) * ratio */
	set(X, target, LLVMBuildFMul(b, get(X, X->f64, ntot), CF(X, ratio, X->f64), ""));
	ifend(X, &f);
	LLVMValueRef prot = LLVMBuildAdd(b, CF(X, S, g->i64), CF(X, R, g->i64), "");
	LLVMValueRef mlo = ws, mhi = gep(g, g->i64, ws, LH), mm = gep(g, g->i64, ws, LLVMBuildMul(b, LH, ci(g, 2), ""));
	kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);       /* p = 0: the first token reaches it */
	sti(X, mlo, kk, ci(g, 1)), sti(X, mhi, kk, LLVMBuildAdd(b, ldi(X, len, kk), ci(g, 1), "")), sti(X, mm, kk, ci(g, 1));
	loop_end(g, &lp);
	LLVMValueRef lo = var(X, X->f64, cd(X, 0)), hi = var(X, X->f64, cd(X, 1)), it = var(X, g->i64, ci(g, 0));
	LLVMValueRef nit = LLVMBuildFPToSI(b, iters, g->i64, "");
	While w;
	whhead(X, &w);
	whcond(X, &w, LLVMBuildAnd(b, icmp(X, LLVMIntSLT, get(X, g->i64, it), nit),
	                           fcmp(X, LLVMRealOLT, get(X, X->f64, lo), get(X, X->f64, hi)), ""));
	{
		LLVMValueRef mid = LLVMBuildFMul(b, LLVMBuildFAdd(b, get(X, X->f64, lo), get(X, X->f64, hi), ""), cd(X, 0.5), "");
		LLVMValueRef count = var(X, X->f64, cd(X, 0));
		kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);
		{       /* the smallest count m of its best tokens whose mass reaches mid, by bisection */
			LLVMValueRef n = ldi(X, len, kk), s = ld(g, g->ptr, sc, kk, 8), tv = ld(g, X->f64, tot, kk, 8);
			LLVMValueRef kb = gep(g, g->i64, ks, LLVMBuildMul(b, kk, cap, ""));
			LLVMValueRef ml = var(X, g->i64, ldi(X, mlo, kk)), mh = var(X, g->i64, ldi(X, mhi, kk));
			While w2;
			whhead(X, &w2);
			whcond(X, &w2, icmp(X, LLVMIntSLT, get(X, g->i64, ml), get(X, g->i64, mh)));
			LLVMValueRef l0 = get(X, g->i64, ml), h0 = get(X, g->i64, mh);
			LLVMValueRef m2 = LLVMBuildAdd(b, l0, LLVMBuildSDiv(b, LLVMBuildSub(b, h0, l0, ""), ci(g, 2), ""), "");
			LLVMValueRef ta[3] = { kb, n, m2 };
			LLVMValueRef thr = call(X, X->topk, ta, 3);
			LLVMValueRef sa[4] = { kb, s, n, thr };
			LLVMValueRef mass = LLVMBuildSelect(b, fcmp(X, LLVMRealOGT, tv, cd(X, 0)),
			                                    LLVMBuildFDiv(b, call(X, X->ksum, sa, 4), tv, ""), cd(X, 0), "");
			LLVMValueRef reach = LLVMBuildAnd(b, icmp(X, LLVMIntSLE, m2, n), fcmp(X, LLVMRealOGE, mass, mid), "");
			set(X, mh, LLVMBuildSelect(b, reach, m2, h0, ""));
			set(X, ml, LLVMBuildSelect(b, reach, l0, LLVMBuildAdd(b, m2, ci(g, 1), ""), ""));
			whend(X, &w2);
			LLVMValueRef mv = get(X, g->i64, ml);
			sti(X, mm, kk, mv);
			set(X, count, LLVMBuildFAdd(b, get(X, X->f64, count), tod(X, pfxevict(X, n, mv, prot)), ""));
		}
		loop_end(g, &lp);
		LLVMValueRef cnt = get(X, X->f64, count), tg = get(X, X->f64, target);
		LLVMValueRef near = fcmp(X, LLVMRealOLT, fintr(X, "llvm.fabs.f64", LLVMBuildFSub(b, cnt, tg, "")),
		                         tol);
		LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(g->cx, g->fn, "cont");
		LLVMBuildCondBr(b, near, w.exit, cont);
		LLVMPositionBuilderAtEnd(b, cont);
		LLVMValueRef less = fcmp(X, LLVMRealOLT, cnt, tg);
		set(X, hi, LLVMBuildSelect(b, less, mid, get(X, X->f64, hi), ""));
		set(X, lo, LLVMBuildSelect(b, less, get(X, X->f64, lo), mid, ""));
		kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);      /* the bound's counts: mm */
		LLVMValueRef mv = ldi(X, mm, kk);
		sti(X, mhi, kk, LLVMBuildSelect(b, less, mv, ldi(X, mhi, kk), ""));
		sti(X, mlo, kk, LLVMBuildSelect(b, less, ldi(X, mlo, kk), mv, ""));
		loop_end(g, &lp);
		set(X, it, LLVMBuildAdd(b, get(X, g->i64, it), ci(g, 1), ""));
	}
	whend(X, &w);
	LLVMValueRef sum = var(X, X->f64, cd(X, 0));
	kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);
	LLVMValueRef ev = pfxevict(X, ldi(X, len, kk), ldi(X, mm, kk), prot);
	sti(X, nk, kk, ev);
	set(X, sum, LLVMBuildFAdd(b, get(X, X->f64, sum), tod(X, ev), ""));
	loop_end(g, &lp);
	LLVMValueRef sv = get(X, X->f64, sum), tg = get(X, X->f64, target);
	kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);
	{
		LLVMValueRef e = ldi(X, nk, kk), n = ldi(X, len, kk);
		LLVMValueRef sc2 = LLVMBuildFPToSI(b, LLVMBuildFDiv(b, LLVMBuildFMul(b, tod(X, e), tg, ""), sv, ""), g->i64, "");
		e = LLVMBuildSelect(b, fcmp(X, LLVMRealUNE, sv, cd(X, 0)), sc2, e, "");
		sti(X, nk, kk, LLVMBuildSelect(b, icmp(X, LLVMIntSLT, e, n), LLVMBuildSub(b, n, e, ""), ci(g, 0), ""));
	}
	loop_end(g, &lp);
	LLVMBuildRet(b, ci(g, 0));
}

/* Python's float floor division a // b (b > 0), as the DynamicKV code (compiler/select.c) */
static LLVMValueRef pyfloordiv(Sx *X, LLVMValueRef a, LLVMValueRef bv)
{
	LLVMBuilderRef b = X->g->b;
	LLVMValueRef mod = LLVMBuildFRem(b, a, bv, ""), div = LLVMBuildFDiv(b, LLVMBuildFSub(b, a, mod, ""), bv, "");
	LLVMValueRef adj = LLVMBuildAnd(b, fcmp(X, LLVMRealUNE, mod, cd(X, 0)),
	                                LLVMBuildXor(b, fcmp(X, LLVMRealOLT, bv, cd(X, 0)), fcmp(X, LLVMRealOLT, mod, cd(X, 0)), ""), "");
	div = LLVMBuildSelect(b, adj, LLVMBuildFSub(b, div, cd(X, 1), ""), div, "");
	LLVMValueRef ca[2] = { cd(X, 0), LLVMBuildFDiv(b, a, bv, "") };
	LLVMValueRef zero = intr(X->g, "llvm.copysign.f64", X->f64, ca, 2);
	LLVMValueRef fd = fintr(X, "llvm.floor.f64", div);
	LLVMValueRef r = LLVMBuildSelect(b, fcmp(X, LLVMRealOGT, LLVMBuildFSub(b, div, fd, ""), cd(X, 0.5)),
	                                 LLVMBuildFAdd(b, fd, cd(X, 1), ""), fd, "");
	return LLVMBuildSelect(b, fcmp(X, LLVMRealOEQ, div, cd(X, 0)), zero, r, "");
}

static void dynamic(Sx *X)
{
	Gen *g = X->g;
	LLVMBuilderRef b = g->b;
	LLVMValueRef L = CF(X, L, g->i64), H = CF(X, H, g->i64), LH = LLVMBuildMul(b, L, H, "");
	LLVMValueRef cap = CF(X, cap, g->i64), budget = CF(X, budget, g->i64), R = CF(X, R, g->i64);
	LLVMValueRef sc = CF(X, sc, g->ptr), len = CF(X, len, g->ptr), nk = CF(X, nk, g->ptr);
	LLVMValueRef ks = CF(X, ks, g->ptr), ws = CF(X, ws, g->ptr);
	LLVMValueRef rmax = CF(X, sa, X->f64), every = CF(X, sb, X->f64);
	LLVMValueRef n = ldi(X, len, ci(g, 0));
	If f;
	Loop lp;
	LLVMValueRef kk = loop_begin2(g, ci(g, 1), LH, 1, 1, &lp);
	ifbeg(X, icmp(X, LLVMIntNE, ldi(X, len, kk), n), &f);
	ret(X, ci(g, -3));
	ifend(X, &f);
	loop_end(g, &lp);
	argcheck(X, rmax, 0, 1e6, every, 1, 1e6, -4);
	LLVMValueRef keep = fintr(X, "llvm.floor.f64", LLVMBuildFMul(b, tod(X, n),
	                          LLVMBuildFSub(b, cd(X, 1), CF(X, ratio, X->f64), ""), ""));
	LLVMValueRef B = LLVMBuildSelect(b, icmp(X, LLVMIntSGE, budget, ci(g, 0)), smin(X, budget, n),
	                                 LLVMBuildFPToSI(b, keep, g->i64, ""), "");
	LLVMValueRef w = smin(X, R, n), m = LLVMBuildSub(b, n, w, ""), base = LLVMBuildSub(b, B, w, "");
	ifbeg(X, LLVMBuildOr(b, icmp(X, LLVMIntSLE, base, ci(g, 0)), icmp(X, LLVMIntSLE, m, ci(g, 0)), ""), &f);
	kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);     /* nothing to share: the window (or the budget) alone */
	sti(X, nk, kk, B);
	loop_end(g, &lp);
	ret(X, ci(g, 0));
	ifend(X, &f);
	LLVMValueRef cand = smin(X, LLVMBuildFPToSI(b, fintr(X, "llvm.floor.f64", LLVMBuildFMul(b, rmax, tod(X, base), "")),
	                                            g->i64, ""), m);
	LLVMValueRef cur = ws, counts = gep(g, g->i64, ws, L), fix = gep(g, g->i64, ws, LLVMBuildMul(b, L, ci(g, 2), ""));
	kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);       /* the first m tokens, (layer, head, token) order */
	{
		LLVMValueRef k[6] = { ld(g, g->ptr, sc, kk, 8), m, ci(g, 0), ci(g, 0),
		                      LLVMBuildTrunc(b, LLVMBuildMul(b, kk, cap, ""), X->i32, ""),
		                      gep(g, g->i64, ks, LLVMBuildMul(b, kk, m, "")) };
		call(X, X->selkeys, k, 6);
	}
	loop_end(g, &lp);
	LLVMValueRef l = loop_begin2(g, ci(g, 0), L, 1, 1, &lp);
	sti(X, cur, l, cand);
	loop_end(g, &lp);
	LLVMValueRef ev = LLVMBuildFPToSI(b, every, g->i64, "");
	Loop rl;
	l = loop_begin2(g, ci(g, 0), L, 1, 1, &rl);
	ifbeg(X, icmp(X, LLVMIntEQ, LLVMBuildSRem(b, l, ev, ""), LLVMBuildSub(b, ev, ci(g, 1), "")), &f);
	{
		LLVMValueRef seen = LLVMBuildAdd(b, l, ci(g, 1), ""), nf = LLVMBuildMul(b, LLVMBuildMul(b, seen, H, ""), m, "");
		LLVMValueRef bhs = LLVMBuildMul(b, LLVMBuildMul(b, base, H, ""), seen, ""), tk = smin(X, bhs, nf);
		LLVMValueRef ta[3] = { ks, nf, tk };
		If f2;          /* threshold(): ~0 for none, 0 for all, else topk */
		LLVMValueRef thr = var(X, g->i64, ci(g, 0));
		ifbeg(X, LLVMBuildAnd(b, icmp(X, LLVMIntSGT, tk, ci(g, 0)), icmp(X, LLVMIntSLT, tk, nf), ""), &f2);
		set(X, thr, call(X, X->topk, ta, 3));
		ifend(X, &f2);
		ifbeg(X, icmp(X, LLVMIntSLE, tk, ci(g, 0)), &f2);
		set(X, thr, ci(g, -1));
		ifend(X, &f2);
		Loop jl, hl;
		LLVMValueRef j = loop_begin2(g, ci(g, 0), L, 1, 1, &jl);
		sti(X, counts, j, ci(g, 0));
		loop_end(g, &jl);
		ifbeg(X, icmp(X, LLVMIntSGT, tk, ci(g, 0)), &f2);
		j = loop_begin2(g, ci(g, 0), seen, 1, 1, &jl);
		LLVMValueRef h = loop_begin2(g, ci(g, 0), H, 1, 1, &hl);
		LLVMValueRef off = LLVMBuildMul(b, LLVMBuildAdd(b, LLVMBuildMul(b, j, H, ""), h, ""), m, "");
		LLVMValueRef ka[3] = { gep(g, g->i64, ks, off), m, get(X, g->i64, thr) };
		sti(X, counts, j, LLVMBuildAdd(b, ldi(X, counts, j), call(X, X->kcount, ka, 3), ""));
		loop_end(g, &hl);
		loop_end(g, &jl);
		ifend(X, &f2);
		LLVMValueRef tt = var(X, g->i64, ci(g, 0));
		j = loop_begin2(g, ci(g, 0), seen, 1, 1, &jl);
		LLVMValueRef cj = LLVMBuildSDiv(b, ldi(X, counts, j), seen, "");
		sti(X, counts, j, cj);
		set(X, tt, LLVMBuildAdd(b, get(X, g->i64, tt), cj, ""));
		loop_end(g, &jl);
		LLVMValueRef last = LLVMBuildSub(b, seen, ci(g, 1), "");
		ifbeg(X, LLVMBuildAnd(b, icmp(X, LLVMIntEQ, l, LLVMBuildSub(b, L, ci(g, 1), "")),
		                      icmp(X, LLVMIntNE, get(X, g->i64, tt), LLVMBuildMul(b, H, m, "")), ""), &f2);
		{
			LLVMValueRef q = LLVMBuildSDiv(b, bhs, L, "");
			sti(X, counts, last, LLVMBuildAdd(b, ldi(X, counts, last), LLVMBuildSub(b, q, get(X, g->i64, tt), ""), ""));
			set(X, tt, q);
		}
		ifend(X, &f2);
		LLVMValueRef need = LLVMBuildMul(b, base, L, ""), sfix = var(X, g->i64, ci(g, 0));
		LLVMValueRef ttf = LLVMBuildSIToFP(b, get(X, g->i64, tt), X->f32, "");
		LLVMValueRef candf = LLVMBuildSIToFP(b, cand, X->f32, "");
		j = loop_begin2(g, ci(g, 0), seen, 1, 1, &jl);
		{
			LLVMValueRef norm = LLVMBuildFDiv(b, LLVMBuildSIToFP(b, ldi(X, counts, j), X->f32, ""), ttf, "");
			LLVMValueRef fj = LLVMBuildFPToSI(b, LLVMBuildFMul(b, candf, norm, ""), g->i64, "");
			sti(X, fix, j, fj);
			set(X, sfix, LLVMBuildAdd(b, get(X, g->i64, sfix), fj, ""));
		}
		loop_end(g, &jl);
		LLVMValueRef ss = LLVMBuildFDiv(b, tod(X, get(X, g->i64, sfix)), tod(X, need), "");
		set(X, sfix, ci(g, 0));
		j = loop_begin2(g, ci(g, 0), seen, 1, 1, &jl);
		{
			LLVMValueRef q = LLVMBuildFPToSI(b, pyfloordiv(X, tod(X, ldi(X, fix, j)), ss), g->i64, "");
			LLVMValueRef fj = LLVMBuildSelect(b, fcmp(X, LLVMRealOGT, ss, cd(X, 0)), q, ci(g, 0), "");
			sti(X, fix, j, fj);
			set(X, sfix, LLVMBuildAdd(b, get(X, g->i64, sfix), fj, ""));
		}
		loop_end(g, &jl);
		LLVMValueRef sf = get(X, g->i64, sfix);
		sti(X, fix, last, LLVMBuildAdd(b, ldi(X, fix, last), LLVMBuildSub(b, need, sf, ""), ""));
		j = loop_begin2(g, ci(g, 0), seen, 1, 1, &jl);
		sti(X, cur, j, smin(X, ldi(X, cur, j), smin(X, ldi(X, fix, j), m)));
		loop_end(g, &jl);
	}
	ifend(X, &f);
	loop_end(g, &rl);
	kk = loop_begin2(g, ci(g, 0), LH, 1, 1, &lp);
	{
		LLVMValueRef c = ldi(X, cur, LLVMBuildSDiv(b, kk, H, ""));
		c = LLVMBuildSelect(b, icmp(X, LLVMIntSGT, c, ci(g, 0)), c, ci(g, 0), "");
		sti(X, nk, kk, LLVMBuildAdd(b, c, w, ""));
	}
	loop_end(g, &lp);
	LLVMBuildRet(b, ci(g, 0));
}

void kx_gen_schedcnt(Gen *g, const KiFn *f, const LLVMValueRef *sel)
{
	LLVMTypeRef ps[1] = { g->ptr };
	newfn(g, "kvcc_schedcnt", g->i64, ps, 1);
	if (f->sel.sched != SCH_prefix && f->sel.sched != SCH_dynamic) {
		LLVMBuildRet(g->b, ci(g, 0));
		return;
	}
	/* scalar control code once per sequence (the work is in the kernels it calls): the pass
	** pipeline leaves it as built (optnone needs noinline), which keeps the compile time */
	const char *at[2] = { "optnone", "noinline" };
	for (int k = 0; k < 2; k++)
		LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex,
		                           LLVMCreateEnumAttribute(g->cx, LLVMGetEnumAttributeKindForName(at[k], strlen(at[k])), 0));
	Sx X = { g, LLVMDoubleTypeInContext(g->cx), g->f32, g->i32, LLVMInt1TypeInContext(g->cx), LLVMGetParam(g->fn, 0),
	         sel[0], sel[1], sel[2], sel[3], sel[4] };
	if (f->sel.sched == SCH_prefix)
		prefix(&X);
	else
		dynamic(&X);
}
