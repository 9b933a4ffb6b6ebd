/*
** kvcc-bench-paged (make bench-paged): paged and batched caches against the contiguous layout
** (issue 14's targets), SnapKV, H = 8 KV heads, G = 4, head_dim 128, window 64, all cores:
**
**   compress n = 32768 bf16: paged (pages of 16, vLLM's [page][row][head][chan], pages
**            shuffled) vs contiguous [head][token][chan]: time ratio (target <= 1.10)
**   batch    8 sequences of 4096 in one kvcc_compress_batch vs 8 kvcc_compress calls:
**            throughput ratio
**   decode   one kvcc_decode_batch step over n = 32768, paged (16) vs contiguous (target <= 1.10)
**   decode batch  one step of 8 sequences of 4096, then of 256: 8 calls vs one kvcc_decode_batch
**            (throughput)
**
** --hnd: pools [page][head][row][chan]; --page N: pages of N tokens; --decode, --compress: that part only;
** --cpu: the process's CPU time (every thread's; the pool's idle threads sleep) instead of wall
** time, steadier on a machine that others load (the phase timings stay wall time).
** Runs alternate between the two sides (A B A B ...) and report medians, so a busy machine
** slows both alike. Not a test: nothing here asserts on time.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "kvcc.h"
#include "kvcc_compiler.h"

enum { H = 8, G = 4, D = 128, WIN = 64, N = 32768, BN = 4096, NB = 8 };
static int PS = 16;    /* page size (--page N) */

static int cpu;         /* --cpu: the process's CPU time (all threads) instead of wall time */

