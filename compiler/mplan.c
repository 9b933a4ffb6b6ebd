/*
** Sides of the merge rule's pair instructions and the form of its similarity (mplan.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/mplan.h"

void ki_msides(const KiFn *f, uint8_t *side)
{
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		uint8_t s = KI_MNONE;
		switch (in->op) {
		case KO_erow:
		case KO_tmean: s = KI_ME; break;
		case KO_krow: s = KI_MK; break;
		case KO_pinfo: s = in->aux == PI_ecount ? KI_ME : in->aux == PI_kcount ? KI_MK : KI_MNONE; break;
		default:
			for (int k = 0; k < 3; k++)
				if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
					s |= side[KI_RIDX(in->arg[k])];
		}
		side[i] = s;
	}
}

static uint8_t sideof(const uint8_t *side, KiRef r)
{
	return KI_RKIND(r) == RK_INS ? side[KI_RIDX(r)] : KI_MNONE;
}

/* Is instruction i the cross dot: dot over chan, [] result, one operand of each row? */
static int crossdot(const KiFn *f, const uint8_t *side, int i, int *eop, int *kop)
{
	const KiIns *in = &f->ins[i];
	if (in->op != KO_dot || in->axis != AX_chan || in->axes)
		return 0;
	uint8_t a = sideof(side, in->arg[0]), b = sideof(side, in->arg[1]);
	if (a == KI_ME && b == KI_MK)
		*eop = KI_RIDX(in->arg[0]), *kop = KI_RIDX(in->arg[1]);
	else if (a == KI_MK && b == KI_ME)
		*eop = KI_RIDX(in->arg[1]), *kop = KI_RIDX(in->arg[0]);
	else
		return 0;
	return 1;
}

void ki_msimform(const KiFn *f, KiRef r, KiMSim *s)
{
	memset(s, 0, sizeof *s);
	s->dot = s->eop = s->kop = -1;
	if (KI_RKIND(r) != RK_INS) {
		s->why = "the similarity is a constant";
		return;
	}
	uint8_t *side = malloc((size_t)f->nins + 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	if (!side || !reach) {
		s->why = "out of memory";
		goto out;
	}
	ki_msides(f, side);
	reach[KI_RIDX(r)] = 1;
	for (int i = KI_RIDX(r); i >= 0; i--) {
		if (!reach[i] || side[i] != KI_MX)
			continue;          /* values of one row (or neither) are computed per row */
		const KiIns *in = &f->ins[i];
		int eop, kop;
		if (crossdot(f, side, i, &eop, &kop)) {
			if (s->dot >= 0 && s->dot != i) {
				s->why = "the similarity has more than one product of the two rows";
				goto out;
			}
			s->dot = i, s->eop = eop, s->kop = kop;
			continue;
		}
		if (ki_sem(in->op)->kind != SEM_EW || in->axes) {
			s->why = "a value of both rows other than their dot product over chan (e.g. |e - k|)";
			goto out;
		}
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS) {
				int a = KI_RIDX(in->arg[k]);
				if (side[a] != KI_MX && f->ins[a].axes) {
					s->why = "a row's value with axes enters the pair epilogue";
					goto out;
				}
				reach[a] = 1;
			}
	}
	if (s->dot < 0) {
		s->why = "the similarity has no product of the two rows";
		goto out;
	}
	for (int i = 0; i <= KI_RIDX(r); i++)
		if (reach[i] && side[i] == KI_MX && i != s->dot) {
			if (s->nepi == (int)(sizeof s->epi / sizeof s->epi[0])) {
				s->why = "the similarity's epilogue is too long";
				goto out;
			}
			s->epi[s->nepi++] = i;
		}
	s->fast = 1;
out:
	free(side);
	free(reach);
}

/* --- what the kernels implement ---------------------------------------------------------- */

/* reach[i]: instruction i is a pair instruction one of the nr roots needs (not through the
** ordinary operand of erow / krow / tmean) */
static void mreach(const KiFn *f, const uint8_t *ctx, const KiRef *roots, int nr, char *reach)
{
	for (int k = 0; k < nr; k++)
		if (KI_RKIND(roots[k]) == RK_INS)
			reach[KI_RIDX(roots[k])] = 1;
	for (int i = f->nins - 1; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!reach[i] || !ctx[i] || in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean)
			continue;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
				reach[KI_RIDX(in->arg[k])] = 1;
	}
}

