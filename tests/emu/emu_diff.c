/*
** Differential matrix for the GPU backend without a GPU (DESIGN §9 tier 3):
** the generated CUDA C, compiled with g++ against tests/emu/cuda_emu.h
** (threads as fibers), vs the reference interpreter ki_run / ki_observe.
**
**   emu_diff [BUILD_DIR] [--device] [--every N] [--only POLICY] [--spec S]
**
** --spec S runs spec S (0..47: dtype S / 16, head_dim S / 4 % 4, group S % 4) of each policy only.
**
** --device runs the same matrix on a real GPU through the libkvcc GPU API:
** each specialization compiled by kvcc_compile_so_gpu (sm_80,sm_90 PTX +
** CUBIN embedded in policy.so, through the compile cache), opened with
** kvcc_open, planned per case with kvcc_gpu_plan_create (CUBIN or PTX JIT),
** compressed with kvcc_gpu_compress + kvcc_gpu_plan_check (weights through
** kvcc_gpu_plan_set_weight); decode steps use the
** plan's module (runtime/cuda.c kr_cuda_decode). Prints "SKIP: no GPU (why)" and
** exits 0 when the driver cannot be loaded.
**
** Matrix: every policy of the manifest's emu matrix (tests/policies.tsv) × f32/f16/bf16 ×
** head_dim 8/64/96/128 × group 1/2/4/8,
** n cycling over 37, 61, 129 (odd; per-head lengths differ; padded token
** strides on some cases). Decode cases cycle the split-KV count over 1, 2, 3,
** 7, 16, 64 (up to more splits than tokens: empty ranges) and give every other
** case an empty head. The emulated launch uses KV_NT=64 threads (two
** warps), KV_TT=5 staging rows and score tiles of KV_SQ=16 query rows x
** KV_SK=16 tokens (so G·O > 16 takes several query chunks and n several
** token tiles, the last one partial) — the SAME source NVRTC compiles, with
** other values of those macros. f16/bf16 with head_dim 64/96/128 run the
** tensor-core path (mma.m16n8k16, emulated by cuda_emu.h's kv_emu_mma).
**
** One g++ translation unit per policy holds all its 48 specializations
** (kernel names renamed per spec by macros, each in its own namespace); built
** by `make -j2` in BUILD_DIR/emu (only when a generated source changed).
**
** Checks per case: device error word 0; scores within
**   |gpu - ref| <= 1e-4 · max(1, max_t |ref_t|)   (f32 vs double)
** identical kept sets (lengths, positions), bit-identical compacted K/V rows (merge rules:
** merged rows within merge_tol, tests/common/casegen.h; inputs re-drawn while a target or a
** threshold decision has a margin < 1e-4),
** compacted state within the score tolerance (member counts, a merge that keeps them: their
** state row vs the interpreter's counts, drawn 1..3 at the start). Policies with per-token state
** first run 3 decode steps (kv_decode vs ki_observe: outputs and state within
** 1e-4 · max(1, |ref|)). Inputs re-drawn while the interpreter's selection
** boundary has a relative margin < 1e-4.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <dlfcn.h>
#include <time.h>
#include <sys/stat.h>
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "compiler/mplan.h"
#include "codegen/ptx/ptx.h"
#include "kvcc_compiler.h"
#include "dsl/dsl.h"
#include "runtime/cuda.h"
#include "runtime/gpu.h"
#define CASEGEN_SEED 0x9e3779b97f4a7c15ull
#include "tests/common/casegen.h"
#include "tests/common/manifest.h"

/* the emulated launch sizes; --gpu-config CFG (a point of the GPU config space, doc/tune.md)
** replaces them with the point's threads per block, staging rows, score tile and decode lanes
** per token, and builds in BUILD_DIR/emu-CFG */
static int EMU_NT = 64, EMU_TT = 5, EMU_SQ = 16, EMU_SK = 16, EMU_ST = 1;
static KpGpuCfg gcfg;
static const char *gcfgs;

typedef int (*RunFn)(const char *name, unsigned grid, unsigned grid_y, unsigned block, size_t dsm, const KvgArgs *a,
                     char *err, size_t errn);

static int npass, nfail, nskip;
static int nmgap;           /* draws redrawn: a merge comparison within 1e-4 of its bound (KiResult.mgap) */
static double worst_out, worst_st;    /* decode: largest |gpu - ref| / max(1, |ref|) */
/* --- building the emulated kernels ----------------------------------------------------- */

/* the manifest's emu matrix (tests/policies.tsv): names and files */
static MfPolicy mpols[MANIFEST_MAX];
static const char *pols[MANIFEST_MAX];
static int NPOL;

static void polpath(int p, char *buf, size_t n)
{
	snprintf(buf, n, "%s", mpols[p].file);
}
static const int dims[] = { 8, 64, 96, 128 }, groups[] = { 1, 2, 4, 8 };
#define NSPEC 48

typedef struct Spec {
	KpCudaOut out;
	RunFn run;
	KrCuda *cu;           /* unused since the device path goes through the API */
	kvcc_policy *pol;     /* --device: the policy.so with its GPU kernels */
	int ok;
	char why[600];
} Spec;

static Spec specs[MANIFEST_MAX][NSPEC];
static KiFn *fns[MANIFEST_MAX];

static int specidx(int dt, int di, int gi) { return (dt * 4 + di) * 4 + gi; }

/* write `text` to `path` unless it already holds exactly that */
static int update(const char *path, const char *text, size_t n)
{
	FILE *fp = fopen(path, "rb");
	if (fp) {
		char *old = malloc(n + 2);
		size_t got = old ? fread(old, 1, n + 1, fp) : 0;
		fclose(fp);
		int same = old && got == n && !memcmp(old, text, n);
		free(old);
		if (same)
			return 0;
	}
	fp = fopen(path, "wb");
	if (!fp || fwrite(text, 1, n, fp) != n) {
		if (fp)
			fclose(fp);
		return -1;
	}
	return fclose(fp);
}

