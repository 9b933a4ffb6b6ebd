/*
** The KIR verifier: checks the invariants every later stage relies on, so
** that passes, the interpreter and the code generators may assume them.
** It runs on the builder's output, on parsed text, and after every pass
** when asked (ki_runpasses). It never changes the policy.
**
** Invariants:
**   - every op is in the table; every ref is in range, and an instruction
**     operand is an earlier instruction (the array is in dependency order)
**   - exactly ops.h's nargs operands are set, the rest are nil; the axis
**     field is set exactly for RED, DOT, KEEP, index and size; aux is in
**     range for input, state and info and 0 elsewhere
**   - result axes are what the axis rule gives (ki_resultaxes; for leaves:
**     input → ki_inputaxes, state → [token], attn → [group, token],
**     index → its axis, size and info → scalar)
**   - a score exists with axes ⊆ [token]; state updates have axes ⊆ [token]
**   - attn (decode attention) feeds only observe updates, never the score,
**     obs or the select keep count
**   - weights: declared axes each at most once (layer head group chan out),
**     an out size >= 0; a weight instruction's axes are its tensor axes
**   - scans (scancheck): a scan names a state whose update is that scan and
**     whose init is nan; its body (the instructions that read its carry) is
**     elementwise over at most [token], reads one carry, and feeds only the
**     body and the scan; observe updates read no scan
**   - select: the fields its rule needs (tau, p), floor only with topk at
**     scope layer, mass and floor at chunk 1, keep a scalar instruction
**   - obs is a scalar; select fields and when.every are constants, params
**     or nil; rule kinds are in range
**   - names print back: no '"' or newline in the policy and source names,
**     params and states are identifiers
**   - pair values (erow, krow, tmean, pinfo and what reads them) appear only
**     in the merge rule's expressions, use elementwise ops and reductions
**     over group / obs / chan only, never have a token axis; erow / krow /
**     tmean read an ordinary value; the merge roots are scalars reading only
**     what their role allows (sim: e., k.; self: k., absorbed; weight: also
**     sim or the targets, by kind); a threshold state has an update; a kind
**     takes only its fields; summary rows and iters are constants
**
** Errors carry the policy's positions (f->src, the instruction's line:col),
** so that a builder mistake points at the policy.lua line that caused it.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "compiler/ir.h"

typedef struct V {
	const KiFn *f;
	KiErr *e;
} V;

/* Check a ref: valid kind, index in range; an instruction ref must be below
** `below` (the using instruction, or nins for roots). Returns 0 or -1. */
static int checkref(V *v, KiRef r, int below, uint32_t line, uint32_t col, const char *what)
{
	const KiFn *f = v->f;
	int i = KI_RIDX(r);
	switch (KI_RKIND(r)) {
	case RK_NIL:
		if (i == 0)
			return 0;
		break;
	case RK_INS:
		if (i < below)
			return 0;
		if (i < f->nins) {
			ki_error(v->e, f->src, line, col, "%s refers to %%%d, which is not an earlier "
			         "instruction", what, i);
			return -1;
		}
		break;
	case RK_CON:
		if (i < f->ncon)
			return 0;
		break;
	case RK_PAR:
		if (i < f->npar)
			return 0;
		break;
	}
	ki_error(v->e, f->src, line, col, "%s has a bad ref 0x%08x (kind %d, index %d)", what,
	         (unsigned)r, KI_RKIND(r), i);
	return -1;
}

static int takesaxis(int op)
{
	int rule = ki_rule(op);
	return rule == AR_RED || rule == AR_DOT || rule == AR_KEEP || rule == AR_SEG || op == KO_index ||
	       op == KO_size;
}

