/*
** make bench-gpu: SnapKV compression on the GPU through the libkvcc GPU API
** (a program, not a test). bf16, head_dim 128, 8 KV heads, group 4, window 64
** observation queries, ratio 0.5, n in {32768, 131072}; one layer.
**
** Per kernel: median time over REPS runs (CUDA events around each launch),
** TFLOP/s of Q·Kᵀ (2·n·H·G·W·d) for the score kernel, GB/s of the bytes each
** kernel must move (score: K + Q; select: scores + the kept K/V rows read and
** written), against the device's peak DRAM bandwidth (from the driver's memory
** clock and bus width, when it reports them) and against a device-to-device
** copy of K measured in the same run. kvpress's SnapKVPress with torch on the
** same GPU (build/bench-venv, tests/gpu/kvpress_gpu.py) when available.
** Without a usable driver: "SKIP: no GPU (why)", exit 0.
**   bench_gpu [BUILD_DIR] [REPS]
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <dlfcn.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "runtime/gpu.h"

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static uint16_t bf16(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

int main(int argc, char **argv)
{
	const char *b = argc > 1 ? argv[1] : "build";
	int reps = argc > 2 ? atoi(argv[2]) : 20;
	char why[600];
	if (kr_cuda_driver_load(why, sizeof why) != 0) {
		printf("SKIP: no GPU (%s)\n", why);
		return 0;
	}
	char dname[128];
	int at[6];
	if (kr_cuda_device_info(0, dname, sizeof dname, at) != 0) {
		printf("SKIP: no GPU (no CUDA device 0)\n");
		return 0;
	}
	double peak_gbs = at[3] > 0 && at[4] > 0 ? 2.0 * at[3] * 1e3 * (at[4] / 8.0) / 1e9 : 0;
	printf("# kvcc bench-gpu: %s (sm_%d, %d SMs, %.0f MHz, peak DRAM %.0f GB/s%s)\n", dname, at[0], at[1],
	       at[2] / 1e3, peak_gbs, peak_gbs ? "" : " not reported");
	const int H = 8, G = 4, D = 128, W = 64;
	kvcc_spec s = { KVCC_BF16, D, G, KVCC_TARGET_NATIVE };
	char so[700];
	snprintf(so, sizeof so, "%s/bench-snapkv-gpu.so", b);
	kvcc_policy *p = NULL;
	if (kvcc_compile_so_gpu("policies/snapkv.lua", &s, "sm_80,sm_90", so, 0) != 0 || kvcc_open(so, &p) != 0) {
		printf("FAIL: %s\n", kvcc_last_error());
		return 1;
	}
	int wi = kvcc_param_index(p, "window");
	double par[16];
	for (int i = 0; i < kvcc_param_count(p) && i < 16; i++)
		kvcc_param_info(p, i, NULL, &par[i]);
	if (wi >= 0)
		par[wi] = W;
	static const int ns[] = { 32768, 131072 };
	int rc = 0;
	for (int ni = 0; ni < 2 && rc == 0; ni++) {
		int n = ns[ni];
		kvcc_layout lay = { KVCC_BF16, 1, H, D, n, (int64_t)H * n * D, (int64_t)n * D, D };
		kvcc_gpu_plan *pl = NULL;
		if (kvcc_gpu_plan_create(p, &lay, W, 0, &pl) != 0) {
			printf("FAIL: %s\n", kvcc_last_error());
			rc = 1;
			break;
		}
		size_t nkv = (size_t)H * n * D, nq = (size_t)H * G * W * D;
		uint16_t *hk = malloc(nkv * 2), *hq = malloc(nq * 2);
		int32_t *hpos = malloc((size_t)H * n * 4), hlen[8];
		uint64_t r = 88172645463325252ull;
		for (size_t i = 0; i < nkv; i++) {
			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			hk[i] = bf16((float)((double)(r >> 11) / 9007199254740992.0 * 2 - 1));
		}
		for (size_t i = 0; i < nq; i++)
			hq[i] = hk[(i * 7919) % nkv];
		for (int h = 0; h < H; h++) {
			hlen[h] = n;
			for (int t = 0; t < n; t++)
				hpos[(size_t)h * n + t] = t;
		}
		void *K = kr_cuda_alloc(nkv * 2), *V = kr_cuda_alloc(nkv * 2), *K2 = kr_cuda_alloc(nkv * 2), *Q = kr_cuda_alloc(nq * 2);
		void *pos = kr_cuda_alloc((size_t)H * n * 4), *len = kr_cuda_alloc(H * 4), *sc = kr_cuda_alloc((size_t)H * n * 4);
		if (!K || !V || !K2 || !Q || !pos || !len || !sc || kr_cuda_put(K, hk, nkv * 2) || kr_cuda_put(V, hk, nkv * 2) ||
		    kr_cuda_put(Q, hq, nq * 2)) {
			printf("FAIL: device allocation (%zu MB)\n", nkv * 6 >> 20);
			rc = 1;
		}
		kvcc_cache c = { K, V, pos, len, NULL };
		kvcc_obs o = { W, Q, NULL, NULL };
		kvcc_args a = { 0.5, -1, par, 0, sc };
		KvgArgs ka;
		KrCuda *m = kr_gpu_module(pl);
		const KpCudaOut *art = NULL;
		int nk = 0;
		double *t = calloc((size_t)reps * 8, sizeof *t), *tc = calloc((size_t)reps, sizeof *tc), tot[8] = { 0 };
		for (int it = -2; it < reps && rc == 0; it++) {       /* 2 warm-up runs */
			double ms[8] = { 0 };
			if (kr_cuda_put(pos, hpos, (size_t)H * n * 4) || kr_cuda_put(len, hlen, sizeof hlen) ||
			    kr_gpu_args(pl, &c, &o, &a, &ka) || kr_cuda_time_compress(m, &ka, ms, why, sizeof why) ||
			    kvcc_gpu_plan_check(pl)) {
				printf("FAIL: n=%d: %s %s\n", n, why, kvcc_last_error());
				rc = 1;
				break;
			}
			if (it >= 0) {
				for (int k = 0; k < 8; k++)
					t[k * reps + it] = ms[k];
				tc[it] = kr_cuda_time_d2d(K2, K, nkv * 2);
			}
		}
		(void)art;
		if (rc == 0) {
			/* kernel names and roles from the embedded artifact */
			const kvcc_gpu_header *h = NULL;
			void *dl = NULL;
			KpCudaOut v;
			const void *blob = kr_gpu_find(p, &dl, why, sizeof why);
			if (blob && kr_gpu_view(blob, (size_t)-1, &v, &h, why, sizeof why) == 0)
				nk = v.nkern;
			qsort(tc, (size_t)reps, sizeof *tc, cmpd);
			double copy_ms = tc[reps / 2], kbytes = (double)nkv * 2, copy_gbs = 2 * kbytes / (copy_ms * 1e6);
			printf("\n## n = %d (%s)\nD2D copy of K (%.0f MB): %.3f ms, %.0f GB/s (read + write)\n\n", n,
			       kvcc_gpu_plan_image(pl), kbytes / 1e6, copy_ms, copy_gbs);
			printf("| kernel | median ms | TFLOP/s | GB/s | %% of peak | %% of D2D copy |\n|---|---|---|---|---|---|\n");
			double all = 0;
			for (int k = 0; k < nk; k++) {
				qsort(t + (size_t)k * reps, (size_t)reps, sizeof *t, cmpd);
				tot[k] = t[(size_t)k * reps + reps / 2];
				all += tot[k];
				int score = v.kern[k].role == 0;
				double flops = score ? 2.0 * n * H * G * W * D : 0;
				double bytes = score ? kbytes + (double)nq * 2 + (double)H * n * 4
				                     : (double)H * n * 4 * 2 + 2 * 2 * 0.5 * kbytes + (double)H * n * 4;
				double gbs = bytes / (tot[k] * 1e6);
				printf("| %s | %.3f | %.2f | %.0f | %.0f%% | %.0f%% |\n", v.kern[k].name, tot[k],
				       flops / (tot[k] * 1e9), gbs, peak_gbs ? 100 * gbs / peak_gbs : 0, 100 * gbs / copy_gbs);
			}
			printf("| total | %.3f | | | | |\n", all);
			if (dl)
				dlclose(dl);
			/* kvpress / torch on the same GPU */
			char py[800], cmd[1400];
			snprintf(py, sizeof py, "%s/bench-venv/bin/python", b);
			if (access(py, X_OK) == 0) {
				snprintf(cmd, sizeof cmd, "%s tests/gpu/kvpress_gpu.py %d %d %d %d %d 0.5 %d 2>&1 | tail -1", py, n,
				         H, G, D, W, reps);
				FILE *fp = popen(cmd, "r");
				char line[1000] = "";
				if (fp && fgets(line, sizeof line, fp))
					printf("\nkvpress SnapKVPress (torch, same GPU): %s", line);
				if (fp)
					pclose(fp);
			} else
				printf("\nkvpress: skipped (no %s; run bench/setup)\n", py);
		}
		free(t), free(tc), free(hk), free(hq), free(hpos);
		kr_cuda_free(K), kr_cuda_free(V), kr_cuda_free(K2), kr_cuda_free(Q), kr_cuda_free(pos), kr_cuda_free(len), kr_cuda_free(sc);
		kvcc_gpu_plan_destroy(pl);
	}
	kvcc_close(p);
	return rc;
}