static int build(const char *bdir, const char *root)
{
	char dir[512], path[1024];
	snprintf(dir, sizeof dir, "%s/emu%s%s", bdir, gcfgs ? "-" : "", gcfgs ? gcfgs : "");
	mkdir(bdir, 0777);
	mkdir(dir, 0777);
	FILE *mk = NULL;
	char *mktext = NULL;
	size_t mklen = 0;
	mk = open_memstream(&mktext, &mklen);
	if (!mk)
		return -1;
	fprintf(mk, "CXX ?= g++\nEMUFLAGS = -std=c++17 -O1 -fPIC -shared -Wall -Wextra -Werror -Wno-unused-function "
	            "-DKV_NT=%d -DKV_TT=%d -DKV_SQ=%d -DKV_SK=%d -DKV_ST=%d -I%s\nall:", EMU_NT, EMU_TT, EMU_SQ, EMU_SK,
	            EMU_ST, root);
	for (int p = 0; p < NPOL; p++)
		fprintf(mk, " %s.so", pols[p]);
	fprintf(mk, "\n%%.so: %%.cpp %s/tests/emu/cuda_emu.h\n\t$(CXX) $(EMUFLAGS) -o $@.tmp $< && mv $@.tmp $@\n", root);
	for (int p = 0; p < NPOL; p++) {
		char *w = NULL;
		size_t wl = 0;
		FILE *wp = open_memstream(&w, &wl);
		if (!wp)
			return -1;
		fprintf(wp, "/* generated by emu_diff: the %s kernels of every spec, on the CPU */\n"
		            "#include \"tests/emu/cuda_emu.h\"\n", pols[p]);
		for (int s = 0; s < NSPEC; s++) {
			Spec *sp = &specs[p][s];
			if (!sp->ok)
				continue;
			char cu[512];
			snprintf(cu, sizeof cu, "%s.s%d.cu", pols[p], s);
			snprintf(path, sizeof path, "%s/%s", dir, cu);
			if (update(path, sp->out.src, sp->out.nsrc) != 0)
				return -1;
			for (int k = 0; k < sp->out.nkern; k++)
				fprintf(wp, "#define %s s%d_%s\n", sp->out.kern[k].name, s, sp->out.kern[k].name);
			fprintf(wp, "namespace s%d {\n#include \"%s\"\n}\n#undef KV_G\n#undef KV_D\n", s, cu);
			for (int k = 0; k < sp->out.nkern; k++)
				fprintf(wp, "#undef %s\n", sp->out.kern[k].name);
			fprintf(wp, "extern \"C\" int kv_emu_run_%d(const char *name, unsigned grid, unsigned grid_y, "
			            "unsigned block, size_t dsm, const void *a, char *err, size_t errn)\n{\n\tint rc = -2;\n", s);
			for (int k = 0; k < sp->out.nkern; k++)
				fprintf(wp, "\tif (!strcmp(name, \"%s\")) rc = kv_emu_launch(s%d::s%d_%s, grid, block, dsm, "
				            "(const s%d::KvgArgs *)a, grid_y);\n",
				        sp->out.kern[k].name, s, s, sp->out.kern[k].name, s);
			fprintf(wp, "\tif (rc == -2) snprintf(err, errn, \"no kernel %%s\", name);\n"
			            "\telse if (rc) snprintf(err, errn, \"%%s\", kv_emu_error());\n\treturn rc;\n}\n");
		}
		fclose(wp);
		fprintf(mk, "%s.so:", pols[p]);
		for (int s = 0; s < NSPEC; s++)
			if (specs[p][s].ok)
				fprintf(mk, " %s.s%d.cu", pols[p], s);
		fprintf(mk, "\n");
		snprintf(path, sizeof path, "%s/%s.cpp", dir, pols[p]);
		int rc = update(path, w, wl);
		free(w);
		if (rc != 0)
			return -1;
	}
	fclose(mk);
	snprintf(path, sizeof path, "%s/Makefile", dir);
	int rc = update(path, mktext, mklen);
	free(mktext);
	if (rc != 0)
		return -1;
	char cmd[1200];
	snprintf(cmd, sizeof cmd, "make -s -C %s -j2 all", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "emu_diff: compiling the generated CUDA C with g++ failed\n");
		return -1;
	}
	for (int p = 0; p < NPOL; p++) {
		snprintf(path, sizeof path, "%s/%s.so", dir, pols[p]);
		void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			fprintf(stderr, "emu_diff: %s\n", dlerror());
			return -1;
		}
		for (int s = 0; s < NSPEC; s++) {
			char sym[64];
			snprintf(sym, sizeof sym, "kv_emu_run_%d", s);
			if (specs[p][s].ok)
				*(void **)&specs[p][s].run = dlsym(h, sym);
		}
	}
	return 0;
}

/* --- one case -------------------------------------------------------------------------- */

typedef struct Dev {          /* the "device" arrays of one case */
	char *K, *V, *Q, *q;
	int32_t *len, *pos;
	float *state, *scores, *ws, *out;
	int err;
} Dev;

static int device;            /* --device: run on the GPU through the libkvcc GPU API */
static int every = 1;         /* --every N: only specs s of policy p with (s + p) % N == 0 (make check's
                              ** sample; each spec still runs for some policy; check-emu-full runs all) */
/* the model schedules (5 layers, the interpreter's bisection and rounds) and keep counts (select
   keep: one generated kv_count, the same on every spec) 1 in 3 x every, like the merge rules of
   tests/diff: 2-3 of 48 cases each in make check */
static int onespec = -1;      /* --spec S: only spec S */
static int insample(int p, int s)
{
	if (onespec >= 0)
		return s == onespec;
	int ev = every > 1 && fns[p] && (fns[p]->sel.sched >= SCH_prefix || fns[p]->sel.keep) ? 3 * every : every;
	return (s + p) % ev == 0;
}
static int cur_dt, cur_d;     /* the case's dtype and head_dim (device layout) */
static size_t devbytes[11];   /* bytes of the arrays below, set per case */
static int cur_nw;            /* --device: the case's weights (kvcc_gpu_plan_set_weight) */
static const KiWData *cur_wd;
static const float *cur_wf;