static int checkins(V *v, int i)
{
	const KiFn *f = v->f;
	const KiIns *in = &f->ins[i];
	char what[48], b1[64], b2[64], why[200];
	uint32_t line = in->line, col = in->col;
	if (in->op >= KO_NUM) {
		ki_error(v->e, f->src, line, col, "instruction %%%d has a bad op %d", i, in->op);
		return -1;
	}
	const char *op = ki_opname(in->op);
	int n = ki_nargs(in->op);
	snprintf(what, sizeof what, "instruction %%%d (%s)", i, op);
	for (int k = 0; k < 3; k++) {
		if (checkref(v, in->arg[k], i, line, col, what) != 0)
			return -1;
		if ((k < n) != (in->arg[k] != KI_NIL)) {
			ki_error(v->e, f->src, line, col, "%s takes %d operand%s but has %s", what, n,
			         n == 1 ? "" : "s", k < n ? "a nil one" : "more");
			return -1;
		}
	}
	if (takesaxis(in->op)) {
		if (in->axis >= AX_NUM) {
			ki_error(v->e, f->src, line, col, "%s needs a tensor axis, has %s", what,
			         in->axis == AX_NONE ? "none" : ki_axisname(in->axis));
			return -1;
		}
	} else if (in->axis != AX_NONE) {
		ki_error(v->e, f->src, line, col, "%s takes no axis but has axis %d", what, in->axis);
		return -1;
	}
	int lim = in->op == KO_input ? IN_NUM : in->op == KO_info ? INF_NUM : in->op == KO_weight ? f->nw :
	          in->op == KO_pinfo ? PI_NUM :
	          (in->op == KO_state || in->op == KO_carry || in->op == KO_scan) ? f->nst : 1;
	if (in->aux >= lim) {
		ki_error(v->e, f->src, line, col, "%s has aux %d out of range (0 .. %d)", what, in->aux,
		         lim - 1);
		return -1;
	}
	uint8_t want = 0;
	switch (in->op) {
	case KO_input: want = ki_inputaxes(in->aux); break;
	case KO_state:
	case KO_carry: want = AXM(AX_token); break;
	case KO_weight: want = ki_weightaxes(&f->w[in->aux]); break;
	case KO_attn: want = AXM(AX_group) | AXM(AX_token); break;
	case KO_index: want = AXM(in->axis); break;
	case KO_size:
	case KO_info:
	case KO_pinfo: want = 0; break;
	default:
		if (ki_resultaxes(f, in->op, in->arg, in->axis, &want, why, sizeof why) != 0) {
			ki_error(v->e, f->src, line, col, "%s: %s", what, why);
			return -1;
		}
	}
	if (in->axes != want) {
		ki_axesstr(in->axes, b1, sizeof b1);
		ki_axesstr(want, b2, sizeof b2);
		if (in->axes & ~(AXM(AX_NUM) - 1))
			snprintf(b1, sizeof b1, "0x%02x", in->axes);
		ki_error(v->e, f->src, line, col, "%s has result axes %s but its axis rule gives %s", what,
		         b1, b2);
		return -1;
	}
	return 0;
}

/* A root (score, obs, state update): in range, axes within `allowed`. */
static int checkroot(V *v, KiRef r, uint8_t allowed, uint32_t line, uint32_t col, const char *what)
{
	const KiFn *f = v->f;
	char buf[64];
	if (checkref(v, r, f->nins, line, col, what) != 0)
		return -1;
	uint8_t ax = ki_refaxes(f, r);
	if (ax & ~allowed) {
		ki_axesstr(ax, buf, sizeof buf);
		ki_error(v->e, f->src, line, col, "%s must have axes %s, it has %s", what,
		         allowed ? "within [token]" : "[] (a scalar)", buf);
		return -1;
	}
	return 0;
}

/* A rule field: a constant, a param or nil (a runtime scalar). */
static int checkscalar(V *v, KiRef r, uint32_t line, uint32_t col, const char *what)
{
	const KiFn *f = v->f;
	if (checkref(v, r, f->nins, line, col, what) != 0)
		return -1;
	if (KI_RKIND(r) == RK_INS) {
		ki_error(v->e, f->src, line, col, "%s must be a constant or a param, not %%%d", what,
		         KI_RIDX(r));
		return -1;
	}
	return 0;
}

/* A ranged field: a constant, or a param's default, is in lo..hi (written hitext in the message),
** and an integer when `integer` (a value given to a param at run time is checked when the policy
** runs). */
static int checkrange(V *v, KiRef r, double lo, double hi, const char *hitext, int integer, uint32_t line,
                      uint32_t col, const char *what)
{
	if (checkscalar(v, r, line, col, what) != 0)
		return -1;
	if (r == KI_NIL || (KI_RKIND(r) != RK_CON && KI_RKIND(r) != RK_PAR))
		return 0;
	const KiFn *f = v->f;
	int par = KI_RKIND(r) == RK_PAR;
	double x = par ? f->par[KI_RIDX(r)].def : f->con[KI_RIDX(r)];
	if (!(x >= lo && x <= hi) || (integer && x != floor(x))) {
		ki_error(v->e, f->src, line, col, "%s must be %s in %g..%s, got %g%s%s%s", what,
		         integer ? "an integer" : "a number", lo, hitext, x, par ? " (the default of param " : "",
		         par ? f->par[KI_RIDX(r)].name : "", par ? ")" : "");
		return -1;
	}
	return 0;
}

