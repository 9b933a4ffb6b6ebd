/*
** kvcc_compiler.h — the public C API of libkvcc, the compiler library: compile a
** policy.lua (or .kir) in process, to a shared object or straight into an open policy.
** libkvcc links libkvcc_rt (include/kvcc.h), Lua and LLVM; errors are reported the
** runtime's way (negative KVCC_E* codes, kvcc_last_error() with "file:line:col: error: …").
*/
#ifndef KVCC_COMPILER_H
#define KVCC_COMPILER_H

#include "kvcc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Compile a policy.lua (or .kir) in process for `spec`. Both compile functions go through the
** compile cache $KVCC_CACHE_DIR (default ~/.cache/kvcc; "off" disables it): a hit loads in well
** under a millisecond; a missing, truncated, corrupted or mismatched artifact is rebuilt. */
KVCC_API int kvcc_compile_file(const char *path, const kvcc_spec *spec, kvcc_policy **out);
/* Compile to a shared object (what `kvcc compile` does). */
KVCC_API int kvcc_compile_so(const char *path, const kvcc_spec *spec, const char *out_so, int verbose);

/* kvcc_compile_so plus the GPU kernels for `gpu_archs` ("sm_80,sm_90"; sm_80 or newer, as NVRTC
** supports them) embedded in the policy.so. NVRTC is loaded with dlopen (KVCC_NVRTC overrides).
** Cached like kvcc_compile_so; the key adds the targets and the NVRTC version. verbose: also
** registers / shared memory / spills per kernel and arch on stderr. */
KVCC_API int kvcc_compile_so_gpu(const char *path, const kvcc_spec *spec, const char *gpu_archs,
                                 const char *out_so, int verbose);

/* What `kvcc check` does: load, verify, run the passes, plan, and check the specialization and
** (gpu_archs non-NULL) the GPU targets and the CUDA generator, without generating code: 0, or the
** error compile would report (KVCC_ECOMPILE with the policy position; KVCC_EUNSUPPORTED for GPU
** targets). */
KVCC_API int kvcc_check(const char *path, const kvcc_spec *spec, const char *gpu_archs);

#ifdef __cplusplus
}
#endif
#endif
