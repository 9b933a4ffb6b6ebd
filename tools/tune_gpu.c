/*
** kvcc tune --gpu-arch (doc/tune.md "GPU"): the GPU config space (codegen/ptx KpGpuCfg: threads
** per block, decode lanes per token, score tile, compaction staging rows) pruned by a STATIC
** model — nothing runs on a GPU. Each point is generated and compiled by NVRTC for every target
** arch; ptxas reports registers, static shared memory and spills per kernel; with the dynamic
** shared memory of the launch, the model computes each kernel's resident blocks per SM and
** occupancy on each arch:
**
**   blocks = min(64K registers / (regs rounded to 8 x threads), shared memory per SM / (static +
**            dynamic + 1 KB reserved), max warps per SM / warps per block, max blocks per SM)
**
** A point is out when a kernel fits no block on an arch (0 blocks) or spills (a spill on every
** launch costs more than any occupancy it buys; ranked after every point without spills).
** Survivors are ranked by a modeled throughput, the geometric mean over kernels and archs of
**   score tile kernels   min(1, occupancy / 0.25) x (sq·sk / (sq + sk)) / the default tile's
**                        x hide / the default's hide (tensor-core / FMA tiles: a quarter of the
**                        warps hides latency; bigger tiles re-use each staged row more; hide: the
**                        K tile pipeline, st buffers, below)
**   decode               min(1, occupancy / 0.5) x min(1, lpt · element bytes / 32) (memory bound:
**                        half the warps to cover HBM latency; 32-byte sectors filled)
**   the others           min(1, occupancy / 0.5)
** The K tile pipeline (KV_ST = st buffers; cp.async copies tile t+st-1 while tile t is used), a
** MODEL with assumed constants, never measured: per K tile, the work w = sq·sk·head_dim·2 / F
** cycles (F: the SM's peak FLOP per cycle, tensor-core or FP32 FMA) and the copy c = LAT +
** sk·head_dim·element bytes / BW cycles; the copy issued st-1 tiles ahead leaves a stall of
** max(0, c - (st-1)·w) per tile and the other resident blocks (b per SM) fill stalls:
**   hide = min(1, b · w / (w + max(0, c - (st-1)·w)))
** taken relative to the default tile's with one buffer at the same b (occupancy is counted once).
** LAT = 600 cycles (global-memory latency), F and BW the datasheet peaks per SM and cycle:
** sm_80 (A100: 312 TFLOP/s bf16, 19.5 f32, 1.55 TB/s, 108 SMs at 1.41 GHz) 2048 / 128 FLOP,
** 10 B; sm_90 and later (H100 SXM: 989 / 67 TFLOP/s, 3.35 TB/s, 132 SMs at 1.83 GHz) 4096 / 256
** FLOP, 14 B (gpipe below). The softmax / reduction work on each tile is left out (it only adds
** to w, so the model overstates the stall of st1).
** A point replaces the default only when the model says more than MODEL_MARGIN better. The
** search is coordinate-wise (threads, then lanes per token, then the score tile, then staging
** rows, then the K tile buffers st2 / st3), each coordinate from the best point so far, so NVRTC runs about a dozen times.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kvcc.h"
#include "compiler/driver.h"
#include "compiler/tunedb.h"
#include "codegen/ptx/ptx.h"
#include "tools/tools.h"

#define MODEL_MARGIN 0.02
#define MAXPT 32

/* per-SM limits by compute capability (CUDA C Programming Guide, "Technical Specifications per
** Compute Capability"): max resident warps, max resident blocks, shared memory per SM (bytes) */
typedef struct GArch { int sm, maxw, maxb, smem; } GArch;
static const GArch GA[] = {
	{ 70, 64, 32, 96 << 10 },  { 72, 64, 32, 96 << 10 },  { 75, 32, 16, 64 << 10 },  { 80, 64, 32, 164 << 10 },
	{ 86, 48, 16, 100 << 10 }, { 87, 48, 16, 164 << 10 }, { 89, 48, 24, 100 << 10 }, { 90, 64, 32, 228 << 10 },
	{ 100, 64, 32, 228 << 10 }, { 103, 64, 32, 228 << 10 }, { 110, 64, 32, 228 << 10 }, { 120, 48, 32, 100 << 10 },
	{ 121, 48, 32, 100 << 10 },
};

