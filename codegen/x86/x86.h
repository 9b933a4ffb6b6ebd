/*
** x86 backend: kernel plan → LLVM 19 C API → object file; the driver links it
** (with the GPU blob's object) into policy.so. Generates every kernel of the
** artifact (the fixed ones and the policy's expressions) and its descriptor
** (runtime/artifact.h). Files: see codegen/x86/gen.h.
*/
#ifndef KVCC_X86_H
#define KVCC_X86_H

#include "compiler/ir.h"
#include "kvcc.h"
#include "runtime/artifact.h"

struct KiPlan;

/*
** The tuning config of the x86 kernels (codegen/x86/cfg.c; DESIGN §8, doc/tune.md): every field
** 0 means the default, and the all-zero config reproduces the fixed kernels exactly. kx_cfgresolve
** turns a config into the concrete values for one spec on this host (clamped to what the target
** has); its string is part of the compile-cache key and is recorded in the artifact.
*/
#define KX_NBUCKET 4              /* decode split buckets by the longest head: <4K, <16K, <64K, more */
typedef struct KxConfig {
	int qb;                   /* score micro-kernel: query rows per register block (1..8) */
	int nv;                   /* score micro-kernel: token vectors per block (1, 2, 4; nv*W <= 64) */
	int width;                /* f32 lanes: 16 (512-bit) or 8 (256-bit); at most the target's */
	int nodot;                /* 1: bf16 Q·K by converted f32 FMAs, not vdpbf16ps (parsed: -1 dot1, 0 the
	                             host's default; resolved: 0 or 1) */
	int pf;                   /* software prefetch distance in tokens (decode K/V, qkt pack); 0 none
	                             (parsed: -1 pf0, 0 the host's default; resolved: >= 0) */
	int rbits;                /* radix select digit bits (8..12) */
	int dtasks[KX_NBUCKET];   /* decode split: tasks per thread (1..8), per bucket */
	int dmin[KX_NBUCKET];     /* decode split: smallest chunk in tokens (16..65536, multiple of 16) */
	int noamx;                /* 1: bf16 Q·K without AMX tiles (where kx_amx allows them) */
	int resolved;             /* set by kx_cfgresolve: nodot / pf 0 mean dot1 / pf0, not the host's default */
} KxConfig;
/* Parse "qb4,nv2,w8,dot0,pf64,rb10,dt1.2.2.4,dm256" ("name=value" also; "default" or "" the
** default; a single dt/dm value applies to every bucket): 0, or -1 with why. */
KC_FUNC int kx_cfgparse(const char *s, KxConfig *c, char *why, size_t wn);
/* The concrete config for spec on this host (`host`: kx_hostfeatures): 0, or -1 with why when a
** field is out of range (the caller falls back to the default). */
KC_FUNC int kx_cfgresolve(const KxConfig *in, const kvcc_spec *spec, const char *host, KxConfig *out, char *why,
                          size_t wn);
/* The canonical string of a resolved config ("qb6,nv4,w16,dot1,pf0,rb11,dt2.2.2.2,dm256.256.256.256"). */
KC_FUNC void kx_cfgstr(const KxConfig *c, char *buf, size_t n);
/* The specialization is one this backend and this host can compile: 0, or -1 with e set. */
KC_FUNC int kx_checkspec(const KiFn *f, const kvcc_spec *spec, KiErr *e);
/* Generate the kernels of `f` (through the passes) and its plan `p` for `spec`, with the
** artifact's descriptor, into the object file `obj`. `ms` (optional): IR + passes + codegen time. */
KC_FUNC int kx_emit(const KiFn *f, const struct KiPlan *p, const kvcc_spec *spec, const char *obj, int verbose,
                    double *ms, KiErr *e);
/* kx_emit with a config (NULL: the default); -1 with e set when the config is out of range. */
KC_FUNC int kx_emitcfg(const KiFn *f, const struct KiPlan *p, const kvcc_spec *spec, const KxConfig *cfg,
                       const char *obj, int verbose, double *ms, KiErr *e);
/* issue 15, per-bucket compress kernels (runtime/artifact.h KaHdr.nvar / cvar): which artifact an
** object exports. self 0: the main one (KVCC_DESC_SYMBOL) with the table nvar / cvar (variant k of
** bucket b: cvar[b] = k, 0 the main); self k > 0: variant k (KVCC_VAR_SYMBOL), no table. */
typedef struct KxVarTab {
	int self, nvar;
	int cvar[KX_NBUCKET];
} KxVarTab;
/* kx_emitcfg exporting the artifact vt says (NULL: the main one without variants). */
KC_FUNC int kx_emitvar(const KiFn *f, const struct KiPlan *p, const kvcc_spec *spec, const KxConfig *cfg,
                       const KxVarTab *vt, const char *obj, int verbose, double *ms, KiErr *e);
