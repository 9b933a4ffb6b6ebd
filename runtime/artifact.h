/*
** artifact.h — the layout of a compiled policy (policy.so), shared by the code
** generators that write it (codegen/x86, codegen/ptx) and the runtime that loads it
** (libkvcc_rt). Not part of the public API (include/kvcc.h): a policy.so exports
** the CPU descriptor KVCC_DESC_SYMBOL and, when compiled with --gpu-arch, the GPU
** blob KVCC_GPU_SYMBOL; both are versioned here.
*/
#ifndef KVCC_ARTIFACT_H
#define KVCC_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "kvcc.h"
#include "runtime/kc.h"

/* Exported by libkvcc_rt for libkvcc (the compiler library) only, which reports its errors
** through kvcc_last_error: not part of the API. Returns code. */
KVCC_API int kvcc__seterr(int code, const char *msg);

/* FNV-1a 64 of n bytes (h = 0: the offset basis) */
static inline uint64_t ka_fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *s = p;
	if (!h)
		h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

/* --- the checksum trailer ------------------------------------------------------------------
** Every policy.so that kvcc writes (`kvcc compile`, the compile cache, kvcc_compile_so) ends
** with a trailer after the ELF image, which the dynamic loader ignores:
**
**   ELF bytes [elfsize] | desc [desclen] (the cache key's description, "" outside the cache) | KaTrailer
**
** hash is FNV-1a 64 of every byte before it (the ELF image, desc and the trailer's first 24
** bytes). kvcc_open reads the whole file and checks the trailer before it maps anything: a
** truncated or changed file is KVCC_EARTIFACT, never a fault inside dlopen. */
#define KA_TRAILER_MAGIC "KVCCTRL2"
typedef struct KaTrailer {
	uint32_t desclen, reserved;
	uint64_t key;              /* the compile cache's key (0 outside the cache) */
	uint64_t elfsize;
	uint64_t hash;             /* ka_fnv of the file's bytes before this field */
	char magic[8];             /* KA_TRAILER_MAGIC */
} KaTrailer;
_Static_assert(sizeof(KaTrailer) == 40, "KaTrailer layout");

/* A file of len bytes: 0 when it ends with a valid trailer (copied into *t), else -1 and why. */
static inline int ka_trailer_check(const void *buf, size_t len, KaTrailer *t, const char **why)
{
	if (len < sizeof *t + 4)
		return *why = "truncated (too short for a kvcc artifact)", -1;
	memcpy(t, (const char *)buf + len - sizeof *t, sizeof *t);
	if (memcmp(t->magic, KA_TRAILER_MAGIC, 8) != 0)
		return *why = "truncated, or not written by kvcc (no checksum trailer)", -1;
	if (t->elfsize > len || t->desclen > len || t->elfsize + t->desclen + sizeof *t != len)
		return *why = "truncated or corrupted (the sizes in its trailer do not match the file)", -1;
	if (ka_fnv(buf, len - 16, 0) != t->hash)
		return *why = "corrupted (checksum mismatch)", -1;
	return 0;
}

/* --- the CPU descriptor ---------------------------------------------------------------------- */
/*
** A policy.so exports KVCC_DESC_SYMBOL, a kvcc_artifact: the kernels' entry points (their C
** signatures are the ABI, KVCC_ABI) and a pointer to the descriptor, a read-only blob (format
** KA_FORMAT) the compiler wrote and the runtime reads without the compiler:
**
**   KaHdr | KaParam[npar] | KaState[nst] | KaIns[nins] | strings (NUL-terminated)
**
** at the offsets the header gives (8-byte aligned, inside `size`). It holds everything the
** runtime needs: the specialization and the CPU features the kernels use, the params (names,
** defaults), the state (names, inits), when / every / the observation count, the select rule,
** and the run plan — per KIR instruction the axes of its value (its buffer size is a formula of
** G, max_obs, capacity and head_dim), whether the compress arena or the observe hook stores it,
** and what the runtime does there (call the generated loop that starts there, run attn_score
** whose output it is, run the head_mean barrier). The KIR text rides along for `kvcc dump`
** only; the runtime never parses it.
*/
#define KVCC_DESC_SYMBOL "kvcc_artifact"
#define KVCC_MAGIC 0x4B5643435F415254ull   /* "KVCC_ART" */
#define KVCC_ABI 19                        /* kvcc_artifact and the kernels' signatures (10: compact_merge;
                                              11: tmap ctx ratio, budget, wts; tfilter, mtotal, ksum;
                                              12: kfloor; 13: decodeb; 14: tmap / observe return a
                                              negative value for a bad segment or shift argument;
                                              15: sstate, sacce; kvcc_tmap_ctx.nout; mstore; mrow, merge runs;
                                              16: sstate's l per (row, lane); keepn, select keep; mbest's
                                              running arg-max per lane, bsim / bidx [ne][W]; ctfilter;
                                              17: schedcnt; sstate's nq < 0: -nq rows, E stored non-temporal;
                                              cmass, select mass over chunks; 18: msplit, mtop2,
                                              the f32 merge similarity on AMX; kcut, merge
                                              summary's cap at scope layer / model; msimx, merge
                                              nearest's AMX similarity; mpair 3; 19: keepn reads
                                              c->vals[i], the instance's values, for a keep count's
                                              token reductions, not the score row in vals[0]) */
#define KA_MAGIC "KVCCDSC"                 /* the blob's first 8 bytes (with the NUL) */
#define KA_FORMAT 10                       /* the blob's layout and meaning (2: the tuning config; 3: KA_FLAYER;
                                              4: the merge rule; 5: the weights, KaWeight; the select rule;
                                              6: the select floor; 7: KA_FAMX; 8: the count state row,
                                              cnt / cbias; 9: KA_WOUT, KaHdr.wout; summary rows,
                                              srows / siters / sflag; merge KA_MRUNS, KA_MNEXT,
                                              KA_TEMA: mtau, mbeta; the model schedules,
                                              sched / sa / sb; 10: per-bucket compress kernels,
                                              KaHdr.nvar / cvar, KVCC_VAR_SYMBOL) */
#define KA_NBUCKET 4                       /* decode split buckets (longest head < 4K, 16K, 64K, more) */

/* a count or rule operand: a constant, a param, "every position" (obs) or none */
enum { KA_NONE, KA_CON, KA_PAR, KA_ALL };
typedef struct KaRef {
	int32_t kind;              /* KA_* */
	int32_t idx;               /* KA_PAR: the param */
	double val;                /* KA_CON: the value; KA_PAR: the param's default */
} KaRef;