/* the pipeline model's constants (the comment at the top): assumed, not measured */
#define PIPE_LAT 600.0
static double gpipe(int sm, int mma, int sq, int sk, int st, int head_dim, int esz, int b)
{
	double F = sm >= 90 ? (mma ? 4096 : 256) : (mma ? 2048 : 128), BW = sm >= 90 ? 14 : 10;
	double w = (double)sq * sk * head_dim * 2 / F, c = PIPE_LAT + (double)sk * head_dim * esz / BW;
	double stall = c - (st - 1) * w;
	return fmin(1, b * w / (w + (stall > 0 ? stall : 0)));
}

static const GArch *garch(int sm)
{
	const GArch *best = &GA[0];
	for (size_t i = 0; i < sizeof GA / sizeof GA[0]; i++)
		if (GA[i].sm <= sm)
			best = &GA[i];
	return best;
}

typedef struct GPoint {
	KpGpuCfg c;
	char str[64];
	int ok;                  /* generated and compiled */
	int spills, nofit;       /* kernels x archs that spill / fit no block */
	double value;            /* the model's throughput (geometric mean) */
	double minocc[KVG_MAXKERN];
	KpCudaOut out;           /* resources (PTX / CUBIN freed) */
	char why[520];
} GPoint;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int blocks(const GArch *A, int regs, int nt, unsigned smem)
{
	int wpb = nt / 32, rpw = ((regs < 1 ? 1 : regs) * 32 + 255) / 256 * 256;
	int b = 65536 / rpw / wpb, bs = (int)((unsigned)A->smem / (smem + 1024u)), bw = A->maxw / wpb;
	b = b < bs ? b : bs;
	b = b < bw ? b : bw;
	return b < A->maxb ? b : A->maxb;
}

/* generate + NVRTC one point and apply the model */
static void evaluate(const KiJob *j, GPoint *p)
{
	KpCudaOpts o = { .dtype = j->spec.dtype, .head_dim = j->spec.head_dim, .group = j->spec.group,
	                 .archs = j->targets.archs, .plan = &j->plan, .cfg = &p->c };
	KiErr e = { 0 };
	kp_gcfgstr(&p->c, j->spec.head_dim, j->spec.group, p->str, sizeof p->str);
	if (kp_compile_cuda(j->f, &o, &p->out, &e) != 0) {
		snprintf(p->why, sizeof p->why, "%s", e.msg);
		return;
	}
	p->ok = 1;
	int esz = j->spec.dtype == KVCC_F32 ? 4 : 2, nt = p->out.nthreads, n = 0;
	double lg = 0;
	for (int k = 0; k < p->out.nkern; k++)
		p->minocc[k] = 1;
	for (int i = 0; i < p->out.nimg; i++) {
		KpCudaImage *im = &p->out.img[i];
		const GArch *A = garch(im->sm);
		int dsq, dsk;   /* the default tile on this arch */
		kp_cuda_score_tile(im->sm, j->spec.dtype, j->spec.head_dim, j->spec.group, &dsq, &dsk);
		for (int k = 0; k < p->out.nkern; k++) {
			int b = blocks(A, im->regs[k], nt, (unsigned)im->smem[k] + im->dsmem[k]);
			double occ = (double)b * (nt / 32) / A->maxw, v;
			if (occ < p->minocc[k])
				p->minocc[k] = occ;
			p->spills += im->spill[k] > 0;
			if (b < 1) {
				p->nofit++;
				continue;
			}
			int role = p->out.kern[k].role;
			if (role == KVG_SCORE && p->out.kern[k].tiled) {
				int mma = kp_cuda_mma(j->spec.dtype, j->spec.head_dim), hd = j->spec.head_dim;
				/* relative to the default tile with one buffer at the same blocks per SM (the
				** occupancy term already counts the blocks) */
				v = fmin(1, occ / 0.25) * ((double)im->sq * im->sk / (im->sq + im->sk)) /
				    ((double)dsq * dsk / (dsq + dsk)) * gpipe(im->sm, mma, im->sq, im->sk, im->st, hd, esz, b) /
				    gpipe(im->sm, mma, dsq, dsk, 1, hd, esz, b);
			}
			else if (role == KVG_DECODE) {
				int lpt = p->c.lpt ? p->c.lpt : kp_cuda_lpt(j->spec.head_dim);
				v = fmin(1, occ / 0.5) * fmin(1, lpt * esz / 32.0);
			} else
				v = fmin(1, occ / 0.5);
			lg += log(v > 1e-6 ? v : 1e-6), n++;
		}
		free(im->ptx), free(im->cubin), im->ptx = NULL, im->cubin = NULL;
	}
	p->value = n ? exp(lg / n) : 0;
}

