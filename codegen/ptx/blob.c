/*
** The GPU part of an artifact, compile side (runtime/artifact.h, kvcc_gpu_header): the targets
** (--gpu-arch, normalized, checked against NVRTC), the policy's kernels through codegen/ptx
** (CUDA C → NVRTC → PTX + CUBIN per target) serialized into one read-only blob (header, kernel
** and image records, then the PTX/CUBIN bytes) and emitted as the exported constant
** KVCC_GPU_SYMBOL of an x86-64 object that the driver links into the same policy.so as the CPU
** kernels. The runtime reads it back (runtime/gpu.c).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include "codegen/ptx/ptx.h"
#include "compiler/interp.h"

_Static_assert(KVG_MAXKERN == 8, "kvcc_gpu_image has 8 kernel slots");
_Static_assert(KVG_SCORE == 0 && KVG_SELECT == 1 && KVG_DECODE == 2 && KVG_COMBINE == 3 && KVG_SELGRP == 4,
               "kvcc_gpu_kernel.role values");

static int cmpint(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int kp_gpu_targets(const char *archs, KpGpu *g, const KiFn *f, KiErr *e)
{
	memset(g, 0, sizeof *g);
	char why[300];
	if (kp_nvrtc_available(&g->nvrtc_major, &g->nvrtc_minor, why, sizeof why) != 0)
		return ki_error(e, f->src, 0, 0, "GPU backend: %s", why), -1;
	int have[64], nhave = kp_nvrtc_archs(have, 64), sm[KVG_MAXARCH], n = 0;
	if (nhave < 0)
		return ki_error(e, f->src, 0, 0, "GPU backend: NVRTC lists no supported architectures"), -1;
	if (!archs || !*archs)
		return ki_error(e, f->src, 0, 0, "--gpu-arch: empty target list (e.g. sm_80,sm_90)"), -1;
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
				return ki_error(e, f->src, 0, 0, "--gpu-arch: '%s' is not an sm_XY name (e.g. sm_80,sm_90)", one), -1;
			if (v < 80)
				return ki_error(e, f->src, 0, 0,
				                "--gpu-arch: %s is not supported: kvcc's GPU kernels need sm_80 or newer "
				                "(bf16 arithmetic, > 48 KB shared memory)", one), -1;
			int ok = 0;
			for (int i = 0; i < nhave; i++)
				ok |= have[i] == v;
			if (!ok) {
				char list[256] = "";
				for (int i = 0; i < nhave; i++)
					snprintf(list + strlen(list), sizeof list - strlen(list), " sm_%d", have[i]);
				return ki_error(e, f->src, 0, 0, "--gpu-arch: NVRTC %d.%d cannot target %s (supported:%s)",
				                g->nvrtc_major, g->nvrtc_minor, one, list), -1;
			}
			int dup = 0;
			for (int i = 0; i < n; i++)
				dup |= sm[i] == v;
			if (!dup) {
				if (n == KVG_MAXARCH)
					return ki_error(e, f->src, 0, 0, "--gpu-arch: at most %d targets", KVG_MAXARCH), -1;
				sm[n++] = (int)v;
			}
			s += l + (c ? 1 : 0);
		}
	if (!n)
		return ki_error(e, f->src, 0, 0, "--gpu-arch: no target"), -1;
	qsort(sm, (size_t)n, sizeof *sm, cmpint);
	for (int i = 0; i < n; i++) {
		size_t u = strlen(g->archs);
		if (snprintf(g->archs + u, sizeof g->archs - u, "%ssm_%d", i ? "," : "", sm[i]) >= (int)(sizeof g->archs - u))
			return ki_error(e, f->src, 0, 0, "--gpu-arch: too many targets"), -1;
	}
	return 0;
}

/* --- the blob ----------------------------------------------------------------------------- */

static size_t al16(size_t x) { return (x + 15) & ~(size_t)15; }

void *kp_gpu_blob(const KpCudaOut *o, const kvcc_spec *spec, uint64_t kir_hash, const char *archs, const char *cfg,
                  size_t *n)
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
	snprintf(h->config, sizeof h->config, "%s", cfg ? cfg : "");
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

void kp_gpu_print(const KpCudaOut *v, const kvcc_gpu_header *h, FILE *fp)
{
	fprintf(fp, "kvcc: GPU kernels (%s, NVRTC %d.%d): %s head_dim %d group %d, %d threads/block, grid = layers*kv_heads\n",
	        h->archs, h->nvrtc_major, h->nvrtc_minor, ki_dtypename(h->dtype), h->head_dim, h->group, v->nthreads);
	if (h->config[0])
		fprintf(fp, "kvcc:   GPU config %s\n", h->config);
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
			        (unsigned long long)im->dsmem[k] + (unsigned)im->smem[k] > 48u * 1024 ? " (opt-in)" : "", im->spill[k]);
	}
}

/* --- the object ---------------------------------------------------------------------------- */