static int launch_dev(Spec *sp, int role, KvgArgs *a, char *why, size_t whyn)
{
	void **h[11] = { &a->K, &a->V, (void **)&a->len, (void **)&a->pos, (void **)&a->state, (void **)&a->Q,
	                 (void **)&a->scores, (void **)&a->ws, (void **)&a->q, (void **)&a->out, (void **)&a->err };
	void *host[11], *dev[11];
	KvgArgs d = *a;
	void **dp[11] = { &d.K, &d.V, (void **)&d.len, (void **)&d.pos, (void **)&d.state, (void **)&d.Q,
	                  (void **)&d.scores, (void **)&d.ws, (void **)&d.q, (void **)&d.out, (void **)&d.err };
	int rc = 0;
	for (int i = 0; i < 11; i++) {
		host[i] = *h[i], dev[i] = NULL;
		if (host[i] && (!(dev[i] = kr_cuda_alloc(devbytes[i])) || kr_cuda_put(dev[i], host[i], devbytes[i]) != 0))
			rc = -1;
		*dp[i] = dev[i];
	}
	kvcc_layout lay = { cur_dt, a->L, a->H, cur_d, a->N, a->sL, a->sH, a->sT };
	kvcc_gpu_plan *pl = NULL;
	if (rc == 0 && kvcc_gpu_plan_create(sp->pol, &lay, a->O, 0, &pl) != 0)
		rc = -1, snprintf(why, whyn, "kvcc_gpu_plan_create: %s", kvcc_last_error());
	for (int i = 0, o = 0; rc == 0 && i < cur_nw; i++) {      /* packed as cg_weights packs them */
		int64_t sh[KI_MAXWDIM];
		int cnt = 1;
		for (int j = 0; j < cur_wd[i].ndim; j++)
			sh[j] = cur_wd[i].shape[j], cnt *= (int)sh[j];
		if (kvcc_gpu_plan_set_weight(pl, cur_wd[i].name, cur_wf + o, cur_wd[i].ndim, sh) != 0)
			rc = -1, snprintf(why, whyn, "kvcc_gpu_plan_set_weight: %s", kvcc_last_error());
		o += cnt;
	}
	d.wts = kr_gpu_weights(pl);
	if (rc == 0 && role == KVG_DECODE)
		rc = kr_cuda_decode(kr_gpu_module(pl), &d, NULL, why, whyn);
	else if (rc == 0) {
		kvcc_cache cc = { d.K, d.V, d.pos, d.len, d.state };
		kvcc_obs ob = { a->O, d.Q, NULL, NULL };
		kvcc_args ar = { a->ratio, (long)a->budget, a->par, 0, d.scores };
		if (kvcc_gpu_compress(pl, &cc, &ob, &ar, NULL) != 0 || kvcc_gpu_plan_check(pl) != 0)
			rc = -1, snprintf(why, whyn, "kvcc_gpu_compress: %s", kvcc_last_error());
	}
	if (rc == 0 && kr_cuda_sync() != 0)
		rc = -1, snprintf(why, whyn, "kernel execution failed");
	kvcc_gpu_plan_destroy(pl);
	for (int i = 0; i < 11; i++) {
		if (rc == 0 && host[i] && kr_cuda_get(host[i], dev[i], devbytes[i]) != 0)
			rc = -1;
		kr_cuda_free(dev[i]);
	}
	if (rc == 0 && *a->err)
		rc = -1, snprintf(why, whyn, "device error %d", *a->err);
	return rc;
}

/* the kernels of `role` (KVG_DECODE: kv_decode on grid (grid, a->splits), then the combine;
   KVG_SELECT: kv_select_grp first for scopes layer / model) */
static int launch(Spec *sp, int role, unsigned grid, size_t dsm, KvgArgs *a, char *why, size_t whyn)
{
	if (device)
		return role == KVG_SELECT ? 0 : launch_dev(sp, role, a, why, whyn);
	for (int k = 0; k < sp->out.nkern; k++) {
		int r = sp->out.kern[k].role;
		if (r != role && !(role == KVG_DECODE && r == KVG_COMBINE) && !(role == KVG_SELECT && r == KVG_SELGRP))
			continue;
		unsigned gx = r == KVG_SELGRP ? (sp->out.kern[k].phase ? (unsigned)a->L : 1) : grid;
		unsigned gy = r == KVG_DECODE ? (unsigned)a->splits : 1;
		size_t ds = r == KVG_SELECT || sp->out.kern[k].tiled ? dsm : 0;
		if (sp->run(sp->out.kern[k].name, gx, gy, EMU_NT, ds, a, why, whyn) != 0)
			return -1;
		if (*a->err) {
			snprintf(why, whyn, "%s: device error %d", sp->out.kern[k].name, *a->err);
			return -1;
		}
	}
	return 0;
}

/* a state's value before the case: its start value; a scan's state on every other case holds values for
** the first half of each head's tokens (scanned by an earlier compression: the scan continues
** from the last of them), NaN after */
static double scanheld(const KiFn *f, int s, int idx, const int *len, int n, size_t k)
{
	int t = (int)(k % (size_t)n), h = (int)(k / (size_t)n);
	if (!ki_isscanstate(f, s) || (idx / 4 + idx) % 2 == 0 || t >= len[h] / 2)
		return f->st[s].init;
	return (float)(0.1 + 0.8 * ((t * 37 + h * 11) % 101) / 101.0);
}

static int cmpdbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* select scopes layer / model: the smallest relative gap between two different chunk
   means of a scope group (any two, so that no boundary of the greedy pass is near a tie;
   exact ties are left to the tie rule) */
static double group_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	long ch = (long)pval(f, par, f->sel.chunk, 1);
	int per = f->sel.scope == SC_layer ? c->H : c->L * c->H;
	double worst = INFINITY, *v = malloc(((size_t)c->L * c->H * c->n + 1) * sizeof *v);
	for (int k0 = 0; v && k0 < c->L * c->H; k0 += per) {
		int m = 0;
		for (int k = k0; k < k0 + per; k++)
			for (long t0 = 0; t0 < c->len[k]; t0 += ch) {
				double s = 0;
				long t1 = t0 + ch < c->len[k] ? t0 + ch : c->len[k];
				for (long t = t0; t < t1; t++)
					s += r->scores[(size_t)k * c->n + t];
				v[m++] = s / (double)(t1 - t0);
			}
		qsort(v, (size_t)m, sizeof *v, cmpdbl);
		for (int i = 1; i < m; i++) {
			double s = fmax(fabs(v[i]), fabs(v[i - 1]));
			if (s > 0 && v[i] > v[i - 1] && (v[i] - v[i - 1]) / s < worst)
				worst = (v[i] - v[i - 1]) / s;
		}
	}
	free(v);
	return v ? worst : 0;
}

/* AdaKV's floor (scope layer, chunk 1): a head keeps its best unprotected tokens and the layer's
   ranking of what the floors left keeps the best of those, so only a kept and an evicted token
   of one layer closer than the margin can swap: the smallest relative gap between neighbours
   (by score) of a layer's unprotected tokens, one kept and one evicted (as tests/diff/diff.c);
   the same for mass at scope layer or model (the group's best min(count, protected + prefix)).
   An exact tie is left to the tie rule when the score reads no observation queries (the same
   rows through the same token-local operations: a tie in f32 too); with attention it is 0 */
typedef struct Lab { double s; int kept; } Lab;
static int cmplab(const void *pa, const void *pb)
{
	const Lab *a = pa, *b = pb;
	return a->s < b->s ? -1 : a->s > b->s;
}

