/*
** A stand-in for libcuda.so.1 (check-gpu-api, tests/gpu/weights.c): the driver entry points
** runtime/cuda.c loads, on host memory. Device memory is malloc'ed, copies are memcpy, a module
** load accepts any image, a launch runs nothing and records its by-value KvgArgs; the test reads
** the records through the fake_* symbols. It checks the host side of the GPU runtime (what is
** allocated, copied and passed to the kernels), never the kernels (tests/emu does).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/artifact.h"

#define FX __attribute__((visibility("default")))
typedef int CUresult;

FX int fake_nlaunch, fake_nhtod, fake_nalloc;
FX size_t fake_htod_bytes;
FX KvgArgs fake_args[64];   /* the first 64 launches' arguments */

FX CUresult cuInit(unsigned f) { (void)f; return 0; }
FX CUresult cuDriverGetVersion(int *v) { *v = 12040; return 0; }
FX CUresult cuDeviceGet(int *d, int o) { *d = o; return o == 0 ? 0 : 101; }
FX CUresult cuDeviceGetAttribute(int *v, int a, int d)
{
	(void)d;
	*v = a == 75 ? 8 : a == 76 ? 0 : a == 97 ? 163 * 1024 : 1;
	return 0;
}
FX CUresult cuDevicePrimaryCtxRetain(void **c, int d) { (void)d; *c = (void *)1; return 0; }
FX CUresult cuDevicePrimaryCtxRelease(int d) { (void)d; return 0; }
FX CUresult cuCtxSetCurrent(void *c) { (void)c; return 0; }
FX CUresult cuCtxSynchronize(void) { return 0; }
FX CUresult cuModuleLoadDataEx(void **m, const void *img, unsigned n, int *o, void **v)
{
	(void)img, (void)n, (void)o, (void)v;
	*m = (void *)1;
	return 0;
}
FX CUresult cuModuleUnload(void *m) { (void)m; return 0; }
FX CUresult cuModuleGetFunction(void **f, void *m, const char *name) { (void)m; *f = (void *)name; return 0; }
FX int fake_nsetattr;       /* cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) calls */
FX CUresult cuFuncSetAttribute(void *f, int a, int v)
{
	(void)f, (void)v;
	fake_nsetattr += a == 8;
	return 0;
}
FX int fake_static_smem;    /* what cuFuncGetAttribute(CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES) answers */
FX CUresult cuFuncGetAttribute(int *v, int a, void *f)
{
	(void)f;
	*v = a == 1 ? fake_static_smem : 0;
	return 0;
}
FX CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                           unsigned sm, void *st, void **params, void **extra)
{
	(void)f, (void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)sm, (void)st, (void)extra;
	if (fake_nlaunch < 64)
		fake_args[fake_nlaunch] = *(const KvgArgs *)params[0];
	fake_nlaunch++;
	return 0;
}
FX CUresult cuMemAlloc_v2(uintptr_t *p, size_t n)
{
	void *m = malloc(n);
	*p = (uintptr_t)m;
	fake_nalloc += m != NULL;
	return m ? 0 : 2;
}
FX CUresult cuMemFree_v2(uintptr_t p) { free((void *)p); return 0; }
FX CUresult cuMemcpyHtoD_v2(uintptr_t d, const void *h, size_t n)
{
	memcpy((void *)d, h, n);
	fake_nhtod++, fake_htod_bytes += n;
	return 0;
}
FX CUresult cuMemcpyDtoH_v2(void *h, uintptr_t d, size_t n) { memcpy(h, (const void *)d, n); return 0; }
FX CUresult cuMemcpyDtoD_v2(uintptr_t d, uintptr_t s, size_t n) { memcpy((void *)d, (const void *)s, n); return 0; }
FX CUresult cuGetErrorString(CUresult r, const char **s) { (void)r; *s = "fake driver error"; return 0; }
FX CUresult cuDeviceGetName(char *s, int n, int d) { (void)d; strncpy(s, "fake", (size_t)n); return 0; }
FX CUresult cuEventCreate(void **e, unsigned f) { (void)f; *e = (void *)1; return 0; }
FX CUresult cuEventRecord(void *e, void *s) { (void)e, (void)s; return 0; }
FX CUresult cuEventSynchronize(void *e) { (void)e; return 0; }
FX CUresult cuEventElapsedTime(float *t, void *a, void *b) { (void)a, (void)b; *t = 0; return 0; }
FX CUresult cuEventDestroy_v2(void *e) { (void)e; return 0; }