static double now(void)
{
	struct timespec ts;
	clock_gettime(cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint16_t rbf16(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	float x = (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
	uint32_t u;
	memcpy(&u, &x, 4);
	return (uint16_t)(u >> 16);
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmpd);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, ": %s\n", kvcc_last_error()); exit(1); } while (0)

/* One sequence of n tokens: contiguous K0/V0 [H][n][D], the same rows in a pool of pages of PS
** ([page][row][head][chan]) under a shuffled table. */
typedef struct Seq {
	int n, np;
	uint16_t *K0, *V0, *K, *V, *PK0, *PV0, *PK, *PV;
	int32_t *tab, *pos, len[H], *freed;
} Seq;

static int hnd;        /* pools [page][head][row][chan] (FlashInfer's HND) instead of vLLM's */

static void mkseq(Seq *s, int n)
{
	size_t nkv = (size_t)H * n * D;
	s->n = n, s->np = (n + PS - 1) / PS;
	s->K0 = malloc(nkv * 2), s->V0 = malloc(nkv * 2), s->K = malloc(nkv * 2), s->V = malloc(nkv * 2);
	size_t pool = (size_t)s->np * PS * H * D;
	s->PK0 = malloc(pool * 2), s->PV0 = malloc(pool * 2), s->PK = malloc(pool * 2), s->PV = malloc(pool * 2);
	s->tab = malloc((size_t)s->np * 4), s->pos = malloc((size_t)H * n * 4), s->freed = malloc((size_t)s->np * 4);
	for (size_t i = 0; i < nkv; i++)
		s->K0[i] = rbf16(), s->V0[i] = rbf16();
	for (int i = 0; i < s->np; i++)
		s->tab[i] = i;
	for (int i = s->np - 1; i > 0; i--) {
		int j = (int)(rng % (uint64_t)(i + 1));
		rbf16();
		int32_t t = s->tab[i];
		s->tab[i] = s->tab[j], s->tab[j] = t;
	}
	for (int h = 0; h < H; h++)
		for (int t = 0; t < n; t++) {
			size_t pg = (size_t)s->tab[t / PS], src = ((size_t)h * n + t) * D;
			size_t dst = hnd ? ((pg * H + h) * PS + t % PS) * D : ((pg * PS + t % PS) * H + h) * D;
			memcpy(s->PK0 + dst, s->K0 + src, D * 2), memcpy(s->PV0 + dst, s->V0 + src, D * 2);
		}
}

static void reset(Seq *s, int paged)
{
	if (paged) {
		size_t pool = (size_t)s->np * PS * H * D * 2;
		memcpy(s->PK, s->PK0, pool), memcpy(s->PV, s->PV0, pool);
	} else {
		size_t nkv = (size_t)H * s->n * D * 2;
		memcpy(s->K, s->K0, nkv), memcpy(s->V, s->V0, nkv);
	}
	for (int h = 0; h < H; h++) {
		s->len[h] = s->n;
		for (int t = 0; t < s->n; t++)
			s->pos[(size_t)h * s->n + t] = t;
	}
}

static kvcc_layout contig(int n) { return (kvcc_layout){ KVCC_BF16, 1, H, D, n, (int64_t)H * n * D, (int64_t)n * D, D }; }
static kvcc_layout pagedlay(int n)
{
	return hnd ? (kvcc_layout){ KVCC_BF16, 1, H, D, n, 0, (int64_t)PS * D, D } : (kvcc_layout){ KVCC_BF16, 1, H, D, n, 0, D, (int64_t)H * D };
}

int main(int argc, char **argv)
{
	int only_decode = 0, only_compress = 0;
	for (int i = 1; i < argc; i++)
		hnd |= !strcmp(argv[i], "--hnd"), only_decode |= !strcmp(argv[i], "--decode"), cpu |= !strcmp(argv[i], "--cpu"),
		only_compress |= !strcmp(argv[i], "--compress");
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--page"))
			PS = atoi(argv[i + 1]);
	if (PS < 1 || PS > 256)
		return fprintf(stderr, "usage: kvcc-bench-paged [--hnd] [--decode|--compress] [--cpu] [--page 1..256]\n"), 2;
	int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 7;
	kvcc_spec spec = { KVCC_BF16, D, G, KVCC_TARGET_NATIVE };
	kvcc_policy *pol;
	if (kvcc_compile_file("policies/snapkv.lua", &spec, &pol) != 0)
		DIE("compile");
	double par[8];
	for (int i = 0; i < kvcc_param_count(pol) && i < 8; i++)
		kvcc_param_info(pol, i, NULL, &par[i]);
	par[kvcc_param_index(pol, "window")] = WIN;
	uint16_t *Q = malloc((size_t)H * G * WIN * D * 2);
	for (size_t i = 0; i < (size_t)H * G * WIN * D; i++)
		Q[i] = rbf16();
	kvcc_args a = { .ratio = 0.5, .budget = -1, .params = par };
	printf("kvcc bench-paged: snapkv bf16, H %d, G %d, head_dim %d, window %d, %d threads, pools %s, %s time\n", H, G, D,
	       WIN, threads, hnd ? "[page][head][row][chan] (--hnd)" : "[page][row][head][chan] (vLLM)", cpu ? "CPU" : "wall");

	/* 1. compress n = 32768: contiguous vs paged (16) */
	Seq s;
	mkseq(&s, N);
	kvcc_layout lc = contig(N), lp = pagedlay(N);
	kvcc_paging pg = { PS, s.np, s.np, KVCC_TABLE_SHARED, (int64_t)PS * H * D };
	kvcc_plan *pc, *pp;
	if (kvcc_plan_create(pol, &lc, WIN, threads, &pc) != 0 || kvcc_plan_create_batch(pol, &lp, &pg, 1, WIN, threads, &pp) != 0)
		DIE("plan");
	double tc[16], tp[16], pc3[3][16], pp3[3][16];
	for (int r = -1; r < reps && !only_decode; r++) {
		reset(&s, 0);
		kvcc_cache c = { s.K, s.V, s.pos, s.len, NULL };
		kvcc_obs o = { WIN, Q, NULL, NULL };
		double t0 = now();
		if (kvcc_compress(pc, &c, &o, &a) != 0)
			DIE("compress");
		double t1 = now();
		reset(&s, 1);
		kvcc_seq sq = { .pos = s.pos, .len = s.len, .obs = o, .freed = s.freed };
		kvcc_batch b = { .nseq = 1, .seq = &sq, .K = s.PK, .V = s.PV, .table = s.tab };
		double t2 = now();
		if (kvcc_compress_batch(pp, &b, &a) != 0)
			DIE("compress paged");
		double t3 = now();
		double m1[4], m2[4];
		kvcc_plan_timings(pc, m1), kvcc_plan_timings(pp, m2);
		if (r >= 0) {
			tc[r] = (t1 - t0) * 1e3, tp[r] = (t3 - t2) * 1e3;
			for (int k = 0; k < 3; k++)
				pc3[k][r] = m1[k], pp3[k][r] = m2[k];
		}
	}
	double mc = median(tc, reps), mp = median(tp, reps);
	if (!only_decode)
		printf("compress n=%d: contiguous %.1f ms, paged (page %d) %.1f ms: ratio %.3f (target <= 1.10); score / select / "
		       "compact %.1f / %.1f / %.1f vs %.1f / %.1f / %.1f ms\n", N, mc, PS, mp, mp / mc, median(pc3[0], reps),
		       median(pc3[1], reps), median(pc3[2], reps), median(pp3[0], reps), median(pp3[1], reps), median(pp3[2], reps));

	if (only_compress)
		return 0;
	/* 3. decode over n = 32768 (the compressed caches hold n/2; refill to n) */
	float *q = malloc((size_t)H * G * D * 4), *out = malloc((size_t)H * G * D * 4);
	for (int i = 0; i < H * G * D; i++)
		q[i] = (float)(rng % 1000) / 500 - 1, rbf16();
	reset(&s, 0), reset(&s, 1);
	int32_t lenp[H];
	for (int h = 0; h < H; h++)
		lenp[h] = N - 1;
	int32_t lenc[H];
	memcpy(lenc, lenp, sizeof lenc);
	double dc[64], dp[64];
	int dreps = 41;
	for (int r = -3; r < dreps; r++) {
		kvcc_cache c = { s.K, s.V, s.pos, lenc, NULL };
		kvcc_seq sq = { .pos = s.pos, .len = lenp };
		kvcc_batch b = { .nseq = 1, .seq = &sq, .K = s.PK, .V = s.PV, .table = s.tab };
		double t0 = now();
		if (kvcc_decode_layer(pc, &c, 0, q, out) != 0)
			DIE("decode");
		double t1 = now();
		if (kvcc_decode_batch(pp, &b, 0, q, out) != 0)
			DIE("decode paged");
		double t2 = now();
		if (r >= 0)
			dc[r] = (t1 - t0) * 1e3, dp[r] = (t2 - t1) * 1e3;
	}
	double mdc = median(dc, dreps), mdp = median(dp, dreps);
	printf("decode n=%d: contiguous %.3f ms, paged (page %d) %.3f ms: ratio %.3f (target <= 1.10)\n", N - 1, mdc, PS, mdp,
	       mdp / mdc);
	kvcc_plan_destroy(pc), kvcc_plan_destroy(pp);
	if (only_decode)
		return 0;

	/* 2. a batch of 8 x 4096 in one call vs 8 calls (contiguous caches) */
	Seq bs[NB];
	for (int i = 0; i < NB; i++)
		mkseq(&bs[i], BN);
	kvcc_layout lb = contig(BN);
	kvcc_plan *pb;
	if (kvcc_plan_create_batch(pol, &lb, NULL, NB, WIN, threads, &pb) != 0)
		DIE("batch plan");
	double t8[16], t1b[16];
	for (int r = -1; r < reps; r++) {
		for (int i = 0; i < NB; i++)
			reset(&bs[i], 0);
		double t0 = now();
		for (int i = 0; i < NB; i++) {
			kvcc_cache c = { bs[i].K, bs[i].V, bs[i].pos, bs[i].len, NULL };
			kvcc_obs o = { WIN, Q, NULL, NULL };
			if (kvcc_compress(pb, &c, &o, &a) != 0)
				DIE("compress");
		}
		double t1 = now();
		kvcc_seq sq[NB];
		for (int i = 0; i < NB; i++) {
			reset(&bs[i], 0);
			sq[i] = (kvcc_seq){ bs[i].K, bs[i].V, bs[i].pos, bs[i].len, NULL, { WIN, Q, NULL, NULL }, NULL, 0, NULL };
		}
		kvcc_batch b = { .nseq = NB, .seq = sq };
		double t2 = now();
		if (kvcc_compress_batch(pb, &b, &a) != 0)
			DIE("compress batch");
		double t3 = now();
		if (r >= 0)
			t8[r] = (t1 - t0) * 1e3, t1b[r] = (t3 - t2) * 1e3;
	}
	double m8 = median(t8, reps), m1 = median(t1b, reps);
	printf("batch %dx%d: 8 calls %.1f ms, one batched call %.1f ms: throughput x%.2f\n", NB, BN, m8, m1, m8 / m1);

	/* 4. one decode step of 8 x 4096 (contiguous caches): 8 calls vs one kvcc_decode_batch, whose
	** (sequence, head, chunk) tasks share one pool run */
	float *q8 = malloc((size_t)NB * H * G * D * 4), *o8 = malloc((size_t)NB * H * G * D * 4);
	for (int i = 0; i < NB * H * G * D; i++)
		q8[i] = (float)(rng % 1000) / 500 - 1, rbf16();
	kvcc_seq sq[NB];
	for (int i = 0; i < NB; i++) {
		reset(&bs[i], 0);
		sq[i] = (kvcc_seq){ bs[i].K, bs[i].V, bs[i].pos, bs[i].len, NULL, { 0, NULL, NULL, NULL }, NULL, 0, NULL };
	}
	double d8[64], d1[64];
	for (int n8 = BN; n8 >= 256; n8 = n8 == BN ? 256 : 0) {    /* 4096 tokens (memory-bound), then 256 */
	for (int i = 0; i < NB; i++)
		for (int h = 0; h < H; h++)
			bs[i].len[h] = n8;
	for (int r = -3; r < dreps; r++) {
		double t0 = now();
		for (int i = 0; i < NB; i++) {
			kvcc_batch b1 = { .nseq = 1, .seq = &sq[i] };
			if (kvcc_decode_batch(pb, &b1, 0, q8 + (size_t)i * H * G * D, o8 + (size_t)i * H * G * D) != 0)
				DIE("decode");
		}
		double t1 = now();
		kvcc_batch b = { .nseq = NB, .seq = sq };
		if (kvcc_decode_batch(pb, &b, 0, q8, o8) != 0)
			DIE("decode batch");
		double t2 = now();
		if (r >= 0)
			d8[r] = (t1 - t0) * 1e3, d1[r] = (t2 - t1) * 1e3;
	}
	double md8 = median(d8, dreps), md1 = median(d1, dreps);
	printf("decode batch %dx%d: 8 calls %.3f ms, one kvcc_decode_batch %.3f ms: throughput x%.2f\n", NB, n8, md8, md1,
	       md8 / md1);
	}
	kvcc_plan_destroy(pb);
	kvcc_close(pol);
	return 0;
}
