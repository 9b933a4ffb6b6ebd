/*
** The merge rule mapped onto the compact_merge skeleton's pieces (DESIGN §5), target
** independent: which pair instructions depend on the evicted row only (computed once per
** evicted row), on the kept row only (once per kept row), or on both, and whether the
** similarity has the tiled-product form
**
**     sim(e, k) = F(e · k, E-scalars of e, K-scalars of k)
**
** with one cross dot product over chan between a [chan] value of e and a [chan] value of k
** (cosine of keys: dot / max(|e| |k|, 1e-8); a plain dot; -|e - k|^2 written through
** norms ...). Then the [evicted x kept] similarities are a tiled matrix product followed by
** a per-pair scalar epilogue, never materialized beyond a tile. A similarity of another
** form is evaluated pair by pair.
*/
#ifndef KVCC_MPLAN_H
#define KVCC_MPLAN_H

#include "compiler/ir.h"

enum { KI_MNONE = 0, KI_ME = 1, KI_MK = 2, KI_MX = 3 };   /* side of a pair instruction */

typedef struct KiMSim {
	int fast;             /* the tiled-product form */
	int dot;              /* the cross dot's instruction (fast) */
	int eop, kop;         /* its [chan] operands: the e side, the k side (fast) */
	int nepi;             /* epilogue: the KI_MX scalar instructions after the dot, in order */
	int epi[64];
	const char *why;      /* not fast: the reason (for kvcc compile -v) */
} KiMSim;

/* side[i] for every instruction (KI_MNONE for ordinary values and for the pair leaves
** pinfo sim / absorbed / ntargets, which are neither row's). side has nins entries. */
KC_FUNC void ki_msides(const KiFn *f, uint8_t *side);
/* The form of the similarity root r (the merge rule's sim). */
KC_FUNC void ki_msimform(const KiFn *f, KiRef r, KiMSim *s);

/*
** What the compact_merge kernels implement (support.c; codegen/x86/merge.c, codegen/ptx/merge.c):
** drop, and nearest at prefill with a tiled-product similarity whose product is e.K · k.K (count
** bias or not: the counts are a state row, ki_mcounts), a threshold that is
** none, a value (constant, param or pair expression) or adaptive with beta the constant 0
** (tau is then the mean of this call's maximum similarities: nothing carried between
** calls), and pair expressions built from erow / krow of the input K or V, elementwise ops,
** reductions over chan and pinfo sim / absorbed / ntargets. 0, or -1 with the position of
** the first item outside that.
*/
KC_FUNC int ki_mkernels(const KiFn *f, KiErr *e);
/* What the CUDA generator lacks beyond ki_mkernels (issue 12: merge next, and merge runs whose
** rule reads an ordinary [token] value, are x86 only): 0, or -1 with the merge rule's position. */
KC_FUNC int ki_mkernels_gpu(const KiFn *f, KiErr *e);
/* 1 when merge nearest has an adaptive threshold whose beta is not the constant 0 (D2O's EMA,
** issue 12): tau = beta tau' + (1 - beta) mean max-sim is carried between calls as one more
** per-token state row after the declared ones and the counts (ki_mcounts), named "tau", init
** NaN (KaHdr.mtau): every kept row holds the (layer, head)'s tau after a compression, rows
** appended since hold NaN; the kernels read the first non-NaN value of the held rows. */
KC_FUNC int ki_mtau(const KiFn *f);
/* mv[i] = 1 for every ordinary [token] value (not an input) the merge rule of kind runs or next
** reads through erow / krow / tmean (CaM's attention and draws): the plan computes and stores
** them (per instance: ki_mkernels asks for a mean over heads), the merge reads them by token.
** mv has nins entries. -1: out of memory. */
KC_FUNC int ki_mvals(const KiFn *f, uint8_t *mv);
/* The row scalars of the kernels: every [] instruction of side KI_ME / KI_MK a merge root
** reaches and that reads no pinfo gets slot[i] >= 0 in its side's table (computed once per row by the kernels'
** mscal); slot[i] = -1 otherwise. *nes, *nks: the sizes of the two tables. -1: out of memory. */
KC_FUNC int ki_mslots(const KiFn *f, int *slot, int *nes, int *nks);
/* non-zero when the merge rule keeps member counts (DESIGN §3): a count bias, summary rows, or a merge
** expression reading e.count / k.count. The compiled policy then carries them as one more
** per-token state row after the declared ones, named "count", init 1 (the descriptor's KaHdr.cnt;
** kvcc_state_count includes it); the kernels add what a kept row absorbs, decode attention adds
** log(count) to each logit with the bias. The reference interpreter keeps them apart (KiCase.count,
** KiResult.count): the same numbers. */
KC_FUNC int ki_mcounts(const KiFn *f);
/* The hidden state rows: ki_mcounts(f) is how many there are after the declared ones (0, 1:
** "count"; 2 for merge summary: "count", then "summary", init 0, 1 on the summary rows: the
** compiled cache marks its summary block there, the interpreter's KiCase.sumat). ki_msumrow: that
** flag row's index (f->nst + 1), or -1 without summary rows. */
KC_FUNC int ki_msumrow(const KiFn *f);

/* Issue 12 (session 10): 1 when the similarity root r is the cosine of the keys as kv.nearest
** writes it, dot(e.K, k.K) / max(norm(e.K) * norm(k.K), c) over chan with a constant c > 0
** (*c = c); the x86 f32 kernels may then find its arg-max with bf16x3 products on AMX tiles and an
** exact re-check of the near ties (codegen/x86/mamx3.c, doc/merge-f32-amx.md). 0 otherwise. */
KC_FUNC int ki_mcosine(const KiFn *f, KiRef r, double *c);

#endif
