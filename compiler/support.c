/*
** What the kernel backends (the planner, x86, CUDA) do not implement yet: the merge rules
** compiler/mplan.c ki_mkernels does not take (issue 12: the compact_merge kernels, x86 and
** CUDA, cover nearest at prefill) and the issue-13 language not generated yet (selection rules
** beyond top-k other than threshold and mass (any chunk, any scope; CUDA: mass at chunk 1),
** AdaKV's floor at scope layer and the prefix / dynamic schedules (CUDA: top-k at scope head
** only, ki_unsupported_gpu); out-axis values
** (compiler/plan.c gen_ok: inside their reduction over out), segment ops, shifts and scans are planned like any op: compiler/plan.c
** gen_ok says which operands they take). ki_plan refuses such a policy with the position of
** the first unsupported item,
** so that nothing compiles to kernels with another meaning; the reference interpreter
** (`kvcc run`) runs them all. Each line goes when its kernels land.
*/
#include <stdio.h>
#include "compiler/plan.h"
#include "compiler/mplan.h"
#include "compiler/keep.h"

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
	if (ki_keepcheck(f, e) != 0)          /* select keep: the generated count (keep.c) */
		return -1;
	if (KI_RKIND(f->score) != RK_INS || !(f->ins[KI_RIDX(f->score)].axes & AXM(AX_token))) {
		uint32_t l = KI_RKIND(f->score) == RK_INS ? f->ins[KI_RIDX(f->score)].line : s->line;
		uint32_t c = KI_RKIND(f->score) == RK_INS ? f->ins[KI_RIDX(f->score)].col : s->col;
		return refuse(f, l, c, "a score without the token axis (one value per head)", e);
	}
	return 0;
}

/* The CUDA generator's: ki_unsupported, and the prefix / dynamic schedules with a rule other
** than top-k at scope head (x86 runs them: runtime/compress.c schedcounts). */
int ki_unsupported_gpu(const KiFn *f, KiErr *e)
{
	const KiSelect *s = &f->sel;
	if (ki_unsupported(f, e) != 0)
		return -1;
	/* CUDA runs them with top-k at scope head (codegen/ptx/sched.cuh kv_sched) */
	if ((s->sched == SCH_prefix || s->sched == SCH_dynamic) && (s->kind != SEL_topk || s->scope != SC_head)) {
		ki_error(e, f->src, s->line, s->col, "%s with a rule other than top-k at scope head is not compiled to CUDA "
		         "yet (the x86 kernels and the reference interpreter run it)",
		         s->sched == SCH_prefix ? "the prefix schedule" : "the dynamic schedule");
		return -1;
	}
	return 0;
}