/* run-plan flags */
enum {
	KA_FATTN = 1,              /* attn_score: reads Q (observation queries needed) */
	KA_FCAUSAL = 2,            /* its softmax is causal (pos <= qpos) */
	KA_FSCALE = 4,             /* its only logit multiplier is x.scale: a given lse replaces attn_stats */
	KA_FHMEAN = 8,             /* a head_mean barrier: per-instance arenas, equal lengths per layer */
	KA_FOBSERVE = 16,          /* decode runs the observe hook */
	KA_FLSE = 32,              /* the score reads x.lse */
	KA_FQPOS = 64,             /* the score reads x.qpos */
	KA_FLAYER = 128,           /* what a layer keeps depends on its index: x.layer, x.nlayers, rand
	                              (keyed by layer) or a budget schedule (scope model: KaHdr.scope) */
	/* KA_FORMAT 7 */
	KA_FAMX = 256,             /* the kernels use AMX tiles (qkt: tdpbf16ps): the runtime asks Linux for
	                              the tile state at plan creation (kr_amx_enable) */
	/* issue 12, session 10 (an added bit: KA_FORMAT unchanged, an older runtime never sees it with
	** KVCC_ABI 18's kernels) */
	KA_FAMX3 = 512,            /* f32 merge nearest: msplit / mtop2 are real (bf16x3 products on AMX
	                              tiles, codegen/x86/mamx3.c); the runtime asks for the tile state too */
	/* issue 15, session 12 (an added bit, KA_FORMAT unchanged: an older runtime passes the f32 rows
	** with nq > 0, which the kernel still takes; an older artifact lacks the bit) */
	KA_FQBF16 = 1024,          /* qkt is the vdpbf16ps Q·K and also takes nq < 0 with the bf16 rows of Q */
};

/* what the runtime does at an instruction (compress, in instruction order) */
enum {
	KA_SKIP,                   /* nothing: inside a loop, read by the Q·K tile only, or not needed */
	KA_LOOP,                   /* call tmap(i) (a generated loop; `arg` = its last instruction) */
	KA_ATTN_SUM,               /* an attn_score output: sum over obs of the probabilities */
	KA_ATTN_MEAN,              /* the same, mean over obs */
	KA_HMEAN,                  /* the head_mean barrier: mean over the layer's heads of `arg` */
};
enum { KA_SARENA = 1, KA_SOBSERVE = 2 };   /* KaIns.store bits */

typedef struct KaIns {
	uint8_t axes;              /* AXM bits (compiler/ir.h): 1 group, 2 obs, 4 token, 8 chan, 16 out (never stored) */
	uint8_t store;             /* KA_S*: the compress arena / the observe hook holds its value */
	uint8_t what;              /* KA_SKIP ... KA_HMEAN */
	uint8_t pad;
	int32_t arg;
	uint32_t line, col;        /* policy position (runtime errors) */
} KaIns;

typedef struct KaParam {
	uint32_t name;             /* string offset */
	uint32_t pad;
	double def;
} KaParam;

/* a weight the policy declares (kv.weights): its data is f32, row-major over the declared axes
** (KA_W*: layer = layers, head = kv_heads, group = G, chan = head_dim); the generated code reads
** weight k at offset sum_{j<k} (elements of weight j) of the packed buffer (kvcc_tmap_ctx.wts,
** KvgArgs.wts) */
enum { KA_WLAYER, KA_WHEAD, KA_WGROUP, KA_WCHAN, KA_WOUT /* KA_FORMAT 9: size KaHdr.wout or the data's */ };
typedef struct KaWeight {
	uint32_t name;             /* string offset */
	int32_t ndim;              /* 1 .. 6 */
	uint8_t ax[8];             /* KA_W* of each dimension, outermost first */
	uint32_t line, col;        /* the declaration (errors) */
} KaWeight;

typedef struct KaState {
	uint32_t name;
	uint32_t update;           /* the observe hook updates it */
	double init;
} KaState;

enum { KA_SCOPE_HEAD, KA_SCOPE_LAYER, KA_SCOPE_MODEL };
enum { KA_SEL_TOPK, KA_SEL_THRESHOLD, KA_SEL_MASS };   /* = compiler/ir.h SEL_* */

