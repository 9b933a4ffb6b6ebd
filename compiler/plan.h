/*
** Kernel plan (DESIGN §5): maps a policy's KIR onto the skeletons
**   attn_stats   lse of each observation query (per softmax over token)
**   attn_score   tiled Q·Kᵀ → logit transform → probabilities → map →
**                reduction over obs into per-token accumulators; the
**                [obs × token] values are only ever held one token tile at a time
**   token_map    everything else: [group,token], [token], [chan], per-query and
**                scalar values (norms, cosine, pooling stencils, token reductions)
**   head_mean    cross-head barrier (hmean)
**   select, compact_merge, decode_attn (with the observe hook's fused loops)
** Target independent, built once per compile by the driver (compiler/driver.c):
** the backends generate every kernel from it, and the artifact's descriptor
** (codegen/x86/desc.c) carries what the runtime does at each instruction, so the
** runtime neither plans nor evaluates. What no generator covers is rejected here
** with a positioned error, so `kvcc check` reports what `kvcc compile` would.
*/
#ifndef KVCC_PLAN_H
#define KVCC_PLAN_H

#include <stdio.h>
#include "compiler/ir.h"

enum {
	KI_CNONE = 0,   /* not needed by the score */
	KI_CMAT,        /* token_map: materialized per instance (axes never obs+token) */
	KI_CDOT,        /* attn_score: the Q·Kᵀ tile (dot Q K chan) */
	KI_CATTN,       /* attn_score: [.., obs, token] elementwise / softmax, per tile */
	KI_CRED,        /* attn_score output: reduction over obs, materialized [group?, token] */
};

typedef struct KiPlan {
	const KiFn *f;
	uint8_t *cls;          /* [nins] KI_C* */
	int nsoft;             /* softmaxes over token inside attn_score (attn_stats passes) */
	int *soft;             /* their instruction indices, in order */
	int nred;              /* attn_score outputs */
	int has_attn;          /* needs Q */
	int uses_lse, uses_qpos, uses_hmean, uses_V;
	int two_phase;         /* token_map has a token reduction feeding per-token values */
	int uses_state;        /* the score reads per-token state */
	/* decode_attn observe hook: instructions the state updates need (token_map
	** over [group, token, chan] with x.attn = this step's probabilities) */
	uint8_t *oneed;        /* [nins] */
	int has_observe;
	/* the fused attn_score (generated qkt + sstat/sacc epilogue): the attn chain is
	** dot(Q, K) → mul by scalars → softmax over token → sum/mean over obs */
	int fast, fdot, fsoft, fcausal;
	int fscale;            /* the only multiplier is x.scale: a given lse replaces attn_stats */
	int nmul;
	KiRef mul[4];          /* the scalar multipliers */
	int fbad;              /* where the fused pattern breaks (-1: it does not; ki_plan then fails) */
	/* token_map path per instruction: KI_GEN_START / KI_GEN_IN = first / later instruction of a
	** fused loop the backend generates (artifact `tmap`, entered with the first instruction's
	** index): runs of consecutive token_map instructions without an obs axis — leaves (x.t,
	** x.pos, K/V rows, state, rand), size/info scalars, elementwise ops, reductions over group /
	** chan / token (not std), avg/max pools over token — split after a token reduction (its
	** readers start the next loop) and before a pool whose input the same loop computes. In a
	** loop: values without a token axis first (once), then one pass over the tokens (vectorized
	** over tokens, or over chan one token at a time when a value has the chan axis), then the
	** token reductions' results. Every value the score needs is in a loop, read by the Q·K tile
	** only (x.Q, x.K), an attn_score output or a head_mean barrier: ki_plan rejects the rest
	** with a positioned error (the runtime evaluates nothing). */
	uint8_t *tgen;         /* [nins] */
	uint8_t *tout;         /* [nins] the fused loop stores this value (read outside the loop) */
	int ngen, ngenins;     /* fused loops, instructions in them */
	/* the observe hook's fused loops (decode): the same over the oneed instructions, x.attn a
	** leaf; the state updates are stored and then written into the state */
	uint8_t *otgen, *otout;
	int nogen;
} KiPlan;

enum { KI_GEN_START = 1, KI_GEN_IN = 2 };

/* Generated token_map: values recomputed where read (never stored for other loops); token
** reductions (complete only after their loop). */
KC_FUNC int ki_isleaf(const KiIns *in);
KC_FUNC int ki_tokred(const KiIns *in);
/* the last instruction of the loop that starts at s (instructions the score does not need, cls 0,
** may lie inside: they have no code) */
KC_FUNC int ki_segend(const KiPlan *p, int s);
/* the same for the observe hook's loops */
KC_FUNC int ki_osegend(const KiPlan *p, int s);

/* support.c: -1 with a positioned error when the policy uses what the kernels do not
** implement yet (ki_plan calls it first). */
KC_FUNC int ki_unsupported(const KiFn *f, KiErr *e);
KC_FUNC int ki_unsupported_gpu(const KiFn *f, KiErr *e);   /* and what CUDA lacks (the model schedules) */

/* Build the plan; -1 with a positioned error when the policy cannot be mapped. */
KC_FUNC int ki_plan(const KiFn *f, KiPlan *p, KiErr *e);
KC_FUNC void ki_plan_free(KiPlan *p);
/* Human-readable plan (kvcc compile -v). */
KC_FUNC void ki_plan_print(const KiPlan *p, FILE *out);

#endif
