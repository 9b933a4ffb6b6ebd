/*
** Kernel planner: classifies every instruction the score needs (see plan.h).
*/
#include <stdlib.h>
#include <string.h>
#include "compiler/plan.h"
#include "compiler/keep.h"
#include "compiler/mplan.h"

#define HAS(m, ax) (((m) & AXM(ax)) != 0)

/* Mark what r reaches: one sweep down, operands pointing backwards (no recursion
** as deep as a long chain). */
static void mark(const KiFn *f, KiRef r, uint8_t *need)
{
	if (KI_RKIND(r) != RK_INS)
		return;
	need[KI_RIDX(r)] = 1;
	for (int i = KI_RIDX(r); i >= 0; i--)
		for (int k = 0; need[i] && k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS && KI_RIDX(f->ins[i].arg[k]) < i)
				need[KI_RIDX(f->ins[i].arg[k])] = 1;
}

static int isinput(const KiFn *f, KiRef r, int in)
{
	return KI_RKIND(r) == RK_INS && f->ins[KI_RIDX(r)].op == KO_input && f->ins[KI_RIDX(r)].aux == in;
}

static int clsof(const KiPlan *p, KiRef r)
{
	return KI_RKIND(r) == RK_INS ? p->cls[KI_RIDX(r)] : KI_CMAT;
}

static int isattn(int c) { return c == KI_CDOT || c == KI_CATTN; }

#define TOKAX (AXM(AX_group) | AXM(AX_token))

/* a value the generated loops compute where it is used (never stored for them) */
int ki_isleaf(const KiIns *in)
{
	switch (in->op) {
	case KO_input: return in->aux == IN_K || in->aux == IN_V || in->aux == IN_pos;
	case KO_index: return in->axis == AX_token || in->axis == AX_chan;
	case KO_state: case KO_rand: case KO_attn: case KO_weight: return 1;
	}
	return 0;
}

/* a reduction over token: its value exists only after the loop (two phases) */
int ki_tokred(const KiIns *in)
{
	int r = ki_rule(in->op);
	return (r == AR_RED || r == AR_DOT) && in->axis == AX_token;
}

static int ispool(const KiIns *in) { return in->op == KO_avgpool || in->op == KO_maxpool; }

/* softmax over token of a [group?, token] value (no obs: not the attention's): its slice's max and
** sum from the stored operand before the loop, then per token */
static int istsoft(const KiIns *in)
{
	return in->op == KO_softmax && in->axis == AX_token && !HAS(in->axes, AX_obs);
}

/* reads its operand at other tokens (pools, segment ops, shift along token): the operand is
** stored by an earlier loop */
static int isstencil(const KiIns *in)
{
	return ispool(in) || ki_rule(in->op) == AR_SEG || (in->op == KO_shift && in->axis == AX_token) || istsoft(in);
}

/* One set of fused loops: the token_map of compress (cls = the plan's classes, roots = the
** score) or the observe hook of decode (cls = KI_CMAT on what the state updates need, roots =
** the updates). */
typedef struct Seg {
	const KiFn *f;
	const uint8_t *cls;      /* [nins] KI_C* (0: not needed) */
	const uint8_t *root;     /* [nins] values read after every loop ran */
	uint8_t *tgen, *tout;    /* [nins] out */
	uint8_t *qk;             /* [nins] only the Q·K tile reads it (qkall) */
} Seg;

static int segend(const uint8_t *cls, const uint8_t *tgen, int nins, int s)
{
	int e = s;
	for (int i = s + 1; i < nins && (!cls[i] || tgen[i] == KI_GEN_IN); i++)
		if (cls[i])
			e = i;
	return e;
}

int ki_segend(const KiPlan *p, int s) { return segend(p->cls, p->tgen, p->f->nins, s); }
int ki_osegend(const KiPlan *p, int s) { return segend(p->oneed, p->otgen, p->f->nins, s); }