/* A count field (keep_first, keep_recent, chunk, every): an integer in lo..1e9. */
static int checkfield(V *v, KiRef r, double lo, uint32_t line, uint32_t col, const char *what)
{
	return checkrange(v, r, lo, 1e9, "1e9", 1, line, col, what);
}

/* attn must not reach the score or obs: mark backwards from them. */
static int checkattn(V *v)
{
	const KiFn *f = v->f;
	if (!f->nins)
		return 0;
	unsigned char *live = calloc((size_t)f->nins, 1);
	if (!live) {
		ki_error(v->e, f->src, 0, 0, "out of memory");
		return -1;
	}
	const KiMerge *m = &f->merge;
	KiRef roots[7] = { f->score, f->obs, f->sel.keep, m->sim, m->threshold, m->weight, m->self };
	for (int k = 0; k < 7; k++)
		if (KI_RKIND(roots[k]) == RK_INS && KI_RIDX(roots[k]) < f->nins)
			live[KI_RIDX(roots[k])] = 1;
	int bad = -1;
	for (int i = f->nins - 1; i >= 0; i--) {
		if (!live[i])
			continue;
		if (f->ins[i].op == KO_attn)
			bad = i;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS)
				live[KI_RIDX(f->ins[i].arg[k])] = 1;
	}
	free(live);
	if (bad >= 0) {
		ki_error(v->e, f->src, f->ins[bad].line, f->ins[bad].col,
		         "attn (decode attention) is only available in the observe hook, but it reaches "
		         "the score or the merge rule");
		return -1;
	}
	return 0;
}

/* --- the merge rule and its pair context ------------------------------------------- */

/* Ops a pair expression may use beyond the pair leaves: elementwise ops and
** reductions over group, obs or chan (a pair value has no token axis). */
static int pairok(int op)
{
	int r = ki_rule(op);
	return r == AR_EW || r == AR_RED || r == AR_DOT || ki_ispairop(op);
}

/* Instructions that read pair values: only pair-context ops, never a token
** axis, and the operand of erow / krow / tmean an ordinary value. */
static int checkpairins(V *v, const uint8_t *ctx)
{
	const KiFn *f = v->f;
	char buf[64];
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean) {
			KiRef a = in->arg[0];
			if (KI_RKIND(a) == RK_INS && ctx[KI_RIDX(a)]) {
				ki_error(v->e, f->src, in->line, in->col, "%s reads a value at a token of the pair, "
				         "so its operand must be an ordinary [token] value, not a pair value (%%%d)",
				         ki_opname(in->op), KI_RIDX(a));
				return -1;
			}
			if (KI_RKIND(a) == RK_INS && f->ins[KI_RIDX(a)].op == KO_attn) {
				ki_error(v->e, f->src, in->line, in->col, "attn (decode attention) is only "
				         "available in the observe hook, not in a merge rule");
				return -1;
			}
			continue;
		}
		if (!ctx[i] || in->op == KO_pinfo)
			continue;
		if (!pairok(in->op)) {
			ki_error(v->e, f->src, in->line, in->col, "%s is not available in a merge expression "
			         "(elementwise ops and reductions over group, obs or chan are)", ki_opname(in->op));
			return -1;
		}
		if (in->axes & AXM(AX_token)) {
			ki_axesstr(in->axes, buf, sizeof buf);
			ki_error(v->e, f->src, in->line, in->col, "a merge expression has axes %s: a [token] "
			         "value must be read at a token of the pair (e.score, k:at(v), ...)", buf);
			return -1;
		}
	}
	return 0;
}

