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
#include "codegen/x86/x86.h"

typedef struct KiJob {
	/* in */
	const char *path;          /* policy.lua, or .kir text */
	kvcc_spec spec;
	const char *gpu;           /* --gpu-arch "sm_80,sm_90", or NULL: CPU kernels only */
	int verbose;
	/* the stages' results */
	int code;                  /* the KVCC_E* code of a failed stage (0: KVCC_ECOMPILE) */
	KiFn *f;                   /* load → verify → passes */
	KiPlan plan;               /* plan (target independent; the generators check their coverage) */
	int planned;
	KpGpu targets;             /* the normalized GPU targets and NVRTC (gpu != NULL) */
	char obj[2][64];           /* codegen: the x86 object, the GPU blob's object */
	char vobj[KX_NBUCKET][64]; /* codegen: the per-bucket variants' objects (issue 15) */
	int nobj;
	char xobj2[64];            /* codegen: the x86 kernels' second part (issue 13, kx_emitsplit) */
	double ms;                 /* codegen + link time of the last build */
	/* the x86 tuning config (ki_config): $KVCC_CONFIG, else the tuning database's pick for this
	** device (unless notune or $KVCC_TUNE=0), else the default; resolved for the spec */
	const char *config;        /* in: an explicit config (the tuner), or NULL */
	int notune;                /* in: do not consult the tuning database */
	KxConfig cfg;
	char cfgstr[128];
	const char *cfgfrom;       /* "default", "KVCC_CONFIG", "tuning database", "tuner" */
	/* issue 15, per-bucket compress kernels (ki_config; doc/tune.md "Per-bucket picks"): bucket
	** b's config from bconfig[b] (with an explicit config: the tuner; NULL or "": none), else
	** $KVCC_CONFIG_BUCKETS ("B=CONFIG;..." with B a bucket 0..3), else the tuning database's
	** per-bucket picks (when the main config is its pick). A bucket whose config equals the
	** main one, or does not parse / resolve / compile (said on stderr), runs the main config. */
	const char *bconfig[KX_NBUCKET];
	int nvar;                  /* distinct variants (0..KX_NBUCKET) */
	int cvar[KX_NBUCKET];      /* bucket -> variant (1..nvar), 0: the main config */
	KxConfig vcfg[KX_NBUCKET]; /* variant k+1's resolved config */
	char vcfgstr[KX_NBUCKET][128];
	/* the GPU config point (with gpu): gconfig, else $KVCC_GPU_CONFIG, else the tuning database's
	** static-model pick for these targets, else the default (kp_gcfgstr) */
	const char *gconfig;       /* in: an explicit GPU config (the tuner), or NULL */
	KpGpuCfg gcfg;
	char gcfgstr[64];
	const char *gcfgfrom;
} KiJob;

/* kvcc check: load → verify → passes → plan → the backends' checks for the requested targets
** (x86: the specialization; ptx with j->gpu: the CUDA generator without NVRTC's code). */
KC_FUNC int ki_check(KiJob *j, KiErr *e);
/* Compile to `out` (a shared object), through the compile cache when it is on. */
KC_FUNC int ki_compile(KiJob *j, const char *out, KiErr *e);
/* The stages up to the plan (ki_check without the backends' checks): after it, j->f and j->plan
** describe the policy. */
KC_FUNC int ki_front(KiJob *j, KiErr *e);
/* The stages after ki_front, one by one (tests adjust the GPU targets between them): the targets;
** the artifact from the cache (built on a miss), or built into `out` when the cache is off, its
** path in `path`. */
KC_FUNC int ki_targets(KiJob *j, KiErr *e);
/* The config of the build (after ki_targets; part of the cache key): never fails — a config
** out of range is said on stderr and the default used. */
KC_FUNC void ki_config(KiJob *j);
KC_FUNC int ki_cached(KiJob *j, const char *out, char *path, size_t n, KiErr *e);
KC_FUNC void ki_job_free(KiJob *j);
/* Copy a file through a temporary and rename (readers never see half a file): 0 or -1. */
KC_FUNC int ki_copyfile(const char *from, const char *to);

#endif
