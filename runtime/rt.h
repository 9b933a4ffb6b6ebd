/*
** rt.h — libkvcc_rt's internal header: an open policy (the loaded artifact and the
** descriptor sections it points into), a plan (layout, workspaces sized once, the
** thread pool), and what the runtime's files share. The runtime reads only the
** artifact (runtime/artifact.h): no KIR, no compiler.
**
**   api.c       errors, version, policy queries, plan lifecycle (workspaces)
**   load.c      kvcc_open / kvcc_close: dlopen, descriptor checks, CPU features
**   compress.c  kvcc_compress(_batch): run plan on the pool, select, compact
**   merge.c     compact_merge: merge nearest on the generated kernels, then the compaction
**   paged.c     batches and paged caches: table checks, row addresses, paged compaction, freed pages
**   decode.c    kvcc_append, kvcc_decode_layer (split-KV attention, observe hook)
**   gpu.c       the GPU plan and launches (cuda.c: the driver through dlopen)
*/
#ifndef KVCC_RT_H
#define KVCC_RT_H

#include <stdint.h>
#include "kvcc.h"
#include "runtime/artifact.h"
#include "runtime/pool.h"

#define TILE 64      /* attn_score token tile of the generated qkt/sstat/sacc (codegen/x86 AT) */
#define LANES 16     /* sstate's sums per (row, lane): the generated 16-lane vectors (codegen/x86 DT) */
#define KR_EXPWS_MIB 32  /* default cap of the per-thread exponential workspace, MiB (KVCC_EXPWS; doc/runtime.md) */
#define DTILE 16     /* decode token tile of the generated kernel (codegen/x86 DT) */

/* axis numbers of KaIns.axes (the compiler's AX_*) */
enum { KR_GROUP, KR_OBS, KR_TOKEN, KR_CHAN, KR_NAX };
#define KR_AX(m, ax) (((m) >> (ax)) & 1)

struct kvcc_policy {
	int refs;                  /* kvcc_open's handle and each plan's (kr_policy_unref) */
	void *dl;
	const kvcc_artifact *a;
	const KaHdr *h;            /* the descriptor and its sections (inside the blob, checked) */
	const KaParam *par;
	const KaState *st;
	const KaIns *ins;
	const KaWeight *wt;
	const char *str;
	const char *name, *src;
	unsigned kern;             /* KA_K*: the kernels the run may call, ka_kernels (artifact.h) */
	/* issue 15, per-bucket compress kernels: the artifact whose score-phase kernels an instance of
	** bucket b (ka_bucket of its tokens) runs: a variant (KaHdr.cvar) or `a` */
	const kvcc_artifact *bart[KA_NBUCKET];
	int famx;                  /* KA_FAMX of `a` or of any variant: plans ask for the tile state */
};

/* select, chunk > 1: a partial last chunk (instance k, len tokens) of a scope group */
typedef struct KrPart {
	uint64_t key;
	int k, len, keep;
} KrPart;