typedef struct KaHdr {
	char magic[8];             /* KA_MAGIC */
	uint32_t format;           /* KA_FORMAT */
	uint32_t size;             /* bytes of the blob */
	char version[16];          /* kvcc version that compiled it (informational) */
	uint64_t kir_hash;         /* FNV-1a of the KIR text (the GPU blob carries the same) */
	uint64_t cpu;              /* runtime/cpu.h feature bits the kernels use (host must have them) */
	int32_t dtype, head_dim, group, target;
	int32_t vec_width;         /* f32 lanes the kernels use (16, 8 or 1) */
	int32_t flags;             /* KA_F* */
	int32_t nins, npar, nst;
	int32_t score;             /* the instruction whose value is the score ([token], stored) */
	int32_t fsoft;             /* attn_score's softmax (a position for errors), or -1 */
	int32_t when;              /* 0 prefill, 1 decode */
	KaRef every;               /* decode: compress every N steps */
	KaRef obs;                 /* observation queries (KA_NONE: none, KA_ALL: every position) */
	int32_t scope;             /* KA_SCOPE_* */
	uint32_t sel_line, sel_col;
	uint32_t pad;
	KaRef keep_first, keep_recent, chunk;
	uint32_t name, src;        /* string offsets: policy name, policy file */
	uint32_t par, st, ins, str; /* section offsets */
	/* the tuning config the kernels were built with (codegen/x86/cfg.c, doc/tune.md): the
	** decode split per bucket of the longest head (0: the defaults, 2 tasks per thread and
	** chunks >= 256 tokens) and the config's string ("" when built without one) */
	int32_t dtasks[KA_NBUCKET], dmin[KA_NBUCKET];
	char config[96];
	/* the merge rule the compact_merge kernels run (compiler/mplan.h ki_mkernels) */
	int32_t merge;             /* KA_MDROP, KA_MNEAREST, KA_MSUMMARY, KA_MRUNS, KA_MNEXT */
	int32_t mflags;            /* KA_MKEYS | KA_MVALUES | KA_MSUM */
	int32_t mthr;              /* KA_TNONE, KA_TVALUE (mpair 0), KA_TMEAN (the mean maximum similarity) */
	int32_t nes, nks;          /* row scalars per evicted / kept row (mscal) */
	uint32_t mline, mcol;      /* the merge rule's position */
	int32_t mpad;
	int32_t nw;                /* weights (KaWeight[nw] at offset wt) */
	uint32_t wt;
	int32_t selkind;           /* KA_SEL_* */
	int32_t nocap;             /* threshold / mass with cap = false: the budget does not bound it */
	KaRef tau;                 /* threshold */
	KaRef mass;                /* mass: p */
	/* select floor (issue 13, AdaKV): topk at scope layer, chunk 1 */
	KaRef floor;               /* alpha, or KA_NONE: no floor */
	/* --- issue 12: member counts (KA_FORMAT 8) --- */
	int32_t cnt;               /* the "count" state row (the last of nst: compiler/mplan.h ki_mcounts), or -1 */
	int32_t cbias;             /* decode attention adds log(count) to each logit (decodeb) */
	/* --- issue 13: weights with an out axis (KA_FORMAT 9) --- */
	int32_t wout;              /* the out axis' fixed size (every out axis of a policy has one), 0: the
	                              size of the first data given with one (kvcc_plan_set_weight) */
	int32_t wpad;
	/* --- issue 12: summary rows (KA_FORMAT 9; merge KA_MSUMMARY) --- */
	int32_t srows;             /* C summary rows per (layer, head), 0: none */
	int32_t siters;            /* Lloyd iterations when a block is built */
	int32_t sflag;             /* the "summary" state row (1 on the summary block, the last of nst), or -1 */
	int32_t spad;
	/* --- issue 12: D2O's EMA merge threshold (KA_FORMAT 9) --- */
	int32_t mtau;              /* the "tau" state row (compiler/mplan.h ki_mtau), or -1; with KA_TEMA */
	int32_t mtpad;
	KaRef mbeta;               /* KA_TEMA: tau = beta tau' + (1 - beta) mean max-sim */
	KaRef mnext;               /* KA_MNEXT: m, the kept tokens after an evicted one that absorb it */
	/* --- issue 13: budget schedules (KA_FORMAT 9) --- */
	int32_t sched;             /* KA_SCH_*: pyramid is nkeep's; prefix and dynamic: the runtime's
	                              select (compress.c schedcounts) sets every instance's count from
	                              all the sequence's scores before the per-group top-k */
	int32_t schpad;
	KaRef sa, sb;              /* the schedule's arguments: prefix tol, iters; dynamic ratio_max, every */
	/* --- issue 15: per-bucket compress kernels (KA_FORMAT 10; doc/tune.md "Per-bucket picks") ---
	** the tuner's per-bucket picks: nvar (0..KA_NBUCKET) more kvcc_artifacts in the same policy.so,
	** exported as KVCC_VAR_SYMBOL 1..nvar, each the same policy built with another config; cvar[b]
	** the one whose score-phase kernels (qkt, sstat, sacc, sstate, sacce, ascale) an instance of
	** bucket b (ka_bucket of its tokens) runs, 0 = this artifact (the main config). A table lookup:
	** the runtime evaluates nothing. Everything else (select, compaction, merge, decode) runs the
	** main artifact's kernels. */
	int32_t nvar;
	int32_t cvar[KA_NBUCKET];
	int32_t vpad;
} KaHdr;
#define KVCC_VAR_SYMBOL "kvcc_artifact_v%d"   /* variant k (1..nvar): snprintf with k */
/* the bucket of n tokens (the decode split's and the variants' table: < 4K, < 16K, < 64K, more) */
static inline int ka_bucket(int64_t n) { return n < 4096 ? 0 : n < 16384 ? 1 : n < 65536 ? 2 : 3; }
enum { KA_SCH_NONE, KA_SCH_PYRAMID, KA_SCH_PREFIX, KA_SCH_DYNAMIC };   /* = compiler/ir.h SCH_* */

enum { KA_MDROP, KA_MNEAREST, KA_MSUMMARY, KA_MRUNS, KA_MNEXT };   /* issue 12, KA_FORMAT 9: KA_MSUMMARY (runtime/summary.c),
                                                                    KA_MRUNS, KA_MNEXT (runtime/mpos.c) */
enum { KA_MKEYS = 1, KA_MVALUES = 2, KA_MSUM = 4 };
enum { KA_TNONE, KA_TVALUE, KA_TMEAN, KA_TEMA };   /* KA_TEMA: issue 12, D2O (KaHdr.mtau, mbeta) */

/*
** The fixed kernels a policy's run calls, from its descriptor alone (session 10: the one record).
** The compiler makes every other one a stub that returns 0 / nothing (codegen/x86/emit.c, its IR
** never optimized or compiled: issue 13's compile time), and the runtime checks the record before
** each step that calls one (compress.c kr_needk): a step missing here is a positioned internal
** error, never a silent stub. The steps and their kernels (runtime/compress.c, summary.c, decode.c):
**   KA_KCHUNK    ckeys, ckeepidx   select with chunk > 1 (chunk a param, or a constant other than 1)
**   KA_KCOUNT    kcount            chunk > 1 (chunkgreedy), mass (massbisect), the dynamic schedule,
**                                  threshold with summary rows at scope layer / model
**   KA_KMASS     mtotal, ksum      mass (masstotal, masscount), the prefix schedule (schedcnt)
**   KA_KTFILTER  tfilter           select threshold (chunk 1)
**   KA_KFLOOR    kfloor            a select floor
**   KA_KSUMMARY  mstore            merge summary (kr_msummary)
**   KA_KATTN     sstat, sacc, sstate, sacce, ascale   attn_score (KA_FATTN)
**   KA_KCTFILTER ctfilter          select threshold over chunks
**   KA_KCMASS    cmass             select mass over chunks
**   KA_KDECODEB  decodeb           decode with the merge count bias (cbias)
**   KA_KOBSERVE  observe, probs    the observe hook (KA_FOBSERVE) and the decode step's probabilities it reads
**   KA_KHMEAN    hmean             a head_mean barrier (KA_FHMEAN)
**   KA_KSUMCAP   kcut              merge summary at scope layer / model (sumgroup)
**   KA_KQKT      qkt               attn_score (KA_FATTN), merge nearest's similarity (session 11)
** The generated schedcnt calls kcount, mtotal and ksum itself (codegen/x86/sched.c).
*/
enum {
	KA_KCHUNK = 1, KA_KCOUNT = 2, KA_KMASS = 4, KA_KTFILTER = 8, KA_KFLOOR = 16, KA_KSUMMARY = 32, KA_KATTN = 64,
	KA_KCTFILTER = 128, KA_KCMASS = 256, KA_KDECODEB = 512, KA_KOBSERVE = 1024, KA_KHMEAN = 2048,
	KA_KSUMCAP = 4096,
	KA_KQKT = 8192               /* session 11 (issue 13, compile time) */
};
static inline unsigned ka_kernels(const KaHdr *h)
{
	int chunk = !(h->chunk.kind == KA_NONE || (h->chunk.kind == KA_CON && h->chunk.val == 1));
	int mass = h->selkind == KA_SEL_MASS, thr = h->selkind == KA_SEL_THRESHOLD;
	int thrgrp = thr && h->merge == KA_MSUMMARY && h->scope != KA_SCOPE_HEAD;   /* sumgroup's candidates */
	return (chunk ? KA_KCHUNK : 0) | (chunk || mass || thrgrp || h->sched == KA_SCH_DYNAMIC ? KA_KCOUNT : 0) |
	       (mass || h->sched == KA_SCH_PREFIX ? KA_KMASS : 0) | (thr ? KA_KTFILTER | KA_KCTFILTER : 0) |
	       (h->floor.kind != KA_NONE ? KA_KFLOOR : 0) | (h->merge == KA_MSUMMARY ? KA_KSUMMARY : 0) |
	       (h->flags & KA_FATTN ? KA_KATTN : 0) | (mass ? KA_KCMASS : 0) | (h->cbias ? KA_KDECODEB : 0) |
	       (h->flags & KA_FOBSERVE ? KA_KOBSERVE : 0) | (h->flags & KA_FHMEAN ? KA_KHMEAN : 0) |
	       (h->merge == KA_MSUMMARY && h->scope != KA_SCOPE_HEAD ? KA_KSUMCAP : 0) |
	       ((h->flags & KA_FATTN) || h->merge == KA_MNEAREST ? KA_KQKT : 0);
}