/* g->qk[i] = 1 for a token_map value only the Q·K tile reads (x.Q, x.K there): no loop
** computes it. One pass over the readers (per instruction it would be quadratic in a long
** policy); -1 when memory runs out. */
static int qkall(Seg *g)
{
	const KiFn *f = g->f;
	g->qk = malloc((size_t)f->nins + 1);
	if (!g->qk)
		return -1;
	for (int i = 0; i < f->nins; i++)
		g->qk[i] = !g->root[i];
	for (int k = 0; k < f->nins; k++)
		if (g->cls[k] && g->cls[k] != KI_CDOT)
			for (int a = 0; a < ki_nargs(f->ins[k].op); a++)
				if (KI_RKIND(f->ins[k].arg[a]) == RK_INS && KI_RIDX(f->ins[k].arg[a]) < k)
					g->qk[KI_RIDX(f->ins[k].arg[a])] = 0;
	return 0;
}

/* can instruction i run in a generated token_map loop? (not: softmax over token, std, hmean,
** obs-axis values, pools over other axes: ki_plan rejects those where the score needs them) */
static int gen_ok(const Seg *g, int i)
{
	const KiFn *f = g->f;
	const KiIns *in = &f->ins[i];
	if (g->cls[i] != KI_CMAT || HAS(in->axes, AX_obs) || g->qk[i])
		return 0;
	/* an out-axis value (weights with an out axis, issue 13) lives only inside the loop over out
	** of the reduction over out that reads it: leaves, elementwise ops, reductions over group /
	** chan (tloops checks that none is stored) */
	if (HAS(in->axes, AX_out) && !(ki_rule(in->op) == AR_EW || in->op == KO_weight ||
	                               ((ki_rule(in->op) == AR_RED || ki_rule(in->op) == AR_DOT) &&
	                                (in->axis == AX_group || in->axis == AX_chan) && in->op != KO_std) ||
	                               (in->op == KO_shift && in->axis == AX_chan)))
		return 0;
	if (in->op == KO_shift && in->axis == AX_chan) {
		/* shift along chan of a value with token and chan, by a scalar offset with a scalar fill */
		if (!HAS(in->axes, AX_token) || KI_RKIND(in->arg[0]) != RK_INS ||
		    (KI_RKIND(in->arg[1]) == RK_INS && ki_refaxes(f, in->arg[1])) ||
		    (KI_RKIND(in->arg[2]) == RK_INS && ki_refaxes(f, in->arg[2])))
			return 0;
		goto args;
	}
	switch (ki_rule(in->op)) {
	case AR_LEAF:
		if (in->op == KO_carry)          /* the scan's previous value (same loop: tloops checks) */
			return 1;
		if (in->op == KO_size || in->op == KO_info)
			return in->op == KO_info || in->axis < AX_NUM;
		return ki_isleaf(in);
	case AR_TOK:
		if (in->op != KO_rand)
			return 0;
		break;
	case AR_EW:
		break;
	case AR_SCAN:                        /* token by token in its loop (a scalar start value) */
		if (KI_RKIND(in->arg[1]) == RK_INS && ki_refaxes(f, in->arg[1]))
			return 0;
		break;
	case AR_RED:
	case AR_DOT:
		if ((in->op == KO_std && in->axis != AX_chan) || in->axis == AX_obs || in->axis >= AX_NUM)
			return 0;
		break;
	case AR_KEEP:
	case AR_SEG:
		/* pools and ranks of [group?, token] values; segment ops and shifts of [group?, token, chan?] */
		if (!isstencil(in) || in->axis != AX_token || KI_RKIND(in->arg[0]) != RK_INS ||
		    (ki_refaxes(f, in->arg[0]) & ~(ispool(in) || in->op == KO_srank || istsoft(in) ? TOKAX : TOKAX | AXM(AX_chan))) || (KI_RKIND(in->arg[1]) == RK_INS && ki_refaxes(f, in->arg[1])) ||
		    (KI_RKIND(in->arg[2]) == RK_INS && ki_refaxes(f, in->arg[2])))
			return 0;
		break;
	default:
		return 0;
	}
args:
	for (int k = 0; k < ki_nargs(in->op); k++) {
		KiRef r = in->arg[k];
		if (KI_RKIND(r) == RK_CON || KI_RKIND(r) == RK_PAR)
			continue;
		if (KI_RKIND(r) != RK_INS || (ki_refaxes(f, r) & AXM(AX_obs)))
			return 0;
		int c = g->cls[KI_RIDX(r)];
		if (c != KI_CMAT && c != KI_CRED)
			return 0;
	}
	return 1;
}