/* A root of the merge rule: a constant, a param or a pair expression with
** axes [] reading only the pair values in `allowed` (KI_P* flags). */
static int checkmergeexpr(V *v, const uint8_t *ctx, KiRef r, uint8_t allowed, const char *what,
                          const char *whynot)
{
	const KiFn *f = v->f;
	const KiMerge *m = &f->merge;
	char buf[64];
	if (r == KI_NIL) {
		ki_error(v->e, f->src, m->line, m->col, "merge %s needs %s", ki_mergename(m->kind), what);
		return -1;
	}
	if (checkref(v, r, f->nins, m->line, m->col, what) != 0)
		return -1;
	if (KI_RKIND(r) != RK_INS)
		return 0;
	const KiIns *in = &f->ins[KI_RIDX(r)];
	if (in->axes) {
		ki_axesstr(in->axes, buf, sizeof buf);
		ki_error(v->e, f->src, in->line, in->col, "%s must be one number per pair (axes []), but it "
		         "has axes %s (reduce them first, e.g. :sum(\"chan\"))", what, buf);
		return -1;
	}
	if (ctx[KI_RIDX(r)] & ~allowed) {
		ki_error(v->e, f->src, in->line, in->col, "%s %s", what, whynot);
		return -1;
	}
	return 0;
}

/* A state read by the threshold must have an observe update: a threshold
** that never changes is a param. */
static int checkthrstate(V *v, KiRef r)
{
	const KiFn *f = v->f;
	if (KI_RKIND(r) != RK_INS)
		return 0;
	for (int i = KI_RIDX(r); i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (in->op == KO_state && in->aux < f->nst && !f->st[in->aux].update) {
			ki_error(v->e, f->src, in->line, in->col, "the merge threshold reads state '%s', which "
			         "is never updated (assign st.%s = ... in observe, or use a param)",
			         f->st[in->aux].name, f->st[in->aux].name);
			return -1;
		}
	}
	return 0;
}

/* A scalar rule field that must be a positive integer constant (rows, iters). */
static int checkcount(V *v, KiRef r, double max, const char *what)
{
	const KiFn *f = v->f;
	const KiMerge *m = &f->merge;
	double x = KI_RKIND(r) == RK_CON && KI_RIDX(r) < f->ncon ? f->con[KI_RIDX(r)] : NAN;
	if (!(x >= 1 && x <= max && x == (long)x)) {
		ki_error(v->e, f->src, m->line, m->col, "merge %s %s must be an integer constant in 1..%g",
		         ki_mergename(m->kind), what, max);
		return -1;
	}
	return 0;
}

#define MERGE_MAXROWS 4096   /* summary rows per (layer, head) */
#define MERGE_MAXITERS 1000  /* Lloyd iterations */