static void mreachall(const KiFn *f, const uint8_t *ctx, char *reach)
{
	const KiMerge *m = &f->merge;
	KiRef roots[4] = { m->sim, m->threshold, m->weight, m->self };
	mreach(f, ctx, roots, 4, reach);
}

/* the elementwise ops the kernels' pair code emits (codegen/x86 kx_ew) */
static int mewok(int op)
{
	switch (op) {
	case KO_neg: case KO_exp: case KO_log: case KO_sqrt: case KO_abs: case KO_add: case KO_sub: case KO_mul:
	case KO_div: case KO_pow: case KO_max: case KO_min: case KO_lt: case KO_le: case KO_eq: case KO_ne:
	case KO_where:
		return 1;
	}
	return 0;
}

static int mrefuse(const KiFn *f, uint32_t line, uint32_t col, const char *what, KiErr *e)
{
	ki_error(e, f->src, line, col, "%s is not compiled to kernels yet (the reference interpreter, kvcc run, runs it)",
	         what);
	return -1;
}

static int mposkernels(const KiFn *f, KiErr *e);

int ki_mkernels(const KiFn *f, KiErr *e)
{
	const KiMerge *m = &f->merge;
	char what[256];
	if (m->kind == MG_drop)
		return 0;
	if (m->kind == MG_summary) {          /* runtime/summary.c kr_msummary (x86); codegen/ptx/summary.c */
		const KiSelect *s = &f->sel;      /* topk, or threshold at scope head (the verifier) */
		if (KI_RKIND(s->chunk) != RK_NIL && !(KI_RKIND(s->chunk) == RK_CON && f->con[KI_RIDX(s->chunk)] == 1))
			return mrefuse(f, m->line, m->col, "merge summary with chunks", e);
		if (KI_RKIND(m->rows) != RK_CON || KI_RKIND(m->iters) == RK_PAR || KI_RKIND(m->iters) == RK_INS)
			return mrefuse(f, m->line, m->col, "merge summary with rows or iters not constants", e);
		return 0;
	}
	if (m->kind == MG_runs || m->kind == MG_next)   /* issue 12: the pair evaluator (mrow), x86 */
		return mposkernels(f, e);
	if (m->kind != MG_nearest) {
		snprintf(what, sizeof what, "merge %s", ki_mergename(m->kind));
		return mrefuse(f, m->line, m->col, what, e);
	}
	/* beta other than the constant 0 (D2O): tau carried between calls in a state row (ki_mtau) */
	KiMSim sf;
	ki_msimform(f, m->sim, &sf);
	if (!sf.fast && sf.why && !strcmp(sf.why, "out of memory")) {
		ki_error(e, f->src, 0, 0, "out of memory");
		e->nomem = 1;
		return -1;
	}
	if (!sf.fast) {
		snprintf(what, sizeof what, "a merge similarity outside the tiled-product form (%s)", sf.why);
		return mrefuse(f, m->line, m->col, what, e);
	}
	/* the kernels' product is e.K · k.K (x86 qkt over the cache's keys, CUDA likewise) */
	const KiIns *eo = &f->ins[sf.eop], *ko = &f->ins[sf.kop];
	if (eo->op != KO_erow || ko->op != KO_krow || KI_RKIND(eo->arg[0]) != RK_INS || KI_RKIND(ko->arg[0]) != RK_INS ||
	    f->ins[KI_RIDX(eo->arg[0])].aux != IN_K || f->ins[KI_RIDX(ko->arg[0])].aux != IN_K ||
	    f->ins[KI_RIDX(eo->arg[0])].op != KO_input || f->ins[KI_RIDX(ko->arg[0])].op != KO_input) {
		const KiIns *in = &f->ins[sf.dot];
		return mrefuse(f, in->line, in->col, "a merge similarity whose product of the two rows is not e.K · k.K", e);
	}
	uint8_t *ctx = calloc((size_t)f->nins + 1, 1), *side = malloc((size_t)f->nins + 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	int rc = -1;
	if (!ctx || !side || !reach) {
		ki_error(e, f->src, 0, 0, "out of memory");
		e->nomem = 1;
		goto out;
	}
	ki_pairctx(f, ctx);
	ki_msides(f, side);
	KiRef others[3] = { m->threshold, m->weight, m->self };
	mreach(f, ctx, others, 3, reach);    /* the cross dot is the similarity's only (mbest) */
	if (reach[sf.dot]) {
		const KiIns *in = &f->ins[sf.dot];
		rc = mrefuse(f, in->line, in->col, "the product of the two rows in a merge threshold or weight", e);
		goto out;
	}
	memset(reach, 0, (size_t)f->nins);
	mreachall(f, ctx, reach);
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (!reach[i])
			continue;
		if (!ctx[i]) {
			rc = mrefuse(f, in->line, in->col, "an ordinary value in a merge expression", e);
			goto out;
		}
		if (in->axes & ~AXM(AX_chan) || ((in->axes & AXM(AX_chan)) && side[i] != KI_ME && side[i] != KI_MK)) {
			rc = mrefuse(f, in->line, in->col, "a merge expression value with group or obs axes", e);
			goto out;
		}
		switch (in->op) {
		case KO_erow:
		case KO_krow: {
			KiRef a = in->arg[0];
			if (KI_RKIND(a) != RK_INS || f->ins[KI_RIDX(a)].op != KO_input ||
			    (f->ins[KI_RIDX(a)].aux != IN_K && f->ins[KI_RIDX(a)].aux != IN_V)) {
				rc = mrefuse(f, in->line, in->col, "a merge row value other than the row's K or V", e);
				goto out;
			}
			continue;
		}
		case KO_tmean:
			rc = mrefuse(f, in->line, in->col, "tmean", e);
			goto out;
		case KO_pinfo:     /* e.count / k.count: row scalars (the count state row, ki_mcounts) */
			continue;
		}
		if (i == sf.dot)
			continue;
		int kind = ki_sem(in->op)->kind;
		if (kind == SEM_EW && mewok(in->op))
			continue;
		if (kind == SEM_RED && in->axis == AX_chan && ki_sem(in->op)->map != MAP_DEV &&
		    (side[i] == KI_ME || side[i] == KI_MK) && !(ctx[i] & ~(KI_PE | KI_PK)))
			continue;        /* a row's own reduction (mscal): no pair value inside */
		snprintf(what, sizeof what, "%s in a merge expression", ki_opname(in->op));
		rc = mrefuse(f, in->line, in->col, what, e);
		goto out;
	}
	rc = 0;
out:
	free(ctx), free(side), free(reach);
	return rc;
}