/* issue 13 (session 11): kx_emitvar on two threads when obj2 is not NULL: the kernels split
** between `obj` (with the descriptor) and `obj2` (emit.c partition, keeppart); 1 (obj alone: obj2 not written,
** e.g. with -v -v's IR dump), 2 (both; link both), or -1 with e set. */
KC_FUNC int kx_emitsplit(const KiFn *f, const struct KiPlan *p, const kvcc_spec *spec, const KxConfig *cfg,
                         const KxVarTab *vt, const char *obj, const char *obj2, int verbose, double *ms, KiErr *e);
/* The x86 threads a compile uses (1 or 2; $KVCC_X86_THREADS, else 2 on a host with 2 online
** CPUs, 3 when GPU targets compile at the same time). */
KC_FUNC int kx_threads(int gpu);
/* Link object files (<= 10) into the shared object `so` ($KVCC_CC, default cc). */
KC_FUNC int kx_link(const char *const *objs, int nobj, const char *so, KiErr *e);
/* Codegen options that are part of every cache key (tiles, register blocks, pipeline). */
#define KX_OPTIONS "O2kx,qk4x2,dt16,tile64"
/* The complete cache key (DESIGN §6): every component, so a miss can say which differs. */
/* The compiler build (key.o's compile time): in the compile cache's key only — a cached artifact
** of another build is a miss, since the generated code may differ without a version bump; the
** runtime loads artifacts of any build (it checks format, ABI, spec and CPU features). */
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
/* The host's features as runtime/cpu.h reads them (cpuid), "+sse3,+ssse3,..." in table order;
** malloc'd. */
KC_FUNC char *kx_hostfeatures(void);
/* The CPU features the kernels of `spec` use (runtime/cpu.h bits): native the host's (`host`),
** x86-64-v3 / -v4 their levels, scalar none. The artifact records it; the runtime checks it. */
KC_FUNC uint64_t kx_cpumask(const kvcc_spec *spec, const char *host);
/* The artifact's descriptor blob (runtime/artifact.h), malloc'd, *n bytes; NULL: out of memory. */
KC_FUNC void *kx_desc(const KiFn *f, const struct KiPlan *p, const kvcc_spec *spec, int vec_width, uint64_t cpu,
                      uint64_t kir_hash, size_t *n);
/* kx_desc recording a resolved config (NULL: the default) */
KC_FUNC void *kx_desccfg(const KiFn *f, const struct KiPlan *p, const kvcc_spec *spec, const KxConfig *cfg, int vec_width,
                         uint64_t cpu, uint64_t kir_hash, size_t *n);
/* Vector width the kernels use for this spec on this host, or 0 (target not available). */
KC_FUNC int kx_vecwidth(const kvcc_spec *spec, const char *features);
/* bf16 storage + native + 16 lanes + head_dim a multiple of 32 on a host whose CPU and OS have
** amx-tile and amx-bf16: attn_score's Q·K may use AMX tiles (tdpbf16ps) */
KC_FUNC int kx_amx(const kvcc_spec *spec, const char *features, int vec_width);
/* issue 12 (session 10): f32 storage, native, 16 lanes, head_dim a multiple of 32, amx-tile and
** amx-bf16: the f32 merge similarity may use bf16x3 products on AMX tiles (codegen/x86/mamx3.c) */
KC_FUNC int kx_amx3(const kvcc_spec *spec, const char *features, int vec_width);
/* ... and this policy's merge rule allows it (mamx3.c: the cosine of the keys, the arg-max only;
** KVCC_MERGE_AMX=0 turns it off): 1 with *c the cosine's clamp constant, else 0 */
KC_FUNC int kx_mamx3(const KiFn *f, const kvcc_spec *spec, const char *host, int vec_width, double *c);
/* bf16 storage + native avx512bf16 + 16 lanes: attn_score's Q·K uses vdpbf16ps */
KC_FUNC int kx_bf16dot(const kvcc_spec *spec, const char *features, int vec_width);
KC_FUNC const char *kx_targetname(int target);
KC_FUNC int kx_targetbyname(const char *s);

#endif
