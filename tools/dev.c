/*
** kvcc dev — developer commands: stages of the compiler on their own, for tests and for
** looking at what a backend makes of a policy. Not part of the user interface that
** `kvcc compile` and the library offer; options may change.
**
**   kvcc dev cuda POLICY [--gpu-arch sm_80,sm_90|all] [--dtype f32|f16|bf16]
**            [--head-dim N] [--group G] [--threads T] [--gpu-config STR] [-v]
**            [--emit-cuda FILE.cu] [--emit-dir DIR] [--gen-only]
**
** dev cuda runs the GPU backend alone (codegen/ptx: KIR after the default passes →
** CUDA C → NVRTC, PTX and CUBIN per arch) and prints one summary line, a line per arch
** and, with -v, one per (arch, kernel): registers, static and dynamic shared memory,
** spills. --gpu-config takes a GPU config point (doc/tune.md: "nt256,sk64,st2", ...).
** --gen-only stops after the CUDA C (no NVRTC needed); --emit-cuda writes it;
** --emit-dir writes DIR/<policy>.<sm>.<dtype>.d<D>.g<G>.ptx and .cubin (for ptxas).
** tests/gpu/check_ptx.sh and tests/emu (mma_unit's sources) use it.
**
** Exit 1 on a compile error (one "file:line:col: error:" line), 2 on usage.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/ptx/ptx.h"
#include "compiler/interp.h"
#include "tools/tools.h"

static int usage(const char *cmd, const char *msg, const char *arg)
{
	fprintf(stderr, "kvcc: %s: ", cmd);
	fprintf(stderr, msg, arg);
	fprintf(stderr, " (kvcc --help for usage)\n");
	return 2;
}

static int writefile(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");
	if (!fp || fwrite(p, 1, n, fp) != n) {
		fprintf(stderr, "kvcc: dev cuda: cannot write %s\n", path);
		if (fp)
			fclose(fp);
		return -1;
	}
	return fclose(fp);
}

/* The images of `out`: a line per arch, -v a line per kernel, --emit-dir files. */
static int report(const KiFn *f, const KpCudaOpts *o, const KpCudaOut *out, const char *dir)
{
	int rc = 0;
	for (int i = 0; i < out->nimg; i++) {
		const KpCudaImage *im = &out->img[i];
		printf("  %s: PTX %zu bytes, CUBIN %zu bytes, %.0f ms, compaction tile %d rows, score tiles %d queries x %d "
		       "tokens (%s%s)\n", im->arch, im->nptx, im->ncubin, im->ms, im->tile, im->sq, im->sk,
		       kp_cuda_mma(o->dtype, o->head_dim) ? "mma.m16n8k16" : "f32 FMA",
		       im->st > 1 ? im->st == 2 ? ", K in 2 buffers" : ", K in 3 buffers" : "");
		if (o->verbose) {
			for (int k = 0; k < out->nkern; k++)
				printf("    %-10s %3d registers, %5d B static smem, %6u B dynamic smem%s, %d B spills\n",
				       out->kern[k].name, im->regs[k], im->smem[k], im->dsmem[k],
				       (unsigned long long)im->dsmem[k] + (unsigned)im->smem[k] > 48u * 1024 ? " (opt-in)" : "",
				       im->spill[k]);
			if (im->how[0])
				printf("    how: %s\n", im->how);
		}
		if (!dir)
			continue;
		char p[1024];
		snprintf(p, sizeof p, "%s/%s.%s.%s.d%d.g%d.ptx", dir, f->name, im->arch, ki_dtypename(o->dtype),
		         o->head_dim, o->group);
		if (writefile(p, im->ptx, im->nptx) != 0)
			rc = 1;
		if (im->ncubin) {
			snprintf(p, sizeof p, "%s/%s.%s.%s.d%d.g%d.cubin", dir, f->name, im->arch, ki_dtypename(o->dtype),
			         o->head_dim, o->group);
			if (writefile(p, im->cubin, im->ncubin) != 0)
				rc = 1;
		}
	}
	return rc;
}

static int cuda(int argc, char **argv)
{
	const char *path = NULL, *src = NULL, *dir = NULL;
	KpCudaOpts o = { .dtype = KVCC_F32, .head_dim = 128, .group = 1, .archs = "sm_80,sm_90" };
	KpGpuCfg gc;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-v"))
			o.verbose = 1;
		else if (!strcmp(a, "--gen-only"))
			o.gen_only = 1;
		else if (!strcmp(a, "--gpu-arch") && v)
			o.archs = v, i++;
		else if (!strcmp(a, "--dtype") && v) {
			if ((o.dtype = ki_dtypebyname(v)) < 0)
				return usage("dev cuda", "unknown dtype '%s'", v);
			i++;
		} else if (!strcmp(a, "--head-dim") && v)
			o.head_dim = atoi(v), i++;
		else if (!strcmp(a, "--group") && v)
			o.group = atoi(v), i++;
		else if (!strcmp(a, "--threads") && v)
			o.nthreads = atoi(v), i++;
		else if (!strcmp(a, "--gpu-config") && v) {
			char why[200];
			if (kp_gcfgparse(v, &gc, why, sizeof why) != 0)
				return usage("dev cuda", "%s", why);
			o.cfg = &gc, i++;
		} else if (!strcmp(a, "--emit-cuda") && v)
			src = v, i++;
		else if (!strcmp(a, "--emit-dir") && v)
			dir = v, i++;
		else if (a[0] == '-')
			return usage("dev cuda", "unknown option or missing value '%s'", a);
		else if (!path)
			path = a;
		else
			return usage("dev cuda", "more than one policy ('%s')", a);
	}
	if (!path)
		return usage("dev cuda", "no policy file%s", "");
	KiErr e = { 0 };
	KiFn *f = kt_load(path, &e);
	if (!f || ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		ki_free(f);
		return 1;
	}
	KpCudaOut out;
	if (kp_compile_cuda(f, &o, &out, &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		ki_free(f);
		return 1;
	}
	int rc = 0;
	if (src && writefile(src, out.src, out.nsrc) != 0)
		rc = 1;
	printf("%s: %s head_dim %d group %d, %d threads/block, %d kernel(s), CUDA C %zu bytes (%.1f ms)",
	       f->name, ki_dtypename(o.dtype), o.head_dim, o.group, out.nthreads, out.nkern, out.nsrc, out.gen_ms);
	if (!o.gen_only)
		printf(", NVRTC %d.%d", out.nvrtc_major, out.nvrtc_minor);
	printf("\n  workspace floats per (layer, head): %lld + %lld*N + %lld*O + %lld*N*O\n", out.ws_coef[0],
	       out.ws_coef[1], out.ws_coef[2], out.ws_coef[3]);
	if (report(f, &o, &out, dir) != 0)
		rc = 1;
	kp_cuda_free(&out);
	ki_free(f);
	return rc;
}

int kt_dev(int argc, char **argv)
{
	if (argc < 1)
		return usage("dev", "expects a developer command (cuda)%s", "");
	if (!strcmp(argv[0], "cuda"))
		return cuda(argc - 1, argv + 1);
	return usage("dev", "unknown developer command '%s' (cuda)", argv[0]);
}
