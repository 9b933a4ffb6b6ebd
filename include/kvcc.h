/*
** kvcc.h — the public C API of libkvcc_rt, the runtime: load a compiled policy
** (policy.so), describe a KV cache, compress it, attend over it. libkvcc_rt links
** libc, libm, libpthread and libdl only. Compiling a policy in process is
** libkvcc's (include/kvcc_compiler.h), which is built on this library.
**
** Conventions: opaque handles, `kvcc_` prefix; every function returns 0 or a
** negative KVCC_E* code and kvcc_last_error() (thread-local) says why. The
** library never exits or aborts on user input and never writes outside the
** buffers the caller describes.
** kvcc_last_error() is the message of the calling thread's most recent failed
** call, like errno: a call that returns a negative code sets it, one that
** succeeds leaves it as it was (it is not cleared), so read it only after a
** negative return (tests/lib/api_misuse.c checks this contract).
*/
#ifndef KVCC_H
#define KVCC_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVCC_API __attribute__((visibility("default")))

enum {
	KVCC_OK = 0,
	KVCC_EINVAL = -1,      /* bad argument, layout, length or budget */
	KVCC_ENOMEM = -2,
	KVCC_EIO = -3,         /* file could not be read or written */
	KVCC_EARTIFACT = -4,   /* not a kvcc artifact, corrupted, or wrong ABI/key */
	KVCC_ECOMPILE = -5,    /* the policy does not compile (message has file:line:col) */
	KVCC_ESPEC = -6,       /* the artifact was compiled for another dtype/head_dim/group/CPU */
	KVCC_EUNSUPPORTED = -7,
	KVCC_EDEVICE = -8,     /* a CUDA driver call or launch failed (message says which) */
	KVCC_EBUSY = -9,       /* the plan is running another call (a plan runs one call at a time) */
};

enum { KVCC_F32 = 0, KVCC_F16 = 1, KVCC_BF16 = 2 };              /* storage dtypes */
enum { KVCC_TARGET_NATIVE = 0, KVCC_TARGET_V3 = 1, KVCC_TARGET_V4 = 2, KVCC_TARGET_SCALAR = 3 };

/* --- compiling and loading ------------------------------------------------------------ */
typedef struct kvcc_spec {
	int dtype;                 /* KVCC_F32 / F16 / BF16 */
	int head_dim;              /* multiple of 8, up to 256 */
	int group;                 /* query heads per KV head, 1..8 */
	int target;                /* KVCC_TARGET_* */
} kvcc_spec;

typedef struct kvcc_policy kvcc_policy;

KVCC_API const char *kvcc_last_error(void);
KVCC_API const char *kvcc_version(void);

/* Load policy.so (validated: magic, ABI, descriptor format and hash, specialization, the CPU
** features its kernels use against this host's; the compiler's build and version do not matter).
** The whole file is checked before it is mapped: a regular file ending in the checksum trailer
** that kvcc compile writes (else KVCC_EARTIFACT; unreadable: KVCC_EIO). `path` is opened as
** given: a name without a slash is ./name, never a library search. A policy.so is native code,
** trusted like any shared library. */
KVCC_API int kvcc_open(const char *path, kvcc_policy **out);
/* Release the caller's handle; plans created from it keep the policy loaded until they are
** destroyed (kvcc_close before kvcc_plan_destroy is fine; each handle is released once). */
KVCC_API void kvcc_close(kvcc_policy *p);

KVCC_API const char *kvcc_policy_name(const kvcc_policy *p);
/* The tuning config the artifact's kernels were built with ("qb6,nv4,w16,…"; doc/tune.md), or
** "" for an artifact built without one. */
KVCC_API const char *kvcc_policy_config(const kvcc_policy *p);
KVCC_API int kvcc_policy_spec(const kvcc_policy *p, kvcc_spec *spec);
KVCC_API int kvcc_param_count(const kvcc_policy *p);
/* Index of a param by name, or a negative code. */
KVCC_API int kvcc_param_index(const kvcc_policy *p, const char *name);
KVCC_API int kvcc_param_info(const kvcc_policy *p, int i, const char **name, double *def);
/* Per-token policy state lives beside the cache: [nstate][layers][kv_heads][capacity] floats,
** caller-allocated (kvcc_state_count gives nstate); compaction moves it with K/V/pos. */
KVCC_API int kvcc_state_count(const kvcc_policy *p);
/* Name and init value of state i. */
KVCC_API int kvcc_state_info(const kvcc_policy *p, int i, const char **name, double *init);
/* when: 0 = prefill, 1 = decode; *every = compress every N decode steps (decode only) */
KVCC_API int kvcc_policy_when(const kvcc_policy *p, int *every);
/* The observation queries a compress call passes, as the policy declares them (obs = N, a
** param, or kvcc.all), with `params` (kvcc_param_count values in param order; NULL = the
** defaults): *obs = the count (0: the policy reads no queries), or -1 for every context
** position (the caller passes all of them). */
KVCC_API int kvcc_policy_obs(const kvcc_policy *p, const double *params, int *obs);