/* the blob as the exported constant KVCC_GPU_SYMBOL of an x86-64 PIC object */
static int emit_object(const void *blob, size_t n, const char *path, KiErr *e, const KiFn *f)
{
	LLVMInitializeX86TargetInfo();
	LLVMInitializeX86Target();
	LLVMInitializeX86TargetMC();
	LLVMInitializeX86AsmPrinter();
	char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
	LLVMTargetRef tgt;
	if (LLVMGetTargetFromTriple(triple, &tgt, &err)) {
		ki_error(e, f->src, 0, 0, "LLVM: %s", err);
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
		ki_error(e, f->src, 0, 0, "LLVM (GPU artifact object): %s", err ? err : "?");
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

int kp_gpu_emit(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KpGpu *g, const char *obj, int verbose,
                double *ms, KiErr *e)
{
	return kp_gpu_emit_cfg(f, p, spec, g, NULL, obj, verbose, ms, e);
}

/* kp_gpu_emit_cfg in two halves: NVRTC runs on worker threads between them (compile.c) */
struct KpGpuJob {
	const KiFn *f;
	kvcc_spec spec;
	const KpGpu *g;
	KpGpuCfg cfg;
	int hascfg;
	KpCudaOpts o;
	KpCudaOut out;
	KpCudaJob *cj;
	double t0;
};

int kp_gpu_start(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KpGpu *g, const KpGpuCfg *c,
                 KpGpuJob **job, KiErr *e)
{
	KpGpuJob *J = calloc(1, sizeof *J);
	*job = NULL;
	if (!J)
		return ki_error(e, f->src, 0, 0, "out of memory (GPU artifact)"), -1;
	J->t0 = ki_now_ms();
	J->f = f, J->spec = *spec, J->g = g, J->hascfg = c != NULL;
	if (c)
		J->cfg = *c;
	J->o = (KpCudaOpts){ .dtype = spec->dtype, .head_dim = spec->head_dim, .group = spec->group, .archs = g->archs,
	                     .plan = p, .cfg = c ? &J->cfg : NULL };
	if (kp_cuda_start(f, &J->o, &J->out, &J->cj, e) != 0) {
		free(J);
		return -1;
	}
	*job = J;
	return 0;
}

int kp_gpu_finish(KpGpuJob *J, const char *obj, int verbose, double *ms, KiErr *e)
{
	if (!J)
		return -1;
	double cpu[KVG_MAXARCH] = { 0 };
	int rc = kp_cuda_finish(J->cj, cpu, e);
	const KiFn *f = J->f;
	const kvcc_spec *spec = &J->spec;
	const KpGpuCfg *c = J->hascfg ? &J->cfg : NULL;
	if (rc != 0 || !obj) {   /* failed, or the caller failed meanwhile and only waits for the threads */
		if (rc == 0)
			kp_cuda_free(&J->out);
		free(J);
		return -1;
	}
	KpCudaOut *out = &J->out;
	char *kir = ki_print(f);
	size_t n = 0;
	char cs[64];
	kp_gcfgstr(c, spec->head_dim, spec->group, cs, sizeof cs);
	void *blob = kir ? kp_gpu_blob(out, spec, ki_fnv(kir, strlen(kir), 0), J->g->archs, cs, &n) : NULL;
	free(kir);
	if (blob && verbose) {
		kvcc_gpu_header h = { .dtype = spec->dtype, .head_dim = spec->head_dim, .group = spec->group,
		                      .nvrtc_major = out->nvrtc_major, .nvrtc_minor = out->nvrtc_minor };
		snprintf(h.archs, sizeof h.archs, "%s", J->g->archs);
		kp_gcfgstr(c, spec->head_dim, spec->group, h.config, sizeof h.config);
		out->dec_part = out->has_decode ? kvg_dec_part(spec->group, spec->head_dim, out->nthreads) : 0;
		kp_gpu_print(out, &h, stderr);
	}
	char per[256] = "";
	for (int i = 0; i < out->nimg; i++)
		snprintf(per + strlen(per), sizeof per - strlen(per), "%s%s %.0f ms", i ? ", " : "", out->img[i].arch, cpu[i]);
	kp_cuda_free(out);
	if (!blob) {
		free(J);
		return ki_error(e, f->src, 0, 0, "out of memory (GPU artifact)"), -1;
	}
	rc = emit_object(blob, n, obj, e, f);
	if (rc == 0 && verbose)
		fprintf(stderr, "kvcc: GPU: NVRTC %.1f ms (%s; CPU per arch: %s), artifact %zu bytes\n", ki_now_ms() - J->t0,
		        J->g->archs, per, n);
	free(blob);
	if (ms)
		*ms = ki_now_ms() - J->t0;
	free(J);
	return rc;
}

int kp_gpu_emit_cfg(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KpGpu *g, const KpGpuCfg *c,
                    const char *obj, int verbose, double *ms, KiErr *e)
{
	KpGpuJob *J;
	if (kp_gpu_start(f, p, spec, g, c, &J, e) != 0)
		return -1;
	return kp_gpu_finish(J, obj, verbose, ms, e);
}
