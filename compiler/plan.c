/*
** Kernel planner: classifies every instruction the score needs (see plan.h).
*/
#include <stdlib.h>
#include <string.h>
#include "compiler/plan.h"

#define HAS(m, ax) (((m) & AXM(ax)) != 0)

static void mark(const KiFn *f, KcRef r, uint8_t *need)
{
	if (KC_RKIND(r) != RK_INS || need[KC_RIDX(r)])
		return;
	need[KC_RIDX(r)] = 1;
	for (int k = 0; k < 3; k++)
		mark(f, f->ins[KC_RIDX(r)].arg[k], need);
}

static int isinput(const KiFn *f, KcRef r, int in)
{
	return KC_RKIND(r) == RK_INS && f->ins[KC_RIDX(r)].op == KO_input && f->ins[KC_RIDX(r)].aux == in;
}

static int clsof(const KpPlan *p, KcRef r)
{
	return KC_RKIND(r) == RK_INS ? p->cls[KC_RIDX(r)] : KP_MAT;
}

static int isattn(int c) { return c == KP_DOT || c == KP_ATTN; }

#define TOKAX (AXM(AX_group) | AXM(AX_token))

/* a value the generated loops compute where it is used (never stored for them) */
int kp_isleaf(const KiIns *in)
{
	switch (in->op) {
	case KO_input: return in->aux == IN_K || in->aux == IN_V || in->aux == IN_pos;
	case KO_index: return in->axis == AX_token;
	case KO_state: case KO_rand: return 1;
	}
	return 0;
}

/* a reduction over token: its value exists only after the loop (two phases) */
int kp_tokred(const KiIns *in)
{
	int r = ki_rule(in->op);
	return (r == AR_RED || r == AR_DOT) && in->axis == AX_token;
}

static int ispool(const KiIns *in) { return in->op == KO_avgpool || in->op == KO_maxpool; }

/* instruction j is read by i */
static int reads(const KiIns *in, int j)
{
	for (int a = 0; a < ki_nargs(in->op); a++)
		if (in->arg[a] == KC_REF(RK_INS, j))
			return 1;
	return 0;
}

int kp_segend(const KpPlan *p, int s)
{
	int e = s;
	for (int i = s + 1; i < p->f->nins && (!p->cls[i] || p->tgen[i] == KP_GEN_IN); i++)
		if (p->cls[i])
			e = i;
	return e;
}

/* a token_map value only the Q·K tile reads (x.Q, x.K there): no evaluator computes it */
static int qkonly(const KiFn *f, const KpPlan *p, int i)
{
	if (f->score == KC_REF(RK_INS, i))
		return 0;
	for (int k = i + 1; k < f->nins; k++)
		if (p->cls[k] && p->cls[k] != KP_DOT && reads(&f->ins[k], i))
			return 0;
	return 1;
}

/* can instruction i run in a generated token_map loop? (the C evaluator keeps softmax over
** token, std, hmean, obs-axis values and pools over other axes) */
static int gen_ok(const KiFn *f, const KpPlan *p, int i)
{
	const KiIns *in = &f->ins[i];
	if (p->cls[i] != KP_MAT || HAS(in->axes, AX_obs) || qkonly(f, p, i))
		return 0;
	switch (ki_rule(in->op)) {
	case AR_LEAF:
		if (in->op == KO_size || in->op == KO_info)
			return in->op == KO_info || in->axis < AX_NUM;
		return kp_isleaf(in);
	case AR_TOK:
		if (in->op != KO_rand)
			return 0;
		break;
	case AR_EW:
		break;
	case AR_RED:
	case AR_DOT:
		if (in->op == KO_std || in->axis == AX_obs || in->axis >= AX_NUM)
			return 0;
		break;
	case AR_KEEP:
		if (!ispool(in) || in->axis != AX_token || KC_RKIND(in->arg[0]) != RK_INS ||
		    (ki_refaxes(f, in->arg[0]) & ~TOKAX) || (KC_RKIND(in->arg[1]) == RK_INS && ki_refaxes(f, in->arg[1])))
			return 0;
		break;
	default:
		return 0;
	}
	for (int k = 0; k < ki_nargs(in->op); k++) {
		KcRef r = in->arg[k];
		if (KC_RKIND(r) == RK_CON || KC_RKIND(r) == RK_PAR)
			continue;
		if (KC_RKIND(r) != RK_INS || (ki_refaxes(f, r) & AXM(AX_obs)))
			return 0;
		int c = p->cls[KC_RIDX(r)];
		if (c != KP_MAT && c != KP_RED)
			return 0;
	}
	return 1;
}

