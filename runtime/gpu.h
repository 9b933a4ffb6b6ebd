/*
** The GPU path of libkvcc_rt (include/kvcc.h, GPU section): the GPU blob of a policy.so
** (runtime/artifact.h, kvcc_gpu_header …) read back with every bound checked, and the plan /
** launch internals that tests and benchmarks reach (runtime/cuda.c drives the device).
*/
#ifndef KVCC_RUNTIME_GPU_H
#define KVCC_RUNTIME_GPU_H

#include <stddef.h>
#include <stdio.h>
#include "kvcc.h"
#include "runtime/artifact.h"
#include "runtime/cuda.h"

/* View an embedded blob: checks every bound; the view's PTX/CUBIN point into the blob (artifact.c;
** linked into both libraries). 0, or -1 with why. */
KC_FUNC int kr_gpu_view(const void *blob, size_t avail, KpCudaOut *view, const kvcc_gpu_header **hdr, char *why,
                        size_t wn);
/* The blob of an open policy (its policy.so's KVCC_GPU_SYMBOL), or NULL with why. */
KC_FUNC const void *kr_gpu_find(const kvcc_policy *p, void **dl, char *why, size_t wn);
/* The by-value kernel arguments kvcc_gpu_compress launches with (checked), for benchmarks. */
KC_FUNC int kr_gpu_args(kvcc_gpu_plan *pl, const kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args,
                        KvgArgs *out);
/* What a GPU batch call needs from its plan (tests fill one with host buffers for the CPU
** emulation of the kernels): kr_gpu_batch_args checks a batch and fills the launch's KvgArgs. */
typedef struct KrGpuShape {
	const KpCudaOut *view;
	kvcc_layout lay;
	kvcc_paging pg;
	int paged, max_seqs, max_obs, splits, npar, nst;
	double par[KVG_MAXPAR];
	void *ws, *scores, *err, *plen, *pmap;
	const float *wts;       /* the policy's packed weights (device), or NULL */
	int nout;               /* their out axis' size (KvgArgs.nout), 0: none */
} KrGpuShape;
KC_FUNC int kr_gpu_batch_args(const KrGpuShape *sh, const kvcc_gpu_batch *b, const kvcc_args *args, KvgArgs *out);
/* The plan's device weights (kvcc_gpu_plan_set_weight; tests: decode steps), or NULL. */
KC_FUNC const float *kr_gpu_weights(const kvcc_gpu_plan *pl);
/* The arguments of a one-layer decode step (kvcc_gpu_decode_batch; tests: the emulation):
** the batch checked as kr_gpu_batch_args does, q / out / layer / step (the plan's counter,
** used when b->step is NULL). */
KC_FUNC int kr_gpu_decode_args(const KrGpuShape *sh, const kvcc_gpu_batch *b, int layer, const void *q, float *out,
                               int step, KvgArgs *a);
/* The module a plan runs (tests: decode steps). */
KC_FUNC KrCuda *kr_gpu_module(kvcc_gpu_plan *pl);

#endif
