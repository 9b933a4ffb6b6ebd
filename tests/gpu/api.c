/*
** The GPU artifact and the libkvcc CUDA API without a GPU (make check-emu):
**   kvcc_compile_so_gpu embeds KVCC_GPU_SYMBOL (PTX + CUBIN per target, launch
**   metadata) beside the CPU descriptor; a policy.so without it is unchanged;
**   the compile cache: a second compile is a hit (same inode), another target
**   list or NVRTC version is a different key and a miss that names the field;
**   unsupported targets are rejected with a message; the blob reader rejects
**   corrupted/truncated blobs; kvcc_gpu_plan_create without a driver is
**   KVCC_EUNSUPPORTED with "CUDA driver not found" (run with KVCC_LIBCUDA
**   pointing nowhere, so this means the same on a machine with a GPU), and
**   every GPU entry point refuses bad arguments without crashing.
** Without NVRTC the compile parts print SKIP lines (never a pass).
**   gpu_api BUILD_DIR
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <unistd.h>
#include <sys/stat.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "runtime/artifact.h"
#include "runtime/gpu.h"
#include "compiler/driver.h"
#include "compiler/interp.h"
#include "dsl/dsl.h"

static int npass, nfail, nskip;

#define T(name, cond)                                                                          \
	do {                                                                                   \
		if (cond)                                                                      \
			npass++;                                                               \
		else {                                                                         \
			nfail++;                                                               \
			printf("FAIL %s: %s\n", name, kvcc_last_error());                     \
		}                                                                              \
	} while (0)

static ino_t inode(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? st.st_ino : 0;
}

static const kvcc_layout lay = { KVCC_BF16, 2, 2, 128, 64, 2 * 64 * 128, 64 * 128, 128 };

/* plan_create on a policy.so: no driver → EUNSUPPORTED "CUDA driver not found" */
static void nodriver(const char *so)
{
	kvcc_policy *p = NULL;
	T("open", kvcc_open(so, &p) == 0);
	if (!p)
		return;
	kvcc_gpu_plan *pl = (kvcc_gpu_plan *)1;
	int rc = kvcc_gpu_plan_create(p, &lay, 8, 0, &pl);
	T("plan_create without a driver: KVCC_EUNSUPPORTED + 'CUDA driver not found'",
	  rc == KVCC_EUNSUPPORTED && pl == NULL && strstr(kvcc_last_error(), "CUDA driver not found"));
	printf("  no driver: %s\n", kvcc_last_error());
	kvcc_layout bad = lay;
	bad.head_dim = 64;
	T("plan_create: layout of another head_dim is KVCC_ESPEC", kvcc_gpu_plan_create(p, &bad, 8, 0, &pl) == KVCC_ESPEC);
	bad = lay, bad.capacity = 0;
	T("plan_create: bad layout is KVCC_EINVAL", kvcc_gpu_plan_create(p, &bad, 8, 0, &pl) == KVCC_EINVAL);
	T("plan_create: NULL out", kvcc_gpu_plan_create(p, &lay, 8, 0, NULL) == KVCC_EINVAL);
	kvcc_close(p);
}

/* h2o bf16 d128 g4: split kernel (role 2) then combine (role 3), the partials'
** workspace term, no spills; a role out of range is refused */
static void decode_meta(const char *dir)
{
	char so[700], why[400];
	snprintf(so, sizeof so, "%s/h2o-gpu.so", dir);
	kvcc_spec s = { KVCC_BF16, 128, 4, KVCC_TARGET_NATIVE };
	T("compile h2o --gpu-arch sm_80,sm_90", kvcc_compile_so_gpu("policies/h2o.lua", &s, "sm_80,sm_90", so, 0) == 0);
	void *dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
	const void *blob = dl ? dlsym(dl, KVCC_GPU_SYMBOL) : NULL;
	KpCudaOut v;
	const kvcc_gpu_header *h = NULL;
	T("h2o blob well-formed", blob && kr_gpu_view(blob, (size_t)-1, &v, &h, why, sizeof why) == 0);
	if (h) {
		int dec = -1, comb = -1, spills = 0;
		for (int k = 0; k < v.nkern; k++) {
			if (v.kern[k].role == KVG_DECODE)
				dec = k;
			if (v.kern[k].role == KVG_COMBINE)
				comb = k;
			for (int i = 0; i < v.nimg; i++)
				spills += v.img[i].spill[k];
		}
		T("decode: kv_decode then kv_decode_comb", v.has_decode && dec >= 0 && comb > dec &&
		                                             !strcmp(v.kern[dec].name, "kv_decode") &&
		                                             !strcmp(v.kern[comb].name, "kv_decode_comb"));
		T("decode: partials are splits * (warps * group * (head_dim + 2)) floats",
		  v.dec_part == 8 * 4 * 130 && kvg_ws_floats(&v, 1000, 0, 3) - kvg_ws_floats(&v, 1000, 0, 1) == 2 * v.dec_part);
		T("h2o kernels do not spill", spills == 0);
		char *c = malloc(h->size);
		memcpy(c, blob, h->size);
		((kvcc_gpu_kernel *)((kvcc_gpu_header *)c + 1))[dec].role = KVG_PAGED + 1;
		KpCudaOut v2;
		T("unknown kernel role refused", kr_gpu_view(c, h->size, &v2, NULL, why, sizeof why) != 0 && strstr(why, "kernel"));
		free(c);
	}
	if (dl)
		dlclose(dl);
}