/* What a policy reads and how far its selection reaches, for callers that drive kvcc from
** per-layer hooks (kvpress, engines): *flags = KVCC_POLICY_* bits, *scope = KVCC_SCOPE_* of
** its select rule (either pointer may be NULL). */
enum {
	KVCC_POLICY_QUERIES = 1,   /* reads observation queries: a compress call passes obs->Q */
	KVCC_POLICY_LSE = 2,       /* reads x.lse: a compress call passes obs->lse */
	KVCC_POLICY_QPOS = 4,      /* reads x.qpos */
	KVCC_POLICY_LAYER = 8,     /* what a layer keeps depends on its index or on other layers
	                              (x.layer, x.nlayers, kv.random, a budget schedule such as
	                              PyramidKV's, scope = model): compress every layer in one call */
	KVCC_POLICY_HEADS = 16,    /* a head's score depends on the other heads of its layer (head_mean) */
	KVCC_POLICY_OBSERVE = 32,  /* decode: kvcc_decode_layer runs the policy's observe hook */
};
/* the select rule ranks each head alone, a layer's heads together, or the whole model */
enum { KVCC_SCOPE_HEAD = 0, KVCC_SCOPE_LAYER = 1, KVCC_SCOPE_MODEL = 2 };
KVCC_API int kvcc_policy_info(const kvcc_policy *p, unsigned *flags, int *scope);

/* --- KV layout ------------------------------------------------------------------------- */
/* A contiguous cache: element (l, h, t, c) of K is at
** K + l*stride_layer + h*stride_head + t*stride_token + c (element units, storage dtype).
** len[l*kv_heads + h] tokens are held by (l, h); capacity bounds them. */
typedef struct kvcc_layout {
	int dtype, layers, kv_heads, head_dim, capacity;
	int64_t stride_layer, stride_head, stride_token;
} kvcc_layout;

typedef struct kvcc_cache {
	void *K, *V;               /* storage dtype, laid out per kvcc_layout */
	int32_t *pos;              /* [layers][kv_heads][capacity] absolute positions, or NULL */
	int32_t *len;              /* [layers][kv_heads], updated by compression */
	float *state;              /* per-token policy state [nstate][layers][kv_heads][capacity]
	                              (kvcc_state_count), or NULL when the policy has none */
} kvcc_cache;

/* Observation queries: Q [layers][kv_heads][group][nobs][head_dim] in the storage dtype,
** contiguous; optional lse [layers][kv_heads][group][nobs]; optional qpos [nobs]
** (default: len-nobs .. len-1 per head).
** lse, when given, must be each query's attention log-sum-exp over the tokens it sees
** (q·k·x.scale, causal: pos <= qpos), as a flash-attention prefill returns it: policies
** whose softmax is that attention's (x.Q:dot(x.K)·x.scale) then skip attn_stats and read
** K once; policies that read x.lse get it as their input. */
typedef struct kvcc_obs {
	int nobs;
	const void *Q;
	const float *lse;
	const int32_t *qpos;
} kvcc_obs;

typedef struct kvcc_args {
	double ratio;              /* fraction removed (used when budget < 0) */
	long budget;               /* tokens kept per (layer, head), or -1 */
	const double *params;      /* [kvcc_param_count] values, or NULL: defaults */
	int threads;               /* 0: one per core */
	float *scores;             /* optional out: [layers][kv_heads][capacity] raw scores */
} kvcc_args;

typedef struct kvcc_plan kvcc_plan;

/* Plan once per layout: checks it against the policy's specialization, sizes
** workspaces, starts the thread pool. max_obs: the most observation queries a
** kvcc_compress will pass; the workspaces of policies that read them (Q, lse, qpos,
** values over obs) are sized for it, and a call with more fails with KVCC_EINVAL
** (0: such a policy cannot compress with this plan; decode only). After this,
** kvcc_compress, kvcc_append and kvcc_decode_layer allocate nothing. group*max_obs is at most
** 2^24. A plan runs one call at a time: a call while another runs on the same plan (another
** thread) fails at once with KVCC_EBUSY; use one plan per thread. */
KVCC_API int kvcc_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int threads,
                              kvcc_plan **out);
