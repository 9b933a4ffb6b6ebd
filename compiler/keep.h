/*
** select keep on the kernel backends (issue 13): the per-(layer, head) kept count that
** `kv.topk { keep = function(x) ... end }` states, evaluated in double by generated code
** (codegen/x86/keep.c kvcc_keepn, codegen/ptx/keep.c kv_count) with the reference's clamp
** (compiler/select.c ki_counts).
*/
#ifndef KVCC_KEEP_H
#define KVCC_KEEP_H

#include "compiler/ir.h"

/* 0 when the kernel generators take f's keep expression (or f has none), else a positioned
** error at the first instruction they do not */
KC_FUNC int ki_keepcheck(const KiFn *f, KiErr *e);
/* 1 when in is a reduction over token of a [token] instruction of f (the score, x.pos or any
** other value) that a keep count may read: the kernels compute that row with the score's token
** values (ki_keepvals; x.pos: the positions) and hold it before selection */
KC_FUNC int ki_keeptok(const KiFn *f, const KiIns *in);
/* need[i] = 1 for every instruction the keep expression reads (need: nins bytes, zeroed); a
** reduction over token (ki_keeptok) is needed, its operand (the [token] row) is not */
KC_FUNC void ki_keepneed(const KiFn *f, uint8_t *need);
/* mv[i] = 1 (others untouched) for every computed [token] row a keep count reduces over token
** (the operands of its ki_keeptok reductions, x.pos's excepted): the kernels compute and keep
** them with the score.
** -1: out of memory */
KC_FUNC int ki_keepvals(const KiFn *f, uint8_t *mv);

#endif