static int checkmerge(V *v)
{
	const KiFn *f = v->f;
	const KiMerge *m = &f->merge;
	KiErr *e = v->e;
	if (m->kind >= MG_NUM || m->thr > MT_adaptive || m->update > MU_sum || m->keys > 1 ||
	    m->values > 1 || m->bias > 1) {
		ki_error(e, f->src, m->line, m->col, "merge has a bad kind or field (%d, %d, %d)", m->kind,
		         m->thr, m->update);
		return -1;
	}
	uint8_t *ctx = calloc((size_t)f->nins + 1, 1);
	if (!ctx) {
		ki_error(e, f->src, 0, 0, "out of memory");
		return -1;
	}
	ki_pairctx(f, ctx);
	int rc = -1, k = m->kind;
	int hassim = k == MG_nearest || k == MG_runs, hasw = hassim || k == MG_next;
	/* roots outside the merge rule never read pair values */
	KiRef roots[3] = { f->score, f->obs, f->sel.keep };
	for (int i = 0; i < 3 + f->nst; i++) {
		KiRef r = i < 3 ? roots[i] : f->st[i - 3].update;
		if (KI_RKIND(r) == RK_INS && ctx[KI_RIDX(r)]) {
			const KiIns *in = &f->ins[KI_RIDX(r)];
			ki_error(e, f->src, in->line, in->col, "pair values (e., k., m.) exist only in the "
			         "functions of a merge rule, but %s reads one",
			         i == 0 ? "the score" : i == 1 ? "obs" : i == 2 ? "the select keep" : "a state update");
			goto out;
		}
	}
	if (checkpairins(v, ctx) != 0)
		goto out;
	/* fields a kind does not take stay nil */
	if ((!hassim && m->sim) || (!hassim && m->thr != MT_none) || (!hasw && (m->weight || m->self)) ||
	    (k != MG_next && m->m) || (k != MG_summary && (m->rows || m->iters)) ||
	    (m->thr != MT_adaptive && m->beta) || (m->thr != MT_value && m->threshold) ||
	    (k == MG_drop && (m->bias || m->keys || m->values || m->update))) {
		ki_error(e, f->src, m->line, m->col, "merge %s has a field its kind does not take",
		         ki_mergename(k));
		goto out;
	}
	if (hassim && checkmergeexpr(v, ctx, m->sim, KI_PE | KI_PK, "the merge similarity",
	                             "may read only the two rows (e., k.), not m.") != 0)
		goto out;
	if (m->thr == MT_value && (checkmergeexpr(v, ctx, m->threshold, KI_PE | KI_PK, "the merge "
	                           "threshold", "may read only the two rows (e., k.), not m.") != 0 ||
	                           checkthrstate(v, m->threshold) != 0))
		goto out;
	if (m->thr == MT_adaptive && (checkscalar(v, m->beta, m->line, m->col, "merge beta") != 0 ||
	                              m->beta == KI_NIL)) {
		if (m->beta == KI_NIL)
			ki_error(e, f->src, m->line, m->col, "merge threshold=adaptive needs beta");
		goto out;
	}
	if (k == MG_runs && m->thr != MT_value) {
		ki_error(e, f->src, m->line, m->col, "merge runs needs a threshold (a value: tokens i and "
		         "i+1 are in one run when their similarity reaches it)");
		goto out;
	}
	if (hasw) {
		uint8_t allow = KI_PE | KI_PK | KI_PABS | (hassim ? KI_PSIM : 0) | (k == MG_next ? KI_PTGT : 0);
		if (checkmergeexpr(v, ctx, m->weight, allow, "the merge weight", hassim ?
		                   "may not read the targets of e (m.ntargets, m:tmean: rule next only)" :
		                   "may not read m.sim (rule next has no similarity)") != 0 ||
		    checkmergeexpr(v, ctx, m->self, KI_PK | KI_PABS, "the merge self weight",
		                   "is the kept row's own weight: it may read k. and m.absorbed, "
		                   "not e., m.sim or the targets") != 0)
			goto out;
	}
	if (k == MG_next && (m->m == KI_NIL || checkscalar(v, m->m, m->line, m->col, "merge m") != 0)) {
		if (m->m == KI_NIL)
			ki_error(e, f->src, m->line, m->col, "merge next needs m (targets per evicted token)");
		goto out;
	}
	if (k == MG_next && KI_RKIND(m->m) == RK_CON && !(f->con[KI_RIDX(m->m)] >= 1)) {
		ki_error(e, f->src, m->line, m->col, "merge next m must be at least 1");
		goto out;
	}
	if (k == MG_summary && (f->sel.sched == SCH_prefix || f->sel.sched == SCH_dynamic)) {
		ki_error(e, f->src, m->line, m->col, "merge summary takes its rows from the budget of "
		         "each head: it works with select topk (a floor too), threshold or mass, not a "
		         "prefix or dynamic schedule");
		goto out;
	}
	/* mass: like threshold, a head under its budget may evict (its prefix leaves rows out) and
	** then keeps at most n - C (interp.c massevicts); a group's prefix could evict from a head
	** that reserved no room, so mass with summary rows is a per-head rule too */
	if (k == MG_summary && f->sel.kind == SEL_mass && (f->sel.scope != SC_head || f->sel.nocap)) {
		ki_error(e, f->src, m->line, m->col, "merge summary with select mass needs scope "
		         "\"head\" and a cap (the summary rows come out of each head's own budget)");
		goto out;
	}
	/* threshold: an instance under its budget that evicts keeps at most n - C ordinary rows
	** (interp.c selectsummary); at scope layer / model every head's C rows come out of the
	** group's count (M12); without a cap there is no count to take them from */
	if (k == MG_summary && f->sel.kind == SEL_threshold && f->sel.nocap) {
		ki_error(e, f->src, m->line, m->col, "merge summary with select threshold needs a cap "
		         "(the summary rows come out of each head's budget)");
		goto out;
	}
	for (int s = 0; k == MG_summary && s < f->nst; s++)
		if (ki_isscanstate(f, s)) {
			ki_error(e, f->src, m->line, m->col, "merge summary: state '%s' is a scan, which has "
			         "no value at a summary row", f->st[s].name);
			goto out;
		}
	if (k == MG_summary && (checkcount(v, m->rows, MERGE_MAXROWS, "rows") != 0 ||
	                        checkcount(v, m->iters, MERGE_MAXITERS, "iters") != 0))
		goto out;
	rc = 0;
out:
	free(ctx);
	return rc;
}