/* Fused loops: maximal runs of generable instructions, split where a value would be read before
** it is complete: after a token reduction (its consumers), and before a pool whose input or
** kernel size is computed in the same run (the stencil reads neighbours: the input is stored
** first; the runtime checks the kernel size before the loop). */
static void segment(const KiFn *f, KpPlan *p)
{
	int seg = -1;
	for (int i = 0; i < f->nins; i++) {
		if (!p->cls[i])
			continue;         /* not needed: no code, and no split */
		if (!gen_ok(f, p, i)) {
			seg = -1;
			continue;
		}
		const KiIns *in = &f->ins[i];
		int brk = seg < 0;
		for (int k = 0; k < ki_nargs(in->op) && !brk; k++) {
			KcRef r = in->arg[k];
			int j = KC_RIDX(r);
			if (KC_RKIND(r) == RK_INS && j >= seg && p->tgen[j])
				brk = kp_tokred(&f->ins[j]) || ispool(in);
		}
		if (brk)
			seg = i;
		p->tgen[i] = (uint8_t)(brk ? KP_GEN_START : KP_GEN_IN);
	}
}

/* tout: values stored for readers outside their loop (the C evaluator, attn_score, later
** loops, pools, the score); leaves only where they cannot be recomputed (C readers, pools). */
static void outputs(const KiFn *f, KpPlan *p)
{
	for (int i = 0; i < f->nins; i++) {
		if (!p->tgen[i])
			continue;
		int end = kp_segend(p, i);
		int leaf = kp_isleaf(&f->ins[i]);
		p->tout[i] = f->score == KC_REF(RK_INS, i);
		for (int k = i + 1; k < f->nins && !p->tout[i]; k++)
			if (p->cls[k] && reads(&f->ins[k], i))
				p->tout[i] = leaf ? ispool(&f->ins[k]) || (!p->tgen[k] && p->cls[k] != KP_DOT) : k > end;
	}
}

