/*
** CUDA driver path of libkvcc (see cuda.h). Compiles without CUDA headers:
** the few driver types and enum values used are declared here (values from
** cuda.h of CUDA 13; stable since CUDA 4–11).
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "runtime/cuda.h"

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;

enum {
	CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
	CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
	CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
	CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1,
	CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
	CU_JIT_INFO_LOG_BUFFER = 3,
	CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
	CU_JIT_ERROR_LOG_BUFFER = 5,
	CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
};

static struct {
	int tried, ok;
	char why[300];
	void *h;
	CUresult (*Init)(unsigned);
	CUresult (*DriverGetVersion)(int *);
	CUresult (*DeviceGet)(CUdevice *, int);
	CUresult (*DeviceGetAttribute)(int *, int, CUdevice);
	CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
	CUresult (*DevicePrimaryCtxRelease)(CUdevice);
	CUresult (*CtxSetCurrent)(CUcontext);
	CUresult (*CtxSynchronize)(void);
	CUresult (*ModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
	CUresult (*ModuleUnload)(CUmodule);
	CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
	CUresult (*FuncSetAttribute)(CUfunction, int, int);
	CUresult (*FuncGetAttribute)(int *, int, CUfunction);
	CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
	                         CUstream, void **, void **);
	CUresult (*MemAlloc)(CUdeviceptr *, size_t);
	CUresult (*MemFree)(CUdeviceptr);
	CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
	CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
	CUresult (*GetErrorString)(CUresult, const char **);
	CUresult (*DeviceGetName)(char *, int, CUdevice);
	CUresult (*MemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
	CUresult (*EventCreate)(void **, unsigned);
	CUresult (*EventRecord)(void *, CUstream);
	CUresult (*EventSynchronize)(void *);
	CUresult (*EventElapsedTime)(float *, void *, void *);
	CUresult (*EventDestroy)(void *);
	int version;
} cu;
static pthread_mutex_t culock = PTHREAD_MUTEX_INITIALIZER;

struct KrCuda {
	const KpCudaOut *art;
	CUdevice dev;
	CUcontext ctx;
	CUmodule mod;
	CUfunction fn[KVG_MAXKERN];
	unsigned dsmem[KVG_MAXKERN];
	char image[64];
};

static const char *errstr(CUresult r)
{
	const char *s = NULL;
	if (cu.GetErrorString)
		cu.GetErrorString(r, &s);
	return s ? s : "unknown CUDA error";
}

static void *sym(const char *name)
{
	char v2[96];
	snprintf(v2, sizeof v2, "%s_v2", name);
	void *p = dlsym(cu.h, v2);
	return p ? p : dlsym(cu.h, name);
}

static void load(void)
{
	if (cu.tried)
		return;
	cu.tried = 1;
	const char *name = getenv("KVCC_LIBCUDA");
	if (!name || !*name)
		name = "libcuda.so.1";
	cu.h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!cu.h) {
		const char *d = dlerror();
		snprintf(cu.why, sizeof cu.why, "CUDA driver not found: dlopen(\"%s\") failed: %s (is an NVIDIA driver installed?)",
		         name, d ? d : "?");
		return;
	}
#define S(f, n)                                                                                  \
	do {                                                                                     \
		*(void **)&cu.f = sym(n);                                                        \
		if (!cu.f) {                                                                     \
			snprintf(cu.why, sizeof cu.why, "CUDA driver %s lacks %s (too old)", name, n); \
			return;                                                                  \
		}                                                                                \
	} while (0)
	S(Init, "cuInit");
	S(DriverGetVersion, "cuDriverGetVersion");
	S(DeviceGet, "cuDeviceGet");
	S(DeviceGetAttribute, "cuDeviceGetAttribute");
	S(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
	S(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease");
	S(CtxSetCurrent, "cuCtxSetCurrent");
	S(CtxSynchronize, "cuCtxSynchronize");
	S(ModuleLoadDataEx, "cuModuleLoadDataEx");
	S(ModuleUnload, "cuModuleUnload");
	S(ModuleGetFunction, "cuModuleGetFunction");
	S(FuncSetAttribute, "cuFuncSetAttribute");
	S(FuncGetAttribute, "cuFuncGetAttribute");
	S(LaunchKernel, "cuLaunchKernel");
	S(MemAlloc, "cuMemAlloc");
	S(MemFree, "cuMemFree");
	S(MemcpyHtoD, "cuMemcpyHtoD");
	S(MemcpyDtoH, "cuMemcpyDtoH");
	S(GetErrorString, "cuGetErrorString");
	S(DeviceGetName, "cuDeviceGetName");
	S(MemcpyDtoD, "cuMemcpyDtoD");
	S(EventCreate, "cuEventCreate");
	S(EventRecord, "cuEventRecord");
	S(EventSynchronize, "cuEventSynchronize");
	S(EventElapsedTime, "cuEventElapsedTime");
	S(EventDestroy, "cuEventDestroy");
#undef S
	CUresult r = cu.Init(0);
	if (r != 0) {
		snprintf(cu.why, sizeof cu.why, "cuInit: %s (no usable GPU?)", errstr(r));
		return;
	}
	cu.DriverGetVersion(&cu.version);
	cu.ok = 1;
}

int kr_cuda_driver_load(char *why, size_t whylen)
{
	pthread_mutex_lock(&culock);
	load();
	pthread_mutex_unlock(&culock);
	if (!cu.ok && why)
		snprintf(why, whylen, "%s", cu.why);
	return cu.ok ? 0 : -1;
}

int kr_cuda_driver_version(void) { return kr_cuda_driver_load(NULL, 0) == 0 ? cu.version : -1; }

/* load one image: CUBIN or PTX (JIT) with error and info logs */
static CUresult loadimage(KrCuda *m, const void *img, char *log, size_t loglen)
{
	static char info[4096], elog[8192];
	info[0] = elog[0] = 0;
	int opt[4] = { CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES, CU_JIT_ERROR_LOG_BUFFER,
	               CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
	void *val[4] = { info, (void *)(uintptr_t)sizeof info, elog, (void *)(uintptr_t)sizeof elog };
	CUresult r = cu.ModuleLoadDataEx(&m->mod, img, 4, opt, val);
	snprintf(log, loglen, "%s%s%s", elog, elog[0] && info[0] ? " | " : "", info);
	return r;
}

int kr_cuda_open(const KpCudaOut *art, int dev, KrCuda **out, char *why, size_t whylen)
{
	*out = NULL;
	if (kr_cuda_driver_load(why, whylen) != 0)
		return -1;
	KrCuda *m = calloc(1, sizeof *m);
	if (!m)
		return snprintf(why, whylen, "out of memory"), -1;
	m->art = art;
	CUresult r;
	int maj = 0, min = 0, optin = 0;
	if ((r = cu.DeviceGet(&m->dev, dev)) != 0 || (r = cu.DevicePrimaryCtxRetain(&m->ctx, m->dev)) != 0 ||
	    (r = cu.CtxSetCurrent(m->ctx)) != 0) {
		snprintf(why, whylen, "CUDA device %d: %s", dev, errstr(r));
		free(m);
		return -1;
	}
	cu.DeviceGetAttribute(&maj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, m->dev);
	cu.DeviceGetAttribute(&min, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, m->dev);
	cu.DeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, m->dev);
	int sm = maj * 10 + min;
	/* CUBIN for this exact sm; else PTX of the newest image not above it (JIT) */
	const KpCudaImage *im = NULL;
	int jit = 0;
	for (int i = 0; i < art->nimg; i++)
		if (art->img[i].sm == sm && art->img[i].ncubin)
			im = &art->img[i];
	if (!im)
		for (int i = 0; i < art->nimg; i++)
			if (art->img[i].sm <= sm && art->img[i].ptx && (!im || art->img[i].sm > im->sm))
				im = &art->img[i], jit = 1;
	if (!im) {
		snprintf(why, whylen, "no kernel image for sm_%d (compiled for %d target(s); add --gpu-arch sm_%d)", sm,
		         art->nimg, sm);
		goto fail;
	}
	char log[2048];
	r = loadimage(m, jit ? (const void *)im->ptx : im->cubin, log, sizeof log);
	if (r != 0) {
		snprintf(why, whylen, "loading the %s for %s on sm_%d: %s%s%s%s", jit ? "PTX" : "CUBIN", im->arch, sm, errstr(r),
		         log[0] ? ": " : "", log,
		         jit && cu.version < art->nvrtc_major * 1000 ? " (the PTX comes from a newer NVRTC than this driver; "
		                                                        "compile a CUBIN for this sm)" : "");
		goto fail;
	}
	snprintf(m->image, sizeof m->image, "%s %s%s", jit ? "ptx" : "cubin", im->arch, jit ? " (JIT)" : "");
	for (int k = 0; k < art->nkern; k++) {
		if ((r = cu.ModuleGetFunction(&m->fn[k], m->mod, art->kern[k].name)) != 0) {
			snprintf(why, whylen, "kernel %s: %s", art->kern[k].name, errstr(r));
			goto fail;
		}
		/* the block's shared memory is the kernel's static arrays plus the launch's dynamic size: both
		** count against the per-block opt-in limit (the dynamic opt-in below may be at most the rest) */
		unsigned ds = im->dsmem[k];
		int st = 0;
		if ((r = cu.FuncGetAttribute(&st, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, m->fn[k])) != 0) {
			snprintf(why, whylen, "kernel %s: static shared memory size: %s", art->kern[k].name, errstr(r));
			goto fail;
		}
		if (st < 0 || (unsigned long long)ds + (unsigned)st > (unsigned long long)(unsigned)optin) {
			snprintf(why, whylen, "kernel %s needs %u B of shared memory (%d B static + %u B dynamic), sm_%d allows %d",
			         art->kern[k].name, ds + (unsigned)(st > 0 ? st : 0), st, ds, sm, optin);
			goto fail;
		}
		/* past 48 KiB in all (static + dynamic) the launch's dynamic size needs the opt-in: the
		** default dynamic limit is 48 KiB less the static arrays */
		if ((unsigned long long)ds + (unsigned)st > 48u * 1024 &&
		    (r = cu.FuncSetAttribute(m->fn[k], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)ds)) != 0) {
			snprintf(why, whylen, "kernel %s: shared memory opt-in to %u B: %s", art->kern[k].name, ds, errstr(r));
			goto fail;
		}
		m->dsmem[k] = ds;
	}
	*out = m;
	return 0;