/* Fused loops: maximal runs of generable instructions, split where a value would be read before
** it is complete: after a token reduction (its consumers), and before a pool whose input or
** kernel size is computed in the same run (the stencil reads neighbours: the input is stored
** first; the loop checks the kernel size before it starts). */
static void segment(Seg *g)
{
	const KiFn *f = g->f;
	int seg = -1;
	for (int i = 0; i < f->nins; i++) {
		if (!g->cls[i])
			continue;         /* not needed: no code, and no split */
		if (!gen_ok(g, i)) {
			seg = -1;
			continue;
		}
		const KiIns *in = &f->ins[i];
		int brk = seg < 0;
		for (int k = 0; k < ki_nargs(in->op) && !brk; k++) {
			KiRef r = in->arg[k];
			int j = KI_RIDX(r);
			if (KI_RKIND(r) == RK_INS && j >= seg && g->tgen[j])
				brk = ki_tokred(&f->ins[j]) || isstencil(in);
		}
		if (brk)
			seg = i;
		g->tgen[i] = (uint8_t)(brk ? KI_GEN_START : KI_GEN_IN);
	}
}

/* tout: values stored for readers outside their loop (attn_score, the head_mean barrier, later
** loops, pools, the roots); leaves only where they cannot be recomputed (non-loop readers,
** pools, roots). */
static int outputs(Seg *g)
{
	const KiFn *f = g->f;
	int *last = malloc(((size_t)f->nins + 1) * sizeof *last);
	uint8_t *creader = calloc((size_t)f->nins + 1, 1);
	if (!last || !creader) {
		free(last);
		free(creader);
		return -1;
	}
	/* one pass over the readers (the last one; whether a pool or a non-loop reader reads
	** it), then one over the loops: linear in the policy's length */
	for (int i = 0; i < f->nins; i++)
		last[i] = -1;
	for (int k = 0; k < f->nins; k++)
		if (g->cls[k])
			for (int a = 0; a < ki_nargs(f->ins[k].op); a++) {
				KiRef r = f->ins[k].arg[a];
				if (KI_RKIND(r) != RK_INS || KI_RIDX(r) >= k)
					continue;
				last[KI_RIDX(r)] = k;
				if (isstencil(&f->ins[k]) || (!g->tgen[k] && g->cls[k] != KI_CDOT))
					creader[KI_RIDX(r)] = 1;
			}
	int end = -1;
	for (int i = 0; i < f->nins; i++) {
		if (!g->tgen[i])
			continue;
		if (g->tgen[i] == KI_GEN_START || i > end)
			end = segend(g->cls, g->tgen, f->nins, i);
		g->tout[i] = g->root[i] || (ki_isleaf(&f->ins[i]) ? creader[i] : last[i] > end);
	}
	free(last);
	free(creader);
	return 0;
}