KVCC_API void kvcc_plan_destroy(kvcc_plan *pl);
/* Score, select, compact in place (K, V, pos, len, state). */
KVCC_API int kvcc_compress(kvcc_plan *pl, kvcc_cache *cache, const kvcc_obs *obs, const kvcc_args *args);

/* Wall times (ms) of the plan's last kvcc_compress: [0] score (attn_stats, attn_score,
** token_map), [1] select, [2] compact, [3] total. */
KVCC_API int kvcc_plan_timings(const kvcc_plan *pl, double ms[4]);

/* --- decode ------------------------------------------------------------------------------ */
/* Append one token to every KV head of `layer`: k, v [kv_heads][head_dim] (storage dtype),
** position pos; sets the new token's state to the policy's init values; len grows by 1
** (KVCC_EINVAL when a head is at capacity). */
KVCC_API int kvcc_append(kvcc_plan *pl, kvcc_cache *cache, int layer, const void *k, const void *v, int32_t pos);
/* One decode step of one layer: query heads h*G..h*G+G-1 (q: [kv_heads][group][head_dim] f32,
** post-RoPE) attend over every token (l, h) holds (append first); out: [kv_heads][group][head_dim]
** f32. Runs the policy's observe hook (updates state) when it has one. Split-KV on the pool.
** q is rounded to the storage dtype first (the reference semantics, compiler/interp.h).
** A plan runs one call at a time (its workspaces are shared). */
KVCC_API int kvcc_decode_layer(kvcc_plan *pl, kvcc_cache *cache, int layer, const float *q, float *out);
/* Runtime params of the observe hook (decode; default: the policy's defaults); copied. */
KVCC_API int kvcc_plan_set_params(kvcc_plan *pl, const double *params);
/* x.step: the next kvcc_decode_layer of every layer sees `step` (each call of a layer
** counts one step; plans start at 0). */
KVCC_API int kvcc_plan_set_step(kvcc_plan *pl, int step);

/* --- weights ------------------------------------------------------------------------------
** Named tensors a policy declares (kv.weights, doc/dsl.md), given at run time: never compiled
** in, so changing them never recompiles. kvcc_weight_info: the i-th weight's name and its
** number of dimensions. kvcc_plan_set_weight copies weight `name` into the plan: f32, row-major
** over the declared axes, shape[ndim] as the plan's layout says (layer = layers, head =
** kv_heads, group = the policy's group, chan = head_dim); a wrong name or shape or a non-finite
** value is KVCC_EINVAL with a message, and the plan keeps what it had. kvcc_compress and
** kvcc_decode_layer fail with KVCC_EINVAL while a declared weight was never given. */
KVCC_API int kvcc_weight_count(const kvcc_policy *p);
KVCC_API int kvcc_weight_info(const kvcc_policy *p, int i, const char **name, int *ndim);
KVCC_API int kvcc_plan_set_weight(kvcc_plan *pl, const char *name, const float *data, int ndim,
                                  const int64_t *shape);

/* --- batched and paged caches -------------------------------------------------------------
** Many sequences per call, and caches kept in a pool of fixed-size pages (doc/runtime.md).
**
** Batched contiguous: every sequence has its own cache laid out per kvcc_layout (kvcc_seq.K/V).
** Paged: logical token t of (sequence, layer, head) lives in page table[t / page_size], row
** t % page_size; element (page, row, head h, chan c) of layer l is at
**   Kl[l] + page*stride_page + row*stride_token + h*stride_head + c     (Kl NULL: K + l*stride_layer)
** with stride_token/stride_head/stride_layer from kvcc_layout. vLLM's per-layer
** [num_blocks][block_size][kv_heads][head_dim]: stride_page = block_size*kv_heads*head_dim,
** stride_token = kv_heads*head_dim, stride_head = head_dim, Kl/Vl = the layers' tensors.
** Tables: one per sequence shared by all layers and heads (vLLM's block table) or one per
** (sequence, layer, head) (heads own their pages), dense ([ntab][max_pages]) or FlashInfer's CSR
** (indptr, indices, last_page_len). kvcc_layout.capacity is the per-sequence row stride of pos,
** state and scores and bounds the lengths. */
enum { KVCC_TABLE_SHARED = 0, KVCC_TABLE_PER_HEAD = 1 };