/* select scope layer / model (CUDA C only, no NVRTC): kv_select_grp (role 4, grid L for
** scope layer, 1 for model) before kv_select; its records fit the workspace */
static void scope_meta(const char *lua, int layer)
{
	KiErr e = { 0 };
	KiFn *f = kd_loadfile(lua, NULL, &e);
	KpCudaOpts o = { .dtype = KVCC_BF16, .head_dim = 128, .group = 4, .gen_only = 1 };
	KpCudaOut out;
	int ok = f && ki_runpasses(f, KI_DEFAULT_PASSES, 0, &e, NULL, NULL) == 0 && kp_compile_cuda(f, &o, &out, &e) == 0;
	T(lua, ok);
	if (ok) {
		int grp = -1, sel = -1;
		for (int k = 0; k < out.nkern; k++) {
			if (out.kern[k].role == KVG_SELGRP)
				grp = k;
			if (out.kern[k].role == KVG_SELECT)
				sel = k;
		}
		T("select scope: kv_select_grp, then kv_select", grp >= 0 && sel > grp &&
		                                                  !strcmp(out.kern[grp].name, "kv_select_grp") &&
		                                                  out.kern[grp].phase == layer && out.ws_coef[0] >= 8);
		kp_cuda_free(&out);
	}
	ki_free(f);
}