/* Why instruction i of token_map has no generated loop (a positioned compile error). */
static void notgen(const KiFn *f, int i, const char *where, KiErr *e)
{
	const KiIns *in = &f->ins[i];
	char ax[64];
	ki_axesstr(in->axes, ax, sizeof ax);
	const char *an = in->axis < AX_NUM ? ki_axisname(in->axis) : "-";
	if (in->op == KO_std)
		ki_error(e, f->src, in->line, in->col, "%s: std over %s is not generated yet (over chan it is)", where, an);
	else if (in->op == KO_softmax || in->op == KO_softmaxnc)
		ki_error(e, f->src, in->line, in->col,
		         "%s: softmax of a value that does not derive from x.Q:dot(x.K) is not generated yet", where);
	else if (isstencil(in) || in->op == KO_shift)
		ki_error(e, f->src, in->line, in->col,
		         "%s: %s over %s of a %s value is not generated yet (pools and ranks run over token of "
		         "[group?, token] values, segment ops and shifts of [group?, token, chan?] ones, with scalar "
		         "sizes)", where, ki_opname(in->op), an, ax);
	else if (HAS(in->axes, AX_obs) || (in->op == KO_input && (in->aux == IN_lse || in->aux == IN_qpos)))
		ki_error(e, f->src, in->line, in->col,
		         "%s: %s with the obs axis (%s) is not generated yet: observation queries are read only "
		         "inside attention (softmax(x.Q:dot(x.K) ...) reduced over obs)", where,
		         in->op == KO_input ? ki_inputname(in->aux) : ki_opname(in->op), ax);
	else
		ki_error(e, f->src, in->line, in->col, "%s: %s over [%s] is not generated yet", where, ki_opname(in->op), ax);
}

