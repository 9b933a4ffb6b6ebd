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
#include <stdio.h>
#include <stdint.h>
#include "compiler/ir.h"
#include "compiler/plan.h"

#include "runtime/artifact.h"

/* A point of the GPU config space (doc/tune.md; kvcc tune --gpu-arch): threads per block (KV_NT),
** decode lanes per token (tokens per warp = 32 / lpt), the score tile's starting query rows and
** tokens (KV_SQ, KV_SK: each arch then shrinks them to its shared-memory budget) and the
** compaction staging rows (KV_TT: at most the arch's budget). 0 = the default of the field. The
** string form: "nt256,lpt8,sq64,sk64,tt16" (any subset; "" or "default": all defaults).
** st: the score kernels' K tile buffers (KV_ST, pipeline stages of cp.async copies; 1 = one
** buffer, synchronous staging; an arch lowers it before the tile when the budget is short). */
typedef struct KpGpuCfg {
	int nt, lpt, sq, sk, tt;
	/* session 8 (wt-stage8) */
	int st;
} KpGpuCfg;
KC_FUNC int kp_gcfgparse(const char *s, KpGpuCfg *c, char *why, size_t wn);
/* the canonical string of c with its defaults resolved for (head_dim, group): "nt256,lpt32,sq256,sk64"
** (",tt16" when the staging rows are capped; the default takes the arch's budget) */
KC_FUNC void kp_gcfgstr(const KpGpuCfg *c, int head_dim, int group, char *buf, size_t n);
/* (",st2" / ",st3" at the end when the K tile buffers are more than one) */
/* decode lanes per token by default: about 4 channels per lane (kernels.c) */
KC_FUNC int kp_cuda_lpt(int head_dim);

typedef struct KpCudaOpts {
	int dtype;               /* KVCC_F32, KVCC_F16, KVCC_BF16 */
	int head_dim, group;
	const char *archs;       /* "sm_80,sm_90" (NULL: that); "all": every arch NVRTC supports */
	int nthreads;            /* threads per block (multiple of 32); 0: 256 */
	int gen_only;            /* generate the CUDA C only, no NVRTC */
	const KiPlan *plan;      /* the driver's plan of f (NULL: the generator checks the mapping itself) */
	int verbose;
	const KpGpuCfg *cfg;     /* a GPU config point (NULL: the default; cfg->nt wins over nthreads) */
} KpCudaOpts;

/* Generate the CUDA C for `f` (after the default passes) and, unless
** o->gen_only, compile it with NVRTC for each arch. Unsupported constructs
** are errors positioned at the policy line. -1 with e set on failure; out
** is then freed. */
KC_FUNC int kp_compile_cuda(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KiErr *e);
KC_FUNC void kp_cuda_free(KpCudaOut *out);
/* kp_compile_cuda in two halves (issue 13, compile time): start generates the CUDA C and starts
** NVRTC for every arch on worker threads ($KVCC_NVRTC_THREADS; *job NULL with o->gen_only);
** finish waits for them and fills `out` as kp_compile_cuda does (cpu: each arch's NVRTC CPU ms,
** or NULL). Every started job must be finished, also when the caller fails meanwhile. */
typedef struct KpCudaJob KpCudaJob;
KC_FUNC int kp_cuda_start(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KpCudaJob **job, KiErr *e);
KC_FUNC int kp_cuda_finish(KpCudaJob *job, double *cpu, KiErr *e);
/* Dynamic shared bytes of the select kernel for `tile` staging rows. */
KC_FUNC unsigned kp_cuda_dsmem(int dtype, int head_dim, int tile);
/* Staging rows for an sm: per-target shared-memory budget. */
KC_FUNC int kp_cuda_tile(int sm, int dtype, int head_dim, int nthreads);
/* Score kernels: Q·Kᵀ on tensor cores (mma.m16n8k16) for f16/bf16 with head_dim % 16 == 0,
** else f32 FMA; dynamic shared bytes of a tiled score kernel; tile sizes for an sm. */
KC_FUNC int kp_cuda_mma(int dtype, int head_dim);
KC_FUNC unsigned kp_cuda_score_dsmem(int dtype, int head_dim, int group, int sq, int sk);
KC_FUNC void kp_cuda_score_tile(int sm, int dtype, int head_dim, int group, int *sq, int *sk);
/* the same from starting sizes q0 x k0 (0: the default's) */
KC_FUNC void kp_cuda_score_tile_from(int sm, int dtype, int head_dim, int group, int q0, int k0, int *sq, int *sk);
/* with st0 K tile buffers (0: 1): the bytes, and each arch's sizes; the query rows shrink first
** (down to 64 or q0), then the buffers (down to 1), then the rows (to 16), then the tokens (to 8) */
KC_FUNC unsigned kp_cuda_score_dsmem_st(int dtype, int head_dim, int group, int sq, int sk, int st);
KC_FUNC void kp_cuda_score_tile_st(int sm, int dtype, int head_dim, int group, int q0, int k0, int st0, int *sq, int *sk,
                                   int *st);

