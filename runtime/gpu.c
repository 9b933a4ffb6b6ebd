/*
** The GPU path of libkvcc (include/kvcc.h, GPU section; doc/gpu.md).
**
** Compile: the policy's kernels through codegen/ptx (CUDA C → NVRTC → PTX +
** CUBIN per target) are serialized into one read-only blob (kvcc_gpu_header,
** kernel and image records, then the PTX/CUBIN bytes), emitted as the constant
** global KVCC_GPU_SYMBOL of an x86-64 object (LLVM C API) and linked into the
** same policy.so as the CPU kernels (kx_compile_ex). Cached like the CPU
** artifact; the key adds the targets and the NVRTC version (runtime/cache.c).
**
** Run: kvcc_gpu_plan_create finds the blob in the policy's shared object
** (dladdr of its descriptor's strings), checks it against the descriptor,
** loads the module through runtime/cuda.c (CUBIN for the device's sm, else PTX
** JIT with the driver's log; shared-memory opt-in) and allocates the device
** workspace, score and error buffers. kvcc_gpu_compress only fills the
** by-value KvgArgs and enqueues the launches.
*/
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include "runtime/gpu.h"
#include "runtime/cache.h"
#include "codegen/x86/x86.h"
#include "compiler/plan.h"
#include "compiler/interp.h"
#include "dsl/dsl.h"

_Static_assert(KVG_MAXKERN == 8, "kvcc_gpu_image has 8 kernel slots");
_Static_assert(KVG_SCORE == 0 && KVG_SELECT == 1 && KVG_DECODE == 2 && KVG_COMBINE == 3 && KVG_SELGRP == 4,
               "kvcc_gpu_kernel.role values");

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return kr_seterr(code, msg);
}

/* --- targets ----------------------------------------------------------------------------- */

