/*
** The CUDA path of libkvcc: the driver API loaded with dlopen("libcuda.so.1")
** (no link-time dependency; $KVCC_LIBCUDA overrides the name), modules from
** the GPU backend's images (codegen/ptx/ptx.h), launches on caller-provided
** device pointers and stream.
**
** plan/run split: kr_cuda_open (load the module: the CUBIN for the device's sm,
** else JIT of the best PTX, with the driver's JIT error/info logs in the
** message; shared-memory opt-in above 48 KB) and kr_cuda_ws_bytes happen once;
** kr_cuda_compress / kr_cuda_decode only enqueue cuLaunchKernel on the stream — no
** allocation, no synchronization, no host decisions — so they can be
** captured in a CUDA graph. Device-side errors (bad pooling size, bad select
** arguments, unequal head lengths for hmean) go to the caller's error word
** (KvgArgs.err), read whenever the caller synchronizes.
*/
#ifndef KVCC_RUNTIME_CUDA_H
#define KVCC_RUNTIME_CUDA_H

#include <stddef.h>
#include "runtime/artifact.h"

typedef struct KrCuda KrCuda;

/* Load the driver and cuInit. 0, or -1 with why = "CUDA driver not found: …". */
KC_FUNC int kr_cuda_driver_load(char *why, size_t whylen);
/* Driver version (e.g. 13000), or -1. */
KC_FUNC int kr_cuda_driver_version(void);
/* Open the kernels of `art` on device `dev` (primary context, made current). */
KC_FUNC int kr_cuda_open(const KpCudaOut *art, int dev, KrCuda **out, char *why, size_t whylen);
KC_FUNC void kr_cuda_close(KrCuda *m);
/* Which image was loaded: "cubin sm_90" or "ptx sm_80 (JIT)". */
KC_FUNC const char *kr_cuda_image(const KrCuda *m);
/* Workspace bytes for L*H instances of capacity N with O observation queries and
** `splits` split-KV decode blocks per instance (kvg_dec_splits). */
KC_FUNC size_t kr_cuda_ws_bytes(const KrCuda *m, int L, int H, int N, int O, int splits);
/* Enqueue on `stream` (CUstream, NULL: the default stream). a->ws_inst must be
** kvg_ws_floats(art, N, O, a->splits); all pointers in a are device pointers.
** kr_cuda_decode launches kv_decode on grid (B*L*H, or B*H for a one-layer step a->dlay, by
** a->splits), then kv_decode_comb; paged: kv_paged check before, clear after; a->steps: KVG_PG_STEP. */
KC_FUNC int kr_cuda_compress(KrCuda *m, const KvgArgs *a, void *stream, char *why, size_t whylen);
KC_FUNC int kr_cuda_decode(KrCuda *m, const KvgArgs *a, void *stream, char *why, size_t whylen);
/* paged and batched caches (issue 14): a->pt set makes kr_cuda_compress check the tables first
** (kv_paged, KVG_PG_CHECK) and write the freed pages last (KVG_PG_FREE); kr_cuda_append checks,
** appends one row per (sequence, head) of layer a->alayer from a->ak / a->av, and clears the
** check's marks. kr_cuda_has_paged: the module has kv_paged (kernels of KVCC_GPU_ABI 4 on). */
KC_FUNC int kr_cuda_append(KrCuda *m, const KvgArgs *a, void *stream, char *why, size_t whylen);
KC_FUNC int kr_cuda_has_paged(const KrCuda *m);

/* Memory helpers for tests and examples (not used by run). */
KC_FUNC void *kr_cuda_alloc(size_t bytes);
KC_FUNC void kr_cuda_free(void *dptr);
KC_FUNC int kr_cuda_put(void *dptr, const void *host, size_t bytes);
KC_FUNC int kr_cuda_get(void *host, const void *dptr, size_t bytes);
KC_FUNC int kr_cuda_sync(void);

/* Benchmarks only (they synchronize): one compress with an event pair around each
** kernel (ms[k] per art->kern index, default stream); a device-to-device copy (ms, or -1);
** device name and attr = { sm, multiprocessors, clock kHz, memory clock kHz, bus bits,
** opt-in shared bytes } (0 where the driver does not report one). */
KC_FUNC int kr_cuda_time_compress(KrCuda *m, const KvgArgs *a, double *ms, char *why, size_t whylen);
KC_FUNC double kr_cuda_time_d2d(void *dst, const void *src, size_t bytes);
KC_FUNC int kr_cuda_device_info(int dev, char *name, size_t nn, int attr[6]);

#endif