/* Which skeleton computes each instruction the score needs (cls), with the attn_score rules:
** positioned errors for what the kernels cannot fuse. */
static int classify(const KiFn *f, KiPlan *p, KiErr *e)
{
	mark(f, f->score, p->cls);   /* 1 = needed, refined below */
	uint8_t *mv = calloc((size_t)f->nins + 1, 1);   /* the merge's ordinary [token] values (issue 12) */
	if (!mv || ki_mvals(f, mv) != 0) {
		free(mv);
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	}
	if (ki_keepvals(f, mv) != 0) {   /* the [token] rows a keep count reduces (keep.c) */
		free(mv);
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	}
	for (int i = 0; i < f->nins; i++)
		if (mv[i])
			mark(f, KI_REF(RK_INS, i), p->cls);
	free(mv);
	for (int s = 0; s < f->nst; s++)  /* a scan runs at every compression (its state is kept) */
		if (ki_isscanstate(f, s))
			mark(f, f->st[s].update, p->cls);
	for (int i = 0; i < f->nins; i++) {
		if (!p->cls[i])
			continue;
		const KiIns *in = &f->ins[i];
		uint8_t m = in->axes;
		int ca[3] = { KI_CNONE, KI_CNONE, KI_CNONE }, anyattn = 0;
		for (int k = 0; k < ki_nargs(in->op); k++) {
			ca[k] = clsof(p, in->arg[k]);
			anyattn |= isattn(ca[k]);
		}
		int c = KI_CMAT;
		switch (in->op) {
		case KO_input:
			p->uses_lse |= in->aux == IN_lse;
			p->uses_qpos |= in->aux == IN_qpos;
			p->uses_V |= in->aux == IN_V;
			break;
		case KO_state:
			p->uses_state = 1;
			break;
		case KO_attn:
			ki_error(e, f->src, in->line, in->col, "x.attn reaches the score (only the observe hook may read it)");
			return -1;
		case KO_hmean:
			p->uses_hmean = 1;
			break;
		}
		if (HAS(m, AX_obs) && HAS(m, AX_token)) {
			if (in->op == KO_dot) {
				if (in->axis != AX_chan ||
				    !((isinput(f, in->arg[0], IN_Q) && isinput(f, in->arg[1], IN_K)) ||
				      (isinput(f, in->arg[0], IN_K) && isinput(f, in->arg[1], IN_Q)))) {
					ki_error(e, f->src, in->line, in->col,
					         "attn_score: the only [obs, token] product the kernels fuse is "
					         "x.Q:dot(x.K, \"chan\")");
					return -1;
				}
				c = KI_CDOT;
				p->has_attn = 1;
			} else if (ki_rule(in->op) == AR_EW) {
				if (HAS(m, AX_chan)) {
					ki_error(e, f->src, in->line, in->col,
					         "attn_score: an [obs, token, chan] value would materialize the attention "
					         "per channel; reduce over chan first");
					return -1;
				}
				if (!anyattn) {
					ki_error(e, f->src, in->line, in->col,
					         "attn_score: an [obs, token] value that does not derive from Q·K "
					         "is not supported");
					return -1;
				}
				c = KI_CATTN;
			} else if ((in->op == KO_softmax || in->op == KO_softmaxnc) && in->axis == AX_token) {
				if (!isattn(ca[0])) {
					ki_error(e, f->src, in->line, in->col, "attn_score: softmax of a value not derived from Q·K");
					return -1;
				}
				c = KI_CATTN;
				p->soft[p->nsoft++] = i;
			} else {
				ki_error(e, f->src, in->line, in->col,
				         "attn_score: %s over %s of an [obs, token] value cannot be fused "
				         "(supported: elementwise ops, softmax over token, sum/mean over obs)",
				         ki_opname(in->op), in->axis < AX_NUM ? ki_axisname(in->axis) : "-");
				return -1;
			}
		} else if (anyattn) {
			if (!((in->op == KO_sum || in->op == KO_mean) && in->axis == AX_obs)) {
				ki_error(e, f->src, in->line, in->col,
				         "attn_score: the attention [obs, token] can only be reduced over obs "
				         "(sum or mean) here, not by %s", ki_opname(in->op));
				return -1;
			}
			c = KI_CRED;
			p->nred++;
		} else if (HAS(m, AX_obs) && in->op == KO_input && in->aux == IN_Q) {
			/* per-query value, materialized ([group, obs, chan] is small) */
		} else if (ki_tokred(in)) {
			p->two_phase = 1;
		}
		p->cls[i] = (uint8_t)c;
	}
	/* x.Q reaches the kernels only as an operand of the Q·K tile: the runtimes hold the
	** observation queries for attn_score alone (anything else would read a buffer that is
	** never set) */
	for (int i = 0; i < f->nins; i++)
		for (int k = 0; p->cls[i] && p->cls[i] != KI_CDOT && k < ki_nargs(f->ins[i].op); k++)
			if (isinput(f, f->ins[i].arg[k], IN_Q)) {
				ki_error(e, f->src, f->ins[i].line, f->ins[i].col, "the kernels read x.Q only as "
				         "x.Q:dot(x.K, \"chan\") (the attention logits), not through %s",
				         ki_opname(f->ins[i].op));
				return -1;
			}
	if (KI_RKIND(f->score) == RK_INS && isattn(p->cls[KI_RIDX(f->score)])) {
		const KiIns *in = &f->ins[KI_RIDX(f->score)];
		ki_error(e, f->src, in->line, in->col, "the score must be reduced over obs");
		return -1;
	}
	/* operands of attn values that are materialized must not have chan */
	for (int i = 0; i < f->nins; i++)
		if (p->cls[i] == KI_CATTN)
			for (int k = 0; k < ki_nargs(f->ins[i].op); k++) {
				KiRef r = f->ins[i].arg[k];
				if (clsof(p, r) == KI_CMAT && (ki_refaxes(f, r) & AXM(AX_chan))) {
					ki_error(e, f->src, f->ins[i].line, f->ins[i].col,
					         "attn_score: operand with a chan axis in an [obs, token] expression");
					return -1;
				}
			}
	return 0;
}

