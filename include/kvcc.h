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
** features its kernels use against this host's; the compiler's build and version do not matter). */
KVCC_API int kvcc_open(const char *path, kvcc_policy **out);
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
/* Synchronize the context and read the device error word of the plan's launches (and clear it):
** 0, or KVCC_EINVAL with the reason (bad pooling size, bad select arguments, unequal lengths). */
KVCC_API int kvcc_gpu_plan_check(kvcc_gpu_plan *pl);

#ifdef __cplusplus
}
#endif
#endif