int ki_mslots(const KiFn *f, int *slot, int *nes, int *nks)
{
	uint8_t *ctx = calloc((size_t)f->nins + 1, 1), *side = malloc((size_t)f->nins + 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	*nes = *nks = 0;
	if (!ctx || !side || !reach) {
		free(ctx), free(side), free(reach);
		return -1;
	}
	ki_pairctx(f, ctx);
	ki_msides(f, side);
	mreachall(f, ctx, reach);
	for (int i = 0; i < f->nins; i++) {
		slot[i] = -1;
		if (reach[i] && ctx[i] && !(ctx[i] & ~(KI_PE | KI_PK)) && !f->ins[i].axes && (side[i] == KI_ME || side[i] == KI_MK))
			slot[i] = side[i] == KI_ME ? (*nes)++ : (*nks)++;
	}
	free(ctx), free(side), free(reach);
	return 0;
}

int ki_mcounts(const KiFn *f)
{
	const KiMerge *m = &f->merge;
	if (m->kind == MG_drop)
		return 0;
	if (m->kind == MG_summary)
		return 2;            /* the count row, then the summary flag row (ki_msumrow) */
	if (m->bias)
		return 1;
	for (int i = 0; i < f->nins; i++)
		if (f->ins[i].op == KO_pinfo && (f->ins[i].aux == PI_ecount || f->ins[i].aux == PI_kcount))
			return 1;
	return 0;
}

int ki_msumrow(const KiFn *f)
{
	return f->merge.kind == MG_summary ? f->nst + 1 : -1;
}

/* --- runs (KVMerger): every pair value through the pair evaluator (codegen/x86/mpos.c mrow) ---- */

/* an ordinary [] value made of constants and params by the elementwise ops (2 * sigma^2) */
static int parval(const KiFn *f, int i, int depth)
{
	const KiIns *in = &f->ins[i];
	if (depth > 64 || in->axes || ki_sem(in->op)->kind != SEM_EW || !mewok(in->op))
		return 0;
	for (int k = 0; k < 3; k++)
		if (KI_RKIND(in->arg[k]) == RK_INS && !parval(f, KI_RIDX(in->arg[k]), depth + 1))
			return 0;
	return 1;
}

/* an ordinary [token] value the merge reads at a row (erow / krow) or over the targets (tmean) */
static int tokval(const KiFn *f, KiRef a)
{
	return KI_RKIND(a) == RK_INS && f->ins[KI_RIDX(a)].op != KO_input && f->ins[KI_RIDX(a)].axes == AXM(AX_token);
}

static int hashmean(const KiFn *f)
{
	for (int i = 0; i < f->nins; i++)
		if (f->ins[i].op == KO_hmean)
			return 1;
	return 0;
}

int ki_mvals(const KiFn *f, uint8_t *mv)
{
	const KiMerge *m = &f->merge;
	memset(mv, 0, (size_t)f->nins);
	if (m->kind != MG_runs && m->kind != MG_next)
		return 0;
	uint8_t *ctx = calloc((size_t)f->nins + 1, 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	if (!ctx || !reach) {
		free(ctx), free(reach);
		return -1;
	}
	ki_pairctx(f, ctx);
	mreachall(f, ctx, reach);
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (reach[i] && ctx[i] && (in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean) &&
		    tokval(f, in->arg[0]))
			mv[KI_RIDX(in->arg[0])] = 1;
	}
	free(ctx), free(reach);
	return 0;
}

/* merge runs / next: a threshold that is none or a value, pair expressions built from erow / krow
** of the input K or V, erow / krow / tmean of an ordinary [token] value (a policy with a mean over
** heads: its values are kept per instance until the compaction), the elementwise ops, reductions
** over chan (not std / var) of one row or of both, pinfo; no other ordinary value, no group or
** obs axes */
static int mposkernels(const KiFn *f, KiErr *e)
{
	const KiMerge *m = &f->merge;
	char what[256];
	if (m->thr == MT_adaptive)
		return mrefuse(f, m->line, m->col, "merge runs with an adaptive threshold", e);
	uint8_t *ctx = calloc((size_t)f->nins + 1, 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	int rc = -1;
	if (!ctx || !reach) {
		ki_error(e, f->src, 0, 0, "out of memory");
		e->nomem = 1;
		goto out;
	}
	ki_pairctx(f, ctx);
	mreachall(f, ctx, reach);
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (!reach[i])
			continue;
		if (!ctx[i] && parval(f, i, 0))
			continue;
		if (!ctx[i]) {
			rc = mrefuse(f, in->line, in->col, "an ordinary value in a merge expression", e);
			goto out;
		}
		if (in->axes & ~AXM(AX_chan)) {
			rc = mrefuse(f, in->line, in->col, "a merge expression value with group or obs axes", e);
			goto out;
		}
		switch (in->op) {
		case KO_erow:
		case KO_krow:
		case KO_tmean: {
			KiRef a = in->arg[0];
			if (tokval(f, a) && !hashmean(f)) {
				rc = mrefuse(f, in->line, in->col, "an ordinary [token] value in a merge expression of a policy "
				             "without a mean over heads", e);
				goto out;
			}
			if (tokval(f, a))
				continue;
			if (in->op == KO_tmean) {
				rc = mrefuse(f, in->line, in->col, "tmean of a value other than an ordinary [token] value", e);
				goto out;
			}
			if (KI_RKIND(a) != RK_INS || f->ins[KI_RIDX(a)].op != KO_input ||
			    (f->ins[KI_RIDX(a)].aux != IN_K && f->ins[KI_RIDX(a)].aux != IN_V)) {
				rc = mrefuse(f, in->line, in->col, "a merge row value other than the row's K or V", e);
				goto out;
			}
			continue;
		}
		case KO_pinfo:
			continue;
		}
		const KiSem *sem = ki_sem(in->op);
		if (sem->kind == SEM_EW && mewok(in->op))
			continue;
		if (sem->kind == SEM_RED && in->axis == AX_chan && sem->map != MAP_DEV && !in->axes)
			continue;
		snprintf(what, sizeof what, "%s in a merge expression", ki_opname(in->op));
		rc = mrefuse(f, in->line, in->col, what, e);
		goto out;
	}
	rc = 0;
out:
	free(ctx), free(reach);
	return rc;
}

int ki_mkernels_gpu(const KiFn *f, KiErr *e)
{
	/* merge rules x86 compiles and CUDA does not: none at this level now (a runs rule reading an
	** ordinary [token] value compiles to CUDA since session 8: codegen/ptx/mpos.c); the CUDA
	** generator still refuses, with a position, what it lacks (codegen/ptx/kernels.c) */
	(void)f, (void)e;
	return 0;
}

int ki_mtau(const KiFn *f)
{
	const KiMerge *m = &f->merge;
	return m->kind == MG_nearest && m->thr == MT_adaptive &&
	       !(KI_RKIND(m->beta) == RK_CON && f->con[KI_RIDX(m->beta)] == 0);
}

/* --- issue 12, session 10: the cosine of the keys (the f32 similarity on AMX) ------------------ */

/* r is erow / krow (op) of the input K */
static int keyrow(const KiFn *f, KiRef r, int op)
{
	if (KI_RKIND(r) != RK_INS)
		return 0;
	const KiIns *in = &f->ins[KI_RIDX(r)];
	if (in->op != op || KI_RKIND(in->arg[0]) != RK_INS)
		return 0;
	const KiIns *x = &f->ins[KI_RIDX(in->arg[0])];
	return x->op == KO_input && x->aux == IN_K;
}

/* the instruction at r when it is op, else NULL */
static const KiIns *insof(const KiFn *f, KiRef r, int op)
{
	if (KI_RKIND(r) != RK_INS)
		return NULL;
	const KiIns *in = &f->ins[KI_RIDX(r)];
	return in->op == op ? in : NULL;
}

/* r is norm over chan of erow / krow (op) of the input K */
static int keynorm(const KiFn *f, KiRef r, int op)
{
	const KiIns *n = insof(f, r, KO_norm);
	return n && n->axis == AX_chan && !n->axes && keyrow(f, n->arg[0], op);
}

int ki_mcosine(const KiFn *f, KiRef r, double *c)
{
	const KiIns *dv = insof(f, r, KO_div), *dt, *mx, *ml;
	if (!dv || !(dt = insof(f, dv->arg[0], KO_dot)) || dt->axis != AX_chan || dt->axes ||
	    !((keyrow(f, dt->arg[0], KO_erow) && keyrow(f, dt->arg[1], KO_krow)) ||
	      (keyrow(f, dt->arg[0], KO_krow) && keyrow(f, dt->arg[1], KO_erow))) ||
	    !(mx = insof(f, dv->arg[1], KO_max)))
		return 0;
	int ci = KI_RKIND(mx->arg[1]) == RK_CON ? 1 : KI_RKIND(mx->arg[0]) == RK_CON ? 0 : -1;
	if (ci < 0 || !(ml = insof(f, mx->arg[1 - ci], KO_mul)))
		return 0;
	double v = f->con[KI_RIDX(mx->arg[ci])];
	if (!(v > 0 && v < 1e30) || !((keynorm(f, ml->arg[0], KO_erow) && keynorm(f, ml->arg[1], KO_krow)) ||
	                              (keynorm(f, ml->arg[0], KO_krow) && keynorm(f, ml->arg[1], KO_erow))))
		return 0;
	*c = v;
	return 1;
}