/* The fused attn_score pattern: dot(Q, K) → multiplies by scalars → softmax over token →
** sum / mean over obs. Its generic C epilogue is gone: anything else is a positioned error. */
static int fused(const KiFn *f, KiPlan *p, KiErr *e)
{
	if (p->has_attn) {
		int ok = 1, cur = -1;
		p->fdot = p->fsoft = p->fbad = -1;
		for (int i = 0; i < f->nins && ok; i++) {
			const KiIns *in = &f->ins[i];
			switch (p->cls[i]) {
			case KI_CDOT:
				ok = p->fdot < 0;
				p->fdot = cur = i;
				break;
			case KI_CATTN:
				if (in->op == KO_softmax || in->op == KO_softmaxnc) {
					ok = p->fsoft < 0 && cur >= 0 && in->arg[0] == KI_REF(RK_INS, cur);
					p->fsoft = cur = i;
					p->fcausal = in->op == KO_softmax;
				} else if (in->op == KO_mul && p->fsoft < 0 && p->nmul < 4) {
					KiRef x = in->arg[0], k = in->arg[1];
					if (k == KI_REF(RK_INS, cur))
						x = in->arg[1], k = in->arg[0];
					ok = x == KI_REF(RK_INS, cur) && ki_refaxes(f, k) == 0 && clsof(p, k) != KI_CDOT &&
					     clsof(p, k) != KI_CATTN;
					p->mul[p->nmul++] = k;
					cur = i;
				} else
					ok = 0;
				break;
			case KI_CRED:
				ok = p->fsoft >= 0 && in->arg[0] == KI_REF(RK_INS, p->fsoft);
				break;
			}
			if (!ok)
				p->fbad = i;
		}
		p->fast = ok && p->fdot >= 0 && p->fsoft >= 0;
		if (!p->fast) {          /* the generic epilogue is gone: what is not fused is rejected */
			int i = p->fbad >= 0 ? p->fbad : p->fdot;
			const KiIns *in = &f->ins[i];
			ki_error(e, f->src, in->line, in->col,
			         "attn_score: %s here is not generated yet (the fused kernels take softmax over token of "
			         "x.Q:dot(x.K, \"chan\") times scalars, then sum or mean over obs)", ki_opname(in->op));
			return -1;
		}
		if (p->fast && p->nmul == 1 && KI_RKIND(p->mul[0]) == RK_INS) {
			const KiIns *k = &f->ins[KI_RIDX(p->mul[0])];
			p->fscale = k->op == KO_info && k->aux == INF_scale;
		}
	}
	return 0;
}

/* The generated token_map loops (tgen, tout); a value the score needs that no loop computes,
** that the Q·K tile does not read and that is no head_mean barrier is a positioned error. */
static int tloops(const KiFn *f, KiPlan *p, uint8_t *root, KiErr *e)
{
	if (KI_RKIND(f->score) == RK_INS)
		root[KI_RIDX(f->score)] = 1;
	if (ki_mvals(f, root) != 0 ||    /* the merge's ordinary [token] values: stored (issue 12) */
	    ki_keepvals(f, root) != 0)   /* the [token] rows a keep count reduces: stored (keep.c) */
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	if (KI_RKIND(f->score) == RK_INS)
		root[KI_RIDX(f->score)] = 1;
	for (int s = 0; s < f->nst; s++)
		if (ki_isscanstate(f, s))
			root[KI_RIDX(f->st[s].update)] = 1;
	Seg sg = { f, p->cls, root, p->tgen, p->tout, NULL };
	if (qkall(&sg) != 0)
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	segment(&sg);
	if (outputs(&sg) != 0) {
		free(sg.qk);
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	}
	int bad = -1;
	for (int i = 0; i < f->nins; i++) {
		p->ngenins += p->tgen[i] != 0;
		p->ngen += p->tgen[i] == KI_GEN_START;
		if (p->cls[i] == KI_CMAT && !p->tgen[i] && !sg.qk[i] && f->ins[i].op != KO_hmean && bad < 0)
			bad = i;
		if (p->cls[i] && f->ins[i].op == KO_hmean && KI_RKIND(f->ins[i].arg[0]) != RK_INS && bad < 0)
			bad = i;
	}
	free(sg.qk);
	if (bad >= 0) {
		notgen(f, bad, "token_map", e);
		return -1;
	}
	/* an out-axis value is computed inside its reduction over out: never stored for another loop */
	for (int i = 0; i < f->nins; i++)
		if (p->tgen[i] && p->tout[i] && HAS(f->ins[i].axes, AX_out)) {
			const KiIns *in = &f->ins[i];
			ki_error(e, f->src, in->line, in->col, "token_map: a value with the out axis must be reduced over "
			         "out in the loop that computes it (here it is read by another loop or is the score)");
			return -1;
		}
	/* a scan's carry, step and the scan itself in one loop (the carry lives in a register of it) */
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (in->op != KO_carry || !p->tgen[i] || !ki_isscanstate(f, in->aux))
			continue;
		int sc = KI_RIDX(f->st[in->aux].update);
		for (int j = i + 1; j <= sc; j++)
			if (p->tgen[j] == KI_GEN_START || !p->tgen[sc]) {
				const KiIns *si = &f->ins[sc];
				ki_error(e, f->src, si->line, si->col, "token_map: this scan's step reads a value that needs "
				         "a pass over the tokens first (a token reduction, pool or segment op of the step's "
				         "operands): not generated yet; compute it before kv.scan");
				return -1;
			}
	}
	return 0;
}

