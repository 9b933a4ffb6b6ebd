/*
** kvcc.h — the public C API of libkvcc: load a compiled policy (policy.so, or a
** policy.lua compiled in process), describe a KV cache, compress it.
**
** Conventions: opaque handles, `kvcc_` prefix; every function returns 0 or a
** negative KVCC_E* code and kvcc_last_error() (thread-local) says why. The
** library never exits or aborts on user input and never writes outside the
** buffers the caller describes.
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
};

enum { KVCC_F32 = 0, KVCC_F16 = 1, KVCC_BF16 = 2 };              /* storage dtypes */
enum { KVCC_TARGET_NATIVE = 0, KVCC_TARGET_V3 = 1, KVCC_TARGET_V4 = 2, KVCC_TARGET_SCALAR = 3 };

/* --- artifacts ---------------------------------------------------------------------- */
/* A policy.so exports one symbol, KVCC_DESC_SYMBOL, pointing at this descriptor. */
#define KVCC_DESC_SYMBOL "kvcc_artifact"
#define KVCC_MAGIC 0x4B5643435F415254ull   /* "KVCC_ART" */
#define KVCC_ABI 7

/* One instance's inputs to the generated token_map loops (every field 8 bytes: the generated
** code reads field k at byte 8k). vals[i] = instruction i's f32 values, row-major over
** (group, token, chan) ([token]: t, [group, token]: g*n + t, [token, chan]: t*d + c,
** scalar: [0]); K / V = the instance's rows in storage dtype, token stride ldk elements;
** pos NULL: pos = t; state = state 0 of the instance, state s at state + s*sstride (NULL: the
** initial values). */
typedef struct kvcc_tmap_ctx {
	float *const *vals;
	const double *par;
	const void *K, *V;
	const int32_t *pos;
	const float *state;
	int64_t n, ldk, sstride, layer, head, layers, heads, step, obs;
} kvcc_tmap_ctx;

typedef struct kvcc_artifact {
	uint64_t magic;            /* KVCC_MAGIC */
	uint32_t abi;              /* KVCC_ABI */
	uint32_t size;             /* sizeof(kvcc_artifact) */
	const char *version;       /* kvcc version that compiled it */
	uint64_t key;              /* cache key (DESIGN §6) */
	uint64_t kir_hash;         /* FNV-1a of the KIR text below */
	const char *name;          /* policy name */
	const char *params;        /* "name=default,..." */
	const char *state;         /* "name=init,..." */
	int32_t dtype, head_dim, group, target;
	int32_t vec_width;         /* f32 lanes the kernels use (16, 8 or 1) */
	int32_t reserved;
	const char *features;      /* normalized CPU features it was compiled for */
	const char *kir;           /* the canonical KIR text */
	/* CPU entry points (C ABI; see runtime/rt.h) */
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
	** transposed f32 copy Kp[d][64] of the tile */
	void (*qkt)(const void *K, int64_t ldk, int64_t nt, const float *Q, int64_t nq, float *S, float *Kp);
	/* online max m[q] and sum l[q] of exp(a*S[q][j]) over j < vj[q] */
	void (*sstat)(const float *S, int64_t nq, const int32_t *vj, float a, float *m, float *l);
	/* acc[j] += sum_q exp(a*S[q][j] - mp[q]) over j < vj[q] (64 columns) */
	void (*sacc)(const float *S, int64_t nq, const int32_t *vj, float a, const float *mp, float *acc);
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
	** instance (context below); stores the loop's outputs (plan tout) into c->vals */
	void (*tmap)(int64_t gid, const struct kvcc_tmap_ctx *c);
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
} kvcc_artifact;

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

/* Load policy.so (validated: magic, ABI, version, cache key, host CPU features). */
KVCC_API int kvcc_open(const char *path, kvcc_policy **out);
/* Compile a policy.lua (or .kir) in process for `spec`. Both compile functions go through the
** compile cache $KVCC_CACHE_DIR (default ~/.cache/kvcc; "off" disables it): a hit loads in well
** under a millisecond; a missing, truncated, corrupted or mismatched artifact is rebuilt. */
KVCC_API int kvcc_compile_file(const char *path, const kvcc_spec *spec, kvcc_policy **out);
/* Compile to a shared object (what `kvcc compile` does). */
KVCC_API int kvcc_compile_so(const char *path, const kvcc_spec *spec, const char *out_so, int verbose);
KVCC_API void kvcc_close(kvcc_policy *p);

KVCC_API const char *kvcc_policy_name(const kvcc_policy *p);
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
** kvcc_compress, kvcc_append and kvcc_decode_layer allocate nothing. */
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

/* --- GPU (CUDA) ------------------------------------------------------------------------------
** `kvcc compile … --gpu-arch sm_80,sm_90` embeds, beside the CPU descriptor, a second exported
** symbol KVCC_GPU_SYMBOL: a read-only blob that starts with kvcc_gpu_header, followed by
** nkern kvcc_gpu_kernel and nimg kvcc_gpu_image records and the PTX/CUBIN bytes they point
** at (offsets from the header). libkvcc drives the CUDA driver through dlopen("libcuda.so.1")
** (no link-time dependency); without one every GPU call fails with KVCC_EUNSUPPORTED and
** "CUDA driver not found: …". See doc/gpu.md. */
#define KVCC_GPU_SYMBOL "kvcc_artifact_gpu"
#define KVCC_GPU_MAGIC 0x4B5643435F475055ull   /* "KVCC_GPU" */
#define KVCC_GPU_ABI 1
enum { KVCC_EDEVICE = -8 };                 /* a CUDA driver call or launch failed (message says which) */

typedef struct kvcc_gpu_header {
	uint64_t magic;            /* KVCC_GPU_MAGIC */
	uint32_t abi;              /* KVCC_GPU_ABI */
	uint32_t size;             /* bytes of the whole blob */
	uint64_t kir_hash;         /* = kvcc_artifact.kir_hash of the same policy.so */
	int32_t dtype, head_dim, group;
	int32_t nthreads;          /* block size of every kernel; grid = layers * kv_heads (decode: x splits) */
	int32_t nkern, nimg;
	int32_t has_compress, has_decode;
	int32_t nvrtc_major, nvrtc_minor;
	int64_t ws_coef[4];        /* workspace floats per (layer, head) = c0 + c1*N + c2*O + c3*N*O */
	char archs[64];            /* "sm_80,sm_90" */
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

/* kvcc_compile_so plus the GPU kernels for `gpu_archs` ("sm_80,sm_90"; sm_80 or newer, as NVRTC
** supports them) embedded as KVCC_GPU_SYMBOL. NVRTC is loaded with dlopen (KVCC_NVRTC overrides).
** Cached like kvcc_compile_so; the key adds the targets and the NVRTC version. verbose: also
** registers / shared memory / spills per kernel and arch on stderr. */
KVCC_API int kvcc_compile_so_gpu(const char *path, const kvcc_spec *spec, const char *gpu_archs,
                                 const char *out_so, int verbose);

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
/* Synchronize the context and read the device error word of the plan's launches (and clear it):
** 0, or KVCC_EINVAL with the reason (bad pooling size, bad select arguments, unequal lengths). */
KVCC_API int kvcc_gpu_plan_check(kvcc_gpu_plan *pl);

#ifdef __cplusplus
}
#endif
#endif