fail:
	kr_cuda_close(m);
	return -1;
}

void kr_cuda_close(KrCuda *m)
{
	if (!m)
		return;
	if (m->mod)
		cu.ModuleUnload(m->mod);
	if (m->ctx)
		cu.DevicePrimaryCtxRelease(m->dev);
	free(m);
}

const char *kr_cuda_image(const KrCuda *m) { return m->image; }

size_t kr_cuda_ws_bytes(const KrCuda *m, int L, int H, int N, int O, int splits)
{
	return (size_t)L * H * (size_t)kvg_ws_floats(m->art, N, O, splits) * sizeof(float) + 16;
}

static int launch(KrCuda *m, int role, const KvgArgs *a, void *stream, char *why, size_t whylen)
{
	void *params[] = { (void *)a };
	cu.CtxSetCurrent(m->ctx);          /* the caller's thread may have none (host call, capturable) */
	for (int k = 0; k < m->art->nkern; k++) {
		if (m->art->kern[k].role != role)
			continue;
		unsigned B = a->B > 0 ? (unsigned)a->B : 1;
		unsigned gx = role == KVG_SELGRP ? (m->art->kern[k].phase ? (unsigned)a->L : 1) * B :
		              role == KVG_PAGED ? (a->pgop == KVG_PG_APPEND ? (unsigned)a->H : 1) * B :
		              (unsigned)((a->dlay ? 1 : a->L) * a->H) * B;   /* a one-layer decode: B*H */
		unsigned gy = role == KVG_DECODE ? (unsigned)a->splits : 1;
		CUresult r = cu.LaunchKernel(m->fn[k], gx, gy, 1, (unsigned)m->art->nthreads, 1, 1,
		                             m->dsmem[k], (CUstream)stream, params, NULL);
		if (r != 0) {
			snprintf(why, whylen, "launch %s: %s", m->art->kern[k].name, errstr(r));
			return -1;
		}
	}
	return 0;
}