/* One instance's inputs to the generated token_map loops (every field 8 bytes: the generated
** code reads field k at byte 8k). vals[i] = instruction i's f32 values, row-major over
** (group, token, chan) ([token]: t, [group, token]: g*n + t, [token, chan]: t*d + c,
** scalar: [0]); K / V = the instance's rows in storage dtype, token stride ldk elements;
** pos NULL: pos = t; roff (paged caches) given: row t at element roff[t] instead; state = state 0 of the instance, state s at state + s*sstride (NULL: the
** initial values). */
typedef struct kvcc_tmap_ctx {
	float *const *vals;
	const double *par;
	const void *K, *V;
	const int32_t *pos;
	float *state;              /* observe: the updated states are written here */
	int64_t n, ldk, sstride, layer, head, layers, heads, step, obs;
	const float *attn;         /* observe: this step's probabilities [group][lda] */
	int64_t lda;
	double err;                /* out: the bad value when a loop returns non-zero */
	const int64_t *roff;       /* paged caches: row t of K / V at element roff[t] (NULL: t*ldk) */
	double ratio;              /* the call's kvcc_args ratio and budget (x.ratio, x.nkeep) */
	int64_t budget;
	const float *wts;          /* the policy's weights, packed (KaWeight), or NULL: none */
	/* KVCC_ABI 15 */
	int64_t nout;              /* the weights' out axis size (KA_WOUT), 0: none */
} kvcc_tmap_ctx;

/* schedcnt's arguments (every field 8 bytes: the generated code reads them by offset / 8) */
typedef struct kvcc_sched_ctx {
	float *const *sc;           /* [L·H] the instances' scores, (layer, head) order */
	const int64_t *len;         /* [L·H] their tokens */
	int64_t *nk;                /* [L·H] out: the counts */
	uint64_t *ks;               /* [L·H·cap] keys */
	double *tot;                /* [L·H] prefix: the totals */
	int64_t *ws;                /* [3·L·H + 3·L] scratch */
	int64_t L, H, cap, S, R, budget;
	double ratio, sa, sb;       /* sa, sb: prefix tol, iters; dynamic ratio_max, every (params resolved) */
	int64_t bad, badt;          /* out (-2): the instance and the token */
} kvcc_sched_ctx;