int kp_build(const KiFn *f, KpPlan *p, KcErr *e)
{
	memset(p, 0, sizeof *p);
	p->f = f;
	if (kp_unsupported(f, e) != 0)
		return -1;
	p->cls = calloc((size_t)f->nins + 1, 1);
	p->soft = calloc((size_t)f->nins + 1, sizeof(int));
	p->oneed = calloc((size_t)f->nins + 1, 1);
	if (!p->cls || !p->soft || !p->oneed) {
		kc_error(e, f->src, 0, 0, "plan: out of memory");
		goto fail;
	}
	mark(f, f->score, p->cls);   /* 1 = needed, refined below */
	for (int i = 0; i < f->nins; i++) {
		if (!p->cls[i])
			continue;
		const KiIns *in = &f->ins[i];
		uint8_t m = in->axes;
		int ca[3] = { KP_NONE, KP_NONE, KP_NONE }, anyattn = 0;
		for (int k = 0; k < ki_nargs(in->op); k++) {
			ca[k] = clsof(p, in->arg[k]);
			anyattn |= isattn(ca[k]);
		}
		int c = KP_MAT;
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
			kc_error(e, f->src, in->line, in->col, "x.attn reaches the score (only the observe hook may read it)");
			goto fail;
		case KO_hmean:
			p->uses_hmean = 1;
			break;
		}
		if (HAS(m, AX_obs) && HAS(m, AX_token)) {
			if (in->op == KO_dot) {
				if (in->axis != AX_chan ||
				    !((isinput(f, in->arg[0], IN_Q) && isinput(f, in->arg[1], IN_K)) ||
				      (isinput(f, in->arg[0], IN_K) && isinput(f, in->arg[1], IN_Q)))) {
					kc_error(e, f->src, in->line, in->col,
					         "attn_score: the only [obs, token] product the kernels fuse is "
					         "x.Q:dot(x.K, \"chan\")");
					goto fail;
				}
				c = KP_DOT;
				p->has_attn = 1;
			} else if (ki_rule(in->op) == AR_EW) {
				if (HAS(m, AX_chan)) {
					kc_error(e, f->src, in->line, in->col,
					         "attn_score: an [obs, token, chan] value would materialize the attention "
					         "per channel; reduce over chan first");
					goto fail;
				}
				if (!anyattn) {
					kc_error(e, f->src, in->line, in->col,
					         "attn_score: an [obs, token] value that does not derive from Q·K "
					         "is not supported");
					goto fail;
				}
				c = KP_ATTN;
			} else if ((in->op == KO_softmax || in->op == KO_softmaxnc) && in->axis == AX_token) {
				if (!isattn(ca[0])) {
					kc_error(e, f->src, in->line, in->col, "attn_score: softmax of a value not derived from Q·K");
					goto fail;
				}
				c = KP_ATTN;
				p->soft[p->nsoft++] = i;
			} else {
				kc_error(e, f->src, in->line, in->col,
				         "attn_score: %s over %s of an [obs, token] value cannot be fused "
				         "(supported: elementwise ops, softmax over token, sum/mean over obs)",
				         ki_opname(in->op), in->axis < AX_NUM ? ki_axisname(in->axis) : "-");
				goto fail;
			}
		} else if (anyattn) {
			if (!((in->op == KO_sum || in->op == KO_mean) && in->axis == AX_obs)) {
				kc_error(e, f->src, in->line, in->col,
				         "attn_score: the attention [obs, token] can only be reduced over obs "
				         "(sum or mean) here, not by %s", ki_opname(in->op));
				goto fail;
			}
			c = KP_RED;
			p->nred++;
		} else if (HAS(m, AX_obs) && in->op == KO_input && in->aux == IN_Q) {
			/* per-query value, materialized ([group, obs, chan] is small) */
		} else if (kp_tokred(in)) {
			p->two_phase = 1;
		}
		p->cls[i] = (uint8_t)c;
	}
	/* x.Q reaches the kernels only as an operand of the Q·K tile: the runtimes hold the
	** observation queries for attn_score alone (anything else would read a buffer that is
	** never set) */
	for (int i = 0; i < f->nins; i++)
		for (int k = 0; p->cls[i] && p->cls[i] != KP_DOT && k < ki_nargs(f->ins[i].op); k++)
			if (isinput(f, f->ins[i].arg[k], IN_Q)) {
				kc_error(e, f->src, f->ins[i].line, f->ins[i].col, "the kernels read x.Q only as "
				         "x.Q:dot(x.K, \"chan\") (the attention logits), not through %s",
				         ki_opname(f->ins[i].op));
				goto fail;
			}
	if (KC_RKIND(f->score) == RK_INS && isattn(p->cls[KC_RIDX(f->score)])) {
		const KiIns *in = &f->ins[KC_RIDX(f->score)];
		kc_error(e, f->src, in->line, in->col, "the score must be reduced over obs");
		goto fail;
	}
	/* operands of attn values that are materialized must not have chan */
	for (int i = 0; i < f->nins; i++)
		if (p->cls[i] == KP_ATTN)
			for (int k = 0; k < ki_nargs(f->ins[i].op); k++) {
				KcRef r = f->ins[i].arg[k];
				if (clsof(p, r) == KP_MAT && (ki_refaxes(f, r) & AXM(AX_chan))) {
					kc_error(e, f->src, f->ins[i].line, f->ins[i].col,
					         "attn_score: operand with a chan axis in an [obs, token] expression");
					goto fail;
				}
			}
	/* the fused attn_score pattern */
	if (p->has_attn) {
		int ok = 1, cur = -1;
		p->fdot = p->fsoft = -1;
		for (int i = 0; i < f->nins && ok; i++) {
			const KiIns *in = &f->ins[i];
			switch (p->cls[i]) {
			case KP_DOT:
				ok = p->fdot < 0;
				p->fdot = cur = i;
				break;
			case KP_ATTN:
				if (in->op == KO_softmax || in->op == KO_softmaxnc) {
					ok = p->fsoft < 0 && cur >= 0 && in->arg[0] == KC_REF(RK_INS, cur);
					p->fsoft = cur = i;
					p->fcausal = in->op == KO_softmax;
				} else if (in->op == KO_mul && p->fsoft < 0 && p->nmul < 4) {
					KcRef x = in->arg[0], k = in->arg[1];
					if (k == KC_REF(RK_INS, cur))
						x = in->arg[1], k = in->arg[0];
					ok = x == KC_REF(RK_INS, cur) && ki_refaxes(f, k) == 0 && clsof(p, k) != KP_DOT &&
					     clsof(p, k) != KP_ATTN;
					p->mul[p->nmul++] = k;
					cur = i;
				} else
					ok = 0;
				break;
			case KP_RED:
				ok = p->fsoft >= 0 && in->arg[0] == KC_REF(RK_INS, p->fsoft);
				break;
			}
		}
		p->fast = ok && p->fdot >= 0 && p->fsoft >= 0;
		if (p->fast && p->nmul == 1 && KC_RKIND(p->mul[0]) == RK_INS) {
			const KiIns *k = &f->ins[KC_RIDX(p->mul[0])];
			p->fscale = k->op == KO_info && k->aux == INF_scale;
		}
	}
	/* generated token_map loops */
	p->tgen = calloc((size_t)f->nins + 1, 1);
	p->tout = calloc((size_t)f->nins + 1, 1);
	if (!p->tgen || !p->tout) {
		kc_error(e, f->src, 0, 0, "plan: out of memory");
		goto fail;
	}
	segment(f, p);
	outputs(f, p);
	for (int i = 0; i < f->nins; i++) {
		p->ngenins += p->tgen[i] != 0;
		p->ngen += p->tgen[i] == KP_GEN_START;
		p->ncmat += p->cls[i] == KP_MAT && !p->tgen[i] && !qkonly(f, p, i);
	}
	/* observe hook: everything is materialized per (layer, head) instance, obs-free */
	for (int s = 0; s < f->nst; s++)
		if (f->st[s].update) {
			mark(f, f->st[s].update, p->oneed);
			p->has_observe = 1;
		}
	for (int i = 0; i < f->nins; i++)
		if (p->oneed[i]) {
			const KiIns *in = &f->ins[i];
			if (HAS(in->axes, AX_obs) || (in->op == KO_input && (in->aux == IN_lse || in->aux == IN_qpos))) {
				kc_error(e, f->src, in->line, in->col,
				         "decode_attn: the observe hook cannot read observation queries (x.Q, x.lse, x.qpos)");
				goto fail;
			}
			if (in->op == KO_hmean) {
				kc_error(e, f->src, in->line, in->col,
				         "decode_attn: a mean over heads in the observe hook is not supported yet");
				goto fail;
			}
		}
	return 0;
