/*
** The GPU side of the policy weights (kvcc_gpu_plan_set_weight) without a GPU: libkvcc_rt
** drives tests/gpu/fakecuda.c (KVCC_LIBCUDA=BUILD/libfakecuda.so: device memory on the host,
** launches recorded, nothing run). For wtest (five weights over layer/head/group/chan axes)
** and duo (a [layer, head] table):
**   - kvcc_gpu_plan_create takes a policy with weights;
**   - compress (single and batch) before every weight is given: KVCC_EINVAL naming the missing
**     weight with its declaration's position, nothing launched;
**   - a wrong name / shape / a NaN: the same code and message as the CPU plan's
**     kvcc_plan_set_weight (one checking function), nothing uploaded;
**   - each set call is one host-to-device copy; the device buffer holds the weights packed in
**     declaration order (by name), each row-major over its axes (computed here);
**   - compress uploads nothing and every launch reads KvgArgs.wts = that buffer; setting a
**     weight again changes the buffer, nothing else.
**   - a kernel whose static shared memory plus its launch's dynamic size passes the device's
**     per-block opt-in limit is refused at plan creation with both sizes named (the fake
**     driver's cuFuncGetAttribute answers fake_static_smem).
**   gpu_wts BUILD_DIR   (KVCC_LIBCUDA must name the fake driver)
*/
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "runtime/artifact.h"
#include "runtime/cuda.h"
#include "codegen/ptx/ptx.h"
#include "runtime/gpu.h"

static int npass, nfail, nskip;
#define T(name, cond)                                                                  \
	do {                                                                           \
		if (cond)                                                              \
			npass++;                                                       \
		else {                                                                 \
			nfail++;                                                       \
			printf("FAIL %s: %s\n", name, kvcc_last_error());             \
		}                                                                      \
	} while (0)

static int *nlaunch, *nhtod;
static KvgArgs *largs;

/* the test's own packing: weight i at the sum of the earlier weights' sizes */
typedef struct W {
	const char *name;
	int ndim;
	int64_t shape[4];
} W;

static size_t wn(const W *w)
{
	size_t n = 1;
	for (int j = 0; j < w->ndim; j++)
		n *= (size_t)w->shape[j];
	return n;
}