static double floor_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	double worst = INFINITY;
	int per = f->sel.scope == SC_model ? c->L : 1;      /* layers of a scope group */
	Lab *v = malloc(((size_t)per * c->H * c->n + 1) * sizeof *v);
	char *kept = malloc((size_t)c->n + 1);
	for (int l0 = 0; v && kept && l0 < c->L; l0 += per) {
		int m = 0;
		for (int k = l0 * c->H; k < (l0 + per) * c->H; k++) {
			int n = c->len[k];
			memset(kept, 0, (size_t)n);
			for (int j = 0; j < r->len[k]; j++)       /* a summary row's index is -1 */
				if (r->kept[(size_t)k * c->n + j] >= 0)
					kept[r->kept[(size_t)k * c->n + j]] = 1;
			for (int t = (int)S; t < n - R; t++) {
				double s = r->scores[(size_t)k * c->n + t];
				v[m].s = isnan(s) ? -INFINITY : s, v[m++].kept = kept[t];
			}
		}
		qsort(v, (size_t)m, sizeof *v, cmplab);
		for (int i = 1; i < m; i++) {
			double a = v[i - 1].s, b = v[i].s, sc = fmax(fabs(a), fabs(b));
			if (v[i - 1].kept != v[i].kept && isfinite(a) && isfinite(b) && (b > a || c->O))
				worst = fmin(worst, sc > 0 ? (b - a) / sc : 0);
		}
	}
	if (!v || !kept)
		worst = 0;
	free(v), free(kept);
	return worst;
}

