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
#include "kvcc.h"
#include "runtime/kc.h"

/* --- the CPU descriptor ---------------------------------------------------------------------- */
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
	X(double, par[KVG_MAXPAR])   /* runtime parameter values */

#define KVG_FIELD(t, n) t n;
typedef struct KvgArgs { KVG_ARGS_FIELDS(KVG_FIELD) } KvgArgs;
#undef KVG_FIELD

/* device error codes (the first one set wins) */
enum { KVG_EOK, KVG_EPOOL = 1, KVG_ESELECT = 2, KVG_EHMEAN = 3 };

enum { KVG_SCORE, KVG_SELECT, KVG_DECODE, KVG_COMBINE, KVG_SELGRP };

typedef struct KpCudaKernel {
	char name[32];
	int role;                /* KVG_SCORE / KVG_SELECT / KVG_DECODE / KVG_COMBINE / KVG_SELGRP */
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