static int ident(const char *s)
{
	if (!*s)
		return 0;
	for (const char *p = s; *p; p++)
		if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (p > s && *p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

static int checknames(V *v)
{
	const KiFn *f = v->f;
	int badsrc = strpbrk(f->src, "\"\n") != NULL;
	if (badsrc || strpbrk(f->name, "\"\n")) {
		/* a bad source name is not fit for the error line either */
		ki_error(v->e, badsrc ? NULL : f->src, f->line, f->col, "policy and source names may not "
		         "contain '\"' or a newline");
		return -1;
	}
	for (int i = 0; i < f->npar; i++) {
		if (!ident(f->par[i].name)) {
			ki_error(v->e, f->src, f->par[i].line, f->par[i].col,
			         "param name '%s' is not an identifier", f->par[i].name);
			return -1;
		}
		if (!isfinite(f->par[i].def)) {   /* as kv.params requires (dsl/builder.c) */
			ki_error(v->e, f->src, f->par[i].line, f->par[i].col, "param '%s' default must be finite, got %g",
			         f->par[i].name, f->par[i].def);
			return -1;
		}
	}
	for (int i = 0; i < f->nst; i++)
		if (!ident(f->st[i].name)) {
			ki_error(v->e, f->src, f->line, f->col, "state name '%s' is not an identifier",
			         f->st[i].name);
			return -1;
		}
	for (int i = 0; i < f->nw; i++) {
		const KiWeight *w = &f->w[i];
		unsigned seen = 0;
		int bad = !ident(w->name) || w->ndim < 1 || w->ndim > KI_MAXWDIM || w->size < 0;
		for (int k = 0; !bad && k < w->ndim; k++) {
			bad = w->ax[k] >= WA_NUM || (seen & (1u << w->ax[k]));
			seen |= 1u << w->ax[k];
		}
		if (bad || (w->size && !(seen & (1u << WA_out)))) {
			ki_error(v->e, f->src, w->line, w->col, "weight '%s' is badly declared (an identifier, "
			         "1..%d distinct axes of layer head group chan out, an out size only with out)",
			         ident(w->name) ? w->name : "?", KI_MAXWDIM);
			return -1;
		}
	}
	return 0;
}

/* The scans (see the list at the top). body[i] = 1 + the state of the carry
** instruction i reads (through the body), 0 outside every body. */
static int scancheck(V *v)
{
	const KiFn *f = v->f;
	if (!f->nins)
		return 0;
	int *body = calloc((size_t)f->nins, sizeof *body);
	if (!body) {
		ki_error(v->e, f->src, 0, 0, "out of memory");
		return -1;
	}
	int rc = -1;
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		uint32_t line = in->line, col = in->col;
		if (in->op == KO_carry) {
			if (!ki_isscanstate(f, in->aux) || KI_RIDX(f->st[in->aux].update) < i) {
				ki_error(v->e, f->src, line, col, "carry of '%s' outside the body of its scan",
				         f->st[in->aux].name);
				goto done;
			}
			body[i] = in->aux + 1;
			continue;
		}
		int b = 0;
		for (int k = 0; k < ki_nargs(in->op); k++) {
			KiRef r = in->arg[k];
			int c = KI_RKIND(r) == RK_INS ? body[KI_RIDX(r)] : 0;
			if (c && b && c != b) {
				ki_error(v->e, f->src, line, col, "instruction %%%d reads the carries of two scans", i);
				goto done;
			}
			b = c ? c : b;
		}
		if (in->op == KO_scan) {
			int s = in->aux;
			if (f->st[s].update != KI_REF(RK_INS, i) || !isnan(f->st[s].init)) {
				ki_error(v->e, f->src, line, col, "scan of '%s': the state must be updated by this "
				         "scan alone and start as nan", f->st[s].name);
				goto done;
			}
			if ((b && b != s + 1) || (KI_RKIND(in->arg[1]) == RK_INS && body[KI_RIDX(in->arg[1])])) {
				ki_error(v->e, f->src, line, col, "scan of '%s' reads another scan's carry, or its "
				         "start value reads a carry", f->st[s].name);
				goto done;
			}
			continue;
		}
		if (b && (ki_rule(in->op) != AR_EW || (in->axes & ~AXM(AX_token)))) {
			ki_error(v->e, f->src, line, col, "a scan step is elementwise over [token]: %s with "
			         "axes other than token cannot read the carry", ki_opname(in->op));
			goto done;
		}
		body[i] = b;
	}
	/* body values feed only the body and their scan */
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		for (int k = 0; k < ki_nargs(in->op); k++) {
			KiRef r = in->arg[k];
			int c = KI_RKIND(r) == RK_INS ? body[KI_RIDX(r)] : 0;
			int ok = !c || body[i] == c || (in->op == KO_scan && k == 0 && in->aux + 1 == c);
			if (!ok) {
				ki_error(v->e, f->src, in->line, in->col, "a value of the scan of '%s' is used "
				         "outside its step (use the scan's result)", f->st[c - 1].name);
				goto done;
			}
		}
	}
	KiRef roots[3] = { f->score, f->obs, f->sel.keep };
	for (int k = 0; k < 3; k++)
		if (KI_RKIND(roots[k]) == RK_INS && body[KI_RIDX(roots[k])]) {
			const KiIns *in = &f->ins[KI_RIDX(roots[k])];
			ki_error(v->e, f->src, in->line, in->col, "a value of the step of the scan of '%s' is used "
			         "outside the scan (use the scan's result)", f->st[body[KI_RIDX(roots[k])] - 1].name);
			goto done;
		}
	rc = 0;
done:
	free(body);
	return rc;
}