typedef struct kvcc_paging {
	int page_size;             /* tokens per page, 1..256 */
	int num_pages;             /* the pool's pages: ids 0..num_pages-1 */
	int max_pages;             /* the most pages one table holds (dense tables: their row length) */
	int tables;                /* KVCC_TABLE_SHARED or KVCC_TABLE_PER_HEAD */
	int64_t stride_page;       /* elements between pages */
} kvcc_paging;

/* One sequence of a batch. Compaction keeps logical order and moves kept rows to logical slots
** 0..m-1 of the same (layer, head), in place. Paged plans report in `freed` the page ids no
** (layer, head) holds a token in any more (shared tables: past the longest head), in logical
** order (per-head tables: table by table, layer-major); they are never read or written again. */
typedef struct kvcc_seq {
	void *K, *V;               /* contiguous plans: this sequence's cache; paged plans: unused */
	int32_t *pos;              /* [layers][kv_heads][capacity] or NULL */
	int32_t *len;              /* [layers][kv_heads], updated by compression and append */
	float *state;              /* [nstate][layers][kv_heads][capacity] or NULL */
	kvcc_obs obs;              /* this sequence's observation queries (compress) */
	int32_t *freed;            /* paged, out (or NULL): room for max_pages ids (shared tables) or
	                              layers*kv_heads*max_pages (per-head tables) */
	int nfreed;                /* out: ids written to freed */
	/* per-sequence decode step (issue 14) */
	int32_t *step;             /* [layers] in/out or NULL: this sequence's x.step per layer; a
	                              kvcc_decode_batch of layer l reads step[l], then adds one.
	                              NULL: the plan's counter (kvcc_plan_set_step) */
} kvcc_seq;

typedef struct kvcc_batch {
	int nseq;                  /* 1..max_seqs of the plan */
	kvcc_seq *seq;             /* [nseq] */
	/* paged plans only: */
	void *K, *V;               /* page pools, or NULL with Kl/Vl */
	void *const *Kl;           /* [layers] per-layer pool bases (vLLM's per-layer tensors), or NULL */
	void *const *Vl;
	const int32_t *table;      /* dense: [ntab][max_pages] page ids, ntab = nseq (shared) or
	                              nseq*layers*kv_heads (per head, sequence-major); entries past a
	                              table's longest length are not read */
	const int32_t *indptr;     /* or CSR: table i = indices[indptr[i] .. indptr[i+1]) (table NULL) */
	const int32_t *indices;
	int32_t *last_page_len;    /* CSR, optional, in/out [ntab]: a table holds at most
	                              (npages-1)*page_size + last_page_len tokens; compress sets it for the
	                              new longest length (the table then keeps its first
	                              ceil(len/page_size) pages) */
} kvcc_batch;

/* A plan for up to max_seqs sequences per call; pg NULL: batched contiguous caches, else paged
** (the layout's strides then describe the pool, see above). kvcc_plan_create is this with
** pg NULL and max_seqs 1. Checks: page size 1..256, strides that keep the pool's rows apart
** and inside int64. */
KVCC_API int kvcc_plan_create_batch(kvcc_policy *p, const kvcc_layout *lay, const kvcc_paging *pg, int max_seqs,
                                    int max_obs, int threads, kvcc_plan **out);
/* kvcc_compress on every sequence of the batch, (sequence, layer, head) tasks on the pool (one
** args for all; args->scores, when set, is [nseq][layers][kv_heads][capacity]). Bad
** tables (a page id outside the pool, a page used twice in one call, a length above its table's
** capacity, a missing table) give KVCC_EINVAL and change nothing. */
KVCC_API int kvcc_compress_batch(kvcc_plan *pl, kvcc_batch *b, const kvcc_args *args);
/* kvcc_append for every sequence: k, v [nseq][kv_heads][head_dim], pos [nseq] (paged: the slot's
** page must be in the table). */
KVCC_API int kvcc_append_batch(kvcc_plan *pl, kvcc_batch *b, int layer, const void *k, const void *v,
                               const int32_t *pos);
/* kvcc_decode_layer for every sequence: q, out [nseq][kv_heads][group][head_dim] f32; each head
** attends over the tokens it holds. */
KVCC_API int kvcc_decode_batch(kvcc_plan *pl, kvcc_batch *b, int layer, const float *q, float *out);