struct kvcc_plan {
	kvcc_policy *p;            /* holds a reference (kvcc_close before kvcc_plan_destroy is fine) */
	int busy;                  /* a call is running (kr_enter / kr_leave) */
	kvcc_layout lay;
	int max_obs, threads;
	size_t esz;
	KrPool pool;
	int pool_ok;
	double *par;             /* [npar] params of the observe hook */
	int *step;               /* [layers] x.step of the next decode of each layer */
	/* decode workspaces (sized here; the run path allocates nothing) */
	int64_t lds;             /* logits row stride: capacity rounded up to DTILE, + DTILE */
	int maxch;               /* split-KV chunks per head */
	int lanes;               /* sequences one decode pool run takes (each lane its workspaces) */
	float *S;                /* [lanes][kv_heads][G][lds] logits, then probabilities */
	float *qs;               /* [lanes][kv_heads][G][d] rounded, scaled queries */
	float *cst;              /* [lanes][kv_heads][maxch][G*(2+d)] chunk states (m, l, acc) */
	float **oval;            /* [lanes][kv_heads][nins] the observe loops' stored values */
	double ms[4];            /* last compress: score, select, compact, total */
	/* attn_score workspaces, one per pool thread, for ws_go = G * max_obs query rows: the fused
	** kernels' tiles and Q rows */
	int ws_go;
	float **ws;
	/* issue 15, one exp per logit: per pool thread, the stats pass's exponentials of one instance
	** of GO query rows: the first kt = (ews_fl - GO*16) / (GO*65) tiles' exponentials ([kt][GO][64]
	** floats), then their rows' max per tile ([kt][GO]), then the rows' sums per lane ([GO][16];
	** KVCC_ABI 16). ews_fl floats: what the plan's shapes need (ceil(capacity/64) tiles of ws_go
	** rows), capped at KVCC_EXPWS MiB (default 32), in whole tiles of ws_go rows; NULL (ews_fl 0)
	** when not one tile fits or KVCC_EXPWS=0. The tiles past kt run the two passes
	** (runtime/compress.c attnscore1) */
	float **ews;
	int64_t ews_fl;
	/* issue 15, session 9: a head whose kept exponentials take more bytes than this has sstate
	** write them non-temporally (KVCC_ABI 17: nq < 0): twice the L2 (sysconf; 2 MiB if unknown),
	** or KVCC_EXPNT MiB */
	int64_t ews_ntb;
	int obs_sized;           /* the workspaces depend on nobs: a compress may pass up to max_obs */
	uint64_t *selkeys;       /* select: candidate keys of one scope group, [nsel][selstride] */
	KrPart *part;            /* [nsel][layers*kv_heads + 1] select, chunk > 1: partial last chunks of a group */
	int nsel;                /* select's per-thread copies (compress.c selectrun; 1: one thread selects) */
	size_t selstride;
	int32_t *kidx;           /* [layers][kv_heads][capacity] sorted kept positions per instance */
	int32_t *nkept;          /* [layers][kv_heads] */
	int32_t *sblk;           /* [instances] merge summary: the summary block's first row at selection, or -1 */
	int64_t *keepv;          /* [instances] select keep: keepn's result, computed after the instance's
	                            last stage while its values are in the arena (compress.c runinst) */
	/* select with the prefix / dynamic schedule (KaHdr.sched; compress.c schedcounts), else NULL:
	** one sequence's keys of every instance, its counts, lengths, totals and per-layer rows */
	uint64_t *schkeys;       /* [layers*kv_heads][capacity] */
	int64_t *schnk;          /* [layers*kv_heads] the counts; then lengths [layers*kv_heads], 3 x [layers],
	                            prefix brackets 3 x [layers*kv_heads] */
	double *schtot;          /* [layers*kv_heads] */
	/* compress values, in arenas sized here for capacity tokens and max_obs queries: without a
	** head_mean barrier every instance is scored by one thread in one go, so its values live in
	** that thread's arena and only the score is kept per instance; with one (values cross the
	** barrier) every instance has its own arena */
	float **hsrc, **hdst;    /* [kv_heads] head_mean barrier operands */
	int narena;              /* threads, or layers*kv_heads with head_mean */
	float **arena;           /* [narena] */
	float ***tvals;          /* [narena][nins] value pointers into the arena */
	float *scorebuf;         /* [layers][kv_heads][capacity] */
	float **score;           /* [layers*kv_heads] */
	double *cpar;            /* [npar] compress params */
	/* batches and paged caches (kvcc_plan_create_batch; paged.c) */
	int max_seqs;
	int paged;               /* pg is given: K/V rows through page tables */
	kvcc_paging pg;
	const int32_t **tabp;    /* [max tables] this call's tables (checked by kr_tables) */
	int32_t *tabn;           /* [max tables] their entries */
	int32_t *tabu;           /* [max tables] entries in use (the rest are not read) */
	unsigned char *pmark;    /* [num_pages] pages seen in this call's tables */
	int64_t **roff;          /* [threads][capacity] an instance's row offsets for the generated loops */
	char **stage;            /* [threads] staged rows of K and V (KR_STAGE each) for kernels taking a stride */
	char **mws;              /* [threads] compact_merge workspaces (merge.c kr_mbytes), or NULL: drop */
	/* the policy's weights (kvcc_plan_set_weight; weights.c): packed f32 as KaWeight says */
	float *wts;
	unsigned char *wset;     /* [nw] given */
	int64_t nout;            /* the out axis' size (KaHdr.wout, or the first data given with one), 0: unknown */
};