/* The observe hook's fused loops (decode): over [group, token, chan] values with x.attn = this
** step's probabilities; roots = the state updates (stored, then written into the state). */
static int oloops(const KiFn *f, KiPlan *p, uint8_t *root, uint8_t *ocls, KiErr *e)
{
	for (int i = 0; i < f->nins; i++)
		root[i] = 0;
	for (int s = 0; s < f->nst; s++)
		if (f->st[s].update && !ki_isscanstate(f, s)) {   /* scans run at compression */
			mark(f, f->st[s].update, p->oneed);
			if (KI_RKIND(f->st[s].update) == RK_INS)
				root[KI_RIDX(f->st[s].update)] = 1;
			p->has_observe = 1;
		}
	for (int i = 0; i < f->nins; i++) {
		ocls[i] = p->oneed[i] ? KI_CMAT : 0;
		if (!p->oneed[i])
			continue;
		const KiIns *in = &f->ins[i];
		if (HAS(in->axes, AX_obs) || (in->op == KO_input && (in->aux == IN_lse || in->aux == IN_qpos))) {
			ki_error(e, f->src, in->line, in->col,
			         "decode_attn: the observe hook cannot read observation queries (x.Q, x.lse, x.qpos)");
			return -1;
		}
		if (in->op == KO_hmean) {
			ki_error(e, f->src, in->line, in->col,
			         "decode_attn: a mean over heads in the observe hook is not supported yet");
			return -1;
		}
	}
	Seg so = { f, ocls, root, p->otgen, p->otout, NULL };
	if (qkall(&so) != 0)
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	segment(&so);
	free(so.qk);
	if (outputs(&so) != 0)
		return ki_error(e, f->src, 0, 0, "plan: out of memory"), -1;
	for (int i = 0; i < f->nins; i++) {
		p->nogen += p->otgen[i] == KI_GEN_START;
		if (p->oneed[i] && !p->otgen[i]) {
			notgen(f, i, "decode_attn (observe hook)", e);
			return -1;
		}
	}
	return 0;
}