typedef struct kvcc_artifact {
	uint64_t magic;            /* KVCC_MAGIC */
	uint32_t abi;              /* KVCC_ABI */
	uint32_t size;             /* sizeof(kvcc_artifact) */
	const KaHdr *desc;         /* the descriptor blob */
	uint64_t desc_hash;        /* FNV-1a of its desc->size bytes (a corrupted artifact is refused) */
	const char *kir;           /* the canonical KIR text: introspection only, never parsed at load */
	/* CPU entry points (C ABI). An entry point this policy's run never calls (the chunk, mass,
	** threshold, floor and summary kernels, the attn_score kernels of a policy without attn_score)
	** is a stub that returns 0 / nothing: ka_kernels (above) says which (issue 13, session 10) */
	/* retired: a no-op kept for the layout (the runtime never called it; the score phase
	** runs qkt, decode its own Q·K block) */
	void (*qk)(const void *K, int64_t ldk, int64_t nt, const float *Q, int64_t nq, float *S);
	void (*cvt)(const void *src, float *dst, int64_t n);
	/* one split-KV chunk of decode attention for the G query heads of a KV head:
	** q [G][d] f32 pre-scaled; S[g*lds + j] logits (padded to 16 with -inf);
	** st = m[G], l[G], acc[G][d] updated online (caller initializes) */
	void (*decode)(const void *K, const void *V, int64_t ldk, int64_t nt, const float *q, float *S,
	               int64_t lds, float *st);
	/* S[i] = exp(S[i] - m) * il for i < n */
	void (*probs)(float *S, int64_t n, float m, float il);
	/* attn_score, 64-token tiles: S[q*64 + j] = Q[q]·K[j] (j >= nt: 0) through a packed,
	** transposed f32 copy Kp[d][64] of the tile. An artifact with KA_FAMX (or KA_FQBF16) also takes nq < 0: Q is
	** then the -nq query rows' bf16 storage [-nq][d] (not f32; KVCC_ABI 16, session 8) */
	void (*qkt)(const void *K, int64_t ldk, int64_t nt, const float *Q, int64_t nq, float *S, float *Kp);
	/* online max m[q] and sum l[q] of exp(a*S[q][j]) over the visible j: the bits of vm[q]
	** (causal attention: pos <= qpos; a prefix when positions are in order) */
	void (*sstat)(const float *S, int64_t nq, const uint64_t *vm, float a, float *m, float *l);
	/* acc[j] += sum_q exp(a*S[q][j] - mp[q]) over the visible j (64 columns) */
	void (*sacc)(const float *S, int64_t nq, const uint64_t *vm, float a, const float *mp, float *acc);
	/* select (chunk 1): key[i] = protected << 63 | order-preserving bits of score[i] (NaN lowest,
	** -0 = +0) << 31 | (0x7fffffff - (base + i)): higher = kept first, ties → lower index */
	void (*selkeys)(const float *score, int64_t n, int64_t keep_first, int64_t keep_recent, uint32_t base,
	                uint64_t *key);
	/* radix select over n distinct keys (11-bit digits, MSB first): the smallest of the `want`
	** largest (1 <= want <= n) */
	uint64_t (*topk)(const uint64_t *key, int64_t n, int64_t want);
	/* idx[m++] = i for every key[i] >= thr, in order; returns m (the sorted kept list) */
	int64_t (*keepidx)(const uint64_t *key, int64_t n, uint64_t thr, int32_t *idx);
	/* in-place stable compaction of one (layer, head): row i = row idx[i] of K and V (storage
	** dtype, token stride ldk), pos[i] = pos[idx[i]] (pos may be NULL), and for s < nst
	** state[s*sstride + i] = state[s*sstride + idx[i]]; idx strictly increasing */
	void (*compact)(void *K, void *V, int64_t ldk, const int32_t *idx, int64_t m, int32_t *pos, float *state,
	                int64_t nst, int64_t sstride);
	/* token_map: the generated fused loop that starts at instruction `gid` (plan tgen) for one
	** instance (context above); stores the loop's outputs (plan tout) into c->vals. 0, or the
	** index + 1 of a pool whose kernel size c->err is not a positive integer up to 1e6 */
	int64_t (*tmap)(int64_t gid, struct kvcc_tmap_ctx *c);
	/* select (chunk > 1): key[j] of the chunk of tokens j*chunk .. min((j+1)*chunk, n) - 1
	** (j < ceil(n/chunk)) scored by the reference's mean (double sum in token order / length,
	** NaN if any token is, rounded to f32), protected if any token is; otherwise as selkeys with
	** position base + j*chunk */
	void (*ckeys)(const float *score, int64_t n, int64_t keep_first, int64_t keep_recent, uint32_t base,
	              int64_t chunk, uint64_t *key);
	/* the number of key[i] >= thr */
	int64_t (*kcount)(const uint64_t *key, int64_t n, uint64_t thr);
	/* the sorted kept list of one (layer, head) with n tokens: the full chunks j < n/chunk with
	** key[j] >= thr and, when last != 0, the partial last chunk; returns its length */
	int64_t (*ckeepidx)(const uint64_t *key, int64_t n, int64_t chunk, uint64_t thr, int64_t last, int32_t *idx);
	/* the tokens (layer, head) with n tokens keeps before selection: budget / ratio and the
	** policy's budget schedule (pyramid), with params par */
	int64_t (*nkeep)(const double *par, int64_t layer, int64_t nlayers, int64_t n, double ratio, int64_t budget);
	/* attn_score: the product of the logits' scalar multipliers (c->vals, c->par) */
	float (*ascale)(const struct kvcc_tmap_ctx *c);
	/* head_mean barrier: dst[h][e] = mean over h < H of src[h][e] (double sum), e < cnt */
	void (*hmean)(float *const *src, int64_t H, int64_t cnt, float *const *dst);
	/* decode: the observe hook of one (layer, head): its loops, then the updated states written
	** into c->state; 0 or as tmap */
	int64_t (*observe)(struct kvcc_tmap_ctx *c);
	/* decode queries: out[i] = q[i] rounded to the storage dtype (nearest even) times 1/sqrt(d) */
	void (*qround)(const float *q, float *out, int64_t n);
	/* compact_merge, merge nearest (codegen/x86/merge.c; runtime/merge.c drives them):
	** mscal: the row scalars of cnt rows (row i of K / V at element i*ldk): side 0 the evicted
	** rows' (KaHdr.nes), side 1 the kept rows' (nks) into out[s*ld + i] */
	void (*mscal)(const void *K, const void *V, int64_t ldk, int64_t cnt, int64_t side, const double *par, float *out,
	              int64_t ld);
	/* the similarity of one tile and the running arg-max: S[q*64 + j] = e_q · k_{j0+j} (qkt) for
	** q < ne, j < nk; sim = the policy's epilogue of it and the row scalars es[s*lde + q],
	** ks[s*ldks + j0 + j] (ks readable 64 floats past its last slot); the running best per lane
	** (KVCC_ABI 16): bsim[q*W + l] / bidx[q*W + l] (W = KaHdr.vec_width) of the kept tokens
	** j0 + j with j ≡ l mod W, updated (NaN never taken, a strictly greater value only: ties →
	** the lower kept index; bidx -1: none yet); the caller reduces the W lanes of a row */
	void (*mbest)(const float *S, int64_t ne, int64_t nk, int64_t j0, const float *es, int64_t lde, const float *ks,
	              int64_t ldks, const double *par, float *bsim, int32_t *bidx);
	/* one pair value: which 0 the threshold, 1 the weight w_e, 2 the self weight w_k, of evicted
	** row e and kept row k (their scalars in es / ks), with m.sim = sim, m.absorbed = absorbed;
	** (KVCC_ABI 18) which 3 the similarity with the dot e·k = sim (msimx's winners) */
	float (*mpair)(int64_t which, const float *es, int64_t lde, int64_t e, const float *ks, int64_t ldks, int64_t k,
	               float sim, float absorbed, const double *par);
	/* kept row k's update from the cnt evicted rows rows[i] (of EK / EV, d elements each):
	** X_k = (wk X_k + sum_i w[i] X_i) / (wk + sum_i w[i]) (KA_MSUM: without the division;
	** unchanged when that total is 0 or not finite), rounded to the storage dtype, for X = K
	** and / or V (KA_MKEYS, KA_MVALUES) */
	void (*mupd)(void *K, void *V, int64_t ldk, int64_t k, const void *EK, const void *EV, const int32_t *rows,
	             const float *w, int64_t cnt, float wk);
	/* select threshold (chunk 1), after selkeys: key[i] = 0 for every unprotected token i whose
	** score is not >= tau (double compare; NaN never); returns the keys left (the candidates) */
	int64_t (*tfilter)(const float *score, int64_t n, int64_t keep_first, int64_t keep_recent, double tau,
	                   uint64_t *key);
	/* select mass: *tot = sum (double) of the unprotected scores of one (layer, head); returns the
	** first unprotected token whose score is not >= 0, or -1 */
	int64_t (*mtotal)(const float *score, int64_t n, int64_t keep_first, int64_t keep_recent, double *tot);
	/* select mass: the sum (double) of score[i] over the unprotected keys (bit 63 clear) >= thr */
	double (*ksum)(const uint64_t *key, const float *score, int64_t n, uint64_t thr);
	/* select floor (issue 13, AdaKV): after selkeys of one (layer, head), its keys >= thr (its
	** own top floor(alpha n_keep)) are lifted above every other key of the layer (distinct:
	** the id bits stay), so the layer's top-k keeps them and ranks the rest */
	void (*kfloor)(uint64_t *key, int64_t n, uint64_t thr);
	/* --- issue 12: member counts (KVCC_ABI 13) ---
	** decode with the merge count bias (KaHdr.cbias): decode's arguments, then cnt, token j's
	** member count (the count state row at the chunk's first token); log(cnt[j]) is added to
	** its logits. A stub for a policy without the bias (the runtime never calls it). */
	void (*decodeb)(const void *K, const void *V, int64_t ldk, int64_t nt, const float *q, float *S,
	                int64_t lds, float *st, const float *cnt);
	/* --- issue 15: one exp per logit in attn_score (KVCC_ABI 15) ---
	** sstate: sstat with the sum kept per (row, lane) (KVCC_ABI 16: l holds 16 floats per row,
	** lane i summing the columns j = i mod 16 relative to the row's max m[q]; the runtime adds the
	** lanes once per head), and E[q*64 + j] = exp(a*S[q][j] - m[q]) with the row's max m[q] after
	** this tile (0 for an invisible j), mt[q] = that max; sacce: acc[j] += sum_q E[q*64 + j] *
	** exp(mt[q] - mp[q]) (64 columns): sacc's sum from the kept exponentials of the stats pass,
	** without a second Q·K tile or exp per logit (runtime/compress.c, when the plan's exponential
	** workspace holds the head). sstate with nq < 0 (KVCC_ABI 17): -nq rows, E written with
	** non-temporal stores (a head whose exponentials exceed the cache; E 64-byte aligned) */
	void (*sstate)(const float *S, int64_t nq, const uint64_t *vm, float a, float *m, float *l, float *E, float *mt);
	void (*sacce)(const float *E, int64_t nq, const float *mt, const float *mp, float *acc);
	/* --- issue 12: summary rows (KVCC_ABI 15) ---
	** n f32 values rounded to the storage dtype (nearest even; NaN stays NaN) at dst: the
	** summary rows the runtime's k-means writes (runtime/merge.c kr_msummary) */
	void (*mstore)(const float *src, void *dst, int64_t n);
	/* --- issue 12: positional and run merges (KVCC_ABI 15) ---
	** merge runs (codegen/x86/mpos.c; runtime/mpos.c drives it): one root of the merge rule at
	** one pair of rows given by pointers (storage dtype, head_dim elements): which 0 the
	** threshold, 1 the weight w_e, 2 the self weight w_k, 3 the similarity; erow reads EK / EV,
	** krow KK / KV, pinfo sim / absorbed / ntargets / e.count / k.count the scalars given; an
	** ordinary [token] value (merge next, CaM) vals[i][et] / vals[i][kt] (erow / krow; held
	** indices), tmean its mean over the targets' held indices tg[0 .. ntg). NaN for a policy
	** without merge runs / next (the runtime never calls it). */
	float (*mrow)(int64_t which, const void *EK, const void *EV, const void *KK, const void *KV, float sim,
	              float absorbed, float ntargets, float ecount, float kcount, const double *par,
	              float *const *vals, int64_t et, int64_t kt, const int32_t *tg, int64_t ntg);
	/* --- issue 13: select keep (KVCC_ABI 16) ---
	** the tokens instance (c->layer, c->head) with c->n tokens keeps before selection (the
	** runtime fills c's par, n, layer, head, layers, heads, step, obs, ratio, budget, wts, nout):
	** the policy's keep expression in double, floored and clamped to 0..n (compiler/select.c
	** ki_counts), or -1 / -2 / -3 when it is NaN / +inf / -inf; without one, nkeep's count */
	int64_t (*keepn)(const struct kvcc_tmap_ctx *c);
	/* --- issue 13: threshold over chunks (KVCC_ABI 16) ---
	** select threshold with chunk > 1, after ckeys: key[j] = 0 for every unprotected chunk j
	** whose mean score (double sum in token order / its length; NaN never) is not >= tau;
	** returns the tokens of the chunks left. A stub (0) for a policy without threshold. */
	int64_t (*ctfilter)(const float *score, int64_t n, int64_t keep_first, int64_t keep_recent, int64_t chunk,
	                    double tau, uint64_t *key);
	/* --- issue 12 / the runtime evaluates nothing (KVCC_ABI 17) ---
	** the prefix / dynamic schedules (KaHdr.sched; codegen/x86/sched.c): every instance's count
	** of one sequence into c->nk from all its scores, the bisections and the schedules'
	** arithmetic generated; 0, or -1 (prefix tol / iters out of range), -2 (a score not finite
	** and >= 0: c->bad, c->badt), -3 (dynamic: lengths differ), -4 (dynamic ratio_max / every
	** out of range). A stub (0) for the other policies. */
	int64_t (*schedcnt)(struct kvcc_sched_ctx *c);
	/* --- issue 13: mass over chunks (KVCC_ABI 17) ---
	** select mass with chunk > 1: the sum (double, token order) of the scores of the chunks j <
	** ceil(n / chunk) (the last may be shorter) whose key (ckeys') is unprotected (bit 63 clear)
	** and >= thr (unsigned); *bad = the first of their tokens whose score is not >= 0, else -1.
	** A stub (0) for a policy without mass. */
	double (*cmass)(const float *score, const uint64_t *key, int64_t n, int64_t chunk, uint64_t thr, int64_t *bad);
	/* --- issue 12, session 10: the f32 merge similarity on AMX (KVCC_ABI 18) ---
	** KA_FAMX3 only (else stubs): codegen/x86/mamx3.c (its header comment is the contract),
	** runtime/merge.c similarity3, doc/merge-f32-amx.md. msplit: rows normalized and split into
	** bf16 hi / lo (side 0 evicted, row-major; side 1 kept, the VNNI pairs per 64-token tile),
	** their norms (side 0: NaN for a row the exact path must take); mtop2: one kept tile's
	** approximate cosines by three tdpbf16ps and the running best, index and runner-up per lane */
	void (*msplit)(const float *K, int64_t ldk, int64_t cnt, int64_t side, void *hi, void *lo, float *nrm, float kmin,
	               float kmax);
	void (*mtop2)(const void *eh, const void *el, int64_t ne, const void *kh, const void *kl, int64_t nt, int64_t j0,
	              float *v1, float *v2, int32_t *i1);
	/* --- session 10: merge summary's cap in generated code (KVCC_ABI 18) ---
	** key[i] = 0 for every key[i] < thr (unsigned): at scope layer / model, the keys of an
	** instance without a summary block below its own n - C best (runtime/compress.c sumgroup).
	** A stub for a policy without merge summary at those scopes. */
	void (*kcut)(uint64_t *key, int64_t n, uint64_t thr);
	/* --- issue 12: merge nearest's similarity on AMX (KVCC_ABI 18; codegen/x86/msimx.c) ---
	** the evicted × kept similarity and its arg-max in one kernel, kept tokens on the tiles' rows,
	** for a similarity e·k / (A B) or e·k / max(A B, c) of the keys (checked: every A B normal,
	** finite, >= c) or their plain dot, on a KA_FAMX artifact: bdot[e] / bidx[e] = the dot e·k and the kept index k of evicted row e's
	** nearest (ties → the lower index); the caller gets the similarity from mpair 3. K the m kept
	** rows (token stride ldk), EK the nE evicted rows [nE][d], es / ks the row-scalar tables (lde
	** nE, ldks m); workspace (each part 64-byte aligned) Ep ((round32(nE) + round32(m)) * d bf16), kinv (round32(m) floats),
	** bkey, bdot, bidx (round32(nE) each). Returns 0, or 1 when it does not apply (a stub for every other
	** policy: the caller runs qkt + mbest) */
	int64_t (*msimx)(const void *K, int64_t ldk, int64_t m, const void *EK, int64_t nE, const float *es,
	                 const float *ks, void *Ep, float *kinv, float *bkey, float *bdot, int32_t *bidx);
} kvcc_artifact;