/* a generated loop's segment op / shift check failed (the value follows) */
#define KR_SEGMSG "a segment size must be an integer >= 1 or inf, a segment start an integer >= 0 or inf, a " \
                  "shift offset an integer in -1e9..1e9"
#define KR_STAGE 256         /* rows staged at a time (a multiple of TILE and DTILE) */
#define KR_LANES 8           /* the most sequences of a batch one decode pool run takes */

/* the rows of one (sequence, layer, head): row t of K at K + kr_row(w, t)*esz, of V likewise */
typedef struct KrRows {
	char *K, *V;             /* contiguous: the instance's row 0; paged: its pool base (page 0, row 0) */
	const int32_t *tab;      /* paged: the page table, else NULL */
	int64_t P, ldk, sp;      /* page size, token stride, page stride (elements) */
} KrRows;

static inline int64_t kr_row(const KrRows *w, int64_t t)
{
	return w->tab ? (int64_t)w->tab[t / w->P] * w->sp + (t % w->P) * w->ldk : t * w->ldk;
}

/* load.c */
/* drop a reference to p; the last one unloads it */
KC_FUNC void kr_policy_unref(kvcc_policy *p);
KC_FUNC int kr_checkdesc(const kvcc_artifact *a, const char **why);

/* api.c */
/* set kvcc_last_error's message (printf format); returns code */
KC_FUNC int kr_seterr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* a descriptor operand's value with params par (NULL: the defaults), def when there is none */
KC_FUNC double kr_ref(const KaRef *r, const double *par, double def);
/* floats of a value with axes m for G, nobs, n tokens, head_dim d */
KC_FUNC size_t kr_count(uint8_t m, int G, int nobs, int n, int d);
KC_FUNC double kr_now_ms(void);
/* a run call starts on pl: 0, or KVCC_EBUSY with the message while another call runs on it */
KC_FUNC int kr_enter(kvcc_plan *pl);
/* weights.c: the plan's packed weights (plan creation; -1 out of memory), and 0 or KVCC_EINVAL
** with a message when a declared weight was not given */
KC_FUNC int kr_weights_init(kvcc_plan *pl);
KC_FUNC int kr_weights_check(const kvcc_plan *pl);
/* shared by the CPU and GPU plans (kvcc_plan_set_weight, kvcc_gpu_plan_set_weight): the packed
** floats of p's weights in layout lay; 0 or KVCC_EINVAL naming the first weight wset[] lacks;
** kr_weight_arg checks one kvcc_*_set_weight call (name, shape against lay, finite) and gives
** the weight's index, offset and count in the packed buffer, or KVCC_EINVAL with the message */
KC_FUNC size_t kr_weights_size(const kvcc_policy *p, const kvcc_layout *lay, int64_t nout);
/* the packed buffer for out axis size nout from old (laid out for oldn; the given weights, wset,
** moved, the rest NaN): malloc'd, NULL out of memory */
KC_FUNC float *kr_weights_relayout(const kvcc_policy *p, const kvcc_layout *lay, const float *old, int64_t oldn,
                                   int64_t nout, const unsigned char *wset);
KC_FUNC int kr_weights_given(const kvcc_policy *p, const unsigned char *wset);
KC_FUNC int kr_weight_arg(const kvcc_policy *p, const kvcc_layout *lay, int64_t *nout, const char *name,
                          const float *data, int ndim, const int64_t *shape, int *idx, size_t *off, size_t *count);
KC_FUNC void kr_leave(kvcc_plan *pl);
#define KR_MAXQROWS (1 << 24)   /* group * max_obs: query rows a plan's workspaces are sized for */