/* kv_paged with operation op (one launch) */
static int paged(KrCuda *m, const KvgArgs *a, int op, void *stream, char *why, size_t whylen)
{
	KvgArgs c = *a;
	c.pgop = op;
	return launch(m, KVG_PAGED, &c, stream, why, whylen);
}

int kr_cuda_has_paged(const KrCuda *m)
{
	for (int k = 0; k < m->art->nkern; k++)
		if (m->art->kern[k].role == KVG_PAGED)
			return 1;
	return 0;
}

int kr_cuda_compress(KrCuda *m, const KvgArgs *a, void *stream, char *why, size_t whylen)
{
	if (!m->art->has_compress)
		return snprintf(why, whylen, "this policy has no compress kernels"), -1;
	if (a->pt && !kr_cuda_has_paged(m))
		return snprintf(why, whylen, "these GPU kernels predate paged caches: recompile the policy"), -1;
	if (a->pt && paged(m, a, KVG_PG_CHECK, stream, why, whylen))
		return -1;
	if (launch(m, KVG_SCORE, a, stream, why, whylen) || launch(m, KVG_SELGRP, a, stream, why, whylen) ||
	    launch(m, KVG_SELECT, a, stream, why, whylen))
		return -1;
	return a->pt ? paged(m, a, KVG_PG_FREE, stream, why, whylen) : 0;
}

