/*
** GPU artifacts and the CUDA path of libkvcc (include/kvcc.h, GPU section):
** compile (kvcc_compile_so_gpu: codegen/ptx → blob → object → kx_compile_ex),
** the blob format (kvcc_gpu_header …), plan/compress on the driver (runtime/cuda.c).
*/
#ifndef KVCC_RUNTIME_GPU_H
#define KVCC_RUNTIME_GPU_H

#include <stddef.h>
#include <stdio.h>
#include "compiler/ir.h"
#include "codegen/ptx/ptx.h"
#include "runtime/cuda.h"
#include "kvcc.h"


/* The GPU part of a cache key: normalized targets and the NVRTC that compiles them. */
struct KrGpu {
	char archs[64];            /* "sm_80,sm_90": sorted, no duplicates */
	int nvrtc_major, nvrtc_minor;
	/* builds the artifact (kg_build; a pointer so that cache.o links without gpu.o) */
	int (*build)(const KiFn *f, const kvcc_spec *spec, const struct KrGpu *g, const char *out_so, int verbose,
	             double *ms, KcErr *e);
};
typedef struct KrGpu KrGpu;

/* rt.c: set kvcc_last_error's message; returns code. */
KC_FUNC int kr_seterr(int code, const char *msg);
/* rt.c: load a .lua / .kir policy, verified and optimized (NULL with e set); copy a file
** through a temporary and rename. */
KC_FUNC KiFn *kr_loadpolicy(const char *path, KcErr *e);
KC_FUNC int kr_copyfile(const char *from, const char *to);
/* Parse and normalize "sm_90,sm_80" / "all" and find NVRTC: 0, or -1 with e set. */
KC_FUNC int kg_gpukey(const char *archs, KrGpu *g, const KiFn *f, KcErr *e);
/* Build policy.so for (f, spec) with the GPU kernels of g embedded. */
KC_FUNC int kg_build(const KiFn *f, const kvcc_spec *spec, const KrGpu *g, const char *out_so, int verbose,
                       double *ms, KcErr *e);
/* Serialize / view the embedded blob (kvcc_gpu_header …). kg_blob: malloc'd, *n bytes.
** kg_view: checks every bound; the view's PTX/CUBIN point into the blob (do not kp_cuda_free). */
KC_FUNC void *kg_blob(const KpCudaOut *o, const kvcc_spec *spec, uint64_t kir_hash, const char *archs, size_t *n);
KC_FUNC int kg_view(const void *blob, size_t avail, KpCudaOut *view, const kvcc_gpu_header **hdr, char *why,
                      size_t wn);
/* The blob of an open policy (its policy.so's KVCC_GPU_SYMBOL), or NULL with why. */
KC_FUNC const void *kg_find(const kvcc_policy *p, void **dl, char *why, size_t wn);
/* Print registers / shared memory / spills per kernel and arch. */
KC_FUNC void kg_print(const KpCudaOut *v, const kvcc_gpu_header *h, FILE *fp);
/* The by-value kernel arguments kvcc_gpu_compress launches with (checked), for benchmarks. */
KC_FUNC int kg_args(kvcc_gpu_plan *pl, const kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args,
                      KvgArgs *out);
/* The module a plan runs (tests: decode steps). */
KC_FUNC KvCuda *kg_plan_module(kvcc_gpu_plan *pl);

#endif