static void run_case(int pi, int dt, int di, int gi, int idx)
{
	Spec *sp = &specs[pi][specidx(dt, di, gi)];
	const KiFn *f = fns[pi];
	int grpsel = f->sel.scope != SC_head;
	int sch = f->sel.sched >= SCH_prefix;     /* the model schedules: rounds over 5 layers */
	int d = dims[di], G = groups[gi], L = sch ? 5 : grpsel ? 3 : 2, H = 2;
	cur_dt = dt, cur_d = d;
	char name[200];
	snprintf(name, sizeof name, "%s %s d=%d G=%d", pols[pi], ki_dtypename(dt), d, G);
	if (!sp->ok || (!device && !sp->run) || (device && !sp->pol)) {
		printf("FAIL %s: generate: %s\n", name, sp->why);
		nfail++;
		return;
	}
	static const int ns[] = { 37, 61, 129 };
	int n = ns[idx % 3];
	double par[KVG_MAXPAR];
	for (int i = 0; i < f->npar; i++)
		par[i] = f->par[i].def;
	int wi = ki_findparam(f, "window");
	if (wi >= 0 && par[wi] > 8)
		par[wi] = 8;
	int ci = ki_findparam(f, "chunk");
	if (ci >= 0)
		par[ci] = idx % 2 ? 1 : 3 + idx % 3;
	int li = ki_findparam(f, "lag");            /* LagKV: chunks short enough for n (the long path) */
	if (li >= 0)
		par[li] = 3 + idx % 5;
	int si = ki_findparam(f, "seed");           /* kv.random's seed rule (ki_seed) */
	static const double seeds[] = { 0, 987654321, -5.7, 1e30, -INFINITY, NAN, 1099511627779.0 };
	if (si >= 0)
		par[si] = seeds[idx % 7];
	int ai = ki_findparam(f, "alpha");          /* AdaKV's floor: none (0), 0.5 .. every head its own n_keep */
	if (ai >= 0 && f->sel.floor)
		par[ai] = idx % 4 == 0 ? 0.5 : idx % 4 == 1 ? 0.8 : idx % 4 == 2 ? 1.0 : 0.0;
	int ri = ki_findparam(f, "recent");         /* no window: shorter last chunks compete */
	if (ci >= 0 && ri >= 0 && idx % 5 < 2)
		par[ri] = 0;
	int O = f->obs_all ? n : KI_RKIND(f->obs) ? (int)pval(f, par, f->obs, 0) : 0;
	int hm = 0;
	for (int i = 0; i < f->nins; i++)
		hm |= f->ins[i].op == KO_hmean;
	int32_t len0[10];
	for (int k = 0; k < L * H; k++)
		len0[k] = f->obs_all || f->sel.sched == SCH_dynamic ? n : hm ? n - 2 * (k / H) : n - 2 * k;
	if (grpsel && idx % 4 == 2 && !O)
		len0[2] = 0;                  /* an empty head in a scope group (none with observation queries) */
	if (grpsel && ci >= 0)
		snprintf(name + strlen(name), sizeof name - strlen(name), " chunk=%g", par[ci]);
	if (grpsel && ri >= 0)
		snprintf(name + strlen(name), sizeof name - strlen(name), " recent=%g", par[ri]);
	if (grpsel)
		snprintf(name + strlen(name), sizeof name - strlen(name), "%s%s", idx % 3 ? "" : " ties",
		         idx % 4 == 2 && !O ? " empty-head" : "");
	int pad = (d / 8) % 2 ? 8 : 0;
	long long st = d + pad;
	int nst = f->nst, steps = nst ? 3 : 0, cn = ki_mcounts(f);   /* cn: member counts, state row nst (KV_CNT) */
	int tn = ki_mtau(f);        /* D2O's carried tau: state row nst + cn (KV_TAU), issue 12 */
	/* split-KV decode: 1 split, several, more splits than a head has tokens (empty
	   ranges); every other decode case has an empty head */
	static const int nsplits[] = { 1, 2, 3, 7, 16, 64 };
	int nsp = steps ? nsplits[(idx / 3) % 6] : 1;
	if (steps && (idx / 2) % 2)
		len0[L * H - 1] = 0;
	if (steps)
		snprintf(name + strlen(name), sizeof name - strlen(name), " splits=%d%s", nsp, (idx / 2) % 2 ? " empty-head" : "");
	size_t esz = dt == KVCC_F32 ? 4 : 2, nkv = (size_t)L * H * n * d, nq = (size_t)L * H * G * O * d;
	size_t ntok = (size_t)L * H * n, ndq = (size_t)L * H * G * d;
	float *K = malloc(nkv * 4), *V = malloc(nkv * 4), *Q = malloc(nq * 4 + 4), *dq = malloc(ndq * 4 * (steps + 1));
	float *oref = malloc(ndq * 4), *st32 = malloc(ntok * (nst + cn + 2) * 4);
	double *stref = malloc(ntok * (nst + cn + 2) * sizeof(double)), *cref = malloc(ntok * sizeof(double));
	double tau0[L * H];         /* the carried tau per head (NaN: unset) */
	for (int k = 0; k < L * H; k++)
		tau0[k] = tn && urand() < 0.7 ? urand() * 0.4 : NAN;
	for (size_t t = 0; t < ntok; t++)     /* counts 1..3, as after earlier merges (1 without counts) */
		cref[t] = cn ? 1 + (int)(urand() * 3) : 1;
	/* merge summary: every other instance holds a block of C rows already (KiCase.sumat; the compiled
	** cache flags them in its state row nst + 1): the online running means, else Lloyd */
	int C = ki_summaryrows(f);
	int32_t sumat[L * H];      /* merge summary: the block's first row per (layer, head), or -1 */
	for (int k = 0; k < L * H; k++) {
		sumat[k] = -1;
		if (C && (k + idx) % 2 && len0[k] >= C + 2)
			sumat[k] = (int)(urand() * (len0[k] - C + 1));
	}
	Dev v = { 0 };
	v.K = malloc(ntok * st * esz), v.V = malloc(ntok * st * esz), v.Q = malloc(nq * esz + 4);
	v.q = malloc(ndq * esz), v.len = malloc(L * H * 4), v.pos = malloc(ntok * 4);
	v.state = malloc(ntok * (nst + cn + 2) * 4), v.scores = malloc(ntok * 4), v.out = malloc(ndq * 4);
	long long wsi = kvg_ws_floats(&sp->out, n, O, nsp);
	v.ws = malloc(((size_t)L * H * wsi + 1) * 4);
	KiResult r = { 0 };
	KiErr e = { 0 };
	char why[700] = "";
	double ratio = urand() < 0.5 ? 0.5 : 0.3;
	long budget = urand() < 0.3 ? n / 3 : -1;
	/* some budgets below the protected count (sinks first, then the newest recent tokens) */
	long nprot = (long)pval(f, par, f->sel.keep_first, 0) + (long)pval(f, par, f->sel.keep_recent, 0);
	if (nprot > 1 && idx % 4 == 1)
		budget = nprot / 2;
	/* summary rows under threshold (as tests/diff/diff.c, no draw): every head under its budget
	** in a quarter of the cases, a tau below every score in half of those (only the NaN tokens go) */
	int ti = ki_findparam(f, "tau");
	if (f->merge.kind == MG_summary && f->sel.kind == SEL_threshold && idx % 4 == 3) {
		budget = n;
		if (ti >= 0 && idx % 8 == 7)
			par[ti] = -1e30;
		snprintf(name + strlen(name), sizeof name - strlen(name), " budget=n%s", idx % 8 == 7 ? " tau=-1e30" : "");
	}
	/* summary rows under mass (scope head; as tests/diff/diff.c, no draw): every head under its
	** budget in a third of the cases, a p near 1 in half of those (few rows go, often fewer than C: a
	** head without a block then keeps n - C) */
	int pmi = ki_findparam(f, "p");
	if (f->merge.kind == MG_summary && f->sel.kind == SEL_mass && idx % 3 == 2) {
		budget = n;
		if (pmi >= 0 && idx % 6 == 5)
			par[pmi] = idx % 12 == 5 ? 0.99 : 0.995;
		snprintf(name + strlen(name), sizeof name - strlen(name), " budget=n%s", idx % 6 != 5 ? "" :
		         idx % 12 == 5 ? " p=0.99" : " p=0.995");
	}
	/* summary rows under a group budget (topk, scope layer / model; as tests/diff/diff.c, no draw):
	** heads of n - 2k rows and a budget of n - 1 in a third of the cases, so the group's ranking
	** takes rows from heads under their count; no head may end holding more than it held */
	int sumgrp = f->merge.kind == MG_summary && (f->sel.kind == SEL_topk || f->sel.kind == SEL_threshold) &&
	             f->sel.scope != SC_head;
	if (sumgrp && idx % 3 == 1) {
		budget = n - 1;
		snprintf(name + strlen(name), sizeof name - strlen(name), " budget=n-1");
	}
	/* positions: the index, 1000 + index (a cache compressed before) or gapped; no qpos:
	** the observation queries are at the last held tokens' positions */
	int poskind = (idx / 3) % 3;
	int32_t *posr = malloc(ntok * 4);
	for (int k = 0; k < L * H; k++)
		for (int t = 0, p = 0; t < n; t++, p += poskind == 2 ? 1 + (int)(urand() * 4) : 1)
			posr[(size_t)k * n + t] = poskind == 1 ? 1000 + t : p;
	snprintf(name + strlen(name), sizeof name - strlen(name), "%s%s", poskind == 1 ? " pos+1000" :
	         poskind == 2 ? " gapped" : "", budget >= 0 && budget < nprot ? " budget<protected" : "");
	KiWData wd[KI_MAXW];
	float *wf = NULL;
	double *wdv = NULL;
	if (f->nw && cg_weights(f, L, H, G, d, wd, &wf, &wdv) != 0) {
		printf("FAIL %s: weights: out of memory or an out axis\n", name);
		goto out;
	}
	cur_nw = f->nw, cur_wd = wd, cur_wf = wf;
	int ok = 0;
	KiCase c = { 0 };
	for (int attempt = 0; attempt < 20 && !ok; attempt++) {
		for (size_t i = 0; i < nkv; i++) {
			K[i] = ki_round((float)(urand() * 2 - 1), dt);
			V[i] = ki_round((float)(urand() * 2 - 1), dt);
		}
		/* merge runs (issue 12): about half the neighbouring keys close (runs of several tokens) */
		for (size_t i = d; f->merge.kind == MG_runs && i < nkv; i += d)
			if (i % ((size_t)n * d) && urand() < 0.6)
				for (int ch = 0; ch < d; ch++)
					K[i + ch] = ki_round(0.9f * K[i - d + ch] + 0.3f * K[i + ch], dt);
		/* exact ties: every head repeats the first head's first 5 keys */
		for (size_t i = 0; grpsel && idx % 3 == 0 && i < nkv; i++)
			K[i] = K[(i / d % n) % 5 * d + i % d];
		for (size_t i = 0; i < nq; i++)
			Q[i] = ki_round((float)(urand() * 4 - 2), dt);
		for (size_t i = 0; i < ndq * steps; i++)
			dq[i] = ki_round((float)(urand() * 4 - 2), dt);
		KiCase c0 = { .L = L, .H = H, .G = G, .d = d, .n = n, .len = len0, .O = O, .K = K, .V = V,
		              .Q = O ? Q : NULL, .pos = posr, .dtype = dt, .params = par, .ratio = ratio, .budget = budget,
		              .nw = f->nw, .w = wd, .count = cn ? cref : NULL, .sumat = C ? sumat : NULL,
		              .tau = tn ? tau0 : NULL };
		c = c0;
		for (int s = 0; s < nst; s++)
			for (size_t t = 0; t < ntok; t++)
				stref[s * ntok + t] = scanheld(f, s, idx, len0, n, t);
		for (int s = 0; s < steps; s++)
			if (ki_observe(f, &c, dq + ndq * s, stref, oref, &e) != 0) {
				printf("FAIL %s: interpreter observe: %s\n", name, e.msg);
				goto out;
			}
		if (nst)
			c.state = stref;
		ki_result_free(&r);
		if (ki_run(f, &c, &r, &e) != 0) {
			printf("FAIL %s: interpreter: %s\n", name, e.msg);
			goto out;
		}
		ok = sch ? floor_margin(f, par, &c, &r) >= 1e-5 && sched_margin(f, par, &c, &r) >= 1e-5 :
		     f->sel.floor || (grpsel && f->sel.kind == SEL_mass && pval(f, par, f->sel.chunk, 1) == 1) ?
		     floor_margin(f, par, &c, &r) >= 1e-5 :
		     grpsel && f->sel.kind == SEL_mass ? case_margin(f, par, &c, &r) >= 1e-4 :   /* masschunk_margin */
		     grpsel ? group_margin(f, par, &c, &r) >= 1e-5 : case_margin(f, par, &c, &r) >= 1e-4;
		const int oks = ok;
		ok = ok && merge_margin(f, par, &c, &r) >= 1e-4;
		nmgap += oks && !ok && r.mgap < 1e-4;   /* e.g. CaM's draw u within rounding of p: a new draw */
	}
	if (!ok) {
		printf("SKIP %s: no tie-free input in 20 draws\n", name);
		nskip++;
		goto done;
	}
	/* device arrays */
	memset(v.K, 0, ntok * st * esz), memset(v.V, 0, ntok * st * esz);
	for (int k = 0; k < L * H; k++)
		for (int t = 0; t < n; t++) {
			v.pos[(size_t)k * n + t] = posr[(size_t)k * n + t];
			for (int ch = 0; ch < d; ch++) {
				encode(K[((size_t)k * n + t) * d + ch], dt, v.K + (((size_t)k * n + t) * st + ch) * esz);
				encode(V[((size_t)k * n + t) * d + ch], dt, v.V + (((size_t)k * n + t) * st + ch) * esz);
			}
		}
	for (size_t i = 0; i < nq; i++)
		encode(Q[i], dt, v.Q + i * esz);
	memcpy(v.len, len0, (size_t)L * H * sizeof *len0);
	for (int s = 0; s < nst; s++)
		for (size_t t = 0; t < ntok; t++)
			v.state[s * ntok + t] = (float)scanheld(f, s, idx, len0, n, t);
	for (size_t t = 0; cn && t < ntok; t++)
		v.state[nst * ntok + t] = (float)cref[t];
	for (size_t t = 0; C && t < ntok; t++) {     /* the summary flag row (compiler/mplan.h ki_msumrow) */
		int k = (int)(t / (size_t)n), tt = (int)(t % (size_t)n);
		v.state[(nst + 1) * ntok + t] = sumat[k] >= 0 && tt >= sumat[k] && tt < sumat[k] + C;
	}
	for (size_t t = 0; tn && t < ntok; t++)     /* the carried tau in every held row, NaN past them */
		v.state[(nst + cn) * ntok + t] = (int)(t % n) < len0[t / n] ? (float)tau0[t / n] : NAN;
	KvgArgs a;
	memset(&a, 0, sizeof a);
	a.K = v.K, a.V = v.V, a.len = v.len, a.pos = v.pos, a.state = v.state, a.Q = O ? v.Q : NULL;
	a.scores = v.scores, a.ws = v.ws, a.q = v.q, a.out = v.out, a.err = &v.err;
	a.sL = (long long)H * n * st, a.sH = (long long)n * st, a.sT = st;
	a.ws_inst = wsi, a.budget = budget, a.ratio = ratio, a.L = L, a.H = H, a.N = n, a.O = O, a.step = 0;
	a.splits = nsp;
	a.wts = wf;
	for (int i = 0; i < f->nw; i++)          /* the out axis as cg_weights sizes it */
		for (int j = 0; j < f->w[i].ndim; j++)
			if (f->w[i].ax[j] == WA_out)
				a.nout = f->w[i].size > 0 ? f->w[i].size : 5;
	for (int i = 0; i < f->npar; i++)
		a.par[i] = par[i];
	size_t szs[11] = { ntok * st * esz, ntok * st * esz, (size_t)L * H * 4, ntok * 4, ntok * (nst + cn + 2) * 4,
	                   nq * esz + 4, ntok * 4, ((size_t)L * H * wsi + 1) * 4, ndq * esz, ndq * 4, sizeof(int) };
	memcpy(devbytes, szs, sizeof szs);
	/* decode steps: attention output and the observe hook */
	if (steps) {
		double *sref = calloc(ntok * nst + 1, sizeof *sref);
		for (int s = 0; s < nst; s++)
			for (size_t t = 0; t < ntok; t++)
				sref[s * ntok + t] = scanheld(f, s, idx, len0, n, t);
		for (int s = 0; s < steps; s++) {
			for (size_t i = 0; i < ndq; i++)
				encode(dq[ndq * s + i], dt, v.q + i * esz);
			if (launch(sp, KVG_DECODE, (unsigned)(L * H), 0, &a, why, sizeof why) != 0 ||
			    ki_observe(f, &c, dq + ndq * s, sref, oref, &e) != 0) {
				printf("FAIL %s: decode step %d: %s%s\n", name, s, why, e.msg);
				free(sref);
				goto out;
			}
			for (size_t i = 0; i < ndq; i++)
				worst_out = fmax(worst_out, fabs(v.out[i] - oref[i]) / fmax(1, fabs(oref[i])));
			for (size_t i = 0; i < ndq; i++)
				if (!(fabs(v.out[i] - oref[i]) <= 1e-4 * fmax(1, fabs(oref[i])))) {
					printf("FAIL %s: decode step %d output[%zu] gpu %.9g ref %.9g\n", name, s, i, v.out[i], oref[i]);
					free(sref);
					goto out;
				}
			for (int k = 0; k < L * H; k++)
				for (int t = 0; t < len0[k]; t++)
					for (int s2 = 0; s2 < nst; s2++) {
						double x = v.state[s2 * ntok + (size_t)k * n + t], y = sref[s2 * ntok + (size_t)k * n + t];
						if (isnan(x) && isnan(y))      /* a scan's state: not scanned yet */
							continue;
						worst_st = fmax(worst_st, fabs(x - y) / fmax(1, fabs(y)));
						if (!(fabs(x - y) <= 1e-4 * fmax(1, fabs(y)))) {
							printf("FAIL %s: decode step %d state (inst %d t %d) gpu %.9g ref %.9g\n", name, s,
							       k, t, x, y);
							free(sref);
							goto out;
						}
					}
		}
		free(sref);
	}
	/* compress */
	size_t dsm = kp_cuda_dsmem(dt, d, EMU_TT);
	if (launch(sp, KVG_SCORE, (unsigned)(L * H), kp_cuda_score_dsmem_st(dt, d, G, EMU_SQ, EMU_SK, EMU_ST), &a, why, sizeof why) != 0 ||
	    launch(sp, KVG_SELECT, (unsigned)(L * H), dsm, &a, why, sizeof why) != 0) {
		printf("FAIL %s: %s\n", name, why);
		goto out;
	}
	for (int k = 0; k < L * H; k++) {
		double mx = 1;
		for (int t = 0; t < len0[k]; t++)       /* the scale of the finite scores (inf: equal or not) */
			if (isfinite(r.scores[(size_t)k * n + t]))
				mx = fmax(mx, fabs(r.scores[(size_t)k * n + t]));
		for (int t = 0; t < len0[k]; t++) {
			double x = v.scores[(size_t)k * n + t], y = r.scores[(size_t)k * n + t];
			if (!(x == y || fabs(x - y) <= 1e-4 * mx) && !(isnan(x) && isnan(y))) {
				printf("FAIL %s: score (l%d h%d t%d) gpu %.9g ref %.9g\n", name, k / H, k % H, t, x, y);
				goto out;
			}
		}
		if (sumgrp && (v.len[k] > len0[k] || r.len[k] > len0[k])) {
			printf("FAIL %s: head %d holds %d rows after the compression (reference %d), %d before\n", name, k,
			       v.len[k], r.len[k], len0[k]);
			goto out;
		}
		if (v.len[k] != r.len[k]) {
			printf("FAIL %s: head %d keeps %d tokens, reference %d\n", name, k, v.len[k], r.len[k]);
			goto out;
		}
		for (int m = 0; m < v.len[k]; m++) {
			if (v.pos[(size_t)k * n + m] != r.pos[(size_t)k * n + m]) {
				int tr = r.kept[(size_t)k * n + m];
				printf("FAIL %s: head %d kept[%d] at position %d, reference %d (token %d, ref score %.9g; "
				       "len %d of %d)\n", name, k, m, v.pos[(size_t)k * n + m], r.pos[(size_t)k * n + m], tr,
				       r.scores[(size_t)k * n + tr], v.len[k], len0[k]);
				goto out;
			}
			for (int ch = 0; ch < d && f->merge.kind != MG_drop; ch++) {   /* merged rows: the tolerance */
				size_t ri = ((size_t)k * n + m) * d + ch, xi = ((size_t)k * n + m) * st + ch;
				double xk = decode(v.K + xi * esz, dt), xv = decode(v.V + xi * esz, dt);
				double rk = r.K[ri], rv = r.V[ri], tol = merge_tol(dt);
				if (!(fabs(xk - rk) <= tol * fmax(1, fabs(rk))) || !(fabs(xv - rv) <= tol * fmax(1, fabs(rv)))) {
					printf("FAIL %s: merged row %d of head %d, chan %d: gpu K %.9g V %.9g, reference K %.9g V %.9g\n",
					       name, m, k, ch, xk, xv, rk, rv);
					goto out;
				}
			}
			for (int ch = 0; ch < d && f->merge.kind == MG_drop; ch++) {
				char bk[4], bv[4];
				encode(r.K[((size_t)k * n + m) * d + ch], dt, bk);
				encode(r.V[((size_t)k * n + m) * d + ch], dt, bv);
				if (memcmp(bk, v.K + (((size_t)k * n + m) * st + ch) * esz, esz) ||
				    memcmp(bv, v.V + (((size_t)k * n + m) * st + ch) * esz, esz)) {
					printf("FAIL %s: compacted K/V row %d of head %d differs\n", name, m, k);
					goto out;
				}
			}
			if (tn) {         /* D2O: the tau row of every kept row vs the interpreter's tau */
				double x = v.state[(nst + cn) * ntok + (size_t)k * n + m], y = r.tau[k];
				if (!(isnan(x) && isnan(y)) && !(fabs(x - y) <= 1e-5 * fmax(1, fabs(y)))) {
					printf("FAIL %s: tau row %d of head %d: gpu %.9g ref %.9g\n", name, m, k, x, y);
					goto out;
				}
			}
			for (int s = 0; s < nst + cn; s++) {       /* the member counts: r.count */
				double x = v.state[s * ntok + (size_t)k * n + m];
				double y = s < nst ? r.state[s * ntok + (size_t)k * n + m] : s == nst ? r.count[(size_t)k * n + m]
				           : r.sumat[k] >= 0 && m >= r.sumat[k];      /* the summary flag row */
				if (!(fabs(x - y) <= 1e-4 * fmax(1, fabs(y)))) {
					printf("FAIL %s: compacted state row %d of head %d: gpu %.9g ref %.9g\n", name, m, k, x, y);
					goto out;
				}
			}
		}
	}
	/* a keep count that is not a number (keep_edge's param off = NaN reaches its count): kv_count
	** sets KVG_EKEEP, the host's "select: a keep count is not a finite number" (runtime/gpu.c) */
	int po = f->sel.keep ? ki_findparam(f, "off") : -1;
	if (po >= 0 && !device) {
		a.par[po] = NAN;
		v.err = 0;
		if (launch(sp, KVG_SELECT, (unsigned)(L * H), dsm, &a, why, sizeof why) == 0 || v.err != KVG_EKEEP) {
			printf("FAIL %s: a NaN keep count: device error %d, expected KVG_EKEEP (%d)\n", name, v.err, KVG_EKEEP);
			goto out;
		}
	}
	npass++;
	goto done;
out:
	nfail++;
done:
	ki_result_free(&r);
	free(K), free(V), free(Q), free(dq), free(oref), free(st32), free(stref), free(cref);
	free(v.K), free(v.V), free(v.Q), free(v.q), free(v.len), free(v.pos), free(v.state), free(v.scores), free(v.ws);
	free(posr), free(wf), free(wdv);
	free(v.out);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	const char *bdir = argc > 1 && argv[1][0] != '-' ? argv[1] : "build";
	for (int i = 1; i < argc; i++)
		device |= !strcmp(argv[i], "--device");
	const char *only = NULL;
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--every") && atoi(argv[i + 1]) >= 1)
			every = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--policy") || !strcmp(argv[i], "--only"))
			only = argv[i + 1];
		else if (!strcmp(argv[i], "--spec") && atoi(argv[i + 1]) >= 0 && atoi(argv[i + 1]) < NSPEC)
			onespec = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--gpu-config")) {
			char gw[200];
			if (kp_gcfgparse(argv[i + 1], &gcfg, gw, sizeof gw) != 0) {
				printf("FAIL --gpu-config %s: %s\n0 passed, 1 failed, 0 skipped\n", argv[i + 1], gw);
				return 1;
			}
			gcfgs = argv[i + 1];
			EMU_NT = gcfg.nt ? gcfg.nt : EMU_NT, EMU_TT = gcfg.tt ? gcfg.tt : EMU_TT;
			EMU_SQ = gcfg.sq ? gcfg.sq : EMU_SQ, EMU_SK = gcfg.sk ? gcfg.sk : EMU_SK;
			EMU_ST = gcfg.st ? gcfg.st : EMU_ST;
		}
	char root[1024];
	if (!realpath(".", root))
		return 1;
	char why[256];
	if ((NPOL = mf_read("emu", mpols, MANIFEST_MAX, why, sizeof why)) < 0) {
		printf("FAIL manifest: %s\n0 passed, 1 failed, 0 skipped\n", why);
		return 1;
	}
	/* emufull: the policies only the full matrix (no --every) or --only runs (make check's time) */
	if (every == 1 || only) {
		MfPolicy extra[MANIFEST_MAX];
		int ne = mf_read("emufull", extra, MANIFEST_MAX, why, sizeof why);
		if (ne > MANIFEST_MAX - NPOL) {      /* never drop a policy silently */
			printf("FAIL manifest: more than %d policies with the -full ones\n0 passed, 1 failed, 0 skipped\n",
			       MANIFEST_MAX);
			return 1;
		}
		for (int e = 0; e < ne; e++)
			mpols[NPOL++] = extra[e];
	}
	int kept = 0;
	for (int p = 0; p < NPOL; p++)
		if (!only || !strcmp(mpols[p].name, only))
			mpols[kept++] = mpols[p];
	if (!(NPOL = kept)) {
		printf("FAIL --policy %s: not in the emu matrix\n0 passed, 1 failed, 0 skipped\n", only);
		return 1;
	}
	for (int p = 0; p < NPOL; p++)
		pols[p] = mpols[p].name;
	double t0 = now();
	for (int p = 0; p < NPOL; p++) {
		char path[256];
		polpath(p, path, sizeof path);
		KiErr e = { 0 };
		fns[p] = kd_loadfile(path, NULL, &e);
		if (!fns[p] || ki_runpasses(fns[p], KI_DEFAULT_PASSES, 0, &e, NULL, NULL) != 0) {
			printf("FAIL %s: load: %s\n", pols[p], e.msg);
			return 1;
		}
		for (int dt = 0; dt < 3; dt++)
			for (int di = 0; di < 4; di++)
				for (int gi = 0; gi < 4; gi++) {
					Spec *sp = &specs[p][specidx(dt, di, gi)];
					if (!insample(p, specidx(dt, di, gi)))
						continue;
					KpCudaOpts o = { .dtype = dt, .head_dim = dims[di], .group = groups[gi], .nthreads = EMU_NT,
					                 .gen_only = 1, .cfg = gcfgs ? &gcfg : NULL };
					KiErr e2 = { 0 };
					sp->ok = kp_compile_cuda(fns[p], &o, &sp->out, &e2) == 0;
					if (!sp->ok)
						snprintf(sp->why, sizeof sp->why, "%s", e2.msg);
				}
	}
	if (device) {
		char why[600];
		if (kr_cuda_driver_load(why, sizeof why) != 0) {
			printf("SKIP: no GPU (%s)\n0 passed, 0 failed, 1 skipped\n", why);
			return 0;
		}
		char sodir[600];
		snprintf(sodir, sizeof sodir, "%s/gpu-dev", bdir);
		mkdir(sodir, 0755);
		for (int p = 0; p < NPOL; p++)
			for (int s = 0; s < NSPEC; s++) {
				Spec *sp = &specs[p][s];
				if (!insample(p, s))
					continue;
				kvcc_spec ks = { s / 16, dims[(s / 4) % 4], groups[s % 4], KVCC_TARGET_NATIVE };
				char lua[256], so[900];
				polpath(p, lua, sizeof lua);
				snprintf(so, sizeof so, "%s/%s-%d.so", sodir, pols[p], s);
				if (kvcc_compile_so_gpu(lua, &ks, "sm_80,sm_90", so, 0) != 0 || kvcc_open(so, &sp->pol) != 0) {
					sp->ok = 0;
					snprintf(sp->why, sizeof sp->why, "%s", kvcc_last_error());
				}
			}
	} else if (build(bdir, root) != 0) {
		printf("0 passed, 1 failed, 0 skipped\n");
		return 1;
	}
	double t1 = now();
	int idx = 0;
	for (int p = 0; p < NPOL; p++)
		for (int dt = 0; dt < 3; dt++)
			for (int di = 0; di < 4; di++)
				for (int gi = 0; gi < 4; gi++, idx++)
					if (insample(p, specidx(dt, di, gi)))
						run_case(p, dt, di, gi, idx);
	double t2 = now();
	if (device)
		printf("GPU kernels on the device: NVRTC + load %.1f s, run %.1f s\n", t1 - t0, t2 - t1);
	else
		printf("emulated GPU kernels: generate + g++ %.1f s, run %.1f s (KV_NT=%d, KV_TT=%d, KV_SQ=%d, KV_SK=%d, "
		       "KV_ST=%d%s%s)\n", t1 - t0, t2 - t1, EMU_NT, EMU_TT, EMU_SQ, EMU_SK, EMU_ST, gcfgs ? ", GPU config " : "",
		       gcfgs ? gcfgs : "");
	printf("decode: worst output error %.3g, worst state error %.3g (relative to max(1, |ref|))\n", worst_out,
	       worst_st);
	if (every > 1)
		printf("a sample: every %d-th spec of each policy (%d of %d cases; make check-emu-full runs all)\n",
		       every, npass + nfail + nskip, NPOL * NSPEC);
	printf("(%d draws redrawn: a merge comparison, e.g. CaM's Bernoulli draw, within 1e-4 of its bound)\n", nmgap);
	printf("%d passed, %d failed, %d skipped\n", npass, nfail, nskip);
	for (int p = 0; p < NPOL; p++) {
		for (int s = 0; s < NSPEC; s++) {
			kr_cuda_close(specs[p][s].cu);
			kvcc_close(specs[p][s].pol);
			kp_cuda_free(&specs[p][s].out);
		}
		ki_free(fns[p]);
	}
	return nfail ? 1 : 0;
}