fail:
	kp_free(p);
	return -1;
}

void kp_free(KpPlan *p)
{
	free(p->cls);
	free(p->soft);
	free(p->oneed);
	free(p->tgen);
	free(p->tout);
	memset(p, 0, sizeof *p);
}

void kp_print(const KpPlan *p, FILE *out)
{
	const KiFn *f = p->f;
	static const char *nm[] = { "-", "token_map", "attn_score(qk)", "attn_score", "attn_score→acc" };
	fprintf(out, "plan for %s:\n", f->name);
	if (p->has_attn)
		fprintf(out, "  attn_stats  %d pass(es)%s\n", p->nsoft, p->uses_lse ? " (lse given for some)" : "");
	if (p->has_attn)
		fprintf(out, "  attn_score  %d accumulator(s) over obs%s\n", p->nred,
		        p->fast ? p->fscale ? ", fused (generated Q·K tile + softmax epilogue; one pass when lse is given)"
		                            : ", fused (generated Q·K tile + softmax epilogue)"
		                : ", generic epilogue");
	fprintf(out, "  token_map   %s; path: %s (%d generated fused loop(s) over %d instruction(s), "
	        "%d instruction(s) in the C evaluator)\n",
	        p->two_phase ? "two phases (token reduction)" : "one phase",
	        !p->ngen ? "C evaluator" : p->ncmat ? "mixed" : "generated", p->ngen, p->ngenins, p->ncmat);
	if (p->uses_hmean)
		fprintf(out, "  head_mean   barrier across the heads of a layer\n");
	fprintf(out, "  select      top-k (radix select), scope %s\n", ki_scopename(f->sel.scope));
	fprintf(out, "  compact     stable in-place gather%s\n", f->nst ? " (K, V, pos, state)" : "");
	if (p->has_observe)
		fprintf(out, "  decode_attn split-KV online softmax; observe hook updates %d state(s)\n", f->nst);
	else
		fprintf(out, "  decode_attn split-KV online softmax\n");
	for (int i = 0; i < f->nins; i++)
		if (p->cls[i]) {
			char ax[64];
			ki_axesstr(f->ins[i].axes, ax, sizeof ax);
			const char *path = p->tgen[i] == KP_GEN_START ? p->tout[i] ? " (generated loop start, stored)"
			                                                            : " (generated loop start)"
			                   : p->tgen[i] ? p->tout[i] ? " (generated loop, stored)" : " (generated loop)"
			                   : p->cls[i] == KP_MAT ? qkonly(f, p, i) ? " (read by the Q·K tile)" : " (C evaluator)"
			                   : "";
			fprintf(out, "    %%%d %-8s %-12s %s%s\n", i, ki_opname(f->ins[i].op), ax, nm[p->cls[i]], path);
		}
	for (int i = 0; i < f->nins; i++)
		if (p->oneed[i]) {
			char ax[64];
			ki_axesstr(f->ins[i].axes, ax, sizeof ax);
			fprintf(out, "    %%%d %-8s %-12s observe\n", i, ki_opname(f->ins[i].op), ax);
		}
}