static int cmpint(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int kg_gpukey(const char *archs, KrGpu *g, const KiFn *f, KcErr *e)
{
	memset(g, 0, sizeof *g);
	g->build = kg_build;
	char why[300];
	if (kp_nvrtc_available(&g->nvrtc_major, &g->nvrtc_minor, why, sizeof why) != 0)
		return kc_error(e, f->src, 0, 0, "GPU backend: %s", why), -1;
	int have[64], nhave = kp_nvrtc_archs(have, 64), sm[KVG_MAXARCH], n = 0;
	if (nhave < 0)
		return kc_error(e, f->src, 0, 0, "GPU backend: NVRTC lists no supported architectures"), -1;
	if (!archs || !*archs)
		return kc_error(e, f->src, 0, 0, "--gpu-arch: empty target list (e.g. sm_80,sm_90)"), -1;
	if (!strcmp(archs, "all")) {
		for (int i = 0; i < nhave && n < KVG_MAXARCH; i++)
			if (have[i] >= 80)
				sm[n++] = have[i];
	} else
		for (const char *s = archs; *s;) {
			const char *c = strchr(s, ',');
			size_t l = c ? (size_t)(c - s) : strlen(s);
			char one[32];
			snprintf(one, sizeof one, "%.*s", (int)(l < 31 ? l : 31), s);
			char *end = NULL;
			long v = strncmp(one, "sm_", 3) ? -1 : strtol(one + 3, &end, 10);
			if (v < 0 || !end || *end || end == one + 3)
				return kc_error(e, f->src, 0, 0, "--gpu-arch: '%s' is not an sm_XY name (e.g. sm_80,sm_90)", one), -1;
			if (v < 80)
				return kc_error(e, f->src, 0, 0,
				                "--gpu-arch: %s is not supported: kvcc's GPU kernels need sm_80 or newer "
				                "(bf16 arithmetic, > 48 KB shared memory)", one), -1;
			int ok = 0;
			for (int i = 0; i < nhave; i++)
				ok |= have[i] == v;
			if (!ok) {
				char list[256] = "";
				for (int i = 0; i < nhave; i++)
					snprintf(list + strlen(list), sizeof list - strlen(list), " sm_%d", have[i]);
				return kc_error(e, f->src, 0, 0, "--gpu-arch: NVRTC %d.%d cannot target %s (supported:%s)",
				                g->nvrtc_major, g->nvrtc_minor, one, list), -1;
			}
			int dup = 0;
			for (int i = 0; i < n; i++)
				dup |= sm[i] == v;
			if (!dup) {
				if (n == KVG_MAXARCH)
					return kc_error(e, f->src, 0, 0, "--gpu-arch: at most %d targets", KVG_MAXARCH), -1;
				sm[n++] = (int)v;
			}
			s += l + (c ? 1 : 0);
		}
	if (!n)
		return kc_error(e, f->src, 0, 0, "--gpu-arch: no target"), -1;
	qsort(sm, (size_t)n, sizeof *sm, cmpint);
	for (int i = 0; i < n; i++) {
		size_t u = strlen(g->archs);
		if (snprintf(g->archs + u, sizeof g->archs - u, "%ssm_%d", i ? "," : "", sm[i]) >= (int)(sizeof g->archs - u))
			return kc_error(e, f->src, 0, 0, "--gpu-arch: too many targets"), -1;
	}
	return 0;
}

/* --- the blob ----------------------------------------------------------------------------- */

static size_t al16(size_t x) { return (x + 15) & ~(size_t)15; }

void *kg_blob(const KpCudaOut *o, const kvcc_spec *spec, uint64_t kir_hash, const char *archs, size_t *n)
{
	size_t off = al16(sizeof(kvcc_gpu_header) + (size_t)o->nkern * sizeof(kvcc_gpu_kernel) +
	                  (size_t)o->nimg * sizeof(kvcc_gpu_image));
	size_t total = off;
	for (int i = 0; i < o->nimg; i++)
		total += al16(o->img[i].nptx + 1) + al16(o->img[i].ncubin);
	if (total > 0xffffffffu)
		return NULL;
	char *b = calloc(1, total);
	if (!b)
		return NULL;
	kvcc_gpu_header *h = (kvcc_gpu_header *)b;
	h->magic = KVCC_GPU_MAGIC, h->abi = KVCC_GPU_ABI, h->size = (uint32_t)total, h->kir_hash = kir_hash;
	h->dtype = spec->dtype, h->head_dim = spec->head_dim, h->group = spec->group;
	h->nthreads = o->nthreads, h->nkern = o->nkern, h->nimg = o->nimg;
	h->has_compress = o->has_compress, h->has_decode = o->has_decode;
	h->nvrtc_major = o->nvrtc_major, h->nvrtc_minor = o->nvrtc_minor;
	memcpy(h->ws_coef, o->ws_coef, sizeof h->ws_coef);
	snprintf(h->archs, sizeof h->archs, "%s", archs);
	kvcc_gpu_kernel *k = (kvcc_gpu_kernel *)(h + 1);
	for (int i = 0; i < o->nkern; i++) {
		snprintf(k[i].name, sizeof k[i].name, "%s", o->kern[i].name);
		k[i].role = o->kern[i].role, k[i].phase = o->kern[i].phase;
	}
	kvcc_gpu_image *im = (kvcc_gpu_image *)(k + o->nkern);
	for (int i = 0; i < o->nimg; i++) {
		const KpCudaImage *s = &o->img[i];
		snprintf(im[i].arch, sizeof im[i].arch, "%s", s->arch);
		im[i].sm = s->sm, im[i].tile = s->tile;
		im[i].ptx_off = off, im[i].ptx_len = s->nptx;
		memcpy(b + off, s->ptx, s->nptx);
		off += al16(s->nptx + 1);
		im[i].cubin_off = s->ncubin ? off : 0, im[i].cubin_len = s->ncubin;
		if (s->ncubin)
			memcpy(b + off, s->cubin, s->ncubin);
		off += al16(s->ncubin);
		for (int j = 0; j < KVG_MAXKERN; j++) {
			im[i].regs[j] = s->regs[j], im[i].smem[j] = s->smem[j], im[i].spill[j] = s->spill[j];
			im[i].dsmem[j] = s->dsmem[j];
		}
	}
	*n = total;
	return b;
}

int kg_view(const void *blob, size_t avail, KpCudaOut *v, const kvcc_gpu_header **hdr, char *why, size_t wn)
{
	memset(v, 0, sizeof *v);
	const kvcc_gpu_header *h = blob;
	if (!h || avail < sizeof *h || h->magic != KVCC_GPU_MAGIC)
		return snprintf(why, wn, "not a kvcc GPU artifact (bad magic)"), -1;
	if (h->abi != KVCC_GPU_ABI)
		return snprintf(why, wn, "GPU artifact ABI %u, this libkvcc reads %d", h->abi, KVCC_GPU_ABI), -1;
	if (h->size > avail || h->nkern < 1 || h->nkern > KVG_MAXKERN || h->nimg < 1 || h->nimg > KVG_MAXARCH ||
	    h->nthreads < 32 || h->nthreads > 1024 ||
	    sizeof *h + h->nkern * sizeof(kvcc_gpu_kernel) + h->nimg * sizeof(kvcc_gpu_image) > h->size)
		return snprintf(why, wn, "corrupted GPU artifact (header)"), -1;
	const char *b = blob;
	const kvcc_gpu_kernel *k = (const kvcc_gpu_kernel *)(h + 1);
	const kvcc_gpu_image *im = (const kvcc_gpu_image *)(k + h->nkern);
	v->nthreads = h->nthreads, v->nkern = h->nkern, v->nimg = h->nimg;
	v->has_compress = h->has_compress, v->has_decode = h->has_decode;
	v->nvrtc_major = h->nvrtc_major, v->nvrtc_minor = h->nvrtc_minor;
	memcpy(v->ws_coef, h->ws_coef, sizeof v->ws_coef);
	v->dec_part = h->has_decode ? kvg_dec_part(h->group, h->head_dim, h->nthreads) : 0;
	for (int i = 0; i < h->nkern; i++) {
		if (!memchr(k[i].name, 0, sizeof k[i].name) || k[i].role < KVG_SCORE || k[i].role > KVG_SELGRP)
			return snprintf(why, wn, "corrupted GPU artifact (kernel %d)", i), -1;
		memcpy(v->kern[i].name, k[i].name, sizeof v->kern[i].name);
		v->kern[i].role = k[i].role, v->kern[i].phase = k[i].phase;
	}
	for (int i = 0; i < h->nimg; i++) {
		const kvcc_gpu_image *s = &im[i];
		KpCudaImage *d = &v->img[i];
		if (!memchr(s->arch, 0, sizeof s->arch) || s->ptx_off > h->size || s->ptx_len >= h->size - s->ptx_off ||
		    b[s->ptx_off + s->ptx_len] != 0 || s->cubin_off > h->size || s->cubin_len > h->size - s->cubin_off)
			return snprintf(why, wn, "corrupted GPU artifact (image %d)", i), -1;
		memcpy(d->arch, s->arch, sizeof d->arch);
		d->sm = s->sm, d->tile = s->tile;
		d->ptx = (char *)(b + s->ptx_off), d->nptx = s->ptx_len;
		d->cubin = s->cubin_len ? (void *)(b + s->cubin_off) : NULL, d->ncubin = s->cubin_len;
		for (int j = 0; j < KVG_MAXKERN; j++) {
			d->regs[j] = s->regs[j], d->smem[j] = s->smem[j], d->spill[j] = s->spill[j];
			d->dsmem[j] = s->dsmem[j];
		}
	}
	if (hdr)
		*hdr = h;
	return 0;
}

void kg_print(const KpCudaOut *v, const kvcc_gpu_header *h, FILE *fp)
{
	fprintf(fp, "kvcc: GPU kernels (%s, NVRTC %d.%d): %s head_dim %d group %d, %d threads/block, grid = layers*kv_heads\n",
	        h->archs, h->nvrtc_major, h->nvrtc_minor, ki_dtypename(h->dtype), h->head_dim, h->group, v->nthreads);
	fprintf(fp, "kvcc:   workspace floats per (layer, head) = %lld + %lld*N + %lld*O + %lld*N*O + %lld*splits\n",
	        v->ws_coef[0], v->ws_coef[1], v->ws_coef[2], v->ws_coef[3], v->dec_part);
	if (v->has_decode)
		fprintf(fp, "kvcc:   split-KV decode: grid (layers*kv_heads, splits), splits = min(ceil(%d / (layers*kv_heads)), "
		        "capacity / %d), at least 1\n", KVG_DEC_BLOCKS, KVG_DEC_TMIN);
	for (int i = 0; i < v->nimg; i++) {
		const KpCudaImage *im = &v->img[i];
		fprintf(fp, "kvcc:   %s: PTX %zu bytes, CUBIN %zu bytes, compaction tile %d rows\n", im->arch, im->nptx,
		        im->ncubin, im->tile);
		for (int k = 0; k < v->nkern; k++)
			fprintf(fp, "kvcc:     %-10s %3d registers, %5d B static smem, %6u B dynamic smem%s, %d B spills\n",
			        v->kern[k].name, im->regs[k], im->smem[k], im->dsmem[k],
			        im->dsmem[k] > 48u * 1024 ? " (opt-in)" : "", im->spill[k]);
	}
}

/* --- compile ------------------------------------------------------------------------------ */

/* the blob as the exported constant KVCC_GPU_SYMBOL of an x86-64 PIC object */
static int emit_object(const void *blob, size_t n, const char *path, KcErr *e, const KiFn *f)
{
	LLVMInitializeX86TargetInfo();
	LLVMInitializeX86Target();
	LLVMInitializeX86TargetMC();
	LLVMInitializeX86AsmPrinter();
	char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
	LLVMTargetRef tgt;
	if (LLVMGetTargetFromTriple(triple, &tgt, &err)) {
		kc_error(e, f->src, 0, 0, "LLVM: %s", err);
		LLVMDisposeMessage(err), LLVMDisposeMessage(triple);
		return -1;
	}
	LLVMTargetMachineRef tm = LLVMCreateTargetMachine(tgt, triple, "x86-64", "", LLVMCodeGenLevelNone, LLVMRelocPIC,
	                                                  LLVMCodeModelDefault);
	LLVMContextRef cx = LLVMContextCreate();
	LLVMModuleRef m = LLVMModuleCreateWithNameInContext("kvcc_gpu", cx);
	LLVMSetTarget(m, triple);
	LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
	LLVMSetModuleDataLayout(m, td);
	LLVMValueRef init = LLVMConstStringInContext(cx, blob, (unsigned)n, 1);
	LLVMValueRef gv = LLVMAddGlobal(m, LLVMTypeOf(init), KVCC_GPU_SYMBOL);
	LLVMSetInitializer(gv, init);
	LLVMSetGlobalConstant(gv, 1);
	LLVMSetAlignment(gv, 16);
	LLVMSetVisibility(gv, LLVMDefaultVisibility);
	int rc = -1;
	if (LLVMTargetMachineEmitToFile(tm, m, (char *)path, LLVMObjectFile, &err))
		kc_error(e, f->src, 0, 0, "LLVM (GPU artifact object): %s", err ? err : "?");
	else
		rc = 0;
	if (err)
		LLVMDisposeMessage(err);
	LLVMDisposeModule(m);
	LLVMDisposeTargetData(td);
	LLVMContextDispose(cx);
	LLVMDisposeTargetMachine(tm);
	LLVMDisposeMessage(triple);
	return rc;
}

int kg_build(const KiFn *f, const kvcc_spec *spec, const KrGpu *g, const char *out_so, int verbose, double *ms,
             KcErr *e)
{
	double t0 = now_ms();
	KpCudaOpts o = { .dtype = spec->dtype, .head_dim = spec->head_dim, .group = spec->group, .archs = g->archs };
	KpCudaOut out;
	if (kp_compile_cuda(f, &o, &out, e) != 0)
		return -1;
	double t1 = now_ms();
	char *kir = ki_print(f);
	size_t n = 0;
	void *blob = kir ? kg_blob(&out, spec, ki_fnv(kir, strlen(kir), 0xcbf29ce484222325ull), g->archs, &n) : NULL;
	free(kir);
	kp_cuda_free(&out);
	if (!blob)
		return kc_error(e, f->src, 0, 0, "out of memory (GPU artifact)"), -1;
	char obj[] = "/tmp/kvcc-gpu-XXXXXX.o";
	int fd = mkstemps(obj, 2), rc = -1;
	if (fd < 0)
		kc_error(e, f->src, 0, 0, "cannot create a temporary object file: %s", strerror(errno));
	else {
		close(fd);
		const char *extra[1] = { obj };
		double xms = 0;
		if (emit_object(blob, n, obj, e, f) == 0 &&
		    kx_compile_ex(f, spec, out_so, verbose, &xms, extra, 1, e) == 0) {
			rc = 0;
			if (verbose)
				fprintf(stderr, "kvcc: GPU: NVRTC %.1f ms (%s), artifact %zu bytes; CPU part + link %.1f ms\n",
				        t1 - t0, g->archs, n, xms);
		}
		unlink(obj);
	}
	free(blob);
	if (ms)
		*ms = now_ms() - t0;
	return rc;
}

KVCC_API int kvcc_compile_so_gpu(const char *path, const kvcc_spec *spec, const char *gpu_archs, const char *out_so,
                                 int verbose)
{
	if (!path || !spec || !out_so)
		return fail(KVCC_EINVAL, "null argument");
	if (!gpu_archs)
		return kvcc_compile_so(path, spec, out_so, verbose);
	KcErr e = { 0 };
	KiFn *f = kr_loadpolicy(path, &e);
	KpPlan pl;
	if (f && kp_build(f, &pl, &e) != 0)
		ki_free(f), f = NULL;
	else if (f)
		kp_free(&pl);
	if (!f)
		return fail(e.nomem ? KVCC_ENOMEM : KVCC_ECOMPILE, "%s", e.msg);
	KrGpu g;
	int rc = 0;
	if (kg_gpukey(gpu_archs, &g, f, &e) != 0) {
		ki_free(f);
		return fail(KVCC_EUNSUPPORTED, "%s", e.msg);
	}
	char cpath[1400];
	double ms = 0;
	int c = kr_cache_get_gpu(f, spec, &g, verbose, cpath, sizeof cpath, &e);
	if (c < 0)
		rc = fail(e.nomem ? KVCC_ENOMEM : KVCC_ECOMPILE, "%s", e.msg);
	else if (c == 0 && kr_copyfile(cpath, out_so) != 0)
		rc = fail(KVCC_EIO, "cannot write %s", out_so);
	else if (c > 0 && kg_build(f, spec, &g, out_so, verbose, &ms, &e) != 0)
		rc = fail(e.nomem ? KVCC_ENOMEM : KVCC_ECOMPILE, "%s", e.msg);
	ki_free(f);
	if (rc)
		return rc;
	/* read the embedded artifact back from the shared object, as kvcc_gpu_plan_create will */
	char real[4096];
	if (!realpath(out_so, real))
		return fail(KVCC_EIO, "%s: %s", out_so, strerror(errno));
	void *dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
	if (!dl)
		return fail(KVCC_EARTIFACT, "%s: %s", out_so, dlerror());
	const void *blob = dlsym(dl, KVCC_GPU_SYMBOL);
	KpCudaOut v;
	const kvcc_gpu_header *h = NULL;
	char why[300] = "no " KVCC_GPU_SYMBOL " symbol";
	if (!blob || kg_view(blob, (size_t)-1, &v, &h, why, sizeof why) != 0)
		rc = fail(KVCC_EARTIFACT, "%s: %s", out_so, why);
	else if (verbose)
		kg_print(&v, h, stderr);
	dlclose(dl);
	return rc;
}

/* --- plan and run ------------------------------------------------------------------------ */

struct kvcc_gpu_plan {
	void *dl;                       /* the policy.so (a reference held while the plan lives) */
	const kvcc_gpu_header *h;
	KpCudaOut view;                 /* images point into the blob */
	KvCuda *m;
	kvcc_layout lay;
	int G, max_obs, npar, nst;
	int splits;                     /* split-KV decode blocks per instance (kvg_dec_splits) */
	double par[KVG_MAXPAR];
	void *ws, *scores, *err;        /* device buffers */
};

const void *kg_find(const kvcc_policy *p, void **dlp, char *why, size_t wn)
{
	*dlp = NULL;
	const char *name = kvcc_policy_name(p);
	Dl_info info;
	if (!name || !dladdr(name, &info) || !info.dli_fname) {
		snprintf(why, wn, "the policy is not backed by a shared object");
		return NULL;
	}
	void *dl = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
	const void *blob = dl ? dlsym(dl, KVCC_GPU_SYMBOL) : NULL;
	const kvcc_artifact *a = dl ? dlsym(dl, KVCC_DESC_SYMBOL) : NULL;
	if (!blob || !a) {
		snprintf(why, wn, "policy '%s' (%s) has no GPU kernels: compile it with `kvcc compile %s.lua -o %s.so "
		         "--gpu-arch sm_80,sm_90` (or kvcc_compile_so_gpu) and open that", name, info.dli_fname, name, name);
		if (dl)
			dlclose(dl);
		return NULL;
	}
	const kvcc_gpu_header *h = blob;
	if (h->magic == KVCC_GPU_MAGIC && h->kir_hash != a->kir_hash) {
		snprintf(why, wn, "%s: the GPU kernels were compiled from another policy text than the CPU kernels",
		         info.dli_fname);
		dlclose(dl);
		return NULL;
	}
	*dlp = dl;
	return blob;
}

KvCuda *kg_plan_module(kvcc_gpu_plan *pl) { return pl ? pl->m : NULL; }

KVCC_API void kvcc_gpu_plan_destroy(kvcc_gpu_plan *pl)
{
	if (!pl)
		return;
	kvc_free(pl->ws), kvc_free(pl->scores), kvc_free(pl->err);
	kvc_close(pl->m);
	if (pl->dl)
		dlclose(pl->dl);
	free(pl);
}

KVCC_API const char *kvcc_gpu_plan_image(const kvcc_gpu_plan *pl) { return pl && pl->m ? kvc_image(pl->m) : NULL; }

KVCC_API int kvcc_gpu_plan_create(kvcc_policy *p, const kvcc_layout *lay, int max_obs, int device_ordinal,
                                  kvcc_gpu_plan **out)
{
	if (!out)
		return fail(KVCC_EINVAL, "null argument");
	*out = NULL;
	kvcc_spec s;
	if (!p || !lay || kvcc_policy_spec(p, &s) != 0)
		return fail(KVCC_EINVAL, "null argument");
	if (lay->dtype != s.dtype || lay->head_dim != s.head_dim)
		return fail(KVCC_ESPEC, "layout is %s head_dim %d, the policy was compiled for %s head_dim %d",
		            ki_dtypename(lay->dtype), lay->head_dim, ki_dtypename(s.dtype), s.head_dim);
	if (lay->layers < 1 || lay->kv_heads < 1 || lay->capacity < 1 || max_obs < 0 || device_ordinal < 0 ||
	    lay->stride_token < lay->head_dim || lay->stride_head < 1 || lay->stride_layer < 1)
		return fail(KVCC_EINVAL, "bad layout (layers %d, kv_heads %d, capacity %d, strides %lld/%lld/%lld), "
		            "max_obs %d or device %d", lay->layers, lay->kv_heads, lay->capacity,
		            (long long)lay->stride_layer, (long long)lay->stride_head, (long long)lay->stride_token, max_obs,
		            device_ordinal);
	char why[3000];
	if (kvc_driver_load(why, sizeof why) != 0)
		return fail(KVCC_EUNSUPPORTED, "%s", why);
	kvcc_gpu_plan *pl = calloc(1, sizeof *pl);
	if (!pl)
		return fail(KVCC_ENOMEM, "out of memory");
	int rc = 0;
	const void *blob = kg_find(p, &pl->dl, why, sizeof why);
	if (!blob) {
		rc = fail(KVCC_EUNSUPPORTED, "%s", why);
		goto out;
	}
	if (kg_view(blob, (size_t)-1, &pl->view, &pl->h, why, sizeof why) != 0) {
		rc = fail(KVCC_EARTIFACT, "%s", why);
		goto out;
	}
	if (pl->h->dtype != s.dtype || pl->h->head_dim != s.head_dim || pl->h->group != s.group) {
		rc = fail(KVCC_EARTIFACT, "GPU kernels are for %s head_dim %d group %d, the policy for %s %d %d",
		          ki_dtypename(pl->h->dtype), pl->h->head_dim, pl->h->group, ki_dtypename(s.dtype), s.head_dim,
		          s.group);
		goto out;
	}
	if (!pl->view.has_compress) {
		rc = fail(KVCC_EUNSUPPORTED, "policy '%s' has no compress kernels", kvcc_policy_name(p));
		goto out;
	}
	pl->npar = kvcc_param_count(p), pl->nst = kvcc_state_count(p);
	if (pl->npar > KVG_MAXPAR) {
		rc = fail(KVCC_EUNSUPPORTED, "%d params, the GPU path passes at most %d", pl->npar, KVG_MAXPAR);
		goto out;
	}
	for (int i = 0; i < pl->npar; i++)
		kvcc_param_info(p, i, NULL, &pl->par[i]);
	pl->lay = *lay, pl->G = s.group, pl->max_obs = max_obs;
	if (kvc_open(&pl->view, device_ordinal, &pl->m, why, sizeof why) != 0) {
		rc = fail(KVCC_EUNSUPPORTED, "%s", why);
		goto out;
	}
	size_t L = (size_t)lay->layers, H = (size_t)lay->kv_heads, N = (size_t)lay->capacity;
	int zero = 0;
	pl->splits = kvg_dec_splits(lay->capacity, (long long)lay->layers * lay->kv_heads);
	pl->ws = kvc_alloc(kvc_ws_bytes(pl->m, lay->layers, lay->kv_heads, lay->capacity, max_obs, pl->splits));
	pl->scores = kvc_alloc(L * H * N * sizeof(float));
	pl->err = kvc_alloc(sizeof(int));
	if (!pl->ws || !pl->scores || !pl->err || kvc_put(pl->err, &zero, sizeof zero) != 0) {
		rc = fail(KVCC_ENOMEM, "cannot allocate the GPU workspace (%zu bytes) and score buffer",
		          kvc_ws_bytes(pl->m, lay->layers, lay->kv_heads, lay->capacity, max_obs, pl->splits));
		goto out;
	}
out:
	if (rc) {
		kvcc_gpu_plan_destroy(pl);
		return rc;
	}
	*out = pl;
	return 0;
}

int kg_args(kvcc_gpu_plan *pl, const kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args, KvgArgs *out)
{
	if (!pl || !c || !args)
		return fail(KVCC_EINVAL, "null argument");
	if (!c->K || !c->V || !c->len || !c->pos || (pl->nst && !c->state))
		return fail(KVCC_EINVAL, "the GPU path needs device pointers K, V, len, pos%s", pl->nst ? " and state" : "");
	int O = obs ? obs->nobs : 0;
	if (O < 0 || O > pl->max_obs || (O && !obs->Q))
		return fail(KVCC_EINVAL, "nobs %d (plan max_obs %d)%s", O, pl->max_obs, O && !obs->Q ? ", Q is NULL" : "");
	if (args->budget < 0 && !(args->ratio >= 0 && args->ratio < 1))
		return fail(KVCC_EINVAL, "ratio %g outside [0, 1)", args->ratio);
	KvgArgs a;
	memset(&a, 0, sizeof a);
	a.K = c->K, a.V = c->V, a.len = c->len, a.pos = c->pos, a.state = c->state;
	a.Q = O ? obs->Q : NULL, a.lse = O ? obs->lse : NULL, a.qpos = O ? obs->qpos : NULL;
	a.scores = args->scores ? args->scores : pl->scores;
	a.ws = pl->ws, a.err = pl->err;
	a.sL = pl->lay.stride_layer, a.sH = pl->lay.stride_head, a.sT = pl->lay.stride_token;
	a.ws_inst = kvg_ws_floats(&pl->view, pl->lay.capacity, O, pl->splits);
	a.splits = pl->splits;
	a.budget = args->budget >= 0 ? args->budget : -1;
	a.ratio = args->ratio;
	a.L = pl->lay.layers, a.H = pl->lay.kv_heads, a.N = pl->lay.capacity, a.O = O;
	for (int i = 0; i < pl->npar; i++)
		a.par[i] = args->params ? args->params[i] : pl->par[i];
	*out = a;
	return 0;
}

KVCC_API int kvcc_gpu_compress(kvcc_gpu_plan *pl, const kvcc_cache *c, const kvcc_obs *obs, const kvcc_args *args,
                               void *stream)
{
	KvgArgs a;
	int rc = kg_args(pl, c, obs, args, &a);
	if (rc)
		return rc;
	char why[600];
	if (kvc_compress(pl->m, &a, stream, why, sizeof why) != 0)
		return fail(KVCC_EDEVICE, "%s", why);
	return 0;
}

KVCC_API int kvcc_gpu_plan_check(kvcc_gpu_plan *pl)
{
	if (!pl)
		return fail(KVCC_EINVAL, "null argument");
	int code = 0, zero = 0;
	if (kvc_sync() != 0 || kvc_get(&code, pl->err, sizeof code) != 0)
		return fail(KVCC_EDEVICE, "kernel execution failed (context synchronize)");
	if (!code)
		return 0;
	kvc_put(pl->err, &zero, sizeof zero);
	return fail(KVCC_EINVAL, "GPU kernels reported error %d: %s", code,
	            code == KVG_EPOOL ? "bad pooling size" : code == KVG_ESELECT ? "bad select arguments (budget/ratio)" :
	            code == KVG_EHMEAN ? "hmean needs equal lengths across heads" : "unknown");
}
