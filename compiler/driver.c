/*
** The driver: one compilation of a policy, one stage per line (ki_compile below).
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
** The compile library (include/kvcc_compiler.h) wraps ki_compile; errors reach kvcc_last_error
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
#include <fcntl.h>
#include <sys/stat.h>
#include "kvcc_compiler.h"
#include "compiler/driver.h"
#include "compiler/cache.h"
#include "compiler/tunedb.h"
#include "codegen/x86/x86.h"
#include "dsl/dsl.h"
#include "runtime/artifact.h"

/* --- the stages ------------------------------------------------------------------------------ */

static int endswith(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

/* .lua through the sandbox, .kir through the parser */
static int load(KiJob *j, KiErr *e)
{
	if (!endswith(j->path, ".kir"))
		return (j->f = kd_loadfile(j->path, NULL, e)) ? 0 : -1;
	char *text = ki_readfilemax(j->path, KI_MAXTEXT, NULL, e);
	if (!text)
		return -1;
	j->f = ki_parse(text, j->path, e);
	free(text);
	return j->f ? 0 : -1;
}

static int verify(KiJob *j, KiErr *e) { return ki_verify(j->f, e); }

static int passes(KiJob *j, KiErr *e) { return ki_runpasses(j->f, KI_DEFAULT_PASSES, 1, e, NULL, NULL); }

static int plan(KiJob *j, KiErr *e)
{
	if (ki_plan(j->f, &j->plan, e) != 0)
		return -1;
	j->planned = 1;
	if (j->verbose)
		ki_plan_print(&j->plan, stderr);
	return 0;
}

/* the x86 specialization; with --gpu-arch the normalized targets and NVRTC (part of the key) */
int ki_targets(KiJob *j, KiErr *e)
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

/* The resolved default config in j->cfg (host: kx_hostfeatures) */
static void defconfig(KiJob *j, const char *host)
{
	char why[200];
	kx_cfgresolve(NULL, &j->spec, host, &j->cfg, why, sizeof why);
	kx_cfgstr(&j->cfg, j->cfgstr, sizeof j->cfgstr);
	j->cfgfrom = "default";
}

/* the GPU config point (with --gpu-arch): explicit, $KVCC_GPU_CONFIG, the tuning database's
** static-model pick for these targets and NVRTC, or the default; a bad one falls back (said) */
static void gpuconfig(KiJob *j)
{
	char why[200], db[1200], tuned[100];
	const char *s = j->gconfig, *from = "tuner", *env = getenv("KVCC_GPU_CONFIG"), *tu = getenv("KVCC_TUNE");
	if (!s && env && *env)
		s = env, from = "KVCC_GPU_CONFIG";
	if (!s && !j->notune && !(tu && !strcmp(tu, "0")) && ki_tdb_path(db, sizeof db, why, sizeof why) == 0 &&
	    ki_tdb_gpulookup(db, ki_tdb_kernel(j->f, &j->spec), j->targets.archs,
	                     ki_tdb_gpudev(j->targets.archs, j->targets.nvrtc_major, j->targets.nvrtc_minor), tuned,
	                     sizeof tuned))
		s = tuned, from = "tuning database (static model, not measured)";
	memset(&j->gcfg, 0, sizeof j->gcfg);
	j->gcfgfrom = "default";
	if (s && kp_gcfgparse(s, &j->gcfg, why, sizeof why) != 0) {
		fprintf(stderr, "kvcc: warning: GPU config '%s' (%s): %s; using the default GPU config\n", s, from, why);
		memset(&j->gcfg, 0, sizeof j->gcfg);
	} else if (s)
		j->gcfgfrom = from;
	kp_gcfgstr(&j->gcfg, j->spec.head_dim, j->spec.group, j->gcfgstr, sizeof j->gcfgstr);
	if (j->verbose)
		fprintf(stderr, "kvcc: GPU config %s (%s)\n", j->gcfgstr, j->gcfgfrom);
}

/*
** issue 15, per-bucket compress kernels: the variants of this build (KiJob.bconfig / nvar / cvar).
** Bucket b's config: j->bconfig[b] when the config is explicit (the tuner), else
** $KVCC_CONFIG_BUCKETS ("B=CONFIG;B=CONFIG", B = 0..3: n < 4K, < 16K, < 64K, more), else the
** tuning database's per-bucket picks when the main config is its pick (dbpath). A config that
** does not parse or resolve is said on stderr and its bucket runs the main config; one equal to
** the main config (after the main's decode split, which variants never use) adds no variant;
** equal ones share a variant.
*/
static void bucketconfigs(KiJob *j, const char *host, const char *dbpath)
{
	char b[KX_NBUCKET][128], why[200];
	const char *from = "tuner", *env = getenv("KVCC_CONFIG_BUCKETS");
	j->nvar = 0;
	memset(j->cvar, 0, sizeof j->cvar);
	for (int k = 0; k < KX_NBUCKET; k++)
		b[k][0] = 0;
	if (j->config) {
		for (int k = 0; k < KX_NBUCKET; k++)
			snprintf(b[k], sizeof b[k], "%s", j->bconfig[k] ? j->bconfig[k] : "");
	} else if (env && *env) {
		from = "KVCC_CONFIG_BUCKETS";
		for (const char *p = env; *p;) {
			const char *semi = strchr(p, ';'), *end = semi ? semi : p + strlen(p);
			int k = p[0] - '0';
			if (end - p < 3 || p[1] != '=' || k < 0 || k >= KX_NBUCKET || end - p - 2 >= 128)
				fprintf(stderr, "kvcc: warning: KVCC_CONFIG_BUCKETS '%.*s': not BUCKET=CONFIG with a bucket 0..%d; "
				        "ignored\n", (int)(end - p), p, KX_NBUCKET - 1);
			else
				snprintf(b[k], sizeof b[k], "%.*s", (int)(end - p - 2), p + 2);
			p = semi ? semi + 1 : end;
		}
	} else if (dbpath) {
		from = "tuning database";
		ki_tdb_lookup_buckets(dbpath, ki_tdb_kernel(j->f, &j->spec), b, KX_NBUCKET);
	}
	for (int k = 0; k < KX_NBUCKET; k++) {
		if (!b[k][0] || !host)
			continue;
		KxConfig c, r;
		char cs[128];
		if (kx_cfgparse(b[k], &c, why, sizeof why) != 0 || kx_cfgresolve(&c, &j->spec, host, &r, why, sizeof why) != 0) {
			fprintf(stderr, "kvcc: warning: bucket %d config '%s' (%s): %s; the bucket uses the main config %s\n", k,
			        b[k], from, why, j->cfgstr);
			continue;
		}
		memcpy(r.dtasks, j->cfg.dtasks, sizeof r.dtasks), memcpy(r.dmin, j->cfg.dmin, sizeof r.dmin);
		kx_cfgstr(&r, cs, sizeof cs);
		if (!strcmp(cs, j->cfgstr))
			continue;
		int v = 0;
		while (v < j->nvar && strcmp(j->vcfgstr[v], cs))
			v++;
		if (v == j->nvar)
			j->vcfg[v] = r, snprintf(j->vcfgstr[v], sizeof j->vcfgstr[v], "%s", cs), j->nvar++;
		j->cvar[k] = v + 1;
	}
	if (j->verbose)
		for (int k = 0; k < KX_NBUCKET; k++)
			if (j->cvar[k])
				fprintf(stderr, "kvcc: bucket %d (%s tokens): compress config %s (%s)\n", k,
				        k == 0 ? "< 4096" : k == 1 ? "4096..16383" : k == 2 ? "16384..65535" : ">= 65536",
				        j->vcfgstr[j->cvar[k] - 1], from);
}

void ki_config(KiJob *j)
{
	char *host = kx_hostfeatures(), why[200], db[1200], tuned[160];
	const char *s = j->config, *from = "tuner", *env = getenv("KVCC_CONFIG"), *tu = getenv("KVCC_TUNE");
	if (!s && env && *env)
		s = env, from = "KVCC_CONFIG";
	if (!s && !j->notune && !(tu && !strcmp(tu, "0")) && ki_tdb_path(db, sizeof db, why, sizeof why) == 0 &&
	    access(db, F_OK) == 0 && ki_tdb_lookup(db, ki_tdb_kernel(j->f, &j->spec), tuned, sizeof tuned, j->verbose))
		s = tuned, from = "tuning database";
	defconfig(j, host ? host : "");
	KxConfig c;
	if (s && host && (kx_cfgparse(s, &c, why, sizeof why) != 0 || kx_cfgresolve(&c, &j->spec, host, &j->cfg, why,
	                                                                            sizeof why) != 0)) {
		fprintf(stderr, "kvcc: warning: config '%s' (%s): %s; using the default config\n", s, from, why);
		defconfig(j, host);
	} else if (s && host) {
		kx_cfgstr(&j->cfg, j->cfgstr, sizeof j->cfgstr);
		j->cfgfrom = from;
	}
	if (j->verbose)
		fprintf(stderr, "kvcc: config %s (%s)\n", j->cfgstr, j->cfgfrom);
	bucketconfigs(j, host, !strcmp(j->cfgfrom, "tuning database") ? db : NULL);
	free(host);
	if (j->gpu)
		gpuconfig(j);
}

/* a temporary object file /tmp/kvcc-KIND-XXXXXX.o created, its name in buf[64]; 0 or -1 with e set */
static int tmpname(KiJob *j, char *buf, const char *kind, KiErr *e)
{
	snprintf(buf, 64, "/tmp/kvcc-%s-XXXXXX.o", kind);
	int fd = mkstemps(buf, 2);
	if (fd < 0) {
		buf[0] = 0;
		ki_error(e, j->f->src, 0, 0, "cannot create a temporary object file: %s", strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

/* a temporary object file name in j->obj[k] */
static int tmpobj(KiJob *j, int k, KiErr *e)
{
	if (tmpname(j, j->obj[k], k ? "gpu" : "x86", e) != 0)
		return -1;
	j->nobj = k + 1;
	return 0;
}

/* the per-bucket variants' objects (issue 15): one that does not compile is said on stderr and its
** buckets run the main config (the table in vt); 0, or -1 (no temporary file) */
static int codegen_variants(KiJob *j, KxVarTab *vt, KiErr *e)
{
	int keep[KX_NBUCKET] = { 0 }, nv = 0;
	memset(vt, 0, sizeof *vt);
	for (int v = 0; v < j->nvar; v++) {
		if (tmpname(j, j->vobj[nv], "var", e) != 0)
			return -1;
		KxVarTab self = { .self = nv + 1 };
		KiErr ve = { 0 };
		if (kx_emitvar(j->f, &j->plan, &j->spec, &j->vcfg[v], &self, j->vobj[nv], j->verbose, NULL, &ve) == 0) {
			keep[v] = ++nv;
			continue;
		}
		fprintf(stderr, "kvcc: warning: bucket config %s failed to compile: %s; its buckets use the main config %s\n",
		        j->vcfgstr[v], ve.msg, j->cfgstr);
		unlink(j->vobj[nv]), j->vobj[nv][0] = 0;
	}
	vt->nvar = nv;
	for (int k = 0; k < KX_NBUCKET; k++)
		vt->cvar[k] = j->cvar[k] ? keep[j->cvar[k] - 1] : 0;
	return 0;
}

/* the main artifact's kernels, on two threads where kx_threads says (issue 13, session 11): a
** second object in j->xobj2; 0, or -1 with e set */
static int emitmain(KiJob *j, KxVarTab *vt, KiErr *e)
{
	if (!j->xobj2[0] && kx_threads(j->gpu != NULL) > 1 && tmpname(j, j->xobj2, "x86b", e) != 0)
		return -1;
	int n = kx_emitsplit(j->f, &j->plan, &j->spec, &j->cfg, vt, j->obj[0], j->xobj2[0] ? j->xobj2 : NULL,
	                     j->verbose, NULL, e);
	if (n != 2 && j->xobj2[0])
		unlink(j->xobj2), j->xobj2[0] = 0;
	return n < 0 ? -1 : 0;
}

static int codegen_x86(KiJob *j, KiErr *e)
{
	KxVarTab vt;
	if (codegen_variants(j, &vt, e) != 0)
		return -1;
	if (emitmain(j, &vt, e) == 0)
		return 0;
	if (!strcmp(j->cfgfrom, "default"))
		return -1;
	/* a tuned config that does not compile: the default always does */
	fprintf(stderr, "kvcc: warning: config %s (%s) failed to compile: %s; falling back to the default config\n",
	        j->cfgstr, j->cfgfrom, e->msg);
	char *host = kx_hostfeatures();
	defconfig(j, host ? host : "");
	free(host);
	e->set = 0;
	return emitmain(j, &vt, e);
}


static int linkso(KiJob *j, const char *out, KiErr *e)
{
	const char *objs[3 + KX_NBUCKET] = { j->obj[0], j->obj[1] };
	int n = j->nobj;
	if (j->xobj2[0])                           /* the x86 kernels' second part (kx_emitsplit) */
		objs[n++] = j->xobj2;
	for (int v = 0; v < KX_NBUCKET; v++)       /* the per-bucket variants (issue 15) */
		if (j->vobj[v][0])
			objs[n++] = j->vobj[v];
	return kx_link(objs, n, out, e);
}

static void rmobjs(KiJob *j)
{
	for (int k = 0; k < 2; k++)
		if (j->obj[k][0])
			unlink(j->obj[k]), j->obj[k][0] = 0;
	for (int v = 0; v < KX_NBUCKET; v++)
		if (j->vobj[v][0])
			unlink(j->vobj[v]), j->vobj[v][0] = 0;
	if (j->xobj2[0])
		unlink(j->xobj2), j->xobj2[0] = 0;
	j->nobj = 0;
}

/* codegen → link into `out` (the cache calls it on a miss, under its lock) */
static int build(void *ud, const char *out, double *ms, KiErr *e)
{
	KiJob *j = ud;
	double t0 = ki_now_ms();
	/* NVRTC (codegen ptx) runs on its worker threads while LLVM generates the x86 kernels here
	** (issue 13, compile time); an x86 error is said first, as when they ran one after the other */
	KpGpuJob *gj = NULL;
	KiErr ge = { 0 };
	int rc = tmpobj(j, 0, e) || (j->gpu && tmpobj(j, 1, e)) ? -1 : 0;
	if (!rc && j->gpu && kp_gpu_start(j->f, &j->plan, &j->spec, &j->targets, &j->gcfg, &gj, &ge) != 0)
		rc = -3;
	if (!rc && codegen_x86(j, e) != 0)
		rc = -1;
	if (gj && kp_gpu_finish(gj, rc ? NULL : j->obj[1], j->verbose, NULL, &ge) != 0 && !rc)
		rc = -3;
	if (rc == -3)
		*e = ge, rc = -1;
	if (!rc)
		rc = linkso(j, out, e) ? -2 : 0;   /* -2: out not written */
	rmobjs(j);
	j->ms = ki_now_ms() - t0;
	if (ms)
		*ms = j->ms;
	return rc;
}

/* the artifact in the cache (hit, or built there), or built into `out` when the cache is off */
int ki_cached(KiJob *j, const char *out, char *path, size_t n, KiErr *e)
{
	char extra[900] = "";
	if (!j->cfgfrom)
		ki_config(j);
	snprintf(extra, sizeof extra, "config=%s", j->cfgstr);   /* the tuning config */
	for (int k = 0; k < KX_NBUCKET; k++)     /* the per-bucket compress configs (issue 15) */
		if (j->cvar[k])
			snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " b%d=%s", k, j->vcfgstr[j->cvar[k] - 1]);
	if (j->gpu)              /* the GPU targets and the NVRTC that compiles them */
		snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " gpu=%s nvrtc=%d.%d gcfg=%s", j->targets.archs,
		         j->targets.nvrtc_major, j->targets.nvrtc_minor, j->gcfgstr);
	int c = ki_cache_get(j->f, &j->spec, extra, j->verbose, build, j, path, n, e);
	if (c <= 0)
		return c;
	/* without the cache: built and sealed (the checksum trailer kvcc_open verifies) in a temporary
	** file, then copied to out like a cached artifact */
	snprintf(path, n, "%s", out);
	char tmp[] = "/tmp/kvcc-so-XXXXXX.so";
	int fd = mkstemps(tmp, 3);
	if (fd < 0) {
		ki_error(e, j->f->src, 0, 0, "cannot create a temporary file: %s", strerror(errno));
		return -1;
	}
	close(fd);
	int rc = build(j, tmp, NULL, e) != 0 ? -1 : 0;
	if (!rc && (ki_cache_seal(tmp, 0, "") != 0 || ki_copyfile(tmp, out) != 0)) {
		ki_error(e, j->f->src, 0, 0, "cannot write %s: %s", out, strerror(errno));
		rc = -1;
	}
	unlink(tmp);
	if (rc)
		return -1;
	if (j->verbose)
		fprintf(stderr, "kvcc: compiled in %.1f ms\n", j->ms);
	return 0;
}

/* --- the pipeline ---------------------------------------------------------------------------- */

int ki_front(KiJob *j, KiErr *e)
{
	if (load(j, e) ||        /* policy.lua → KIR */
	    verify(j, e) ||      /* KIR invariants */
	    passes(j, e) ||      /* fold, canon, cse, dce */
	    plan(j, e))          /* skeletons and fused loops, once */
		return -1;
	return 0;
}

int ki_check(KiJob *j, KiErr *e)
{
	if (ki_front(j, e) ||    /* load → verify → passes → plan */
	    ki_targets(j, e))       /* x86 specialization; GPU targets */
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
static int compile(KiJob *j, const char *out, char *path, size_t n, KiErr *e)
{
	if (ki_front(j, e) ||    /* load → verify → passes → plan */
	    ki_targets(j, e) ||     /* x86 specialization; GPU targets */
	    ki_cached(j, out, path, n, e))   /* hit, or build: codegen x86 → codegen ptx → link */
		return -1;
	return 0;
}

int ki_compile(KiJob *j, const char *out, KiErr *e)
{
	size_t pn = strlen(out) + 1400;      /* the cache's path, or out itself: never cut */
	char *path = malloc(pn);
	int rc = -1;
	if (!path)
		ki_error(e, "kvcc", 0, 0, "out of memory"), e->nomem = 1;
	else if (compile(j, out, path, pn, e) == 0) {
		rc = 0;
		if (strcmp(path, out) != 0 && ki_copyfile(path, out) != 0) {
			ki_error(e, j->f->src, 0, 0, "cannot write %s: %s", out, strerror(errno));
			rc = -1;
		}
	}
	free(path);
	return rc;
}

void ki_job_free(KiJob *j)
{
	rmobjs(j);
	if (j->planned)
		ki_plan_free(&j->plan);
	if (j->f)
		ki_free(j->f);
	j->f = NULL, j->planned = 0;
}

/*
** Copy an artifact to `to`: a regular file (or none) is replaced whole through a new temporary
** file beside it (its name allocated, never cut) and a rename; an existing path that is not a
** regular file (a device such as /dev/null, a symlink to one) is written through, never replaced;
** a FIFO without a reader or a directory is an error at once. 0, or -1 with errno.
*/
int ki_copyfile(const char *from, const char *to)
{
	struct stat st;
	char *tmp = NULL;
	int fd;
	if (stat(to, &st) == 0 && !S_ISREG(st.st_mode))
		fd = open(to, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	else {
		size_t n = strlen(to) + 32;
		if (!(tmp = malloc(n)))
			return -1;
		snprintf(tmp, n, "%s.tmp.%ld", to, (long)getpid());
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	}
	FILE *in = fd >= 0 ? fopen(from, "rb") : NULL;
	FILE *out = in && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0 ? fdopen(fd, "wb") : NULL;
	int ok = in && out;
	if (!out && fd >= 0)
		close(fd);
	char buf[1 << 16];
	size_t k;
	while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0)
		ok = fwrite(buf, 1, k, out) == k;
	ok = ok && !ferror(in);
	int err = errno;
	if (in)
		fclose(in);
	if (out && fclose(out) != 0)
		ok = 0, err = errno;
	if (ok && tmp && rename(tmp, to) != 0)
		ok = 0, err = errno;
	if (!ok && tmp && fd >= 0)
		unlink(tmp);
	free(tmp);
	errno = err;
	return ok ? 0 : -1;
}

/* --- the compiler library (include/kvcc_compiler.h) ------------------------------------------- */

/* the error of a failed stage: KVCC_ECOMPILE unless the stage said otherwise (GPU targets) */
static int jobfail(const KiJob *j, const KiErr *e)
{
	return kvcc__seterr(j->code ? j->code : e->nomem ? KVCC_ENOMEM : KVCC_ECOMPILE, e->msg);
}

static int compile_so(const char *path, const kvcc_spec *spec, const char *gpu, const char *out_so, int verbose)
{
	if (!path || !spec || !out_so)
		return kvcc__seterr(KVCC_EINVAL, "null argument");
	KiJob j = { .path = path, .spec = *spec, .gpu = gpu, .verbose = verbose };
	KiErr e = { 0 };
	size_t cn = strlen(out_so) + 1400;   /* the cache's path, or out_so itself: never cut */
	char *cpath = malloc(cn);
	int rc = 0;
	if (!cpath)
		return kvcc__seterr(KVCC_ENOMEM, "out of memory");
	if (compile(&j, out_so, cpath, cn, &e) != 0)
		rc = jobfail(&j, &e);
	else if (strcmp(cpath, out_so) != 0) {
		kvcc_policy *chk = NULL;
		if (kvcc_open(cpath, &chk) != 0) {      /* checked but refused (cannot happen): rebuild once */
			unlink(cpath);
			if (ki_cached(&j, out_so, cpath, cn, &e) != 0)
				rc = jobfail(&j, &e);
		}
		kvcc_close(chk);
		if (!rc && strcmp(cpath, out_so) != 0 && ki_copyfile(cpath, out_so) != 0) {
			char m[1500];
			snprintf(m, sizeof m, "cannot write %s: %s", out_so, strerror(errno));
			rc = kvcc__seterr(KVCC_EIO, m);
		}
	}
	free(cpath);
	ki_job_free(&j);
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
	KiJob j = { .path = path, .spec = *spec };
	KiErr e = { 0 };
	int built = compile(&j, tmp, cpath, sizeof cpath, &e) == 0;
	int rc = built ? kvcc_open(cpath, out) : jobfail(&j, &e);
	if (built && rc && strcmp(cpath, tmp) != 0) {   /* cached but refused (cannot happen): rebuild once */
		unlink(cpath);
		e.set = 0;
		rc = ki_cached(&j, tmp, cpath, sizeof cpath, &e) != 0 ? jobfail(&j, &e) : kvcc_open(cpath, out);
	}
	unlink(tmp);
	ki_job_free(&j);
	return rc;
}

KVCC_API int kvcc_check(const char *path, const kvcc_spec *spec, const char *gpu_archs)
{
	if (!path || !spec)
		return kvcc__seterr(KVCC_EINVAL, "null argument");
	KiJob j = { .path = path, .spec = *spec, .gpu = gpu_archs };
	KiErr e = { 0 };
	int rc = ki_check(&j, &e) != 0 ? jobfail(&j, &e) : 0;
	ki_job_free(&j);
	return rc;
}