int kr_cuda_append(KrCuda *m, const KvgArgs *a, void *stream, char *why, size_t whylen)
{
	if (!kr_cuda_has_paged(m))
		return snprintf(why, whylen, "these GPU kernels predate paged caches: recompile the policy"), -1;
	return paged(m, a, KVG_PG_CHECK, stream, why, whylen) || paged(m, a, KVG_PG_APPEND, stream, why, whylen) ||
	               paged(m, a, KVG_PG_FREE, stream, why, whylen) ? -1 : 0;
}

int kr_cuda_decode(KrCuda *m, const KvgArgs *a, void *stream, char *why, size_t whylen)
{
	if (!m->art->has_decode)
		return snprintf(why, whylen, "this policy has no observe hook"), -1;
	if (a->splits < 1)
		return snprintf(why, whylen, "split-KV decode needs splits >= 1 (got %d)", a->splits), -1;
	if ((a->pt || a->steps) && !kr_cuda_has_paged(m))
		return snprintf(why, whylen, "these GPU kernels predate paged caches: recompile the policy"), -1;
	/* paged: the tables checked first (a failed check: every kernel returns untouched), the
	   marks cleared after; per-sequence steps: one more after the observe hook read them */
	return (a->pt && paged(m, a, KVG_PG_CHECK, stream, why, whylen)) ||
	       launch(m, KVG_DECODE, a, stream, why, whylen) || launch(m, KVG_COMBINE, a, stream, why, whylen) ||
	       (a->pt && paged(m, a, KVG_PG_FREE, stream, why, whylen)) ||
	       (a->steps && a->dlay && paged(m, a, KVG_PG_STEP, stream, why, whylen)) ? -1 : 0;
}

void *kr_cuda_alloc(size_t bytes)
{
	CUdeviceptr p = 0;
	if (kr_cuda_driver_load(NULL, 0) != 0 || cu.MemAlloc(&p, bytes ? bytes : 1) != 0)
		return NULL;
	return (void *)(uintptr_t)p;
}

void kr_cuda_free(void *d)
{
	if (d && cu.ok)
		cu.MemFree((CUdeviceptr)(uintptr_t)d);
}

