/*
** x86 backend: LLVM 19 C API → object in memory → cc -shared → policy.so.
** Generates the specialized kernels of the plan (Q·Kᵀ tile micro-kernel,
** storage → f32 conversion) and the artifact descriptor (include/kvcc.h).
*/
#ifndef KVCC_X86_H
#define KVCC_X86_H

#include "compiler/ir.h"
#include "kvcc.h"
#include "runtime/artifact.h"

/* Compile `f` (already through the passes) for `spec` into the shared object
** `out_so`. `compile_ms` (optional) receives LLVM + link time in ms. */
KC_FUNC int kx_compile(const KiFn *f, const kvcc_spec *spec, const char *out_so, int verbose,
                       double *compile_ms, KcErr *e);
/* kx_compile, linking `nextra` (<= 8) more object files into the shared object (the GPU
** backend's kvcc_artifact_gpu object, runtime/gpu.c). */
KC_FUNC int kx_compile_ex(const KiFn *f, const kvcc_spec *spec, const char *out_so, int verbose,
                          double *compile_ms, const char *const *extra_objs, int nextra, KcErr *e);
/* Codegen options that are part of every cache key (tiles, register blocks, pipeline). */
#define KX_OPTIONS "O2,qk4x2,dt16,tile64"
/* The complete cache key (DESIGN §6): every component, so a miss can say which differs. */
/* The compiler build (x86.o's compile time): artifacts of another build are misses/refused,
** since the generated code may differ without a version bump. */
#define KX_BUILD __DATE__ " " __TIME__
typedef struct KxKey {
	const char *kir, *version, *features, *options, *build;
	char llvm[16], triple[96];
	int dtype, head_dim, group, target, vec_width, abi;
} KxKey;
KC_FUNC void kx_keyfill(KxKey *k, const char *kir, const char *version, const char *features, int dtype,
                        int head_dim, int group, int target, int vec_width);
KC_FUNC uint64_t kx_keyhash(const KxKey *k);
/* "kir=… version=… llvm=… triple=… features=… dtype=… …" (one space-separated line) */
KC_FUNC void kx_keydesc(const KxKey *k, char *buf, size_t n);
/* The key `f` compiles to for `spec` on this host; *kir and *host are malloc'd (free both).
** -1 when the target is not available here or out of memory. */
KC_FUNC int kx_speckey(const KiFn *f, const kvcc_spec *spec, KxKey *k, char **kir, char **host);
/* The cache key of an artifact from its descriptor fields (DESIGN §6). */
KC_FUNC uint64_t kx_key(const char *kir, const char *version, const char *features, int dtype,
                        int head_dim, int group, int target, int vec_width);
/* Normalized host features ("+avx2,+fma,..." sorted, enabled ones only); malloc'd. */
KC_FUNC char *kx_hostfeatures(void);
/* Vector width the kernels use for this spec on this host, or 0 (target not available). */
KC_FUNC int kx_vecwidth(const kvcc_spec *spec, const char *features);
/* bf16 storage + native avx512bf16 + 16 lanes: attn_score's Q·K uses vdpbf16ps */
KC_FUNC int kx_bf16dot(const kvcc_spec *spec, const char *features, int vec_width);
KC_FUNC const char *kx_targetname(int target);
KC_FUNC int kx_targetbyname(const char *s);

#endif