static void one(const char *bdir, const char *file, const char *pname, const kvcc_spec *s, const W *w, int nw)
{
	char so[700];
	snprintf(so, sizeof so, "%s/gpu-wts-test/%s.so", bdir, pname);
	if (kvcc_compile_so_gpu(file, s, "sm_80", so, 0) != 0) {
		printf("FAIL %s: compile: %s\n", pname, kvcc_last_error());
		nfail++;
		return;
	}
	kvcc_policy *p = NULL;
	if (kvcc_open(so, &p) != 0) {
		printf("FAIL %s: open: %s\n", pname, kvcc_last_error());
		nfail++;
		return;
	}
	int L = 2, H = 3, N = 32, d = s->head_dim, G = s->group;
	kvcc_layout lay = { s->dtype, L, H, d, N, (int64_t)H * N * d, (int64_t)N * d, d };
	kvcc_gpu_plan *g = NULL;
	kvcc_plan *c = NULL;
	char t[300];
	snprintf(t, sizeof t, "%s: kvcc_gpu_plan_create takes a policy with weights", pname);
	T(t, kvcc_gpu_plan_create_batch(p, &lay, NULL, 2, 4, 0, &g) == 0 && g);
	T("CPU plan", kvcc_plan_create(p, &lay, 4, 1, &c) == 0);
	if (!g || !c)
		goto out;
	size_t esz = s->dtype == KVCC_F32 ? 4 : 2, nkv = (size_t)2 * L * H * N * d;
	void *K = kr_cuda_alloc(nkv * esz), *V = kr_cuda_alloc(nkv * esz), *Q = kr_cuda_alloc((size_t)2 * L * H * G * 4 * d * esz);
	int32_t *len = kr_cuda_alloc(2 * L * H * 4), *pos = kr_cuda_alloc((size_t)2 * L * H * N * 4);
	kvcc_cache cc = { K, V, pos, len, NULL };
	kvcc_obs ob = { 4, Q, NULL, NULL };
	kvcc_args ar = { 0.5, -1, NULL, 0, NULL };
	kvcc_gpu_batch gb;
	memset(&gb, 0, sizeof gb);
	gb.nseq = 2, gb.K = K, gb.V = V, gb.stride_seq = (int64_t)L * H * N * d, gb.len = len, gb.pos = pos, gb.nobs = 4, gb.Q = Q;
	/* compress before the weights: refused, nothing launched */
	int l0 = *nlaunch;
	int rc = kvcc_gpu_compress(g, &cc, &ob, &ar, NULL);
	char want[200];
	snprintf(want, sizeof want, "error: weight '%s' was not given", w[0].name);
	snprintf(t, sizeof t, "%s: compress without weights: KVCC_EINVAL naming '%s' at its declaration", pname, w[0].name);
	T(t, rc == KVCC_EINVAL && strstr(kvcc_last_error(), want) && strstr(kvcc_last_error(), ".lua:") && *nlaunch == l0);
	rc = kvcc_gpu_compress_batch(g, &gb, &ar, NULL);
	snprintf(t, sizeof t, "%s: compress_batch without weights: KVCC_EINVAL", pname);
	T(t, rc == KVCC_EINVAL && strstr(kvcc_last_error(), want) && *nlaunch == l0);
	/* data */
	size_t tot = 0;
	for (int i = 0; i < nw; i++)
		tot += wn(&w[i]);
	float *data = malloc(tot * sizeof *data), *dev = malloc(tot * sizeof *dev);
	for (size_t k = 0; k < tot; k++)
		data[k] = (float)((k * 37 % 101) / 8.0 - 6.0);
	/* bad calls: the CPU plan's code and message, nothing uploaded */
	int h0 = *nhtod;
	int64_t bad[4];
	memcpy(bad, w[nw - 1].shape, sizeof bad);
	bad[0] += 1;
	float nanv[4096];
	for (size_t k = 0; k < wn(&w[0]) && k < 4096; k++)
		nanv[k] = 1;
	nanv[wn(&w[0]) > 2 ? 2 : 0] = NAN;
	struct {
		const char *what, *name;
		const float *d;
		int ndim;
		const int64_t *sh;
	} cases[] = {
		{ "unknown name", "nosuch", data, w[0].ndim, w[0].shape },
		{ "wrong shape", w[nw - 1].name, data, w[nw - 1].ndim, bad },
		{ "wrong ndim", w[0].name, data, w[0].ndim + 1, w[0].shape },
		{ "NaN", w[0].name, nanv, w[0].ndim, w[0].shape },
		{ "NULL data", w[0].name, NULL, w[0].ndim, w[0].shape },
	};
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		int rg = kvcc_gpu_plan_set_weight(g, cases[k].name, cases[k].d, cases[k].ndim, cases[k].sh);
		char mg[600];
		snprintf(mg, sizeof mg, "%s", kvcc_last_error());
		int rcpu = kvcc_plan_set_weight(c, cases[k].name, cases[k].d, cases[k].ndim, cases[k].sh);
		snprintf(t, sizeof t, "%s: set_weight %s: KVCC_EINVAL, the CPU plan's message", pname, cases[k].what);
		T(t, rg == KVCC_EINVAL && rcpu == rg && !strcmp(mg, kvcc_last_error()) && *nhtod == h0);
		if (k == 1)
			printf("  %s\n", mg);
	}
	T("set_weight NULL plan", kvcc_gpu_plan_set_weight(NULL, w[0].name, data, w[0].ndim, w[0].shape) == KVCC_EINVAL);
	/* all but the last: still refused, naming the last */
	size_t off = 0;
	for (int i = 0; i < nw - 1; off += wn(&w[i]), i++)
		T("set_weight", kvcc_gpu_plan_set_weight(g, w[i].name, data + off, w[i].ndim, w[i].shape) == 0);
	snprintf(want, sizeof want, "error: weight '%s' was not given", w[nw - 1].name);
	snprintf(t, sizeof t, "%s: compress with '%s' missing: refused", pname, w[nw - 1].name);
	T(t, kvcc_gpu_compress(g, &cc, &ob, &ar, NULL) == KVCC_EINVAL && strstr(kvcc_last_error(), want) && *nlaunch == l0);
	T("set_weight (last)", kvcc_gpu_plan_set_weight(g, w[nw - 1].name, data + off, w[nw - 1].ndim, w[nw - 1].shape) == 0);
	snprintf(t, sizeof t, "%s: one host-to-device copy per set_weight", pname);
	T(t, *nhtod == h0 + nw);
	const float *dw = kr_gpu_weights(g);
	snprintf(t, sizeof t, "%s: the device buffer holds the weights packed in declaration order", pname);
	T(t, dw && kr_cuda_get(dev, dw, tot * sizeof *dev) == 0 && !memcmp(dev, data, tot * sizeof *dev));
	/* compress: launches read the buffer, nothing uploaded */
	int h1 = *nhtod;
	l0 = *nlaunch;
	rc = kvcc_gpu_compress(g, &cc, &ob, &ar, NULL);
	int ok = rc == 0 && *nlaunch > l0 && *nhtod == h1;
	for (int k = l0; ok && k < *nlaunch && k < 64; k++)
		ok = largs[k].wts == dw;
	snprintf(t, sizeof t, "%s: compress: %d launches read KvgArgs.wts, nothing uploaded", pname, *nlaunch - l0);
	T(t, ok);
	l0 = *nlaunch;
	rc = kvcc_gpu_compress_batch(g, &gb, &ar, NULL);
	ok = rc == 0 && *nlaunch > l0 && *nhtod == h1;
	for (int k = l0; ok && k < *nlaunch && k < 64; k++)
		ok = largs[k].wts == dw && largs[k].B == 2;
	snprintf(t, sizeof t, "%s: compress_batch: launches read KvgArgs.wts, nothing uploaded", pname);
	T(t, ok);
	/* a new value for the first weight: one copy, the buffer changes there only */
	for (size_t k = 0; k < wn(&w[0]); k++)
		data[k] = -data[k] - 1;
	T("set_weight again", kvcc_gpu_plan_set_weight(g, w[0].name, data, w[0].ndim, w[0].shape) == 0 && *nhtod == h1 + 1);
	snprintf(t, sizeof t, "%s: set again: the buffer holds the new values", pname);
	T(t, kr_cuda_get(dev, dw, tot * sizeof *dev) == 0 && !memcmp(dev, data, tot * sizeof *dev));
	free(data), free(dev);
	kr_cuda_free(K), kr_cuda_free(V), kr_cuda_free(Q), kr_cuda_free(len), kr_cuda_free(pos);