int kr_cuda_put(void *d, const void *h, size_t n) { return cu.ok && cu.MemcpyHtoD((CUdeviceptr)(uintptr_t)d, h, n) == 0 ? 0 : -1; }
int kr_cuda_get(void *h, const void *d, size_t n) { return cu.ok && cu.MemcpyDtoH(h, (CUdeviceptr)(uintptr_t)d, n) == 0 ? 0 : -1; }
int kr_cuda_sync(void) { return cu.ok && cu.CtxSynchronize() == 0 ? 0 : -1; }

/* --- benchmarks (make bench-gpu): synchronizing, never used by plan/run ---------------- */

int kr_cuda_time_compress(KrCuda *m, const KvgArgs *a, double *ms, char *why, size_t whylen)
{
	void *ev[KVG_MAXKERN + 1] = { 0 };
	int rc = 0, order[KVG_MAXKERN], n = 0;
	static const int roles[] = { KVG_SCORE, KVG_SELGRP, KVG_SELECT };
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < m->art->nkern; k++)
			if (m->art->kern[k].role == roles[i])
				order[n++] = k;
	for (int i = 0; i <= n && rc == 0; i++)
		rc = cu.EventCreate(&ev[i], 0) != 0;
	void *params[] = { (void *)a };
	cu.CtxSetCurrent(m->ctx);
	for (int i = 0; i < n && rc == 0; i++) {
		int k = order[i];
		rc = cu.EventRecord(ev[i], NULL) != 0 ||
		     cu.LaunchKernel(m->fn[k], (m->art->kern[k].role != KVG_SELGRP ? (unsigned)(a->L * a->H) :
		                     m->art->kern[k].phase ? (unsigned)a->L : 1) * (a->B > 0 ? (unsigned)a->B : 1), 1, 1, (unsigned)m->art->nthreads, 1, 1, m->dsmem[k],
		                     NULL, params, NULL) != 0;
	}
	if (rc == 0)
		rc = cu.EventRecord(ev[n], NULL) != 0 || cu.EventSynchronize(ev[n]) != 0;
	for (int i = 0; i < n && rc == 0; i++) {
		float t = 0;
		rc = cu.EventElapsedTime(&t, ev[i], ev[i + 1]) != 0;
		ms[order[i]] = t;
	}
	for (int i = 0; i <= n; i++)
		if (ev[i])
			cu.EventDestroy(ev[i]);
	if (rc)
		snprintf(why, whylen, "timed compress failed");
	return rc ? -1 : 0;
}

double kr_cuda_time_d2d(void *dst, const void *src, size_t bytes)
{
	void *e0 = NULL, *e1 = NULL;
	float t = -1;
	if (!cu.ok || cu.EventCreate(&e0, 0) || cu.EventCreate(&e1, 0) || cu.EventRecord(e0, NULL) ||
	    cu.MemcpyDtoD((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, bytes) || cu.EventRecord(e1, NULL) ||
	    cu.EventSynchronize(e1) || cu.EventElapsedTime(&t, e0, e1))
		t = -1;
	if (e0)
		cu.EventDestroy(e0);
	if (e1)
		cu.EventDestroy(e1);
	return t;
}

int kr_cuda_device_info(int dev, char *name, size_t nn, int attr[6])
{
	/* attr: sm, multiprocessors, clock kHz, memory clock kHz, bus width bits, max opt-in smem */
	static const int ids[6] = { 0, 16, 13, 36, 37, 97 };
	CUdevice d;
	if (kr_cuda_driver_load(NULL, 0) != 0 || cu.DeviceGet(&d, dev) != 0)
		return -1;
	if (name && cu.DeviceGetName(name, (int)nn, d) != 0)
		snprintf(name, nn, "?");
	int maj = 0, min = 0;
	cu.DeviceGetAttribute(&maj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d);
	cu.DeviceGetAttribute(&min, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d);
	attr[0] = maj * 10 + min;
	for (int i = 1; i < 6; i++)
		if (cu.DeviceGetAttribute(&attr[i], ids[i], d) != 0)
			attr[i] = 0;
	return 0;
}