/* --- GPU (CUDA) ------------------------------------------------------------------------------
** A policy compiled with --gpu-arch (kvcc_compiler.h: kvcc_compile_so_gpu) carries PTX/CUBIN per
** target beside the CPU kernels. libkvcc_rt drives the CUDA driver through dlopen("libcuda.so.1")
** (no link-time dependency); without one every GPU call fails with KVCC_EUNSUPPORTED and
** "CUDA driver not found: …". See doc/gpu.md. */
typedef struct kvcc_gpu_plan kvcc_gpu_plan;

/* Plan once per (policy, layout, device): loads the driver, makes the device's primary context
** current, loads the CUBIN for its sm (else JIT-compiles the newest PTX not above it; the JIT
** log is in the error), opts into > 48 KB shared memory, allocates the workspace, score and
** error buffers on the device for layouts up to `capacity` tokens and `max_obs` queries.
** KVCC_EUNSUPPORTED: no driver, no device, or the policy.so has no GPU kernels. */
KVCC_API int kvcc_gpu_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int device_ordinal,
                                  kvcc_gpu_plan **out);
KVCC_API void kvcc_gpu_plan_destroy(kvcc_gpu_plan *pl);
/* The image the plan runs: "cubin sm_90" or "ptx sm_80 (JIT)". */
KVCC_API const char *kvcc_gpu_plan_image(const kvcc_gpu_plan *pl);
/* Enqueue score, select and compaction on `stream` (a CUstream; NULL: the legacy default
** stream). cache->K/V/pos/len/state and obs->Q/lse/qpos are DEVICE pointers (layout as on the
** CPU); args->scores, when set, a device [layers][kv_heads][capacity] buffer; args->params host
** values (copied into the launch). Allocates nothing, never synchronizes, makes no decision
** from device data: it can be captured in a CUDA graph. */
KVCC_API int kvcc_gpu_compress(kvcc_gpu_plan *pl, const kvcc_cache *cache, const kvcc_obs *obs,
                               const kvcc_args *args, void *stream);
/* The GPU side of kvcc_plan_set_weight: the same checks (name, shape against the plan's layout,
** finite values; the same messages), then one host-to-device copy into the plan's weight buffer
** (synchronous, at set time: compress and decode calls upload nothing). Changing a weight never
** recompiles. kvcc_gpu_compress / kvcc_gpu_compress_batch fail with KVCC_EINVAL naming the
** declaration while a declared weight was never given. Not thread-safe against a call in flight
** on the same plan (the copy may race a running kernel's reads: synchronize first). */
KVCC_API int kvcc_gpu_plan_set_weight(kvcc_gpu_plan *pl, const char *name, const float *data, int ndim,
                                      const int64_t *shape);
/* Synchronize the context and read the device error word of the plan's launches (and clear it):
** 0, or KVCC_EINVAL with the reason (bad pooling size, bad select arguments, unequal lengths, a
** bad segment size / start or shift offset). */
KVCC_API int kvcc_gpu_plan_check(kvcc_gpu_plan *pl);

/* --- GPU: batched and paged caches (issue 14; doc/gpu.md) ---------------------------------
** The layouts of the CPU batch API on the device: (sequence, layer, head) blocks in one grid,
** compaction in place through the page tables, the freed pages written on the device. All
** pointers are DEVICE pointers; the per-sequence arrays are stacked (sequence-major). A batch
** is checked on the device (kv_paged, before anything else runs): an id outside the pool, a
** page twice in one call or a length above its table's capacity makes every kernel of the call
** return untouched, and kvcc_gpu_plan_check then gives KVCC_EINVAL. No allocation, no
** synchronization, no decision from device data: capturable in a CUDA graph. */
typedef struct kvcc_gpu_batch {
	int nseq;                  /* 1..max_seqs of the plan */
	void *K, *V;               /* paged: the pools (or NULL with Kl/Vl); contiguous: the caches,
	                              sequence s at K + s*stride_seq elements */
	void *const *Kl;           /* paged: device array [layers] of per-layer pool bases, or NULL */
	void *const *Vl;
	int64_t stride_seq;        /* batched contiguous: elements between sequences */
	int32_t *len;              /* [nseq][layers][kv_heads] */
	int32_t *pos;              /* [nseq][layers][kv_heads][capacity] */
	float *state;              /* [nseq][nstate][layers][kv_heads][capacity] or NULL */
	int nobs;                  /* observation queries (one count for the batch) */
	const void *Q;             /* [nseq][layers][kv_heads][group][nobs][head_dim] */
	const float *lse;          /* [nseq][layers][kv_heads][group][nobs] or NULL */
	const int32_t *qpos;       /* [nseq][nobs] or NULL */
	const int32_t *table;      /* paged, as kvcc_batch: dense [ntab][max_pages] */
	const int32_t *indptr;     /* or CSR */
	const int32_t *indices;
	int32_t *last_page_len;
	int32_t *freed;            /* paged, out or NULL: [nseq][max_pages] (shared tables) or
	                              [nseq][layers*kv_heads*max_pages] (per head), as kvcc_seq.freed */
	int32_t *nfreed;           /* paged, out or NULL: [nseq] */
	/* decode (issue 14) */
	int32_t *step;             /* [nseq][layers] in/out or NULL: each sequence's x.step per layer, as
	                              kvcc_seq.step (kvcc_gpu_decode_batch adds one on the device);
	                              NULL: the plan's counter (kvcc_gpu_plan_set_step) */
} kvcc_gpu_batch;