out:
	kvcc_gpu_plan_destroy(g);
	kvcc_plan_destroy(c);
	kvcc_close(p);
}

/* static + dynamic shared memory against the opt-in limit (163 KiB in the fake driver), on snapkv
** f32 head_dim 8 (kv_score0 and kv_select with dynamic sizes under 48 KiB) */
static void smem(const char *bdir, void *fk)
{
	int *st = dlsym(fk, "fake_static_smem"), *nset = dlsym(fk, "fake_nsetattr");
	char so[700];
	snprintf(so, sizeof so, "%s/gpu-wts-test/snapkv8.so", bdir);
	kvcc_spec s = { KVCC_F32, 8, 1, KVCC_TARGET_NATIVE };
	kvcc_policy *p = NULL;
	if (!st || !nset || kvcc_compile_so_gpu("policies/snapkv.lua", &s, "sm_80", so, 0) != 0 || kvcc_open(so, &p) != 0) {
		printf("FAIL smem: fake_static_smem / compile / open: %s\n", kvcc_last_error());
		nfail++;
		return;
	}
	kvcc_layout lay = { KVCC_F32, 2, 3, 8, 32, 3 * 32 * 8, 32 * 8, 8 };
	kvcc_gpu_plan *g = NULL;
	/* the kernels' dynamic sizes (the artifact's launch metadata) */
	void *hd = NULL;
	char why[300];
	const void *blob = kr_gpu_find(p, &hd, why, sizeof why);
	KpCudaOut v;
	int ndyn = -1, small = 0;
	if (blob && kr_gpu_view(blob, (size_t)-1, &v, NULL, why, sizeof why) == 0) {
		ndyn = 0;
		for (int k = 0; k < v.nkern; k++)
			ndyn += v.img[0].dsmem[k] > 0, small += v.img[0].dsmem[k] > 0 && v.img[0].dsmem[k] <= 48 * 1024;
	}
	if (hd)
		dlclose(hd);
	T("smem: snapkv f32 d8 has kernels with dynamic shared memory under 48 KiB", ndyn > 0 && small > 0);
	*st = 163 * 1024;   /* the whole limit static: a kernel with any dynamic size no longer fits */
	int rc = kvcc_gpu_plan_create_batch(p, &lay, NULL, 2, 4, 0, &g);
	T("static + dynamic shared memory above the opt-in limit: refused, both sizes named",
	  rc != 0 && !g && strstr(kvcc_last_error(), "B static + ") && strstr(kvcc_last_error(), "allows 166912"));
	printf("  %s\n", kvcc_last_error());
	kvcc_gpu_plan_destroy(g);
	g = NULL;
	*st = 1024;         /* small static arrays: fits, no opt-in below 48 KiB in all */
	int n0 = *nset;
	T("static + dynamic shared memory within the limit: plan created, no opt-in under 48 KiB",
	  kvcc_gpu_plan_create_batch(p, &lay, NULL, 2, 4, 0, &g) == 0 && g && *nset == n0);
	kvcc_gpu_plan_destroy(g);
	g = NULL;
	/* the dynamic opt-in: needed once static + dynamic passes 48 KiB, whatever the dynamic size
	** alone (the default dynamic limit is 48 KiB less the static arrays) */
	*st = 48 * 1024;
	n0 = *nset;
	T("static 48 KiB: every kernel with dynamic shared memory opted in",
	  kvcc_gpu_plan_create_batch(p, &lay, NULL, 2, 4, 0, &g) == 0 && *nset - n0 == ndyn);
	kvcc_gpu_plan_destroy(g);
	*st = 0;
	kvcc_close(p);
}