/* observe updates (decode attention) read no scan: scans run at compression */
static int observecheck(V *v)
{
	const KiFn *f = v->f;
	if (!f->nins)
		return 0;
	unsigned char *live = calloc((size_t)f->nins, 1);
	if (!live) {
		ki_error(v->e, f->src, 0, 0, "out of memory");
		return -1;
	}
	for (int s = 0; s < f->nst; s++)
		if (!ki_isscanstate(f, s) && KI_RKIND(f->st[s].update) == RK_INS &&
		    KI_RIDX(f->st[s].update) < f->nins)
			live[KI_RIDX(f->st[s].update)] = 1;
	int bad = -1;
	for (int i = f->nins - 1; i >= 0; i--) {
		if (!live[i])
			continue;
		if (f->ins[i].op == KO_scan || f->ins[i].op == KO_carry)
			bad = i;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS)
				live[KI_RIDX(f->ins[i].arg[k])] = 1;
	}
	free(live);
	if (bad >= 0) {
		ki_error(v->e, f->src, f->ins[bad].line, f->ins[bad].col,
		         "the observe hook cannot read a scan (scans run when the cache is compressed)");
		return -1;
	}
	return 0;
}

/* The select rule's fields (see the list at the top). */
static int selcheck(V *v)
{
	const KiFn *f = v->f;
	const KiSelect *s = &f->sel;
	const char *why = NULL;
	if (s->kind > SEL_mass || s->scope > SC_model || s->sched > SCH_dynamic || s->nocap > 1) {
		ki_error(v->e, f->src, s->line, s->col, "select has a bad kind, scope or schedule (%d, %d, %d)",
		         s->kind, s->scope, s->sched);
		return -1;
	}
	if (checkfield(v, s->keep_first, 0, s->line, s->col, "select keep_first") != 0 ||
	    checkfield(v, s->keep_recent, 0, s->line, s->col, "select keep_recent") != 0 ||
	    checkfield(v, s->chunk, 1, s->line, s->col, "select chunk") != 0 ||
	    checkscalar(v, s->beta, s->line, s->col, "select beta") != 0 ||
	    checkscalar(v, s->tau, s->line, s->col, "select tau") != 0 ||
	    checkscalar(v, s->mass, s->line, s->col, "select p") != 0 ||
	    checkscalar(v, s->floor, s->line, s->col, "select floor") != 0 ||
	    checkscalar(v, s->sa, s->line, s->col, "select sa") != 0 ||
	    checkscalar(v, s->sb, s->line, s->col, "select sb") != 0)
		return -1;
	if (s->keep && checkroot(v, s->keep, 0, s->line, s->col, "select keep") != 0)
		return -1;
	/* the schedules' arguments, in the ranges kv.prefix and kv.dynamic allow (select.c checks
	** run-time param values the same way) */
	if (s->sched == SCH_prefix &&
	    (checkrange(v, s->sa, 0, 1e9, "1e9", 0, s->line, s->col, "select prefix tol") != 0 ||
	     checkrange(v, s->sb, 0, 1e4, "1e4", 1, s->line, s->col, "select prefix iters") != 0))
		return -1;
	if (s->sched == SCH_dynamic &&
	    (checkrange(v, s->sa, 0, 1e6, "1e6", 0, s->line, s->col, "select dynamic ratio_max") != 0 ||
	     checkrange(v, s->sb, 1, 1e6, "1e6", 1, s->line, s->col, "select dynamic every") != 0))
		return -1;
	int chunk1 = !s->chunk || (KI_RKIND(s->chunk) == RK_CON && f->con[KI_RIDX(s->chunk)] == 1);
	if ((s->kind == SEL_threshold) != (s->tau != KI_NIL))
		why = "tau belongs to the threshold rule, which needs it";
	else if ((s->kind == SEL_mass) != (s->mass != KI_NIL))
		why = "p belongs to the mass rule, which needs it";
	else if (s->floor && (s->kind != SEL_topk || s->scope != SC_layer || !chunk1))
		why = "floor needs topk at scope layer with chunk 1";
	else if (s->nocap && s->kind == SEL_topk)
		why = "cap=0 is for threshold and mass";
	else if (s->sched >= SCH_prefix && (s->kind != SEL_topk || s->floor || !chunk1))
		why = "the prefix and dynamic schedules need topk with chunk 1 and no floor";
	else if (s->keep && s->nocap)
		why = "a keep count is the cap, and cap = false has none";
	else if (s->keep && s->sched != SCH_none)
		why = "a keep count and a schedule exclude each other";
	else if ((s->sa || s->sb) && s->sched < SCH_prefix)
		why = "sa and sb are the prefix and dynamic schedules' arguments";
	if (why) {
		ki_error(v->e, f->src, s->line, s->col, "select: %s", why);
		return -1;
	}
	return 0;
}