/* A GPU plan for up to max_seqs sequences; pg NULL: batched contiguous caches, else paged (as
** kvcc_plan_create_batch). kvcc_gpu_plan_create is this with pg NULL and max_seqs 1. */
KVCC_API int kvcc_gpu_plan_create_batch(kvcc_policy *p, const kvcc_layout *lay, const kvcc_paging *pg,
                                        int max_seqs, int max_obs, int device_ordinal, kvcc_gpu_plan **out);
/* kvcc_gpu_compress on every sequence of the batch (args->scores, when set: [nseq][layers][kv_heads]
** [capacity] on the device). */
KVCC_API int kvcc_gpu_compress_batch(kvcc_gpu_plan *pl, const kvcc_gpu_batch *b, const kvcc_args *args,
                                     void *stream);
/* Append one row per (sequence, head) of `layer`: k, v [nseq][kv_heads][head_dim] (storage dtype),
** pos [nseq], all on the device; the state gets its initial values, len grows by one. */
KVCC_API int kvcc_gpu_append_batch(kvcc_gpu_plan *pl, const kvcc_gpu_batch *b, int layer, const void *k,
                                   const void *v, const int32_t *pos, void *stream);

/* --- GPU: decode attention (issue 14; doc/gpu.md "Decode") ---------------------------------
** One decode step of one layer on the device, as kvcc_decode_layer / kvcc_decode_batch on the CPU:
** query heads h*G..h*G+G-1 attend over the tokens (sequence, layer, h) holds (heads of different
** lengths, every layout of the plan), then the policy's observe hook updates the state. q: DEVICE
** [nseq][kv_heads][group][head_dim] in the storage dtype (the CPU call rounds its f32 q to it
** first); out: DEVICE [nseq][kv_heads][group][head_dim] f32. Paged: the tables are checked on the
** device first (a bad table: nothing runs, kvcc_gpu_plan_check gives KVCC_EINVAL). x.step: the
** batch's per-sequence step (incremented on the device), else the plan's counter (host; a
** captured graph replays the value it was captured with). Split-KV over the plan's splits;
** allocates nothing, never synchronizes: capturable. kvcc_gpu_decode: one sequence on a
** contiguous plan (cache->* device pointers). */
KVCC_API int kvcc_gpu_decode_batch(kvcc_gpu_plan *pl, const kvcc_gpu_batch *b, int layer, const void *q, float *out,
                                   void *stream);
KVCC_API int kvcc_gpu_decode(kvcc_gpu_plan *pl, const kvcc_cache *cache, int layer, const void *q, float *out,
                             void *stream);
/* x.step of the next kvcc_gpu_decode(_batch) of every layer (sequences without kvcc_gpu_batch.step). */
KVCC_API int kvcc_gpu_plan_set_step(kvcc_gpu_plan *pl, int step);

/* Issue 12 (session 10): merge nearest's f32 similarity on AMX (bf16x3 products, doc/merge-f32-amx.md)
** since the plan was created, summed over its threads: st[0] the evicted rows whose target it found,
** st[1] those of them re-checked by the exact f32 path (a near tie, or a row not finite or of tiny
** norm), st[2] the heads that took the exact path whole (a kept row not finite or of norm 0). All 0
** for a policy without it (KVCC_MERGE_AMX=0, not f32, no AMX, not the cosine of the keys). */
KVCC_API int kvcc_plan_mstats(const kvcc_plan *pl, int64_t st[3]);

#ifdef __cplusplus
}
#endif
#endif