int main(int argc, char **argv)
{
	const char *b = argc > 1 ? argv[1] : "build";
	const char *lib = getenv("KVCC_LIBCUDA");
	void *fk = lib ? dlopen(lib, RTLD_NOW | RTLD_GLOBAL) : NULL;
	nlaunch = fk ? dlsym(fk, "fake_nlaunch") : NULL;
	nhtod = fk ? dlsym(fk, "fake_nhtod") : NULL;
	largs = fk ? dlsym(fk, "fake_args") : NULL;
	if (!nlaunch || !nhtod || !largs) {
		printf("FAIL: KVCC_LIBCUDA must name tests/gpu/fakecuda.c's library (%s)\n", lib ? lib : "unset");
		return 1;
	}
	char why[400];
	int maj, min;
	if (kp_nvrtc_available(&maj, &min, why, sizeof why) != 0) {
		printf("SKIP GPU weights: %s\ngpu_wts: 0 passed, 0 failed, 1 skipped\n", why);
		return 0;
	}
	char cmd[1400], cdir[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s/gpu-wts-test' && mkdir -p '%s/gpu-wts-test/cache'", b, b);
	if (system(cmd) != 0)
		return 1;
	snprintf(cdir, sizeof cdir, "%s/gpu-wts-test/cache", b);
	setenv("KVCC_CACHE_DIR", cdir, 1);
	kvcc_spec s = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
	/* wtest's declarations in declaration order (kv.weights declares by name: dsl/builder.c):
	** wb {layer, head}, wg {group, layer, head}, wk {layer, head, chan}, wq {head, group, chan},
	** wt {chan, layer}; L 2, H 3, G 2, d 64 */
	W wt[] = { { "wb", 2, { 2, 3 } }, { "wg", 3, { 2, 2, 3 } }, { "wk", 3, { 2, 3, 64 } }, { "wq", 3, { 3, 2, 64 } },
	           { "wt", 2, { 64, 2 } } };
	one(b, "tests/policies/wtest.lua", "wtest", &s, wt, 5);
	kvcc_spec s2 = { KVCC_BF16, 64, 4, KVCC_TARGET_NATIVE };
	W wd[] = { { "duo_rank", 2, { 2, 3 } } };
	one(b, "policies/duo.lua", "duo", &s2, wd, 1);
	smem(b, fk);
	printf("gpu_wts: %d passed, %d failed, %d skipped\n", npass, nfail, nskip);
	return nfail != 0;
}
