/*
** KIR — kvcc's tensor IR. A policy is one KiFn: a flat array of instructions
** whose operands are integer refs, side tables of constants, parameters and
** state, and the policy's rules (select, merge, when). No pointers between
** instructions, so copying, hashing and printing are trivial.
**
** Values are tensors over a subset of the named axes group, obs, token, chan,
** out (canonical order), kept as a bit mask. Layer and head are instance
** indices, never tensor axes; `out` is the free axis of a weight (its size is
** the weight's, e.g. the output features of a projection). Everything computes in f32 in kernels and in double in
** the reference interpreter (interp.c).
*/
#ifndef KVCC_IR_H
#define KVCC_IR_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include "compiler/ops.h"
#include "runtime/kc.h"

/* --- refs -------------------------------------------------------------------- */
/* A ref names an operand: an instruction, a constant or a runtime parameter.
** kind in the top 3 bits, index in the low 29; 0 is "no operand". */
typedef uint32_t KiRef;
enum { RK_NIL, RK_INS, RK_CON, RK_PAR };
#define KI_REF(kind, idx) ((KiRef)(((uint32_t)(kind) << 29) | (uint32_t)(idx)))
#define KI_RKIND(r)       ((int)((r) >> 29))
#define KI_RIDX(r)        ((int)((r) & 0x1fffffffu))
#define KI_NIL            ((KiRef)0)

/* --- limits ------------------------------------------------------------------- */
/* What a policy may hold, however it is written: the DSL builder and the KIR
** parser both enforce them (a .kir file gets the limits of a policy.lua). */
#define KI_MAXINS 100000      /* instructions */
#define KI_MAXPAR 64          /* params */
#define KI_MAXST  256         /* states: KiIns.aux holds a state number in 8 bits */
#define KI_MAXTEXT (64u << 20) /* bytes of a policy file, .lua or .kir (/dev/zero is an error) */

/* --- axes, inputs, instance scalars -------------------------------------------- */
enum { AX_group, AX_obs, AX_token, AX_chan, AX_out, AX_NUM, AX_head = AX_NUM, AX_NONE = 0xff };
#define AXM(ax) ((uint8_t)(1u << (ax)))

enum { IN_K, IN_V, IN_Q, IN_lse, IN_pos, IN_qpos, IN_NUM };
enum { INF_scale, INF_layer, INF_head, INF_nlayers, INF_nheads, INF_step, INF_ratio, INF_nkeep, INF_NUM };

/* --- instructions -------------------------------------------------------------- */
typedef struct KiIns {
	uint8_t op;           /* KO_* */
	uint8_t axes;         /* result axes, AXM bits */
	uint8_t axis;         /* axis operand (RED, DOT, KEEP, index, size), else AX_NONE */
	uint8_t aux;          /* input (IN_*), state number (state, carry, scan),
	                      ** weight number, or info (INF_*) */
	KiRef arg[3];         /* operands; KI_NIL when absent */
	uint32_t line, col;   /* source position in the policy file (0 = unknown) */
} KiIns;

typedef struct KiParam {
	char name[32];
	double def;           /* default value; the runtime may override it */
	uint32_t line, col;
} KiParam;

typedef struct KiState {
	char name[32];
	double init;          /* value of a token's state when it enters the cache */
	KiRef update;         /* new value computed by the observe hook, or the scan
	                      ** instruction that computes it (a scan state), or KI_NIL */
} KiState;

/* weights: named tensors given at run time, declared with their axes in the
** order of their data; layer and head pick the instance's slice, group, chan
** and out stay tensor axes. An out axis has a fixed size (size > 0) or the
** size of the data (0); every out axis of a policy has one size. */
enum { WA_layer, WA_head, WA_group, WA_chan, WA_out, WA_NUM };
#define KI_MAXWDIM 6
#define KI_MAXW    32
typedef struct KiWeight {
	char name[32];
	int ndim;
	uint8_t ax[KI_MAXWDIM];     /* WA_* of each dimension, outermost first */
	int32_t size;               /* the out dimension's fixed size, 0: from the data */
	uint32_t line, col;
} KiWeight;

/* select: the rule from scores to a keep set (DESIGN §3, doc/dsl.md) */
enum { SEL_topk, SEL_threshold, SEL_mass };
enum { SC_head, SC_layer, SC_model };
enum { SCH_none, SCH_pyramid, SCH_prefix, SCH_dynamic };
typedef struct KiSelect {
	uint8_t kind, scope, sched;
	uint8_t nocap;        /* threshold, mass: the runtime ratio / budget does not cap */
	KiRef keep_first;     /* protected sinks (count), const or param */
	KiRef keep_recent;    /* protected recent window (count) */
	KiRef chunk;          /* granularity in tokens (1 = token) */
	KiRef beta;           /* pyramid schedule: min/max budget ratio parameter */
	KiRef tau;            /* threshold: keep scores >= tau */
	KiRef mass;           /* mass: keep the shortest prefix reaching this mass */
	KiRef floor;          /* topk scope layer: each head's own share alpha, or nil */
	KiRef keep;           /* per-(layer, head) kept count, a scalar instruction, or nil */
	KiRef sa, sb;         /* schedule arguments: prefix (tol, iters), dynamic (ratio_max, every) */
	uint32_t line, col;
} KiSelect;