/* a better than b: fits everywhere, no spills, then the model's value by more than the margin */
static int better(const GPoint *a, const GPoint *b)
{
	if (!a->ok || a->nofit)
		return 0;
	if (!b->ok || b->nofit)
		return 1;
	if (!a->spills != !b->spills)
		return !a->spills;
	return a->value > b->value * (1 + MODEL_MARGIN);
}

static void show(const KiJob *j, const GPoint *p, const char *verdict)
{
	printf("  %-28s", p->str);
	if (!p->ok) {
		printf(" does not compile: %.120s\n", p->why);
		return;
	}
	printf(" model %5.3f  %s\n", p->value, verdict);
	for (int i = 0; i < p->out.nimg; i++) {
		const KpCudaImage *im = &p->out.img[i];
		const GArch *A = garch(im->sm);
		printf("      %-6s", im->arch);
		for (int k = 0; k < p->out.nkern; k++) {
			int b = blocks(A, im->regs[k], p->out.nthreads, (unsigned)im->smem[k] + im->dsmem[k]);
			printf(" %s %dr %uB%s %db/%.0f%%", p->out.kern[k].name, im->regs[k], (unsigned)im->smem[k] + im->dsmem[k],
			       im->spill[k] ? " SPILL" : "", b, 100.0 * b * (p->out.nthreads / 32) / A->maxw);
		}
		printf("  (tile %dx%d%s, staging %d)\n", im->sq, im->sk, im->st == 3 ? ", K in 3 buffers" : im->st == 2 ?
		       ", K in 2 buffers" : "", im->tile);
	}
	(void)j;
}