/*
** Check every invariant above. Returns 0, or -1 with the first violation
** in e.
*/
int ki_verify(const KiFn *f, KiErr *e)
{
	V v = { f, e };
	char what[64];
	if (f->nins < 0 || f->ncon < 0 || f->npar < 0 || f->nst < 0 || f->nw < 0 || (f->nw && !f->w) ||
	    (f->nins && !f->ins) ||
	    (f->ncon && !f->con) || (f->npar && !f->par) || (f->nst && !f->st)) {
		ki_error(e, f->src, f->line, f->col, "malformed policy tables");
		return -1;
	}
	if (checknames(&v) != 0)
		return -1;
	for (int i = 0; i < f->nins; i++)
		if (checkins(&v, i) != 0)
			return -1;
	if (f->score == KI_NIL) {
		ki_error(e, f->src, f->line, f->col, "policy '%s' has no score", f->name);
		return -1;
	}
	if (checkroot(&v, f->score, AXM(AX_token), f->line, f->col, "the score") != 0)
		return -1;
	if (f->obs_all && f->obs != KI_NIL) {
		ki_error(e, f->src, f->line, f->col, "obs is both 'all' and a count");
		return -1;
	}
	if (checkroot(&v, f->obs, 0, f->line, f->col, "obs") != 0)
		return -1;
	for (int i = 0; i < f->nst; i++) {
		snprintf(what, sizeof what, "the update of state '%s'", f->st[i].name);
		if (checkroot(&v, f->st[i].update, AXM(AX_token), f->line, f->col, what) != 0)
			return -1;
	}
	if (checkattn(&v) != 0 || scancheck(&v) != 0 || observecheck(&v) != 0 || selcheck(&v) != 0)
		return -1;
	if (checkmerge(&v) != 0)
		return -1;
	const KiWhen *w = &f->when;
	if (w->kind > WH_decode) {
		ki_error(e, f->src, w->line, w->col, "when has a bad kind %d", w->kind);
		return -1;
	}
	if (checkfield(&v, w->every, 1, w->line, w->col, "when every") != 0)
		return -1;
	if ((w->kind == WH_decode) != (w->every != KI_NIL)) {
		ki_error(e, f->src, w->line, w->col, w->kind == WH_decode ? "when decode needs every=N" :
		         "when prefill takes no every");
		return -1;
	}
	return 0;
}