/* paged.c */
/* Check a batch against the plan (sequences, pools, tables, lengths; xl >= 0: layer xl's heads
** get one more token, kvcc_append) and
** record its tables in pl->tabp/tabn/tabu; 0 or KVCC_EINVAL with the message, nothing written. */
KC_FUNC int kr_batch_check(kvcc_plan *pl, const kvcc_batch *b, int xl);
/* page size, pool and strides of a paged layout as kvcc_plan_create_batch checks them (api.c) */
KC_FUNC int kr_paging_ok(const kvcc_layout *lay, const kvcc_paging *pg);
/* the rows of (sequence s, layer l, head h) of a checked batch */
KC_FUNC void kr_rows(const kvcc_plan *pl, const kvcc_batch *b, int s, int l, int h, KrRows *w);
/* paged: the element offsets of rows 0..n-1 into ro */
KC_FUNC void kr_rowoffs(const KrRows *w, int64_t n, int64_t *ro);
/* rows t0..t0+nt-1 of K (and V when Vst is non-NULL) as one stride: a pointer and *ldk, straight
** from the cache when they share one, else copied into st / Vst (nt <= KR_STAGE) */
KC_FUNC const char *kr_span(const KrRows *w, size_t esz, int d, int64_t t0, int64_t nt, char *st, int64_t *ldk,
                            const char **V, char *Vst);
/* paged: prefetch the K (and with v the V) rows t..end-1; v (decode): into L1 (prefetcht0), else L2 */
KC_FUNC void kr_prefetch(const KrRows *w, size_t esz, int d, int64_t t, int64_t end, int v);
/* paged compaction of one instance: row i = row idx[i] (K, V), pos and state likewise */
KC_FUNC void kr_pcompact(const KrRows *w, size_t esz, int d, const int32_t *idx, int64_t m, int32_t *pos, float *state,
                         int nst, int64_t sstride);
/* paged, after compaction: each sequence's freed pages (and CSR last_page_len) */
KC_FUNC void kr_freed(kvcc_plan *pl, kvcc_batch *b);
/* merge.c: compact_merge with merge nearest (KaHdr.merge); the workspace bytes of one thread,
** and one instance's merge and compaction (in place; kidx sorted, m kept of n) */
KC_FUNC size_t kr_mbytes(const kvcc_plan *pl);
KC_FUNC void kr_mstat0(kvcc_plan *pl, int t);   /* issue 12: merge.c's counters (kvcc_plan_mstats) zeroed */
/* mpos.c (issue 12): merge runs / next of one instance, contiguous or paged (rw), then the compaction;
** score = the instance's scores (the pivots' selection order); kr_mposbytes its workspace */
KC_FUNC size_t kr_mposbytes(const kvcc_plan *pl);
KC_FUNC void kr_mpos(kvcc_plan *pl, const double *par, const KrRows *rw, int n, const int32_t *kidx, int m,
                     int32_t *pos, float *state, int nst, int64_t sstride, const float *score, float *const *vals,
                     int tid);
KC_FUNC void kr_mnearest(kvcc_plan *pl, const double *par, char *K, char *V, int64_t ldk, int n, const int32_t *kidx,
                         int m, int32_t *pos, float *state, int nst, int64_t sstride, int tid);
/* the same on a paged cache (rows through rw's page table; the same result bit for bit) */
KC_FUNC void kr_pmnearest(kvcc_plan *pl, const double *par, const KrRows *rw, int n, const int32_t *kidx, int m,
                          int32_t *pos, float *state, int nst, int64_t sstride, int tid);
/* summary.c: compact_merge with merge summary (KaHdr.srows rows); the workspace bytes of one
** thread (pl->mws); kr_sblock: the first row of an instance's summary block (the flag state
** row KaHdr.sflag), or -1; kr_msummary: the evicted ordinary rows summarized, the compaction
** (kidx sorted physical rows, m of them, none in the block at s0), the block written after the
** kept rows; returns the instance's new length */
KC_FUNC size_t kr_sbytes(const kvcc_plan *pl);
KC_FUNC int kr_sblock(const kvcc_plan *pl, const float *state, int64_t sstride, int n);
KC_FUNC int kr_msummary(kvcc_plan *pl, const KrRows *rw, int paged, int n, const int32_t *kidx, int m, int s0,
                        int32_t *pos, float *state, int nst, int64_t sstride, int tid);
/* a one-sequence batch of a contiguous kvcc_cache, for kvcc_compress, kvcc_append and
** kvcc_decode_layer; KVCC_EINVAL (message set) for a missing plan or cache or a paged plan */
KC_FUNC int kr_single(const kvcc_plan *pl, kvcc_cache *c, const kvcc_obs *obs, const char *batchfn,
                      kvcc_seq *s, kvcc_batch *b);

#endif