/* merge: what evicted tokens become (DESIGN §3 "Merge semantics", doc/dsl.md
** "Merge"). The expressions are instructions of the pair context: values of
** one (evicted e, kept k) pair, read with erow / krow (a [token] value at e or
** k), tmean (its mean over e's targets) and pinfo (sim, absorbed, ...). */
enum { MG_drop, MG_nearest, MG_next, MG_runs, MG_summary, MG_NUM };
enum { MT_none, MT_value, MT_adaptive };    /* threshold kinds */
enum { MU_mean, MU_sum };                   /* update kinds */
typedef struct KiMerge {
	uint8_t kind;         /* MG_* */
	uint8_t thr;          /* MT_none: always; MT_value: sim >= threshold; MT_adaptive: sim >= tau,
	                      ** tau = beta tau' + (1 - beta) mean max-sim (per (layer, head)) */
	uint8_t update;       /* MU_mean: (w_k X_k + S w_e X_e) / (w_k + S w_e); MU_sum: w_k X_k + S w_e X_e */
	uint8_t keys, values; /* which rows the update writes (nearest, next, runs) */
	uint8_t bias;         /* decode attention adds log(count) to each row's logit */
	KiRef sim;            /* nearest, runs: [] pair expression */
	KiRef threshold;      /* MT_value: a constant, param or [] pair expression */
	KiRef beta;           /* MT_adaptive: weight of the previous tau (constant or param) */
	KiRef weight;         /* w_e: [] pair expression, constant or param */
	KiRef self;           /* w_k: [] expression of the kept row (krow, pinfo absorbed/kcount) */
	KiRef m;              /* next: targets per evicted token (constant or param) */
	KiRef rows;           /* summary: C rows (constant) */
	KiRef iters;          /* summary: Lloyd iterations (constant) */
	uint32_t line, col;
} KiMerge;

/* pinfo names: scalars of the pair context */
enum { PI_sim, PI_absorbed, PI_ntargets, PI_ecount, PI_kcount, PI_NUM };

enum { WH_prefill, WH_decode };
typedef struct KiWhen {
	uint8_t kind;
	KiRef every;          /* decode: compress every N steps */
	uint32_t line, col;
} KiWhen;

typedef struct KiFn {
	char name[64];
	char src[256];        /* file name used in positions */
	KiIns *ins;   int nins, capins;
	double *con;  int ncon, capcon;
	KiParam *par; int npar, cappar;
	KiState *st;  int nst, capst;
	KiWeight *w;  int nw, capw;
	KiRef score;          /* [token] score per (layer, head); higher = keep */
	KiRef obs;            /* number of observation queries, or KI_NIL */
	int obs_all;          /* 1: every context position is an observation query */
	KiSelect sel;
	KiMerge merge;
	KiWhen when;
	uint32_t line, col;   /* position of the policy declaration */
} KiFn;

/* --- op semantics ------------------------------------------------------------- */
/* The sem column of ops.h as data (ki_sem): what the backends derive an op from. */
typedef struct KiSem {
	uint8_t kind;         /* SEM_LEAF, SEM_EW, SEM_RED, SEM_SPECIAL */
	uint8_t map, comb, fin;  /* SEM_RED: MAP_*, CMB_*, FIN_* */
	double init;          /* SEM_RED: the accumulator's start (comb's identity) */
	double lid, rid;      /* SEM_EW: left / right identity, NaN when none */
	const char *cuda;     /* SEM_EW: the CUDA C expression, a printf format of a, b, c */
} KiSem;

/* --- errors ------------------------------------------------------------------- */
/* The first error of a stage, formatted as one line "file:line:col: error: msg". */
typedef struct KiErr {
	int set;
	char msg[512];
	int nomem;            /* the error is that memory ran out (the API's KVCC_ENOMEM) */
} KiErr;

