/*
** select keep on the kernel backends (issue 13; keep.h). The keep expression is a scalar per
** (layer, head) (the verifier); the generators evaluate it in double, as the reference
** interpreter does, from: constants and params; x.n and the other sizes, x.layer, x.head,
** x.nlayers, x.nheads, x.step, x.ratio, x.nkeep, x.scale (KO_size, KO_info); weights whose
** axes are layer, head and out, the out index, and reductions over out (sum, mean, max, min,
** norm, dot: the op table's KS_RED kinds other than std's); every elementwise op; and
** reductions over token (sum, mean, max, min, norm, std, ...) of any [token] value of the
** policy: the score itself (session 10), x.pos, or any other one (session 12: the key norms, a
** count of tokens over a value, ...). The kernels compute such a value where they compute the
** score's token values (ki_keepvals: the x86 plan stores it in the instance's arena and
** kvcc_keepn reduces it there, runtime/compress.c runinst; CUDA materializes it in the
** instance's workspace in the score kernels and kv_count reduces it), in f32 where the
** interpreter has it in double; x.pos is read from the positions (exact). Refused here with its
** position: any token reduction with merge summary (the summary rows are part of the rows there;
** wt-msum12's lane) and what is not listed above (std over out, a reduction over token of a
** value with more axes, ...: not generated yet).
*/
#include <stdio.h>
#include <stdlib.h>
#include "compiler/keep.h"

int ki_keeptok(const KiFn *f, const KiIns *in)
{
	return ki_rule(in->op) == AR_RED && in->axis == AX_token && ki_sem(in->op)->kind == SEM_RED &&
	       KI_RKIND(in->arg[0]) == RK_INS && f->ins[KI_RIDX(in->arg[0])].axes == AXM(AX_token);
}

void ki_keepneed(const KiFn *f, uint8_t *need)
{
	if (KI_RKIND(f->sel.keep) != RK_INS)
		return;
	need[KI_RIDX(f->sel.keep)] = 1;
	for (int i = KI_RIDX(f->sel.keep); i >= 0; i--)
		for (int k = 0; need[i] && !ki_keeptok(f, &f->ins[i]) && k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS && KI_RIDX(f->ins[i].arg[k]) < i)
				need[KI_RIDX(f->ins[i].arg[k])] = 1;
}

int ki_keepvals(const KiFn *f, uint8_t *mv)
{
	if (KI_RKIND(f->sel.keep) != RK_INS)
		return 0;
	uint8_t *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return -1;
	ki_keepneed(f, need);
	for (int i = 0; i < f->nins; i++)
		if (need[i] && ki_keeptok(f, &f->ins[i]) && f->ins[KI_RIDX(f->ins[i].arg[0])].op != KO_input)
			mv[KI_RIDX(f->ins[i].arg[0])] = 1;   /* x.pos: the generators read the positions */
	free(need);
	return 0;
}

/* can the generators evaluate instruction in as a scalar (or inside a loop over out)? */
static int keepop(const KiFn *f, const KiIns *in)
{
	if (ki_keeptok(f, in))
		return f->merge.kind != MG_summary;
	if (in->axes & ~AXM(AX_out))
		return 0;
	switch (ki_rule(in->op)) {
	case AR_EW:
		return ki_sem(in->op)->kind == SEM_EW;
	case AR_RED:
	case AR_DOT:
		return in->axis == AX_out && ki_sem(in->op)->kind == SEM_RED && ki_sem(in->op)->map != MAP_DEV;
	case AR_LEAF:
		break;
	default:
		return 0;
	}
	switch (in->op) {
	case KO_info:
		return 1;
	case KO_size:
		return in->axis < AX_NUM;
	case KO_index:
		return in->axis == AX_out;
	case KO_weight:
		for (int j = 0; j < f->w[in->aux].ndim; j++)
			if (f->w[in->aux].ax[j] != WA_layer && f->w[in->aux].ax[j] != WA_head && f->w[in->aux].ax[j] != WA_out)
				return 0;
		return 1;
	}
	return 0;
}

int ki_keepcheck(const KiFn *f, KiErr *e)
{
	if (KI_RKIND(f->sel.keep) != RK_INS)
		return 0;
	uint8_t *need = calloc((size_t)f->nins + 1, 1);
	if (!need) {
		ki_error(e, f->src, 0, 0, "out of memory");
		return -1;
	}
	ki_keepneed(f, need);
	int rc = 0;
	for (int i = f->nins - 1; i >= 0 && rc == 0; i--) {   /* the one nearest the count first */
		const KiIns *in = &f->ins[i];
		if (!need[i] || keepop(f, in))
			continue;
		char ax[64], what[100];
		ki_axesstr(in->axes, ax, sizeof ax);
		int red = ki_rule(in->op) == AR_RED || ki_rule(in->op) == AR_DOT;
		snprintf(what, sizeof what, red ? "%s over %s" : "%s %s", ki_opname(in->op),
		         red ? (in->axis < AX_NUM ? ki_axisname(in->axis) : "-") : ax);
		if (ki_keeptok(f, in))
			ki_error(e, f->src, in->line, in->col, "select keep: %s with merge summary is not compiled to "
			         "kernels yet (the summary rows are part of the rows there; the reference interpreter, "
			         "kvcc run, runs it)", what);
		else
			ki_error(e, f->src, in->line, in->col, "select keep: %s is not compiled to kernels yet (a keep "
			         "count reads sizes, infos, params, weights over layer / head / out, reductions over out "
			         "and reductions over token of [token] values; the reference interpreter, kvcc run, runs it)",
			         what);
		rc = -1;
	}
	free(need);
	return rc;
}