int ki_plan(const KiFn *f, KiPlan *p, KiErr *e)
{
	memset(p, 0, sizeof *p);
	p->f = f;
	if (ki_unsupported(f, e) != 0)   /* merge rules, the issue-13 language (support.c) */
		return -1;
	size_t n = (size_t)f->nins + 1;
	p->cls = calloc(n, 1), p->soft = calloc(n, sizeof(int)), p->oneed = calloc(n, 1);
	p->tgen = calloc(n, 1), p->tout = calloc(n, 1), p->otgen = calloc(n, 1), p->otout = calloc(n, 1);
	uint8_t *root = calloc(n, 1), *ocls = calloc(n, 1);
	int rc = -1;
	if (!p->cls || !p->soft || !p->oneed || !p->tgen || !p->tout || !p->otgen || !p->otout || !root || !ocls)
		ki_error(e, f->src, 0, 0, "plan: out of memory");
	else if (classify(f, p, e) == 0 &&     /* skeleton per instruction */
	         fused(f, p, e) == 0 &&        /* the fused attn_score */
	         tloops(f, p, root, e) == 0 && /* token_map loops */
	         oloops(f, p, root, ocls, e) == 0)   /* the observe hook's loops */
		rc = 0;
	free(root), free(ocls);
	if (rc)
		ki_plan_free(p);
	return rc;
}

void ki_plan_free(KiPlan *p)
{
	free(p->cls);
	free(p->soft);
	free(p->oneed);
	free(p->tgen);
	free(p->tout);
	free(p->otgen);
	free(p->otout);
	memset(p, 0, sizeof *p);
}

void ki_plan_print(const KiPlan *p, FILE *out)
{
	const KiFn *f = p->f;
	static const char *nm[] = { "-", "token_map", "attn_score(qk)", "attn_score", "attn_score→acc" };
	fprintf(out, "plan for %s:\n", f->name);
	if (p->has_attn)
		fprintf(out, "  attn_stats  %d pass(es)%s\n", p->nsoft, p->uses_lse ? " (lse given for some)" : "");
	if (p->has_attn)
		fprintf(out, "  attn_score  %d accumulator(s) over obs%s\n", p->nred,
		        p->fscale ? ", fused (generated Q·K tile + softmax epilogue; one pass when lse is given)"
		                  : ", fused (generated Q·K tile + softmax epilogue)");
	fprintf(out, "  token_map   %s; %d generated fused loop(s) over %d instruction(s)\n",
	        p->two_phase ? "two phases (token reduction)" : "one phase", p->ngen, p->ngenins);
	if (p->uses_hmean)
		fprintf(out, "  head_mean   barrier across the heads of a layer\n");
	fprintf(out, "  select      top-k (radix select), scope %s\n", ki_scopename(f->sel.scope));
	fprintf(out, "  compact     stable in-place gather%s\n", f->nst ? " (K, V, pos, state)" : "");
	if (p->has_observe)
		fprintf(out, "  decode_attn split-KV online softmax; observe hook: %d generated fused loop(s), "
		        "updates %d state(s)\n", p->nogen, f->nst);
	else
		fprintf(out, "  decode_attn split-KV online softmax\n");
	for (int i = 0; i < f->nins; i++)
		if (p->cls[i]) {
			char ax[64];
			ki_axesstr(f->ins[i].axes, ax, sizeof ax);
			const char *path = p->tgen[i] == KI_GEN_START ? p->tout[i] ? " (generated loop start, stored)"
			                                                            : " (generated loop start)"
			                   : p->tgen[i] ? p->tout[i] ? " (generated loop, stored)" : " (generated loop)"
			                   : p->cls[i] == KI_CMAT ? f->ins[i].op == KO_hmean ? " (head_mean barrier)"
			                                                                    : " (read by the Q·K tile)"
			                   : "";
			fprintf(out, "    %%%d %-8s %-12s %s%s\n", i, ki_opname(f->ins[i].op), ax, nm[p->cls[i]], path);
		}
	for (int i = 0; i < f->nins; i++)
		if (p->oneed[i]) {
			char ax[64];
			ki_axesstr(f->ins[i].axes, ax, sizeof ax);
			fprintf(out, "    %%%d %-8s %-12s observe%s\n", i, ki_opname(f->ins[i].op), ax,
			        p->otgen[i] == KI_GEN_START ? p->otout[i] ? " (generated loop start, stored)" : " (generated loop start)"
			        : p->otout[i] ? " (generated loop, stored)" : " (generated loop)");
		}
}