/* --- GPU (CUDA) ------------------------------------------------------------------------------
** `kvcc compile … --gpu-arch sm_80,sm_90` embeds, beside the CPU descriptor, a second exported
** symbol KVCC_GPU_SYMBOL: a read-only blob that starts with kvcc_gpu_header, followed by
** nkern kvcc_gpu_kernel and nimg kvcc_gpu_image records and the PTX/CUBIN bytes they point
** at (offsets from the header). libkvcc drives the CUDA driver through dlopen("libcuda.so.1")
** (no link-time dependency); without one every GPU call fails with KVCC_EUNSUPPORTED and
** "CUDA driver not found: …". See doc/gpu.md. */
#define KVCC_GPU_SYMBOL "kvcc_artifact_gpu"
#define KVCC_GPU_MAGIC 0x4B5643435F475055ull   /* "KVCC_GPU" */
#define KVCC_GPU_ABI 9                     /* 2: the tuning config; 3: KvgArgs.wts; 4: paged and
                                              batched caches (KvgArgs block, kv_paged); 5: select floor
                                              (KVG_EFLOOR, kv_select_grp's floor records); 6: segment
                                              ops and shift along token (KVG_ESEG); 7: one-layer decode (KvgArgs.dlay,
                                              steps; KVG_PG_STEP; kv_decode for every policy); 8: KvgArgs.nout;
                                              merge summary rows in kv_select (KVG_ESUM, the flag state row); merge runs / next
                                              in kv_select (KVG_EMNEXT); the model schedules' kv_sched (KVG_ESCHED);
                                              9: select keep's kv_count (KVG_EKEEP) */

typedef struct kvcc_gpu_header {
	uint64_t magic;            /* KVCC_GPU_MAGIC */
	uint32_t abi;              /* KVCC_GPU_ABI */
	uint32_t size;             /* bytes of the whole blob */
	uint64_t kir_hash;         /* = KaHdr.kir_hash of the same policy.so */
	int32_t dtype, head_dim, group;
	int32_t nthreads;          /* block size of every kernel; grid = layers * kv_heads (decode: x splits) */
	int32_t nkern, nimg;
	int32_t has_compress, has_decode;
	int32_t nvrtc_major, nvrtc_minor;
	int64_t ws_coef[4];        /* workspace floats per (layer, head) = c0 + c1*N + c2*O + c3*N*O */
	char archs[64];            /* "sm_80,sm_90" */
	char config[64];           /* the GPU config point it was built with (kp_gcfgstr; doc/tune.md) */
} kvcc_gpu_header;

typedef struct kvcc_gpu_kernel {
	char name[32];             /* entry point in every image */
	int32_t role;              /* 0 score (launched in phase order), 1 select, 2 decode (grid layers*kv_heads
	                              x splits), 3 decode combine, 4 select scope group (before 1;
	                              grid layers when phase is 1 (scope layer), else 1 (scope model)) */
	int32_t phase;
} kvcc_gpu_kernel;

typedef struct kvcc_gpu_image {
	char arch[16];             /* "sm_90" */
	int32_t sm, tile;
	uint64_t ptx_off, ptx_len; /* NUL-terminated PTX text (len excludes the NUL) */
	uint64_t cubin_off, cubin_len;
	int32_t regs[8], smem[8], spill[8];   /* per kernel: registers, static shared, spill bytes */
	uint32_t dsmem[8];         /* per kernel: dynamic shared bytes to launch with (opt-in > 48 KB) */
} kvcc_gpu_image;

/* --- GPU launches (codegen/ptx generates the kernels, runtime/cuda.c launches them) ---------- */

#define KVG_MAXPAR 16      /* runtime params passed by value */
#define KVG_MAXKERN 8
#define KVG_MAXARCH 16

/* type, name — the only definition of the kernel argument block */
#define KVG_ARGS_FIELDS(X) \
	X(void *, K)                 /* cache keys, storage dtype, row-major per instance */ \
	X(void *, V)                 /* cache values, same strides as K */ \
	X(int *, len)                /* [L][H] tokens held; compress writes the new lengths */ \
	X(int *, pos)                /* [L][H][N] absolute positions, compacted in place */ \
	X(float *, state)            /* [nst][L][H][N] per-token state (f32), compacted / updated */ \
	X(const void *, Q)           /* [L][H][G][O][d] observation queries, storage dtype */ \
	X(const float *, lse)        /* [L][H][G][O] or NULL */ \
	X(const int *, qpos)         /* [O] query positions or NULL (len-O .. len-1) */ \
	X(float *, scores)           /* [L][H][N] scores (out; NaN past len) */ \
	X(float *, ws)               /* workspace, L*H*ws_inst floats */ \
	X(const void *, q)           /* decode: [L][H][G][d] this step's queries, storage dtype */ \
	X(float *, out)              /* decode: [L][H][G][d] attention output (f32) or NULL */ \
	X(int *, err)                /* device error word (0 = fine; see KVG_E*) */ \
	X(const float *, wts)        /* the policy's weights, packed as KaWeight says, or NULL */ \
	X(long long, sL)             /* K/V strides in elements: layer, head, token */ \
	X(long long, sH) \
	X(long long, sT) \
	X(long long, ws_inst)        /* workspace floats per instance */ \
	X(long long, budget)         /* tokens kept per head, or -1: use ratio */ \
	X(double, ratio) \
	X(int, L) \
	X(int, H) \
	X(int, N)                    /* capacity per instance (row stride of pos/state/scores) */ \
	X(int, O)                    /* observation queries per query head */ \
	X(int, step) \
	X(int, splits)               /* decode: kv_decode blocks per instance (gridDim.y) */ \
	X(double, par[KVG_MAXPAR])   /* runtime parameter values */ \
	/* paged and batched caches (issue 14; DESIGN §7, codegen/ptx/paged.cuh): grid x = B*L*H, \
	   instance inst = (b*L + l)*H + h; len/pos/scores/ws/Q/lse/q/out stack the sequences, \
	   state is [B][nst][L][H][N]. pt NULL: contiguous, sequence b at K + b*sB. */ \
	X(void *const *, Kl)         /* [L] per-layer pool bases (device), or NULL: K + l*sL */ \
	X(void *const *, Vl) \
	X(const int *, pt)           /* page ids: dense tables [ntab][pmax] or CSR indices; NULL: contiguous */ \
	X(const int *, ptr)          /* CSR indptr [ntab+1], or NULL: dense */ \
	X(int *, lpl)                /* CSR last_page_len [ntab] (in/out) or NULL */ \
	X(int *, plen)               /* [B][L][H] scratch: the lengths before the call */ \
	X(int *, pmap)               /* [npool] scratch: page use marks, all zero between calls */ \
	X(int *, freed)              /* [B][fmax] out: freed page ids, logical order, or NULL */ \
	X(int *, nfreed)             /* [B] out: their count, or NULL */ \
	X(const void *, ak)          /* append: [B][H][d] keys and values, storage dtype */ \
	X(const void *, av) \
	X(const int *, apos)         /* append: [B] positions */ \
	X(long long, sP)             /* elements between pages */ \
	X(long long, sB)             /* batched contiguous: elements between sequences */ \
	X(int, B)                    /* sequences (0 counts as 1) */ \
	X(int, P)                    /* page size */ \
	X(int, pmax)                 /* dense table row length; the most pages of a CSR table */ \
	X(int, npool)                /* pages in the pool */ \
	X(int, phead)                /* 1: a table per (sequence, layer, head) */ \
	X(int, fmax)                 /* room of freed per sequence */ \
	X(int, pgop)                 /* kv_paged: KVG_PG_CHECK / KVG_PG_FREE / KVG_PG_APPEND */ \
	X(int, alayer)               /* the appended layer, or -1 */ \
	/* decode of one layer and per-sequence x.step (issue 14; KVCC_GPU_ABI 6) */ \
	X(int, dlay)                 /* decode: 1 + the layer of a one-layer step (grid B*H, q/out \
	                                [B][H][G][d]); 0: every layer (grid B*L*H) */ \
	X(int *, steps)              /* [B][L] per-sequence x.step (kv_paged KVG_PG_STEP adds one at \
	                                layer dlay-1), or NULL: a.step */ \
	/* weights with an out axis (issue 13; KVCC_GPU_ABI 8) */ \
	X(int, nout)                 /* the weights' out axis size (KA_WOUT), 0: none */

#define KVG_FIELD(t, n) t n;
typedef struct KvgArgs { KVG_ARGS_FIELDS(KVG_FIELD) } KvgArgs;
#undef KVG_FIELD

/* device error codes (the first one set wins) */
enum { KVG_EOK, KVG_EPOOL = 1, KVG_ESELECT = 2, KVG_EHMEAN = 3, KVG_ECHUNK = 4, KVG_EMASS = 5,
       /* paged and batched caches (issue 14) */
       KVG_ETABLE = 6,
       /* select floor (issue 13, AdaKV) */
       KVG_EFLOOR = 7,
       /* segment ops and shift along token (issue 13): a bad segment size / start or offset */
       KVG_ESEG = 8,
       /* merge summary (issue 12): a summary block outside the held rows, or a budget below the rows */
       KVG_ESUM = 9,

       /* merge next_kept (issue 12, CaM): m not an integer in 1..1e6 */
       KVG_EMNEXT = 10,

       /* the prefix / dynamic schedules (issue 13): bad scores, lengths or schedule arguments */
       KVG_ESCHED = 11,

       /* select keep (issue 13): a keep count that is not finite */
       KVG_EKEEP = 12 };

enum { KVG_SCORE, KVG_SELECT, KVG_DECODE, KVG_COMBINE, KVG_SELGRP,
       /* paged and batched caches (issue 14): kv_paged, grid B (check, free) or B*H (append) */
       KVG_PAGED };
/* kv_paged's operations (KvgArgs.pgop; codegen/ptx/paged.cuh) */
enum { KVG_PG_CHECK = 1, KVG_PG_FREE = 2, KVG_PG_APPEND = 3,
       /* decode with per-sequence x.step (issue 14): steps[b][dlay-1] += 1, grid B */
       KVG_PG_STEP = 4 };

typedef struct KpCudaKernel {
	char name[32];
	int role;                /* KVG_SCORE / KVG_SELECT / KVG_DECODE / KVG_COMBINE / KVG_SELGRP / KVG_PAGED */
	int phase;               /* KVG_SCORE: order of launch; KVG_SELGRP: 1 grid L (scope layer), 0 grid 1 */
	int tiled;               /* KVG_SCORE: stages Q·Kᵀ tiles in dynamic shared memory */
} KpCudaKernel;

typedef struct KpCudaImage {
	char arch[16];           /* "sm_90" */
	int sm;                  /* 90 */
	char *ptx;   size_t nptx;     /* NUL-terminated PTX text */
	void *cubin; size_t ncubin;
	int regs[KVG_MAXKERN];   /* registers per thread (from ptxas -v) */
	int smem[KVG_MAXKERN];   /* static shared bytes */
	int spill[KVG_MAXKERN];  /* spill store bytes */
	unsigned dsmem[KVG_MAXKERN]; /* dynamic shared bytes to launch with */
	int tile;                /* compaction rows per staging tile (KV_TT) */
	int sq, sk;              /* score tiles: query rows per chunk (KV_SQ), tokens per tile (KV_SK) */
	double ms;               /* NVRTC time */
	/* session 8 (wt-stage8) */
	int st;                  /* score tiles: K tile buffers, cp.async pipeline stages (KV_ST) */
	/* session 11: how the compiler made this image (kvcc dev cuda -v; empty in a loaded artifact) */
	char how[320];
} KpCudaImage;

typedef struct KpCudaOut {
	char *src;               /* generated CUDA C (malloc'd) */
	size_t nsrc;
	int nthreads;
	int nkern;
	KpCudaKernel kern[KVG_MAXKERN];
	int nimg;
	KpCudaImage img[KVG_MAXARCH];
	long long ws_coef[4];    /* ws floats per instance = c0 + c1*N + c2*O + c3*N*O */
	long long dec_part;      /* + splits * dec_part with decode (kvg_dec_part) */
	int has_decode, has_compress;
	int nvrtc_major, nvrtc_minor;
	double gen_ms;
} KpCudaOut;

/* Split-KV decode: floats of one split's partials (per warp and query head: m, s and
** head_dim sums) and the split count a plan uses — enough blocks to fill a large GPU
** (KVG_DEC_BLOCKS over all instances), each split at least KVG_DEC_TMIN tokens of
** the capacity N. Decided once per plan from the layout, never from device data. */
#define KVG_DEC_BLOCKS 512
#define KVG_DEC_TMIN 256
static inline long long kvg_dec_part(int group, int head_dim, int nthreads)
{
	return (long long)(nthreads / 32) * group * (head_dim + 2);
}
static inline int kvg_dec_splits(long long N, long long instances)
{
	long long s = (KVG_DEC_BLOCKS + instances - 1) / (instances > 0 ? instances : 1), cap = N / KVG_DEC_TMIN;
	if (s > cap)
		s = cap;
	return s < 1 ? 1 : (int)s;
}

static inline long long kvg_ws_floats(const KpCudaOut *o, long long N, long long Oq, int splits)
{
	return o->ws_coef[0] + o->ws_coef[1] * N + o->ws_coef[2] * Oq + o->ws_coef[3] * N * Oq +
	       (o->has_decode ? splits * o->dec_part : 0);
}

#endif