/* ir.c: constructors return NULL, KI_NIL or -1 when memory runs out (the KiFn is
** unchanged and still valid; the caller reports "out of memory"). */
KC_FUNC KiFn *ki_new(const char *name, const char *src);
KC_FUNC void ki_free(KiFn *f);
KC_FUNC KiFn *ki_clone(const KiFn *f);
KC_FUNC KiRef ki_emit(KiFn *f, const KiIns *ins);
KC_FUNC KiRef ki_const(KiFn *f, double v);
KC_FUNC int ki_addparam(KiFn *f, const char *name, double def, uint32_t line, uint32_t col);
KC_FUNC int ki_findparam(const KiFn *f, const char *name);
KC_FUNC int ki_addstate(KiFn *f, const char *name, double init);
KC_FUNC int ki_findstate(const KiFn *f, const char *name);
KC_FUNC int ki_addweight(KiFn *f, const KiWeight *w);
KC_FUNC int ki_findweight(const KiFn *f, const char *name);
KC_FUNC uint8_t ki_weightaxes(const KiWeight *w);     /* its tensor axes (AXM bits) */
KC_FUNC const char *ki_waxisname(int wa);
KC_FUNC int ki_waxisbyname(const char *name, size_t len);
KC_FUNC int ki_isscanstate(const KiFn *f, int s);     /* updated by a scan, not by observe */
KC_FUNC const char *ki_selname(int kind);
KC_FUNC uint8_t ki_refaxes(const KiFn *f, KiRef r);
KC_FUNC int ki_resultaxes(const KiFn *f, int op, const KiRef *arg, int axis, uint8_t *axes,
                          char *why, size_t whylen);
KC_FUNC const char *ki_opname(int op);
KC_FUNC int ki_opbyname(const char *name, size_t len);
KC_FUNC int ki_nargs(int op);
KC_FUNC int ki_rule(int op);
KC_FUNC int ki_flags(int op);
KC_FUNC const char *ki_opdoc(int op);
KC_FUNC const KiSem *ki_sem(int op);
KC_FUNC const char *ki_axisname(int ax);
KC_FUNC int ki_axisbyname(const char *name, size_t len);
KC_FUNC const char *ki_inputname(int in);
KC_FUNC int ki_inputbyname(const char *name, size_t len);
KC_FUNC uint8_t ki_inputaxes(int in);
KC_FUNC const char *ki_infoname(int inf);
KC_FUNC int ki_infobyname(const char *name, size_t len);
KC_FUNC const char *ki_scopename(int sc);
KC_FUNC const char *ki_mergename(int kind);
KC_FUNC int ki_mergebyname(const char *name, size_t len);
KC_FUNC const char *ki_pinfoname(int pi);
KC_FUNC int ki_pinfobyname(const char *name, size_t len);
KC_FUNC int ki_ispairop(int op);
/* Pair-context flags of each instruction (KI_P*: which pair values it reads,
** through its operands); 0 = an ordinary per-instance value. ctx has nins
** entries. */
enum { KI_PE = 1, KI_PK = 2, KI_PSIM = 4, KI_PABS = 8, KI_PTGT = 16 };
KC_FUNC void ki_pairctx(const KiFn *f, uint8_t *ctx);
KC_FUNC const char *ki_schedname(int s);
KC_FUNC void ki_axesstr(uint8_t axes, char *buf, size_t len);
KC_FUNC uint64_t ki_hash(const KiFn *f);
KC_FUNC double ki_evalew(int op, double a, double b, double c);   /* the value column of KS_EW */
KC_FUNC uint64_t ki_fnv(const void *p, size_t n, uint64_t h);

/* diag.c */
KC_FUNC void ki_error(KiErr *e, const char *src, uint32_t line, uint32_t col, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
KC_FUNC void ki_verror(KiErr *e, const char *src, uint32_t line, uint32_t col, const char *fmt,
                       va_list ap);
/* realloc that returns NULL on failure (size 0 allocates 1 byte); every stage turns
** NULL into an "out of memory" error, none aborts. */
KC_FUNC void *ki_realloc(void *p, size_t n);
/* A whole file, NUL-terminated (malloc'd), or NULL with e set; at most max bytes. */
KC_FUNC char *ki_readfile(const char *path, size_t *len, KiErr *e);
KC_FUNC char *ki_readfilemax(const char *path, size_t max, size_t *len, KiErr *e);
/* the calling thread's CPU time in ms (the compile stages' -v timings on worker threads) */
KC_FUNC double ki_thread_cpu_ms(void);
/* wall time in ms on the monotonic clock (stage timings, lock and cache timeouts) */
KC_FUNC double ki_now_ms(void);

/* print.c */
KC_FUNC char *ki_print(const KiFn *f);          /* malloc'd text form; NULL: out of memory */
KC_FUNC void ki_printref(const KiFn *f, KiRef r, char *buf, size_t len);

/* parse.c (with the re2c lexer in lex.re) */
KC_FUNC KiFn *ki_parse(const char *text, const char *file, KiErr *e);

/* verify.c */
KC_FUNC int ki_verify(const KiFn *f, KiErr *e);

/* passes.c: each returns 0, or -1 with e set */
KC_FUNC int ki_fold(KiFn *f, KiErr *e);
KC_FUNC int ki_canon(KiFn *f, KiErr *e);
KC_FUNC int ki_cse(KiFn *f, KiErr *e);
KC_FUNC int ki_dce(KiFn *f, KiErr *e);
KC_FUNC int ki_runpasses(KiFn *f, const char *names, int verify, KiErr *e,
                         void (*dump)(const KiFn *, const char *pass, void *), void *ud);
#define KI_DEFAULT_PASSES "fold,canon,cse,dce"

#endif