/* blob.c: the GPU part of an artifact. The targets of a compile: "sm_80,sm_90" normalized
** (sorted, no duplicates) and the NVRTC that compiles them (both part of the cache key). */
typedef struct KpGpu {
	char archs[64];
	int nvrtc_major, nvrtc_minor;
} KpGpu;
/* Parse and normalize "sm_90,sm_80" / "all", find NVRTC: 0, or -1 with e set. */
KC_FUNC int kp_gpu_targets(const char *archs, KpGpu *g, const KiFn *f, KiErr *e);
/* The GPU kernels of (f, p, spec) for g's targets as the blob KVCC_GPU_SYMBOL in the x86-64
** object `obj` (the driver links it beside the CPU kernels); verbose: registers / shared memory /
** spills per kernel and arch on stderr. */
KC_FUNC int kp_gpu_emit(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KpGpu *g, const char *obj,
                        int verbose, double *ms, KiErr *e);
/* the same with a GPU config point (NULL: the default); its canonical string is recorded in the
** blob's header (kvcc_gpu_header.config) */
KC_FUNC int kp_gpu_emit_cfg(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KpGpu *g, const KpGpuCfg *c,
                            const char *obj, int verbose, double *ms, KiErr *e);
/* kp_gpu_emit_cfg in two halves (issue 13, compile time): start generates the CUDA C and starts
** NVRTC on worker threads; finish waits for them and writes obj (obj NULL: only waits and frees,
** for a caller that failed meanwhile; returns -1). Between them the caller may run other work
** (the driver: the x86 kernels); f, p, spec's policy and g must stay alive until finish. */
typedef struct KpGpuJob KpGpuJob;
KC_FUNC int kp_gpu_start(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KpGpu *g, const KpGpuCfg *c,
                         KpGpuJob **job, KiErr *e);
KC_FUNC int kp_gpu_finish(KpGpuJob *job, const char *obj, int verbose, double *ms, KiErr *e);
/* Serialize the blob (malloc'd, *n bytes) / print what it holds. */
KC_FUNC void *kp_gpu_blob(const KpCudaOut *o, const kvcc_spec *spec, uint64_t kir_hash, const char *archs, const char *cfg,
                          size_t *n);
KC_FUNC void kp_gpu_print(const KpCudaOut *v, const kvcc_gpu_header *h, FILE *fp);

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
/* ptx_only: NVRTC to PTX for compute_SM (no CUBIN, no ptxas run) */
KC_FUNC int kp_nvrtc_compile_to(const char *src, const char *name, int sm, int ptx_only, const char **extra,
                                int nextra, KpNvrtcRes *r, char *why, size_t whylen);
/* the toolkit's ptxas of NVRTC's own release (nvrtc.c): found once; KVCC_PTXAS=off: never */
KC_FUNC int kp_ptxas_available(void);
/* PTX -> CUBIN for sm_SM with -v (r->cubin, r->log); *cpu_ms: the child's CPU time */
KC_FUNC int kp_ptxas(const char *ptx, size_t nptx, int sm, KpNvrtcRes *r, double *cpu_ms, char *why, size_t whylen);
/* PTX modules a and b (NUL-terminated) as one (*out, malloc'd; the kernels of a, then b's):
** 0, or -1 when their headers differ or b declares a name of a's otherwise (nvrtc.c) */
KC_FUNC int kp_ptx_join(const char *a, const char *b, char **out, size_t *nout);

#endif