int main(int argc, char **argv)
{
	const char *b = argc > 1 ? argv[1] : "build";
	char dir[600], so[700], so2[700], so3[700];
	snprintf(dir, sizeof dir, "%s/gpu-api-test", b);
	char cmd[1400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/cache'", dir, dir);
	if (system(cmd) != 0)
		return 1;
	char cdir[700];
	snprintf(cdir, sizeof cdir, "%s/cache", dir);
	setenv("KVCC_CACHE_DIR", cdir, 1);
	snprintf(so, sizeof so, "%s/snapkv-gpu.so", dir);
	snprintf(so2, sizeof so2, "%s/snapkv-cpu.so", dir);
	snprintf(so3, sizeof so3, "%s/snapkv-gpu80.so", dir);
	kvcc_spec s = { KVCC_BF16, 128, 4, KVCC_TARGET_NATIVE };

	/* without --gpu-arch nothing changes: no GPU symbol; plan_create says no driver first */
	T("compile without --gpu-arch", kvcc_compile_so("policies/snapkv.lua", &s, so2, 0) == 0);
	void *dl = dlopen(so2, RTLD_NOW | RTLD_LOCAL);
	T("no kvcc_artifact_gpu without --gpu-arch", dl && dlsym(dl, KVCC_DESC_SYMBOL) && !dlsym(dl, KVCC_GPU_SYMBOL));
	if (dl)
		dlclose(dl);
	nodriver(so2);
	{
		kvcc_policy *p = NULL;
		void *h = NULL;
		char why[600] = "";
		T("open", kvcc_open(so2, &p) == 0);
		T("kr_gpu_find: a CPU-only policy.so says how to add GPU kernels",
		  p && !kr_gpu_find(p, &h, why, sizeof why) && strstr(why, "--gpu-arch"));
		kvcc_close(p);
	}
	T("gpu_compress NULL plan", kvcc_gpu_compress(NULL, NULL, NULL, NULL, NULL) == KVCC_EINVAL);
	T("gpu_plan_check NULL plan", kvcc_gpu_plan_check(NULL) == KVCC_EINVAL);
	/* the decode calls (issue 14): argument errors without a device */
	T("gpu_decode_batch NULL plan", kvcc_gpu_decode_batch(NULL, NULL, 0, NULL, NULL, NULL) == KVCC_EINVAL);
	T("gpu_decode NULL plan", kvcc_gpu_decode(NULL, NULL, 0, NULL, NULL, NULL) == KVCC_EINVAL);
	T("gpu_plan_set_step NULL plan", kvcc_gpu_plan_set_step(NULL, 0) == KVCC_EINVAL);
	kvcc_gpu_plan_destroy(NULL);
	T("gpu_plan_image NULL plan", kvcc_gpu_plan_image(NULL) == NULL);

	/* split-KV decode: the plan's split count (a pure function of the layout) */
	T("dec splits: few instances, long cache: KVG_DEC_BLOCKS / instances",
	  kvg_dec_splits(131072, 4) == KVG_DEC_BLOCKS / 4 && kvg_dec_splits(131072, 3) == (KVG_DEC_BLOCKS + 2) / 3);
	T("dec splits: capped by capacity / KVG_DEC_TMIN, at least 1",
	  kvg_dec_splits(4 * KVG_DEC_TMIN + 5, 1) == 4 && kvg_dec_splits(64, 4) == 1 && kvg_dec_splits(0, 1) == 1);
	T("dec splits: many instances: 1 or 2", kvg_dec_splits(32768, 256) == 2 && kvg_dec_splits(32768, 1024) == 1);

	scope_meta("tests/policies/scope_layer.lua", 1);
	scope_meta("tests/policies/scope_model.lua", 0);

	int maj = 0, min = 0;
	char why[400];
	if (kp_nvrtc_available(&maj, &min, why, sizeof why) != 0) {
		printf("SKIP GPU artifact and cache tests: %s\n", why);
		nskip++;
		goto done;
	}
	/* unsupported targets: rejected at compile time, nothing written */
	T("sm_70 rejected", kvcc_compile_so_gpu("policies/snapkv.lua", &s, "sm_70", so, 0) == KVCC_EUNSUPPORTED &&
	                        strstr(kvcc_last_error(), "sm_80 or newer") && access(so, F_OK) != 0);
	T("sm_99 rejected", kvcc_compile_so_gpu("policies/snapkv.lua", &s, "sm_99", so, 0) == KVCC_EUNSUPPORTED &&
	                        strstr(kvcc_last_error(), "cannot target sm_99"));
	T("'ampere' rejected", kvcc_compile_so_gpu("policies/snapkv.lua", &s, "ampere", so, 0) == KVCC_EUNSUPPORTED &&
	                           strstr(kvcc_last_error(), "not an sm_XY name"));

	/* the artifact */
	T("compile --gpu-arch sm_90,sm_80", kvcc_compile_so_gpu("policies/snapkv.lua", &s, "sm_90,sm_80", so, 0) == 0);
	dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
	const void *blob = dl ? dlsym(dl, KVCC_GPU_SYMBOL) : NULL;
	const kvcc_artifact *a = dl ? dlsym(dl, KVCC_DESC_SYMBOL) : NULL;
	KpCudaOut v;
	const kvcc_gpu_header *h = NULL;
	T("kvcc_artifact_gpu present and well-formed", blob && a && kr_gpu_view(blob, (size_t)-1, &v, &h, why, sizeof why) == 0);
	if (h) {
		T("blob belongs to the descriptor (kir_hash)", h->kir_hash == a->desc->kir_hash);
		T("spec, targets, NVRTC version", h->dtype == KVCC_BF16 && h->head_dim == 128 && h->group == 4 &&
		                                     !strcmp(h->archs, "sm_80,sm_90") && h->nvrtc_major == maj &&
		                                     h->nvrtc_minor == min);
		T("two images, PTX and CUBIN each", v.nimg == 2 && v.img[0].sm == 80 && v.img[1].sm == 90 &&
		                                       v.img[0].nptx > 1000 && v.img[0].ncubin > 1000 &&
		                                       v.img[1].ncubin > 1000 && strstr(v.img[1].ptx, ".target sm_90"));
		int sel = -1, score = 0;
		for (int k = 0; k < v.nkern; k++) {
			if (v.kern[k].role == 1)
				sel = k;
			score += v.kern[k].role == 0;
		}
		T("launch metadata: kernels, block, dynamic smem (opt-in), workspace formula",
		  sel >= 0 && score >= 1 && v.nthreads == 256 && v.img[1].dsmem[sel] > 48 * 1024 && v.ws_coef[1] > 0 &&
		      v.img[0].regs[sel] > 0);
		/* corrupted copies are refused */
		char *c = malloc(h->size);
		memcpy(c, blob, h->size);
		KpCudaOut v2;
		c[0] ^= 1;
		T("bad magic refused", kr_gpu_view(c, h->size, &v2, NULL, why, sizeof why) != 0 && strstr(why, "magic"));
		c[0] ^= 1;
		T("truncated blob refused", kr_gpu_view(c, h->size - 1, &v2, NULL, why, sizeof why) != 0);
		kvcc_gpu_image *im = (kvcc_gpu_image *)((kvcc_gpu_kernel *)((kvcc_gpu_header *)c + 1) + h->nkern);
		im[1].cubin_len = (uint64_t)h->size * 2;
		T("image out of bounds refused", kr_gpu_view(c, h->size, &v2, NULL, why, sizeof why) != 0 && strstr(why, "image"));
		free(c);
	}
	if (dl)
		dlclose(dl);
	{
		kvcc_policy *p = NULL;
		void *hd = NULL;
		T("open GPU policy.so", kvcc_open(so, &p) == 0);
		T("kr_gpu_find finds the blob of the open policy", p && kr_gpu_find(p, &hd, why, sizeof why) != NULL);
		if (hd)
			dlclose(hd);
		kvcc_close(p);
	}
	nodriver(so);
	decode_meta(dir);

	/* the cache: hit, and a miss per GPU key field */
	char first[1400] = "", again[1400] = "";
	KiErr e = { 0 };
	KiJob j = { .path = "policies/snapkv.lua", .spec = s, .gpu = "sm_90,sm_80,sm_90" };
	KiJob jc = { .path = "policies/snapkv.lua", .spec = s };
	char tmpso[700];
	snprintf(tmpso, sizeof tmpso, "%s/nocache.so", dir);
	T("load and plan", ki_front(&j, &e) == 0 && ki_front(&jc, &e) == 0);
	T("gpu key", ki_targets(&j, &e) == 0 && !strcmp(j.targets.archs, "sm_80,sm_90"));
	KpGpu g = j.targets;
	T("cache: compiled --gpu-arch artifact is cached", ki_cached(&j, tmpso, first, sizeof first, &e) == 0);
	T("cache: second lookup is a hit (same file)",
	  ki_cached(&j, tmpso, again, sizeof again, &e) == 0 && !strcmp(first, again) && inode(first) == inode(again));
	char cpu[1400] = "";
	T("cache: the CPU-only key is another artifact",
	  ki_cached(&jc, tmpso, cpu, sizeof cpu, &e) == 0 && strcmp(cpu, first) != 0);
	snprintf(j.targets.archs, sizeof j.targets.archs, "sm_80");
	char p80[1400] = "";
	/* the miss message names the field (verbose goes to stderr: capture it) */
	char log[700];
	snprintf(log, sizeof log, "%s/miss.log", dir);
	fflush(stderr);
	FILE *saved = fopen(log, "w");
	int fd = dup(2);
	dup2(fileno(saved), 2);
	j.verbose = 1;
	T("cache: another target list is another key",
	  ki_cached(&j, tmpso, p80, sizeof p80, &e) == 0 && strcmp(p80, first) != 0);
	j.targets = g;
	j.targets.nvrtc_minor += 1;
	char pv[1400] = "";
	T("cache: another NVRTC version is another key",
	  ki_cached(&j, tmpso, pv, sizeof pv, &e) == 0 && strcmp(pv, first) != 0 && strcmp(pv, p80) != 0);
	fflush(stderr);
	dup2(fd, 2);
	close(fd);
	fclose(saved);
	ki_job_free(&j), ki_job_free(&jc);
	char buf[8000] = "";
	FILE *lf = fopen(log, "r");
	size_t nr = lf ? fread(buf, 1, sizeof buf - 1, lf) : 0;
	buf[nr] = 0;
	if (lf)
		fclose(lf);
	T("cache: the miss names the targets", strstr(buf, "gpu (cached sm_80,sm_90, wanted sm_80)") != NULL);
	char want[80];
	snprintf(want, sizeof want, "nvrtc (cached %d.%d, wanted %d.%d)", maj, min, maj, min + 1);
	T("cache: the miss names the NVRTC version", strstr(buf, want) != NULL);
	if (nfail)
		printf("  miss log: %s\n", buf);
	/* and through the CLI path: the second compile copies the cached artifact */
	T("compile again (hit)", kvcc_compile_so_gpu("policies/snapkv.lua", &s, "sm_80", so3, 0) == 0);
done:
	printf("gpu_api: %d passed, %d failed, %d skipped\n", npass, nfail, nskip);
	return nfail != 0;
}
