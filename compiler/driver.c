/*
** The driver: one compilation of a policy, one stage per line (kc_compile below).
**
**   policy.lua ─load─▶ KIR ─verify─▶ ─passes─▶ KIR' ─plan─▶ kernel plan ─targets─┬─codegen x86─▶ .o ─┐
**   (or .kir)   dsl/          verify.c  fold,canon,  plan.c    (skeletons,  spec,  └─codegen ptx─▶ .o ─┴─link─▶ policy.so
**                                       cse,dce              fused loops)  --gpu-arch                     │
**                                                                                          cache ◀────────┘
**
**   load     dsl/ runs the policy in the Lua sandbox and builds KIR (or compiler/parse.c reads .kir)
**   verify   KIR's invariants (compiler/verify.c)
**   passes   fold, canon, cse, dce (compiler/passes.c), verified after each
**   plan     compiler/plan.c maps KIR onto the skeletons once; what no generator covers is a
**            positioned error here, so `kvcc check` reports what `kvcc compile` would
**   targets  the specialization the x86 backend and this host support; the GPU targets and NVRTC
**   cache    $KVCC_CACHE_DIR: a hit is the artifact; a miss runs build() under the cache's lock
**   build    codegen x86 (LLVM: kernels + descriptor) → codegen ptx (NVRTC: the GPU blob) → link
**
** The compile library (include/kvcc_compiler.h) wraps kc_compile; errors reach kvcc_last_error
** through libkvcc_rt's kvcc__seterr.
**
** Glossary: artifact = the policy.so; descriptor = what the runtime reads in it instead of KIR
** (runtime/artifact.h); spec = dtype, head_dim, group, CPU target.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "kvcc_compiler.h"
#include "compiler/driver.h"
#include "compiler/cache.h"
#include "codegen/x86/x86.h"
#include "dsl/dsl.h"
#include "runtime/artifact.h"

/* --- the stages ------------------------------------------------------------------------------ */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int endswith(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

/* .lua through the sandbox, .kir through the parser */
static int load(KcJob *j, KcErr *e)
{
	if (!endswith(j->path, ".kir"))
		return (j->f = kd_loadfile(j->path, NULL, e)) ? 0 : -1;
	char *text = kc_readfilemax(j->path, KI_MAXTEXT, NULL, e);
	if (!text)
		return -1;
	j->f = ki_parse(text, j->path, e);
	free(text);
	return j->f ? 0 : -1;
}

static int verify(KcJob *j, KcErr *e) { return ki_verify(j->f, e); }

static int passes(KcJob *j, KcErr *e) { return ki_runpasses(j->f, KI_DEFAULT_PASSES, 1, e, NULL, NULL); }

static int plan(KcJob *j, KcErr *e)
{
	if (kp_build(j->f, &j->plan, e) != 0)
		return -1;
	j->planned = 1;
	if (j->verbose)
		kp_print(&j->plan, stderr);
	return 0;
}

/* the x86 specialization; with --gpu-arch the normalized targets and NVRTC (part of the key) */
int kc_targets(KcJob *j, KcErr *e)
{
	if (kx_checkspec(j->f, &j->spec, e) != 0)
		return -1;
	if (!j->gpu)
		return 0;
	if (kp_gpu_targets(j->gpu, &j->targets, j->f, e) != 0) {
		j->code = KVCC_EUNSUPPORTED;
		return -1;
	}
	return 0;
}

/* a temporary object file name in j->obj[k] */
static int tmpobj(KcJob *j, int k, KcErr *e)
{
	snprintf(j->obj[k], sizeof j->obj[k], "/tmp/kvcc-%s-XXXXXX.o", k ? "gpu" : "x86");
	int fd = mkstemps(j->obj[k], 2);
	if (fd < 0) {
		j->obj[k][0] = 0;
		kc_error(e, j->f->src, 0, 0, "cannot create a temporary object file: %s", strerror(errno));
		return -1;
	}
	close(fd);
	j->nobj = k + 1;
	return 0;
}

static int codegen_x86(KcJob *j, KcErr *e)
{
	return tmpobj(j, 0, e) || kx_emit(j->f, &j->plan, &j->spec, j->obj[0], j->verbose, NULL, e) ? -1 : 0;
}

static int codegen_ptx(KcJob *j, KcErr *e)
{
	if (!j->gpu)
		return 0;
	return tmpobj(j, 1, e) || kp_gpu_emit(j->f, &j->plan, &j->spec, &j->targets, j->obj[1], j->verbose, NULL, e) ? -1
	                                                                                                              : 0;
}

static int linkso(KcJob *j, const char *out, KcErr *e)
{
	const char *objs[2] = { j->obj[0], j->obj[1] };
	return kx_link(objs, j->nobj, out, e);
}

static void rmobjs(KcJob *j)
{
	for (int k = 0; k < 2; k++)
		if (j->obj[k][0])
			unlink(j->obj[k]), j->obj[k][0] = 0;
	j->nobj = 0;
}

/* codegen → link into `out` (the cache calls it on a miss, under its lock) */
static int build(void *ud, const char *out, double *ms, KcErr *e)
{
	KcJob *j = ud;
	double t0 = now_ms();
	int rc = codegen_x86(j, e) || codegen_ptx(j, e) || linkso(j, out, e) ? -1 : 0;
	rmobjs(j);
	j->ms = now_ms() - t0;
	if (ms)
		*ms = j->ms;
	return rc;
}

/* the artifact in the cache (hit, or built there), or built into `out` when the cache is off */
int kc_cached(KcJob *j, const char *out, char *path, size_t n, KcErr *e)
{
	char extra[160] = "";
	if (j->gpu)              /* the GPU targets and the NVRTC that compiles them */
		snprintf(extra, sizeof extra, "gpu=%s nvrtc=%d.%d", j->targets.archs, j->targets.nvrtc_major,
		         j->targets.nvrtc_minor);
	int c = kc_cache_get(j->f, &j->spec, extra, j->verbose, build, j, path, n, e);
	if (c <= 0)
		return c;
	snprintf(path, n, "%s", out);
	if (build(j, out, NULL, e) != 0)
		return -1;
	if (j->verbose)
		fprintf(stderr, "kvcc: compiled in %.1f ms\n", j->ms);
	return 0;
}

/* --- the pipeline ---------------------------------------------------------------------------- */

int kc_front(KcJob *j, KcErr *e)
{
	if (load(j, e) ||        /* policy.lua → KIR */
	    verify(j, e) ||      /* KIR invariants */
	    passes(j, e) ||      /* fold, canon, cse, dce */
	    plan(j, e))          /* skeletons and fused loops, once */
		return -1;
	return 0;
}

int kc_check(KcJob *j, KcErr *e)
{
	if (kc_front(j, e) ||    /* load → verify → passes → plan */
	    kc_targets(j, e))       /* x86 specialization; GPU targets */
		return -1;
	if (j->gpu) {            /* the CUDA generator's own coverage, without NVRTC's code */
		KpCudaOpts o = { .dtype = j->spec.dtype, .head_dim = j->spec.head_dim, .group = j->spec.group,
		                 .archs = j->targets.archs, .gen_only = 1, .plan = &j->plan };
		KpCudaOut out;
		if (kp_compile_cuda(j->f, &o, &out, e) != 0)
			return -1;
		kp_cuda_free(&out);
	}
	return 0;
}

/* j->f … j->plan, then the artifact's path in `path`: the cache's, or `out` */
static int compile(KcJob *j, const char *out, char *path, size_t n, KcErr *e)
{
	if (kc_front(j, e) ||    /* load → verify → passes → plan */
	    kc_targets(j, e) ||     /* x86 specialization; GPU targets */
	    kc_cached(j, out, path, n, e))   /* hit, or build: codegen x86 → codegen ptx → link */
		return -1;
	return 0;
}

int kc_compile(KcJob *j, const char *out, KcErr *e)
{
	char path[1400];
	if (compile(j, out, path, sizeof path, e) != 0)
		return -1;
	if (strcmp(path, out) != 0 && kc_copyfile(path, out) != 0) {
		kc_error(e, j->f->src, 0, 0, "cannot write %s", out);
		return -1;
	}
	return 0;
}

void kc_job_free(KcJob *j)
{
	rmobjs(j);
	if (j->planned)
		kp_free(&j->plan);
	if (j->f)
		ki_free(j->f);
	j->f = NULL, j->planned = 0;
}

int kc_copyfile(const char *from, const char *to)
{
	char tmp[1200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", to, (long)getpid());
	FILE *in = fopen(from, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
	int ok = in && out;
	char buf[1 << 16];
	size_t k;
	while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0)
		ok = fwrite(buf, 1, k, out) == k;
	ok = ok && !ferror(in);
	if (in)
		fclose(in);
	if (out && fclose(out) != 0)
		ok = 0;
	if (ok && rename(tmp, to) != 0)
		ok = 0;
	if (!ok)
		unlink(tmp);
	return ok ? 0 : -1;
}

/* --- the compiler library (include/kvcc_compiler.h) ------------------------------------------- */

/* the error of a failed stage: KVCC_ECOMPILE unless the stage said otherwise (GPU targets) */
static int jobfail(const KcJob *j, const KcErr *e)
{
	return kvcc__seterr(j->code ? j->code : e->nomem ? KVCC_ENOMEM : KVCC_ECOMPILE, e->msg);
}

static int compile_so(const char *path, const kvcc_spec *spec, const char *gpu, const char *out_so, int verbose)
{
	if (!path || !spec || !out_so)
		return kvcc__seterr(KVCC_EINVAL, "null argument");
	KcJob j = { .path = path, .spec = *spec, .gpu = gpu, .verbose = verbose };
	KcErr e = { 0 };
	char cpath[1400];
	int rc = 0;
	if (compile(&j, out_so, cpath, sizeof cpath, &e) != 0)
		rc = jobfail(&j, &e);
	else if (strcmp(cpath, out_so) != 0) {
		kvcc_policy *chk = NULL;
		if (kvcc_open(cpath, &chk) != 0) {      /* checked but refused (cannot happen): rebuild once */
			unlink(cpath);
			if (kc_cached(&j, out_so, cpath, sizeof cpath, &e) != 0)
				rc = jobfail(&j, &e);
		}
		kvcc_close(chk);
		if (!rc && strcmp(cpath, out_so) != 0 && kc_copyfile(cpath, out_so) != 0) {
			char m[1500];
			snprintf(m, sizeof m, "cannot write %s", out_so);
			rc = kvcc__seterr(KVCC_EIO, m);
		}
	}
	kc_job_free(&j);
	return rc;
}

KVCC_API int kvcc_compile_so(const char *path, const kvcc_spec *spec, const char *out_so, int verbose)
{
	return compile_so(path, spec, NULL, out_so, verbose);
}

KVCC_API int kvcc_compile_so_gpu(const char *path, const kvcc_spec *spec, const char *gpu_archs, const char *out_so,
                                 int verbose)
{
	return compile_so(path, spec, gpu_archs, out_so, verbose);
}

KVCC_API int kvcc_compile_file(const char *path, const kvcc_spec *spec, kvcc_policy **out)
{
	if (!out)
		return kvcc__seterr(KVCC_EINVAL, "null argument");
	*out = NULL;
	if (!path || !spec)
		return kvcc__seterr(KVCC_EINVAL, "null argument");
	char tmp[] = "/tmp/kvcc-jit-XXXXXX.so", cpath[1400];
	int fd = mkstemps(tmp, 3);
	if (fd < 0)
		return kvcc__seterr(KVCC_EIO, "cannot create a temporary file");
	close(fd);
	KcJob j = { .path = path, .spec = *spec };
	KcErr e = { 0 };
	int built = compile(&j, tmp, cpath, sizeof cpath, &e) == 0;
	int rc = built ? kvcc_open(cpath, out) : jobfail(&j, &e);
	if (built && rc && strcmp(cpath, tmp) != 0) {   /* cached but refused (cannot happen): rebuild once */
		unlink(cpath);
		e.set = 0;
		rc = kc_cached(&j, tmp, cpath, sizeof cpath, &e) != 0 ? jobfail(&j, &e) : kvcc_open(cpath, out);
	}
	unlink(tmp);
	kc_job_free(&j);
	return rc;
}

KVCC_API int kvcc_check(const char *path, const kvcc_spec *spec, const char *gpu_archs)
{
	if (!path || !spec)
		return kvcc__seterr(KVCC_EINVAL, "null argument");
	KcJob j = { .path = path, .spec = *spec, .gpu = gpu_archs };
	KcErr e = { 0 };
	int rc = kc_check(&j, &e) != 0 ? jobfail(&j, &e) : 0;
	kc_job_free(&j);
	return rc;
}
