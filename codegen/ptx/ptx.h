/*
** GPU backend (DESIGN §2, §5): KIR → CUDA C → NVRTC → PTX and CUBIN per target.
**
** Every generated kernel takes ONE by-value parameter, the KvgArgs struct
** below; its C text is printed into the generated source from the same
** X-macro, so host and device layouts cannot drift. The struct uses only
** types whose size and alignment agree between x86-64 and nvptx64.
**
** Launch protocol (runtime/cuda.c and tests/emu/emu_diff.c both follow it):
**   compress:  the KVG_SCORE kernels in phase order, then KVG_SELGRP (select scope
**              layer / model: grid L / 1, phase says which), then KVG_SELECT
**   decode:    KVG_DECODE on grid (L*H, a.splits), then KVG_COMBINE (one step:
**              split-KV attention partials; merge, output, observe hook)
**   grid = L*H blocks (one per (layer, head) instance) unless said otherwise, block = nthreads,
**   dynamic shared memory = the image's dsmem[kernel] (the runtime opts in
**   with CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES above 48 KB).
**   Workspace: L*H*kvg_ws_floats(out, N, O, splits) floats, any content; the
**   decode partials are its last splits*kvg_dec_part(...) floats per instance.
*/
#ifndef KVCC_PTX_H
#define KVCC_PTX_H

#include <stddef.h>
#include <stdint.h>
#include "compiler/ir.h"

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

typedef struct KpCudaOpts {
	int dtype;               /* KI_F32, KI_F16, KI_BF16 */
	int head_dim, group;
	const char *archs;       /* "sm_80,sm_90" (NULL: that); "all": every arch NVRTC supports */
	int nthreads;            /* threads per block (multiple of 32); 0: 256 */
	int gen_only;            /* generate the CUDA C only, no NVRTC */
	int verbose;
} KpCudaOpts;

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

/* Generate the CUDA C for `f` (after the default passes) and, unless
** o->gen_only, compile it with NVRTC for each arch. Unsupported constructs
** are errors positioned at the policy line. -1 with e set on failure; out
** is then freed. */
KC_FUNC int kp_compile_cuda(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KcErr *e);
KC_FUNC void kp_cuda_free(KpCudaOut *out);
/* Dynamic shared bytes of the select kernel for `tile` staging rows. */
KC_FUNC unsigned kp_cuda_dsmem(int dtype, int head_dim, int tile);
/* Staging rows for an sm: per-target shared-memory budget. */
KC_FUNC int kp_cuda_tile(int sm, int dtype, int head_dim, int nthreads);
/* Score kernels: Q·Kᵀ on tensor cores (mma.m16n8k16) for f16/bf16 with head_dim % 16 == 0,
** else f32 FMA; dynamic shared bytes of a tiled score kernel; tile sizes for an sm. */
KC_FUNC int kp_cuda_mma(int dtype, int head_dim);
KC_FUNC unsigned kp_cuda_score_dsmem(int dtype, int head_dim, int group, int sq, int sk);
KC_FUNC void kp_cuda_score_tile(int sm, int dtype, int head_dim, int group, int *sq, int *sk);

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

/* nvrtc.c: NVRTC loaded with dlopen ("libnvrtc.so", then the CUDA default
** location). 0, or -1 with a message saying why it is absent. */
typedef struct KpNvrtcRes {
	int ok;
	char *ptx; size_t nptx;
	void *cubin; size_t ncubin;
	char *log;
} KpNvrtcRes;
KC_FUNC int kp_nvrtc_available(int *major, int *minor, char *why, size_t whylen);
/* supported sm numbers (sorted); returns the count or -1 */
KC_FUNC int kp_nvrtc_archs(int *sm, int max);
KC_FUNC int kp_nvrtc_compile(const char *src, const char *name, int sm, const char **extra, int nextra,
                             KpNvrtcRes *r, char *why, size_t whylen);
KC_FUNC void kp_nvrtc_free(KpNvrtcRes *r);

#endif
