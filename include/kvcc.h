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
#define KVCC_ABI 1

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
/* Compile a policy.lua (or .kir) in process for `spec`. */
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
} kvcc_cache;

/* Observation queries: Q [layers][kv_heads][group][nobs][head_dim] in the storage dtype,
** contiguous; optional lse [layers][kv_heads][group][nobs]; optional qpos [nobs]
** (default: len-nobs .. len-1 per head). */
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
** workspaces, starts the thread pool. */
KVCC_API int kvcc_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int threads,
                              kvcc_plan **out);
KVCC_API void kvcc_plan_destroy(kvcc_plan *pl);
/* Score, select, compact in place (K, V, pos, len). */
KVCC_API int kvcc_compress(kvcc_plan *pl, kvcc_cache *cache, const kvcc_obs *obs, const kvcc_args *args);

#ifdef __cplusplus
}
#endif
#endif
