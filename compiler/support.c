/*
** What the kernel backends (the planner, x86, CUDA) do not implement yet: the merge rules
** compiler/mplan.c ki_mkernels does not take (issue 12: the x86 compact_merge kernels cover
** nearest at prefill; CUDA refuses every merge but drop, codegen/ptx) and the issue-13 language
** (selection rules beyond top-k, weights, scans, segment ops, shifts, the out axis). ki_plan refuses such a policy with the position of the first unsupported item,
** so that nothing compiles to kernels with another meaning; the reference interpreter
** (`kvcc run`) runs them all. Each line goes when its kernels land.
*/
#include <stdio.h>
#include "compiler/plan.h"
#include "compiler/mplan.h"

static int refuse(const KiFn *f, uint32_t line, uint32_t col, const char *what, KiErr *e)
{
	ki_error(e, f->src, line, col, "%s is not compiled to kernels yet (the reference interpreter, "
	         "kvcc run, runs it)", what);
	return -1;
}

int ki_unsupported(const KiFn *f, KiErr *e)
{
	const KiSelect *s = &f->sel;
	if (ki_mkernels(f, e) != 0)          /* the merge rules the compact_merge kernels implement */
		return -1;
	if (s->kind == SEL_threshold)
		return refuse(f, s->line, s->col, "select threshold", e);
	if (s->kind == SEL_mass)
		return refuse(f, s->line, s->col, "select mass", e);
	if (s->floor)
		return refuse(f, s->line, s->col, "select floor", e);
	if (s->keep)
		return refuse(f, s->line, s->col, "select keep", e);
	if (s->sched == SCH_prefix || s->sched == SCH_dynamic)
		return refuse(f, s->line, s->col, s->sched == SCH_prefix ? "the prefix schedule" : "the dynamic schedule", e);
	if (f->nw)
		return refuse(f, f->w[0].line, f->w[0].col, "a policy with weights", e);
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		switch (in->op) {
		case KO_sin: case KO_cos: case KO_floor: case KO_rint: case KO_shift: case KO_ssum:
		case KO_smean: case KO_smax: case KO_smin: case KO_srank: case KO_scan: case KO_carry:
		case KO_weight:
			return refuse(f, in->line, in->col, ki_opname(in->op), e);
		case KO_info:
			if (in->aux == INF_ratio || in->aux == INF_nkeep)
				return refuse(f, in->line, in->col, in->aux == INF_ratio ? "x.ratio" : "x.nkeep", e);
		}
		if (in->axes & AXM(AX_out))
			return refuse(f, in->line, in->col, "the out axis", e);
	}
	return 0;
}
