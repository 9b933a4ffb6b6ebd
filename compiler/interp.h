/*
** The reference interpreter: executes a policy's KIR on host arrays in double
** precision. Every backend is checked against it, so it is written for
** obviousness, not speed. Semantics (DESIGN.md §3, doc/dsl.md):
**   - storage dtype f32/f16/bf16: K, V, Q are rounded to it, then math is double
**   - ratio r → n_keep = floor(n (1 - r)); budget B → n_keep = min(B, n)
**   - protected tokens (first keep_first, last keep_recent) outrank all others;
**     below the protected count, sinks first (lower position first), then the
**     newest recent tokens
**   - ties break towards the lower position (then lower head, lower layer);
**     NaN scores rank below every number
**   - kept tokens keep their order; merge drop compacts K, V, pos and state
*/
#ifndef KVCC_INTERP_H
#define KVCC_INTERP_H

#include "compiler/ir.h"
#include "kvcc.h"          /* the storage dtypes KVCC_F32, KVCC_F16, KVCC_BF16 */

/* A weight the caller gives: the name it is declared with, its shape in the
** declared order of axes, row-major values. */
typedef struct KiWData {
	const char *name;
	int ndim;
	long shape[KI_MAXWDIM];
	const double *data;
} KiWData;

typedef struct KiCase {
	int L, H, G, d;           /* layers, KV heads, query heads per KV head, head_dim */
	int n;                    /* token capacity per (layer, head): the row stride */
	const int32_t *len;       /* [L][H] tokens held, or NULL: n everywhere */
	int O;                    /* observation queries per query head */
	const float *K, *V;       /* [L][H][n][d] */
	const float *Q;           /* [L][H][G][O][d], or NULL when O == 0 */
	const float *lse;         /* [L][H][G][O], or NULL */
	const int32_t *pos;       /* [L][H][n] absolute positions, or NULL: the token index */
	const int32_t *qpos;      /* [O] query positions, or NULL: those of the last O held
	                          ** tokens, pos[len-O .. len-1] */
	const double *state;      /* [nst][L][H][n], or NULL: each state's init value; a scan
	                          ** state's trailing nan are the tokens its scan has not seen */
	int dtype;                /* KVCC_F32, KVCC_F16, KVCC_BF16 (kvcc.h) */
	const double *params;     /* [npar] runtime values, or NULL: the defaults */
	double ratio;             /* fraction removed, used when budget < 0 */
	long budget;              /* tokens kept per (layer, head), or -1 */
	int step;                 /* decode step (x.step) */
	/* merge state (DESIGN §3 "Merge semantics"), carried from one compression to the next */
	const double *count;      /* [L][H][n] member counts, or NULL: 1 (ordinary tokens) */
	const int32_t *sumat;     /* [L][H] first of the merge rule's summary rows, -1: none;
	                          ** or NULL: none (the rows sumat .. sumat+C-1 are summary rows) */
	const double *tau;        /* [L][H] adaptive merge threshold, NaN: unset; or NULL: unset */
	int nw;                   /* weights given (matched to the policy's by name) */
	const KiWData *w;
} KiCase;

typedef struct KiResult {
	int L, H, n, d, nst;
	double *scores;           /* [L][H][n] raw scores (before protection) */
	int32_t *len;             /* [L][H] tokens kept */
	int32_t *kept;            /* [L][H][n] kept indices, ascending; first len valid */
	float *K, *V;             /* [L][H][n][d] compacted rows */
	int32_t *pos;             /* [L][H][n] compacted positions */
	double *state;            /* [nst][L][H][n] compacted state */
	double *count;            /* [L][H][n] compacted member counts */
	int32_t *sumat;           /* [L][H] first summary row (after the kept rows), -1: none */
	double *tau;              /* [L][H] adaptive merge threshold after this compression */
	/* issue 12, session 8: the smallest gap of a comparison (lt, le, gt, ge) the merge rule
	** evaluated, |a - b| / max(1, |a|, |b|), over comparisons with an operand that is not exact
	** in f32 (not a constant, param or kvcc.random draw): a kernel's f32 could decide it the
	** other way when it is small (CaM's Bernoulli draw against p). INFINITY: none. */
	double mgap;
} KiResult;

/* Compress: score, select, merge. Returns 0, or -1 with e set (bad case).
** Merges (compiler/merge.c): kept[] holds, per (layer, head), the kept rows'
** indices, then for each summary row its index before (existing rows) or -1
** (built now); K, V are rounded to the storage dtype after merging. */
/* A reduction's combine (ops.h CMB_*: NaN propagates through max/min) and finish (FIN_*;
** count: the elements reduced, FIN_DIVK: the window size), shared by the interpreter and
** the merge stage. */
KC_FUNC double ki_combine(int comb, double acc, double v);
KC_FUNC double ki_finish(int fin, double acc, double count);

KC_FUNC int ki_run(const KiFn *f, const KiCase *c, KiResult *r, KiErr *e);
KC_FUNC void ki_result_free(KiResult *r);

/* One decode step: each query head's attention over its KV head's cache
** (every held token is in the past), then the observe hook's state updates.
** q: [L][H][G][d] (this step's queries, post-RoPE); out: [L][H][G][d]
** attention outputs, or NULL; state: [nst][L][H][n], read and updated in
** place. c->state is ignored (state is passed here). */
KC_FUNC int ki_observe(const KiFn *f, const KiCase *c, const float *q, double *state, float *out,
                       KiErr *e);

/* merge.c: the merge stage of ki_run, after selection (internal). */
typedef struct KiMergeIn {
	const KiFn *f;
	const KiCase *c;
	KiErr *e;
	const double *par;        /* runtime param values */
	double ***val;            /* [nins][L*H] evaluated ordinary values the merge rule reads */
	const float *K, *V;       /* rows rounded to the storage dtype */
	const double *scores;     /* [L][H][n] */
	const char *keep;         /* [L][H][n] selected ordinary rows */
} KiMergeIn;
KC_FUNC int ki_merge(const KiMergeIn *m, KiResult *r);
/* The rows the merge rule reserves for summary rows per (layer, head) (0 but for
** summary), and the ordinary rows of one (layer, head): ord[0 .. return) */
KC_FUNC int ki_summaryrows(const KiFn *f);
KC_FUNC int ki_ordrows(const KiCase *c, int C, int l, int h, int *ord);

/* Keep counts per (layer, head) before selection, as the select rule and the
** budget give them (scope head; pyramid schedule applied). */
KC_FUNC long ki_nkeep(const KiFn *f, const double *params, int layer, int nlayers, long n,
                      double ratio, long budget);

/* The counter-based generator behind kvcc.random: same value on every backend. */
KC_FUNC uint64_t ki_seed(double seed);
KC_FUNC double ki_rand(uint64_t seed, uint64_t layer, uint64_t head, uint64_t pos);

/* Storage rounding (f16 and bf16 round to nearest even). */
KC_FUNC float ki_round(float x, int dtype);
KC_FUNC int ki_dtypebyname(const char *s);
KC_FUNC const char *ki_dtypename(int dt);

#endif
