/*
** The driver: one compilation through the pipeline (compiler/driver.c). The CLI (kvcc compile,
** kvcc check), the compile cache and the compiler library (include/kvcc_compiler.h) all go
** through it, so a policy that checks also plans, and the plan is built once per compile.
*/
#ifndef KVCC_DRIVER_H
#define KVCC_DRIVER_H

#include "kvcc.h"
#include "compiler/ir.h"
#include "compiler/plan.h"
#include "codegen/ptx/ptx.h"

typedef struct KcJob {
	/* in */
	const char *path;          /* policy.lua, or .kir text */
	kvcc_spec spec;
	const char *gpu;           /* --gpu-arch "sm_80,sm_90", or NULL: CPU kernels only */
	int verbose;
	/* the stages' results */
	int code;                  /* the KVCC_E* code of a failed stage (0: KVCC_ECOMPILE) */
	KiFn *f;                   /* load → verify → passes */
	KpPlan plan;               /* plan (target independent; the generators check their coverage) */
	int planned;
	KpGpu targets;             /* the normalized GPU targets and NVRTC (gpu != NULL) */
	char obj[2][64];           /* codegen: the x86 object, the GPU blob's object */
	int nobj;
	double ms;                 /* codegen + link time of the last build */
} KcJob;

/* kvcc check: load → verify → passes → plan → the backends' checks for the requested targets
** (x86: the specialization; ptx with j->gpu: the CUDA generator without NVRTC's code). */
KC_FUNC int kc_check(KcJob *j, KcErr *e);
/* Compile to `out` (a shared object), through the compile cache when it is on. */
KC_FUNC int kc_compile(KcJob *j, const char *out, KcErr *e);
/* The stages up to the plan (kc_check without the backends' checks): after it, j->f and j->plan
** describe the policy. */
KC_FUNC int kc_front(KcJob *j, KcErr *e);
/* The stages after kc_front, one by one (tests adjust the GPU targets between them): the targets;
** the artifact from the cache (built on a miss), or built into `out` when the cache is off, its
** path in `path`. */
KC_FUNC int kc_targets(KcJob *j, KcErr *e);
KC_FUNC int kc_cached(KcJob *j, const char *out, char *path, size_t n, KcErr *e);
KC_FUNC void kc_job_free(KcJob *j);
/* Copy a file through a temporary and rename (readers never see half a file): 0 or -1. */
KC_FUNC int kc_copyfile(const char *from, const char *to);

#endif