int kt_tune_gpu(KiJob *j, const char *db, int verbose, double *wall)
{
	double t0 = now_s();
	KiErr e = { 0 };
	if (kp_gpu_targets(j->gpu, &j->targets, j->f, &e) != 0) {
		fprintf(stderr, "kvcc tune: --gpu-arch: %s\n", e.msg);
		return 1;
	}
	printf("GPU %s (NVRTC %d.%d): STATIC MODEL ONLY - nothing was measured on a GPU (none is used by kvcc tune "
	       "here); registers, shared memory and spills from ptxas, occupancy from the per-SM limits\n",
	       j->targets.archs, j->targets.nvrtc_major, j->targets.nvrtc_minor);
	static GPoint P[MAXPT];
	int np = 0, best = 0;
	memset(P, 0, sizeof P);
	evaluate(j, &P[np++]);                                   /* the default */
	if (!P[0].ok) {
		fprintf(stderr, "kvcc tune: GPU: the default config does not compile: %s\n", P[0].why);
		return 1;
	}
	int has_dec = P[0].out.has_decode, tiled = 0;
	for (int k = 0; k < P[0].out.nkern; k++)
		tiled |= P[0].out.kern[k].tiled;
	int lpt0 = kp_cuda_lpt(j->spec.head_dim), sq0 = j->spec.group < 4 ? 64 * j->spec.group : 256;
	for (int coord = 0; coord < 5; coord++) {
		KpGpuCfg v[4];
		int nv = 0;
		KpGpuCfg b = P[best].c;
		if (coord == 0)
			for (int nt = 128; nt <= 512; nt *= 2)
				v[nv] = b, v[nv++].nt = nt;
		else if (coord == 1 && has_dec)
			for (int l = lpt0 / 4 > 0 ? lpt0 / 4 : 1; l <= lpt0; l *= 2)
				v[nv] = b, v[nv++].lpt = l;
		else if (coord == 2 && tiled) {
			static const int t[][2] = { { 0, 32 }, { 0, 128 }, { -1, 64 } };
			for (int i = 0; i < 3; i++) {
				v[nv] = b, v[nv].sk = t[i][1];
				v[nv++].sq = t[i][0] < 0 ? (sq0 / 2 >= 16 ? sq0 / 2 : 16) : sq0;
			}
		} else if (coord == 3 && P[0].out.has_compress)
			for (int tt = 32; tt >= 8; tt /= 4)
				v[nv] = b, v[nv++].tt = tt;
		else if (coord == 4 && tiled)   /* the K tile pipeline: by the model only */
			for (int st = 2; st <= 3; st++)
				v[nv] = b, v[nv++].st = st;
		for (int i = 0; i < nv && np < MAXPT; i++) {
			char s[64], t[64];
			kp_gcfgstr(&v[i], j->spec.head_dim, j->spec.group, s, sizeof s);
			int seen = 0;
			for (int q = 0; q < np; q++) {
				kp_gcfgstr(&P[q].c, j->spec.head_dim, j->spec.group, t, sizeof t);
				seen |= !strcmp(s, t);
			}
			if (seen)
				continue;
			P[np].c = v[i];
			evaluate(j, &P[np]);
			if (better(&P[np], &P[best]))
				best = np;
			np++;
		}
	}
	printf("  %d points generated and compiled (NVRTC + ptxas) for %s in %.1f s; per point and arch: kernel "
	       "registers, shared bytes (static + dynamic), resident blocks per SM / occupancy\n",
	       np, j->targets.archs, now_s() - t0);
	for (int i = 0; i < np; i++)
		show(j, &P[i], i == best ? "<- the static pick" : i == 0 ? "(default)"
		               : !P[i].ok || P[i].nofit ? "out: does not fit an SM"
		               : P[i].spills ? "out: spills" : "");
	const GPoint *w = &P[best];
	printf("GPU static pick for %s: %s (%s). Why: ", j->targets.archs, w->str, best ? "replaces the default" : "the default");
	if (!best)
		printf("no point beat the default by more than the model margin (%.0f%%) without spills\n", MODEL_MARGIN * 100);
	else {
		printf("model %.3f vs the default's %.3f", w->value, P[0].value);
		if (P[0].spills && !w->spills)
			printf("; the default spills (%d kernel x arch), the pick does not", P[0].spills);
		if (P[0].nofit)
			printf("; the default fits no block on an SM for %d kernel x arch", P[0].nofit);
		printf("\n");
	}
	printf("  NOT MEASURED: the pick is the static model's; on a GPU `kvcc tune` would have to time it.\n");
	if (w->c.st > 1)
		printf("  K tile buffers st%d: picked by the pipeline model alone (assumed latency %.0f cycles and datasheet "
		       "peaks, doc/tune.md); no cp.async pipeline has run on a GPU here\n", w->c.st, PIPE_LAT);
	/* the record: the static pick, keyed by the targets and NVRTC (not by this CPU) */
	KtRec r;
	memset(&r, 0, sizeof r);
	r.kind = 'p', r.kernel = ki_tdb_kernel(j->f, &j->spec), r.bucket = 0;
	r.dev = ki_tdb_gpudev(j->targets.archs, j->targets.nvrtc_major, j->targets.nvrtc_minor);
	snprintf(r.phase, sizeof r.phase, "gpu");
	snprintf(r.devname, sizeof r.devname, "static model %s NVRTC %d.%d", j->targets.archs, j->targets.nvrtc_major,
	         j->targets.nvrtc_minor);
	snprintf(r.version, sizeof r.version, "%s", ki_tdb_version());
	snprintf(r.cfg, sizeof r.cfg, "%.40s|%.56s", j->targets.archs, w->str);
	r.ms = P[0].value > 0 ? w->value / P[0].value : 1;
	char why[300];
	int rc = 0;
	if (ki_tdb_update(db, &r, 1, why, sizeof why) != 0)
		fprintf(stderr, "kvcc tune: %s\n", why), rc = 1;
	else if (verbose)
		printf("  recorded in %s: kvcc compile --gpu-arch %s uses it (kvcc compile -v says so)\n", db,
		       j->targets.archs);
	for (int i = 0; i < np; i++)
		kp_cuda_free(&P[i].out);
	*wall = now_s() - t0;
	return rc;
}
