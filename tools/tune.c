/*
** kvcc tune POLICY.lua (doc/tune.md; DESIGN §8): measure a model-pruned space of x86 kernel
** configs (codegen/x86/cfg.c) for one spec on this machine, on a few shape buckets, record
** every timing and the pick in the tuning database (compiler/tunedb.c), where `kvcc compile`
** and in-process compiles find it.
**
**   1 score    query block × token vectors × vector width × bf16 dot / f32, pruned by a
**              register and throughput model (top --configs per width and dot), measured by
**              the score phase of kvcc_compress (one thread)
**   2 select   radix digit 8, 10, 12 bits (11 from stage 1): the select phase
**   3 decode   prefetch distance 0, 16, 64, 256 tokens: kvcc_decode_layer (one thread)
**   4 split    decode tasks per thread 1, 4 and smallest chunk 64, 1024 around the default
**              (2, 256), per bucket: kvcc_decode_layer on every core
**
** Times are the best of repeated runs on random data (interference only adds time). A candidate replaces the default only when
** its geometric-mean time over the buckets is lower by more than the noise margin and it is not
** slower than the default on any bucket by more than the margin; ties keep the earlier
** (default-first) candidate, so two runs pick the same config unless timings moved by more than
** the margin. The margin is MARGIN (3 %), or, where the confirming rounds moved more, twice
** their spread (noisemargin): under load the margin grows and the default is kept. A config that fails to compile is skipped with a message.
** After the search, the confirmation (finalconfirm, issue 15) runs the pick and the default
** interleaved on every core and measures the noise margin there (the A/A spread of the rounds):
** each non-default part of the pick stays only when it is faster beyond it, else the default's
** part is kept; the reasons go to stderr and to 'confirm' records of the database.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "compiler/driver.h"
#include "compiler/interp.h"
#include "compiler/tunedb.h"
#include "codegen/x86/x86.h"
#include "runtime/artifact.h"
#include "tools/tools.h"

#define MARGIN 0.03          /* noise margin: 3 % */
#define MAXB 8               /* buckets */
#define MAXC 64              /* candidates per stage */

typedef struct Tuner {
	KiJob j;
	kvcc_spec spec;
	int nb, buckets[MAXB];
	int threads;             /* cores for the split stage */
	int verbose, tty;
	uint64_t kernel, dev;
	char devname[96], db[1200];
	const char *version;
	int done, total;         /* progress */
	double t0, budget;
	KtRec *rec;              /* timings to record */
	int nrec, caprec;
	int nobs;                /* observation queries per bucket (-1: every position) */
	char *cold;              /* the decode measurements' K/V: larger than the last-level cache */
	size_t coldsz;
	double margin;           /* the noise margin pick applies: MARGIN, or the noise confirm measured */
	double maxmargin;        /* the largest margin applied (the summary line states it) */
	int fewer;               /* fewer runs per measurement (the final confirmation's rounds) */
} Tuner;

/* one bucket's data: pristine K/V and the working copies compress compacts */
typedef struct Data {
	int n, nobs;
	size_t esz, nkv;
	void *K0, *V0, *K, *V, *Q;
	int32_t len[8];
	float *state, *q;
	/* decode: `hd` KV heads per call (a layer), K then V, in slot `slot` of the tuner's cold
	** buffer (nslot slots, round robin): each call reads data no earlier call left in the cache */
	int hd, nslot, slot;
	size_t slotsz;
	float *out;
} Data;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* random storage elements in about [-2, 2] */
static void fill(void *p, size_t n, int dtype)
{
	for (size_t i = 0; i < n; i++) {
		float x = ((float)(rnd() % 65536) / 16384.0f) - 2.0f;
		if (dtype == KVCC_F32)
			((float *)p)[i] = x;
		else if (dtype == KVCC_BF16) {
			uint32_t u;
			memcpy(&u, &x, 4);
			((uint16_t *)p)[i] = (uint16_t)(u >> 16);
		} else   /* f16: sign, exponent 13..15 (0.25 .. 2), random mantissa */
			((uint16_t *)p)[i] = (uint16_t)((rnd() & 1) << 15 | (13 + rnd() % 3) << 10 | (rnd() & 1023));
	}
}

static int mkdata(Tuner *T, Data *D, int n)
{
	memset(D, 0, sizeof *D);
	const kvcc_spec *s = &T->spec;
	D->n = n, D->nobs = T->nobs < 0 ? n : T->nobs;
	D->esz = s->dtype == KVCC_F32 ? 4 : 2;
	D->nkv = (size_t)n * s->head_dim;
	size_t nq = (size_t)s->group * D->nobs * s->head_dim;
	D->K0 = malloc(D->nkv * D->esz), D->V0 = malloc(D->nkv * D->esz);
	D->K = malloc(D->nkv * D->esz), D->V = malloc(D->nkv * D->esz);
	D->Q = malloc((nq ? nq : 1) * D->esz);
	size_t head = 2 * D->nkv * D->esz;   /* one head's K and V */
	D->hd = (int)(T->coldsz / (4 * head));
	D->hd = D->hd < 1 ? 1 : D->hd > 8 ? 8 : D->hd;
	D->slotsz = (size_t)D->hd * head;
	D->nslot = (int)(T->coldsz / D->slotsz);
	D->state = calloc((size_t)8 * D->hd * n, sizeof(float));
	D->q = malloc((size_t)D->hd * s->group * s->head_dim * sizeof(float));
	D->out = malloc((size_t)D->hd * s->group * s->head_dim * sizeof(float));
	if (!D->K0 || !D->V0 || !D->K || !D->V || !D->Q || !D->state || !D->q || !D->out || D->nslot < 1)
		return -1;
	fill(D->K0, D->nkv, s->dtype), fill(D->V0, D->nkv, s->dtype), fill(D->Q, nq, s->dtype);
	for (int i = 0; i < D->hd * s->group * s->head_dim; i++)
		D->q[i] = ((float)(rnd() % 65536) / 16384.0f) - 2.0f;
	return 0;
}

/* the decode measurements' buffer: twice the last-level cache (at least 64 MiB, at most 1 GiB;
** KVCC_TUNE_COLD_MB overrides), random storage elements (16 MiB of them, repeated). A decode on
** one head that stays in the cache measures the prefetches as pure overhead, while a decode at
** long context streams from memory, where they pay (doc/tune.md "decode"). At least one head's
** K and V of the largest bucket. */
static int mkcold(Tuner *T, int nmax)
{
	const kvcc_spec *s = &T->spec;
	size_t esz = s->dtype == KVCC_F32 ? 4 : 2, chunk = (size_t)16 << 20;
	long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
	double mb = (l3 > 0 ? 2.0 * (double)l3 : 64.0 * 1048576) / 1048576;
	const char *e = getenv("KVCC_TUNE_COLD_MB");
	if (e && *e)
		mb = atof(e);
	mb = mb < 64 ? 64 : mb > 1024 ? 1024 : mb;
	size_t need = 2 * (size_t)nmax * s->head_dim * esz;
	T->coldsz = (size_t)(mb * 1048576) > need ? (size_t)(mb * 1048576) : need;
	if (!(T->cold = malloc(T->coldsz)))
		return -1;
	fill(T->cold, chunk / esz, s->dtype);
	for (size_t o = chunk; o < T->coldsz; o += chunk)
		memcpy(T->cold + o, T->cold, T->coldsz - o < chunk ? T->coldsz - o : chunk);
	return 0;
}

static void freedata(Data *D)
{
	free(D->K0), free(D->V0), free(D->K), free(D->V), free(D->Q), free(D->state), free(D->q), free(D->out);
	memset(D, 0, sizeof *D);
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* the best of n runs: on a shared machine interference only adds time, so the minimum is the
** estimate that repeats (medians of 2-thread runs moved by 3x between identical configs) */
static double best(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmpd);
	return v[0];
}

/* ms[0] score, ms[1] select (best of kvcc_compress runs), ms[2] decode (best of
** kvcc_decode_layer) of policy p on D with `threads` threads; what < 0: all, else only that */
static int measure(Tuner *T, kvcc_policy *p, Data *D, int threads, int what, double ms[3])
{
	const kvcc_spec *s = &T->spec;
	kvcc_layout lay = { s->dtype, 1, 1, s->head_dim, D->n, (int64_t)D->n * s->head_dim, (int64_t)D->n * s->head_dim,
	                    s->head_dim };
	kvcc_plan *pl = NULL;
	if (kvcc_plan_create(p, &lay, D->nobs, threads, &pl) != 0)
		return -1;
	int reps = D->n >= 65536 ? 2 : D->n >= 16384 ? 4 : 9, rc = 0, r0 = D->n >= 65536 ? 0 : -1;
	if (T->fewer)              /* the confirmation's rounds: they repeat the measurement themselves */
		reps = D->n >= 16384 ? 2 : 5;
	double sc[16], se[16], de[32];
	ms[0] = ms[1] = ms[2] = 0;
	for (int r = r0; r < reps && (what < 0 || what < 2) && !rc; r++) {    /* r = -1: warm-up */
		memcpy(D->K, D->K0, D->nkv * D->esz), memcpy(D->V, D->V0, D->nkv * D->esz);
		D->len[0] = D->n;
		kvcc_cache c = { D->K, D->V, NULL, D->len, D->state };
		kvcc_obs o = { D->nobs, D->Q, NULL, NULL };
		kvcc_args a = { .ratio = 0.5, .budget = -1, .threads = threads };
		double t[4];
		if (kvcc_compress(pl, &c, &o, &a) != 0 || kvcc_plan_timings(pl, t) != 0)
			rc = -1;
		if (r >= 0)
			sc[r] = t[0], se[r] = t[1];
	}
	if (!rc && (what < 0 || what < 2))
		ms[0] = best(sc, reps), ms[1] = best(se, reps);
	kvcc_plan_destroy(pl);
	/* decode: a layer of D->hd heads, each call on a slot of the cold buffer no recent call read */
	int dreps = 2 * reps + 1;
	kvcc_layout dl = { s->dtype, 1, D->hd, s->head_dim, D->n, (int64_t)D->hd * D->n * s->head_dim,
	                   (int64_t)D->n * s->head_dim, s->head_dim };
	pl = NULL;
	if (!rc && (what < 0 || what == 2) && kvcc_plan_create(p, &dl, 0, threads, &pl) != 0)
		return -1;
	for (int r = -1; r < dreps && pl && !rc; r++) {
		for (int h = 0; h < D->hd; h++)
			D->len[h] = D->n;
		char *k = T->cold + (size_t)D->slot * D->slotsz;
		D->slot = (D->slot + 1) % D->nslot;
		kvcc_cache c = { k, k + D->slotsz / 2, NULL, D->len, D->state };
		double t0 = now_s();
		if (kvcc_decode_layer(pl, &c, 0, D->q, D->out) != 0)
			rc = -1;
		if (r >= 0)
			de[r] = (now_s() - t0) * 1e3;
	}
	if (pl && !rc)
		ms[2] = best(de, dreps);
	kvcc_plan_destroy(pl);
	return rc;
}

static void bar(Tuner *T, const char *stage, const char *cfg)
{
	if (!T->tty)
		return;
	int w = 30, k = T->total ? T->done * w / T->total : 0;
	char b[40];
	for (int i = 0; i < w; i++)
		b[i] = i < k ? '#' : '.';
	b[w] = 0;
	fprintf(stderr, "\r\033[Kkvcc tune [%s] %d/%d %5.1f s  %s %s", b, T->done, T->total, now_s() - T->t0, stage, cfg);
	fflush(stderr);
}

/* compile `cfg` (through the cache) and open it: NULL when it does not compile (said) */
static kvcc_policy *build(Tuner *T, const char *cfg, char *resolved, size_t rn)
{
	KiErr e = { 0 };
	char path[1400], out[64];
	snprintf(out, sizeof out, "/tmp/kvcc-tune-%ld.so", (long)getpid());
	T->j.config = cfg, T->j.cfgfrom = NULL, T->j.verbose = T->verbose > 1;
	kvcc_policy *p = NULL;
	if (ki_cached(&T->j, out, path, sizeof path, &e) != 0) {
		fprintf(stderr, "%skvcc tune: config %s failed to compile (%s); skipped\n", T->tty ? "\n" : "", cfg, e.msg);
		return NULL;
	}
	if (kvcc_open(path, &p) != 0) {
		fprintf(stderr, "%skvcc tune: config %s: %s; skipped\n", T->tty ? "\n" : "", cfg, kvcc_last_error());
		p = NULL;
	} else if (strcmp(kvcc_policy_config(p), T->j.cfgstr) != 0 || strcmp(T->j.cfgfrom, "tuner") != 0) {
		kvcc_close(p), p = NULL;   /* the driver fell back to the default: not this config */
		fprintf(stderr, "%skvcc tune: config %s did not build as asked; skipped\n", T->tty ? "\n" : "", cfg);
	}
	if (!strcmp(path, out))
		unlink(out);
	if (p)
		snprintf(resolved, rn, "%s", T->j.cfgstr);
	return p;
}

/* a timing record ('t'), or with kind 'p' a pick record; out of memory: said once, the record lost
** (never another record overwritten) */
static KtRec *recordk(Tuner *T, char kind, const char *phase, int bucket, const char *cfg, double ms)
{
	static int said;
	if (T->nrec == T->caprec) {
		int nc = T->caprec ? 2 * T->caprec : 128;
		KtRec *r = realloc(T->rec, (size_t)nc * sizeof *r);
		if (!r) {
			if (!said)
				fprintf(stderr, "kvcc tune: out of memory: timing records are being lost\n");
			said = 1;
			return NULL;
		}
		T->rec = r, T->caprec = nc;
	}
	KtRec *r = &T->rec[T->nrec++];
	memset(r, 0, sizeof *r);
	r->kernel = T->kernel, r->bucket = bucket, r->dev = T->dev, r->ms = ms;
	snprintf(r->phase, sizeof r->phase, "%s", phase);
	snprintf(r->devname, sizeof r->devname, "%s", T->devname);
	snprintf(r->version, sizeof r->version, "%s", T->version);
	snprintf(r->cfg, sizeof r->cfg, "%s", cfg);
	r->kind = kind;
	return r;
}

static void record(Tuner *T, const char *phase, int bucket, const char *cfg, double ms)
{
	recordk(T, 't', phase, bucket, cfg, ms);
}

typedef struct Cand {
	char cfg[240];           /* as asked */
	char res[128];           /* resolved (what was built) */
	double ms[MAXB];         /* the stage's time per bucket; < 0: failed */
	double dms[MAXB];        /* stage 1: decode time too (a width must not slow decode) */
	double sms[MAXB];        /* stage 1: select time (the select stage's baseline) */
	double cost;             /* seconds its measurements took */
	double model;
	kvcc_policy *p;          /* the built artifact (open until the end) */
} Cand;

static const char *const PHASE[] = { "score", "select", "decode", "split" };

/* measure the candidates of a stage on every bucket (what: 0 score, 1 select, 2 decode;
** stage 3 = decode on every core), from `from`, as long as the next one fits before the deadline
** (by the mean cost so far): the number measured */
static int run_stage(Tuner *T, Data *D, Cand *c, int from, int nc, int stage, double deadline)
{
	int what = stage == 3 ? 2 : stage ? stage : -1, thr = stage == 3 ? T->threads : 1;
	double spent = 0;
	for (int i = from; i < nc; i++) {
		if (i > from && now_s() + spent / (i - from) > deadline) {
			if (T->verbose)
				fprintf(stderr, "%skvcc tune: time budget: %s stage stops after %d of %d candidates\n", T->tty ? "\n" : "",
				        PHASE[stage], i, nc);
			T->total -= (nc - i) * T->nb;
			return i;
		}
		double t0 = now_s();
		bar(T, PHASE[stage], c[i].cfg);
		kvcc_policy *p = c[i].p = build(T, c[i].cfg, c[i].res, sizeof c[i].res);
		for (int b = 0; b < T->nb; b++) {
			double ms[3];
			c[i].ms[b] = -1;
			c[i].dms[b] = 0;
			if (p && measure(T, p, &D[b], thr, what, ms) == 0) {
				c[i].ms[b] = ms[what < 0 ? 0 : what];
				record(T, PHASE[stage], T->buckets[b], c[i].res, c[i].ms[b]);
				if (what < 0)
					c[i].dms[b] = ms[2], c[i].sms[b] = ms[1], record(T, "decode", T->buckets[b], c[i].res, ms[2]);
			} else if (p)
				fprintf(stderr, "%skvcc tune: config %s: %s; skipped\n", T->tty ? "\n" : "", c[i].cfg, kvcc_last_error());
			T->done++;
			bar(T, PHASE[stage], c[i].cfg);
		}
		c[i].cost = now_s() - t0;
		spent += c[i].cost;
	}
	return nc;
}

static void closeall(Cand *c, int nc)
{
	for (int i = 0; i < nc; i++)
		if (c[i].p)
			kvcc_close(c[i].p), c[i].p = NULL;
}

/* the pick of a stage: index into c (0 = the stage's baseline); the per-bucket rule when
** bucket >= 0 (only that bucket's time) */
static int pick(const Tuner *T, const Cand *c, int nc, int bucket, double *gm)
{
	int best = 0;
	double bg = 1;
	for (int i = 1; i < nc; i++) {
		double lg = 0;
		int ok = 1;
		for (int b = 0; b < T->nb && ok; b++) {
			if (bucket >= 0 && b != bucket)
				continue;
			if (c[i].ms[b] < 0 || c[0].ms[b] <= 0) {
				ok = 0;
				break;
			}
			double r = c[i].ms[b] / c[0].ms[b];
			ok = r <= 1 + T->margin && (c[0].dms[b] <= 0 || c[i].dms[b] <= c[0].dms[b] * (1 + T->margin));
			lg += log(r);
		}
		double g = exp(lg / (bucket >= 0 ? 1 : T->nb));
		if (ok && g < 1 - T->margin && g < bg - 1e-9)
			best = i, bg = g;
	}
	*gm = bg;
	return best;
}

/* the noise of n repeated measurements of one config: the spread of the two best, (second best -
** best) / best: what a best-of time can move between identical runs at this load */
static double spread(const double *v, int n)
{
	double a = 1e300, b = 1e300;
	for (int i = 0; i < n; i++)
		if (v[i] > 0 && v[i] < a)
			b = a, a = v[i];
		else if (v[i] > 0 && v[i] < b)
			b = v[i];
	return a < 1e300 && b < 1e300 ? b / a - 1 : 0;
}

/* the margin for the measurements v[k][r] of two configs (k = 0, 1) in n rounds: MARGIN, or
** twice the larger noise (spread) of the two when that is more (issue 15: under load a 3 %
** margin flipped picks between runs) */
static double noisemargin(const double *v0, const double *v1, int n)
{
	double s = fmax(spread(v0, n), spread(v1, n));
	return fmax(MARGIN, 2 * s);
}

/* confirm a stage's winner w against the baseline: ROUNDS more measurements of each,
** interleaved (load on the machine drifts for both alike); the times become the best of
** all of them, and the rule is applied again with the margin the rounds' own noise asks for
** (noisemargin: at least MARGIN) */
#define ROUNDS 2
static int confirm(Tuner *T, Data *D, Cand *c, int nc, int w, int stage, int bucket, double *gm)
{
	if (!w)
		return 0;
	int what = stage == 3 ? 2 : stage ? stage : -1, thr = stage == 3 ? T->threads : 1, x = what < 0 ? 0 : what;
	double mg = MARGIN;
	for (int b = 0; b < T->nb; b++) {
		if (bucket >= 0 && b != bucket)
			continue;
		double v[2][ROUNDS + 1], dv[2][ROUNDS + 1];
		v[0][0] = c[0].ms[b], v[1][0] = c[w].ms[b], dv[0][0] = c[0].dms[b], dv[1][0] = c[w].dms[b];
		for (int r = 1; r <= ROUNDS; r++)
			for (int kk = 0, s0 = D[b].slot; kk < 2; kk++) {   /* ABBA, both on the same cold slots */
				int k = r & 1 ? 1 - kk : kk;
				double ms[3] = { -1, -1, -1 };
				D[b].slot = s0;
				if (measure(T, c[k ? w : 0].p, &D[b], thr, what, ms) != 0)
					ms[0] = ms[1] = ms[2] = -1;
				v[k][r] = ms[x], dv[k][r] = ms[2];
			}
		mg = fmax(mg, noisemargin(v[0], v[1], ROUNDS + 1));
		c[0].ms[b] = best(v[0], ROUNDS + 1), c[w].ms[b] = best(v[1], ROUNDS + 1);
		if (what < 0)
			c[0].dms[b] = best(dv[0], ROUNDS + 1), c[w].dms[b] = best(dv[1], ROUNDS + 1);
	}
	Cand two[2] = { c[0], c[w] };
	(void)nc;
	T->margin = mg, T->maxmargin = fmax(T->maxmargin, mg);
	int keep = pick(T, two, 2, bucket, gm) != 0;
	if (T->verbose && mg > MARGIN)
		fprintf(stderr, "kvcc tune: %s stage: the repeated runs moved by up to %.1f%%: noise margin %.0f%% (%s)\n",
		        PHASE[stage], 50 * mg, 100 * mg, keep ? "the candidate still wins" : "the baseline is kept");
	T->margin = MARGIN;
	return keep ? w : 0;
}

/* the model of the score micro-kernel: useful lane-products per cycle over nobs queries
** (blocks of qb, the rest one by one), 2 FMA and 2 load ports; 0 when it cannot keep
** its accumulators in registers */
static double model(int qb, int nv, int W, int dot, int nobs, int regs)
{
	if (qb * nv + nv + 1 > regs)
		return 0;
	double work = (double)qb * nv * W * (dot ? 2 : 1);
	double cyc = fmax(qb * nv, nv + qb) / 2.0 + 0.25;
	double one = (double)nv * W * (dot ? 2 : 1) / (fmax(nv, nv + 1) / 2.0 + 0.25);
	int q = nobs > 0 ? nobs : 64, full = q / qb, rest = q % qb;
	double total = (double)q * nv * W * (dot ? 2 : 1);
	return total / (full * work / (work / cyc) + rest * (nv * W * (dot ? 2 : 1)) / one);
}

static int cmpmodel(const void *a, const void *b)
{
	double x = ((const Cand *)a)->model, y = ((const Cand *)b)->model;
	return x > y ? -1 : x < y;
}

/* stage 1's candidates: the default first, then the model's best per (width, dot). Where the
** default's Q·K is the AMX tile (bf16 on an AMX host: no register block), the register-block
** points are the candidates against it, written with amx0, the default's own block included. */
static int score_space(Tuner *T, Cand *c, int per, const KxConfig *def, const char *host)
{
	int n = 0;
	snprintf(c[n].cfg, sizeof c[n].cfg, "default"), c[n++].model = 1e30;
	int W0 = def->width, regs = strstr(host, "+avx512f") ? 32 : 16;
	int widths[2] = { W0, W0 == 16 ? 8 : 0 }, amx = !def->noamx;
	for (int wi = 0; wi < 2 && widths[wi]; wi++)
		for (int dot = 1; dot >= 0; dot--) {
			KxConfig probe = { .width = widths[wi], .nodot = dot ? -1 : 1 }, r;
			char why[200];
			if (kx_cfgresolve(&probe, &T->spec, host, &r, why, sizeof why) != 0 || r.nodot == dot)
				continue;   /* no bf16 dot products at this width / dtype */
			Cand g[32];
			int ng = 0;
			for (int qb = 1; qb <= 8; qb++)
				for (int nv = 1; nv <= 4; nv *= 2) {
					if (nv * widths[wi] > 64 || (widths[wi] == 1 && nv > 4))
						continue;
					double m = model(qb, nv, widths[wi], dot, T->nobs < 0 ? 64 : T->nobs, regs);
					if (m <= 0 || (!amx && widths[wi] == W0 && qb == def->qb && nv == def->nv && dot == !def->nodot))
						continue;
					snprintf(g[ng].cfg, sizeof g[ng].cfg, "qb%d,nv%d,w%d,dot%d%s", qb, nv, widths[wi], dot,
					         amx ? ",amx0" : "");
					g[ng++].model = m;
				}
			qsort(g, (size_t)ng, sizeof *g, cmpmodel);
			for (int i = 0; i < ng && i < per && n < MAXC; i++)
				g[i].model = i, c[n++] = g[i];   /* model: its rank in its group */
		}
	/* by rank, groups alternating: a time budget that stops early keeps every group's best */
	for (int i = 2; i < n; i++)
		for (int k = i; k > 1 && c[k].model < c[k - 1].model; k--) {
			Cand t = c[k];
			c[k] = c[k - 1], c[k - 1] = t;
		}
	return n;
}

/* the CPU reports AMX bf16 tiles (/proc/cpuinfo; detected, never assumed) */
static int hasamx(void)
{
	char line[8192];
	int r = 0;
	FILE *fp = fopen("/proc/cpuinfo", "r");
	while (fp && !r && fgets(line, sizeof line, fp))
		if (!strncmp(line, "flags", 5))
			r = strstr(line, " amx_bf16") != NULL, fclose(fp), fp = NULL;
	if (fp)
		fclose(fp);
	return r;
}

static void usage_exit(const char *m, const char *a)
{
	fprintf(stderr, "kvcc tune: ");
	fprintf(stderr, m, a);
	fprintf(stderr, " (kvcc --help for usage)\n");
	exit(2);
}

/* the runtime buckets (runtime/artifact.h ka_bucket) in words */
static const char *const RBUCKET[KX_NBUCKET] = { "n < 4096", "4096 <= n < 16384", "16384 <= n < 65536", "n >= 65536" };

/*
** Per-bucket score picks (issue 15, doc/tune.md "Per-bucket picks"): at each measured bucket, the
** score stage's best candidate against the default there (pick's per-bucket rule, confirmed on
** that bucket). A runtime bucket (ka_bucket) gets that candidate as a variant of the artifact's
** score kernels when every measured bucket in it names the same one, it is not stage 1's pick s1,
** and it is faster there than s1 by more than the margin; vb[k] = its index into S, else -1.
*/
static void bucketpicks(Tuner *T, Data *D, Cand *S, int ns, int s1, int *vb)
{
	int seen[KX_NBUCKET] = { 0 };
	for (int k = 0; k < KX_NBUCKET; k++)
		vb[k] = -1;
	for (int b = 0; b < T->nb; b++) {
		double g;
		int w = ns > 1 ? pick(T, S, ns, b, &g) : 0;
		if (w && w != s1)
			w = confirm(T, D, S, ns, w, 0, b, &g);
		int v = w != s1 && S[w].ms[b] > 0 && S[s1].ms[b] > 0 && S[w].ms[b] < S[s1].ms[b] * (1 - T->margin) ? w : -1;
		int rb = ka_bucket(T->buckets[b]);
		vb[rb] = !seen[rb]++ || vb[rb] == v ? v : -1;
	}
}

/*
** The final confirmation (issue 15; doc/tune.md "Confirmation"): after the search, the default A,
** a candidate B and the default again A' (the A/A control) run interleaved on every core (as an
** engine runs them), on the same inputs (the same slots of the cold buffer in a round), `rounds`
** rounds per bucket in rotated order (A B A', B A' A, A' A B: none always first, and a burst of
** other work hits no config alone); a round is measure()'s best of its runs (fewer than a stage's:
** the rounds repeat it). Per bucket and phase (compress = score + select, decode) the default's
** time is the best of A's and A''s rounds and B's the best of its own, and the noise margin is
** measured: the A/A spread, the largest |1 - A/A'| of the rounds and of the bests; the margin is
** twice that, at least MARGIN
** (session 11: the range of one config's rounds missed a 2.5x gap between identical configs whose
** rounds were adjacent in time). what: -1 both phases, 2 decode only. 0, or -1 when a measurement
** failed.
*/
#define FROUNDS 3
typedef struct Conf {
	double t[2][MAXB][2];    /* [default, B][bucket][compress, decode]: the best of the rounds (ms) */
	double aa[MAXB][2];      /* the A/A spread per bucket and phase */
	double m[MAXB][2];       /* the margin: max(MARGIN, 2 aa) */
} Conf;

static double gap(double x, double y)
{
	return x > 0 && y > 0 ? fabs(1 - x / y) : 0;
}

static int finalconfirm(Tuner *T, Data *D, kvcc_policy *a, kvcc_policy *b, int what, int rounds, Conf *C)
{
	memset(C, 0, sizeof *C);
	T->fewer = 1;
	for (int bk = 0; bk < T->nb; bk++) {
		double v[3][2][FROUNDS];   /* A, B, A' */
		for (int r = 0; r < rounds; r++)
			for (int kk = 0, s0 = D[bk].slot; kk < 3; kk++) {
				int k = (kk + r) % 3;
				double ms[3] = { 0, 0, 0 };
				D[bk].slot = s0;   /* the same inputs: every config decodes the same slots of the cold buffer */
				if (measure(T, k == 1 ? b : a, &D[bk], T->threads, what, ms) != 0)
					return T->fewer = 0, -1;
				v[k][0][r] = ms[0] + ms[1], v[k][1][r] = ms[2];
			}
		for (int ph = 0; ph < 2; ph++) {
			double a0 = best(v[0][ph], rounds), a2 = best(v[2][ph], rounds), g = gap(a0, a2);
			for (int r = 0; r < rounds; r++)
				g = fmax(g, gap(v[0][ph][r], v[2][ph][r]));
			C->t[0][bk][ph] = fmin(a0, a2), C->t[1][bk][ph] = best(v[1][ph], rounds);
			C->aa[bk][ph] = g;
			C->m[bk][ph] = fmax(MARGIN, 2 * g);   /* twice: B must lead both defaults by more than they differ */
			if (what < 0 || ph == 1)
				T->maxmargin = fmax(T->maxmargin, C->m[bk][ph]);
		}
		T->done++;
	}
	T->fewer = 0;
	return 0;
}

/* B's time over A's at bucket b, phase ph: -1 slower beyond the margin, 1 faster beyond it, 0 within */
static int verdict(const Conf *C, int b, int ph)
{
	double a = C->t[0][b][ph], x = C->t[1][b][ph];
	if (a <= 0 || x <= 0)
		return 0;
	return x > a * (1 + C->m[b][ph]) ? -1 : x < a * (1 - C->m[b][ph]) ? 1 : 0;
}

/* the split of runtime bucket k differs between two resolved configs */
static int splitdiff(const KxConfig *x, const KxConfig *y, int k)
{
	return x->dtasks[k] != y->dtasks[k] || x->dmin[k] != y->dmin[k];
}

int kt_tune(int argc, char **argv)
{
	static Tuner T;
	const char *in = NULL, *bl = "1024,8192,32768,131072";
	int per = 3, quick = 0, split = 0, gpuonly = 0;
	const char *gpu = NULL;
	T.spec = (kvcc_spec){ KVCC_F32, 128, 1, KVCC_TARGET_NATIVE };
	T.budget = 60;
	T.margin = MARGIN;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--dtype") && v) { if ((T.spec.dtype = ki_dtypebyname(v)) < 0) usage_exit("unknown dtype '%s'", v); i++; }
		else if (!strcmp(a, "--head-dim") && v) T.spec.head_dim = atoi(v), i++;
		else if (!strcmp(a, "--group") && v) T.spec.group = atoi(v), i++;
		else if (!strcmp(a, "--target") && v) { if ((T.spec.target = kx_targetbyname(v)) < 0) usage_exit("unknown target '%s'", v); i++; }
		else if (!strcmp(a, "--buckets") && v) bl = v, i++;
		else if (!strcmp(a, "--configs") && v) per = atoi(v), i++;
		else if (!strcmp(a, "--budget") && v) T.budget = atof(v), i++;
		else if (!strcmp(a, "--quick")) quick = 1, per = 1;
		else if (!strcmp(a, "--split")) split = 1;
		else if (!strcmp(a, "--gpu-arch") && v) gpu = v, i++;
		else if (!strcmp(a, "--gpu-only")) gpuonly = 1;
		else if (!strcmp(a, "-v")) T.verbose++;
		else if (a[0] != '-' && !in) in = a;
		else usage_exit("unexpected argument '%s'", a);
	}
	if (!in)
		usage_exit("%s", "needs POLICY.lua");
	for (const char *p = bl; *p && T.nb < MAXB;) {
		char *e;
		long n = strtol(p, &e, 10);
		if (e == p || n < 64 || n > (1 << 20) || (*e && *e != ','))
			usage_exit("--buckets: token counts 64..1048576, comma-separated: '%s'", bl);
		T.buckets[T.nb++] = (int)n;
		if (T.nb > 1 && n <= T.buckets[T.nb - 2])
			usage_exit("--buckets: increasing token counts: '%s'", bl);
		p = *e ? e + 1 : e;
	}
	if (per < 0 || per > 16)
		usage_exit("--configs: 0..16 per width, got '%s'", argv[0]);
	T.t0 = now_s();
	T.tty = isatty(2);
	T.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
	T.j = (KiJob){ .path = in, .spec = T.spec, .notune = 1, .verbose = T.verbose > 1 };
	KiErr e = { 0 };
	char why[300];
	if (ki_front(&T.j, &e) != 0 || ki_targets(&T.j, &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		ki_job_free(&T.j);
		return 1;
	}
	if (ki_tdb_path(T.db, sizeof T.db, why, sizeof why) != 0) {
		fprintf(stderr, "kvcc tune: no tuning database: %s\n", why);
		ki_job_free(&T.j);
		return 1;
	}
	if (gpuonly && !gpu)
		usage_exit("%s", "--gpu-only needs --gpu-arch");
	if (gpuonly) {         /* the GPU space alone: the static model, no CPU measurement */
		double gw = 0;
		T.j.gpu = gpu;
		int rc = kt_tune_gpu(&T.j, T.db, T.verbose, &gw);
		printf("kvcc tune: GPU static model in %.1f s\n", gw);
		ki_job_free(&T.j);
		return rc;
	}
	T.kernel = ki_tdb_kernel(T.j.f, &T.spec);
	T.dev = ki_tdb_device(T.devname, sizeof T.devname);
	T.version = ki_tdb_version();
	char *host = kx_hostfeatures();
	KxConfig def;
	kx_cfgresolve(NULL, &T.spec, host, &def, why, sizeof why);
	/* the observation queries: the policy's default count; every position is capped */
	kvcc_policy *p0 = NULL;
	char res0[128];
	if (!(p0 = build(&T, "default", res0, sizeof res0))) {
		free(host), ki_job_free(&T.j);
		return 1;
	}
	kvcc_policy_obs(p0, NULL, &T.nobs);
	kvcc_close(p0);
	if (T.nobs < 0) {
		int k = 0;
		for (int b = 0; b < T.nb; b++)
			if (T.buckets[b] <= 4096)
				T.buckets[k++] = T.buckets[b];
		if (k < T.nb)
			fprintf(stderr, "kvcc tune: every position observes (O(n²) scores): buckets above 4096 skipped\n");
		T.nb = k;
		if (!k)
			T.buckets[T.nb++] = 1024;
	}
	static Data D[MAXB];
	if (mkcold(&T, T.buckets[T.nb - 1]) != 0) {
		fprintf(stderr, "kvcc tune: out of memory for the decode buffer (%zu MiB)\n", T.coldsz >> 20);
		return 1;
	}
	for (int b = 0; b < T.nb; b++)
		if (mkdata(&T, &D[b], T.buckets[b]) != 0) {
			fprintf(stderr, "kvcc tune: out of memory for bucket %d\n", T.buckets[b]);
			return 1;
		}
	if (T.verbose)
		fprintf(stderr, "kvcc tune: %s %s d=%d g=%d on %s (%d cores), kvcc %s, database %s\n", T.j.f->name,
		        ki_dtypename(T.spec.dtype), T.spec.head_dim, T.spec.group, T.devname, T.threads, T.version, T.db);
	if (T.verbose) {
		ki_tdb_lookup(T.db, T.kernel, why, sizeof why, 1);   /* says what of other devices is ignored */
		fprintf(stderr, "kvcc tune: AMX tiles: %s\n", !def.noamx ? "the default's bf16 Q·K (tdpbf16ps); the register "
		        "blocks are measured against it with amx0" : hasamx() ? "this CPU has amx_bf16, but not for this spec "
		        "(bf16, native, 16 lanes, head_dim a multiple of 32, the OS's tile state)" :
		        "not in the space (this CPU has no amx_bf16)");
	}
	/* the stages */
	static Cand S[MAXC], R[4], P[4], X[5];
	int ns = T.j.plan.has_attn ? score_space(&T, S, per, &def, host) : 1;   /* no attn_score: default only */
	if (ns == 1)
		snprintf(S[0].cfg, sizeof S[0].cfg, "default");
	/* the split stage times runs on every core: meaningless while other work holds the cores */
	double la[1] = { 0 };
	int busy = getloadavg(la, 1) == 1 && la[0] > 0.75 * T.threads;
	if (busy && T.threads > 1 && !split)
		fprintf(stderr, "kvcc tune: load average %.1f on %d cores: multi-threaded timings are not repeatable, the "
		        "decode split keeps its default (--split measures it anyway)\n", la[0], T.threads);
	int nr = quick ? 2 : 3, np = quick ? 2 : 4, nx = T.threads > 1 && (!busy || split) ? (quick ? 2 : 5) : 0;
	T.total = (ns + nr + np + nx) * T.nb;
	if (T.verbose)
		fprintf(stderr, "kvcc tune: score space: %d candidates after the model (of %d points)\n", ns,
		        (def.width == 16 ? 2 : 1) * 8 * 3 * (T.spec.dtype == KVCC_BF16 && !def.nodot ? 2 : 1));
	/* budget: stage 1 until 40 %, select 48 %, decode 56 %, split 64 %; the rest the confirmation */
	double B = T.budget;
	ns = run_stage(&T, D, S, 0, ns, 0, T.t0 + 0.40 * B);
	double g1, g2 = 1, g3 = 1, gx[MAXB];
	int s1 = confirm(&T, D, S, ns, pick(&T, S, ns, -1, &g1), 0, -1, &g1);
	int vb[KX_NBUCKET];        /* per-bucket score picks (issue 15): index into S per runtime bucket, -1: none */
	bucketpicks(&T, D, S, ns, s1, vb);
	char base[240];
	snprintf(base, sizeof base, "%s", s1 ? S[s1].cfg : "");
	int s2 = 0, s3 = 0, sx[MAXB] = { 0 };
	/* select: radix digit; stage 1's winner with rb 11 is the baseline */
	snprintf(R[0].cfg, sizeof R[0].cfg, "%.200s%srb11", base, *base ? "," : "");
	snprintf(R[0].res, sizeof R[0].res, "%s", S[s1].res);
	for (int b = 0; b < T.nb; b++)     /* the baseline: stage 1's winner, its select times */
		R[0].ms[b] = S[s1].sms[b];
	R[0].p = S[s1].p;                  /* shared: closed with S */
	static const int rbs[] = { 8, 10, 12 }, pfall[] = { 0, 16, 64, 256 };
	int pfs[3], npf = 0;       /* the prefetch distances other than the default's (0, or 64 with AMX) */
	for (int k = 0; k < 4 && npf < 3; k++)
		if (pfall[k] != def.pf)
			pfs[npf++] = pfall[k];
	for (int k = 0; k < 2; k++)
		snprintf(R[k + 1].cfg, sizeof R[k + 1].cfg, "%.200s%srb%d", base, *base ? "," : "", rbs[k == 0 ? 0 : 2]);
	T.done += T.nb;
	if ((nr = run_stage(&T, D, R, 1, nr, 1, T.t0 + 0.48 * B)) > 1)
		s2 = confirm(&T, D, R, nr, pick(&T, R, nr, -1, &g2), 1, -1, &g2);
	else
		fprintf(stderr, "kvcc tune: time budget spent: select stage skipped\n");
	char base2[240];
	snprintf(base2, sizeof base2, "%.200s", R[s2].cfg);
	snprintf(P[0].cfg, sizeof P[0].cfg, "%.200s,pf%d", base2, def.pf);
	for (int k = 0; k < 3; k++)
		snprintf(P[k + 1].cfg, sizeof P[k + 1].cfg, "%.200s,pf%d", base2, pfs[k]);
	/* the baseline: the pick so far, its decode times from stage 1 when select kept it */
	int pfrom = 0;
	if (!s2) {
		snprintf(P[0].res, sizeof P[0].res, "%s", R[0].res);
		for (int b = 0; b < T.nb; b++)
			P[0].ms[b] = S[s1].dms[b];
		P[0].p = R[0].p, pfrom = 1, T.done += T.nb;   /* shared: closed with S */
	}
	if ((np = run_stage(&T, D, P, pfrom, np, 2, T.t0 + 0.56 * B)) > 1)
		s3 = confirm(&T, D, P, np, pick(&T, P, np, -1, &g3), 2, -1, &g3);
	else
		fprintf(stderr, "kvcc tune: time budget spent: decode stage skipped\n");
	char base3[240];
	snprintf(base3, sizeof base3, "%.200s", P[s3].cfg);
	static const char *const splits[] = { "dt2,dm256", "dt1,dm256", "dt4,dm256", "dt2,dm64", "dt2,dm1024" };
	for (int k = 0; k < nx; k++)
		snprintf(X[k].cfg, sizeof X[k].cfg, "%.200s,%s", base3, splits[k]);
	if (nx && (nx = run_stage(&T, D, X, 0, nx, 3, T.t0 + 0.64 * B)) > 1) {
		for (int b = 0; b < T.nb; b++)
			sx[b] = confirm(&T, D, X, nx, pick(&T, X, nx, b, &gx[b]), 3, b, &gx[b]);
	} else if (nx)
		fprintf(stderr, "kvcc tune: time budget spent: split stage skipped\n");
	else if (T.verbose && T.threads < 2)
		fprintf(stderr, "kvcc tune: one core: the decode split is not tuned\n");
	/* the pick: the stages' winners, the split per runtime bucket */
	int dt[KX_NBUCKET] = { 2, 2, 2, 2 }, dm[KX_NBUCKET] = { 256, 256, 256, 256 };
	for (int b = 0; b < T.nb && nx; b++) {
		sscanf(splits[sx[b]], "dt%d,dm%d", &dt[ka_bucket(T.buckets[b])], &dm[ka_bucket(T.buckets[b])]);
	}
	char want[320], fin[128] = "";
	snprintf(want, sizeof want, "%s,dt%d.%d.%d.%d,dm%d.%d.%d.%d", base3, dt[0], dt[1], dt[2], dt[3], dm[0], dm[1], dm[2],
	         dm[3]);
	KxConfig pc, pr;
	if (kx_cfgparse(want, &pc, why, sizeof why) == 0 && kx_cfgresolve(&pc, &T.spec, host, &pr, why, sizeof why) == 0)
		kx_cfgstr(&pr, fin, sizeof fin);
	if (T.tty)
		fprintf(stderr, "\r\033[K");
	/* a test hook (tests/tune/db.sh): KVCC_TUNE_FORCE=CONFIG replaces the search's pick (and its
	** per-bucket kernels), so that the confirmation below can be shown to reject a slow one */
	const char *force = getenv("KVCC_TUNE_FORCE");
	if (force && *force) {
		if (kx_cfgparse(force, &pc, why, sizeof why) == 0 && kx_cfgresolve(&pc, &T.spec, host, &pr, why, sizeof why) == 0) {
			kx_cfgstr(&pr, fin, sizeof fin);
			for (int k = 0; k < KX_NBUCKET; k++)
				vb[k] = -1;
			fprintf(stderr, "kvcc tune: KVCC_TUNE_FORCE: the search's pick replaced by %s (a test hook)\n", fin);
		} else
			fprintf(stderr, "kvcc tune: KVCC_TUNE_FORCE: %s; ignored\n", why);
	}
	/*
	** The confirmation (issue 15, doc/tune.md "Confirmation"): the pick against the default,
	** interleaved on every core (finalconfirm), with the noise margin measured there (the A/A
	** spread). The pick's kernels (every field but the decode split, and its per-bucket score
	** kernels) stay only when they are faster than the default's beyond the margin on some bucket
	** (compress, or decode where the split is the default's) and slower beyond it on none; a
	** runtime bucket's decode split stays only when the decode there is faster beyond the margin
	** (measured with the kept kernels: after a revert, the default's kernels with the pick's split
	** run a second, decode-only confirmation). Everything else is the default's.
	*/
	char defres[128] = "";
	kx_cfgstr(&def, defres, sizeof defres);
	if (!*fin)
		pr = def, snprintf(fin, sizeof fin, "%s", defres);
	int nvb = 0;
	for (int k = 0; k < KX_NBUCKET; k++)
		nvb += vb[k] >= 0;
	KxConfig pkern = pr, out = def;     /* the pick's kernels with the default's split; the result */
	memcpy(pkern.dtasks, def.dtasks, sizeof def.dtasks), memcpy(pkern.dmin, def.dmin, sizeof def.dmin);
	char pks[128], fres[128], s2str[128];
	kx_cfgstr(&pkern, pks, sizeof pks);
	int samek = !nvb && !strcmp(pks, defres), samesplit = 1, keepk = samek, confirmed = 0, have2 = 0;
	for (int k = 0; k < KX_NBUCKET; k++)
		samesplit &= !splitdiff(&pr, &def, k);
	for (int k = 0; k < KX_NBUCKET; k++)      /* the candidate carries the per-bucket variants */
		T.j.bconfig[k] = vb[k] >= 0 ? S[vb[k]].res : NULL;
	kvcc_policy *pf = samek && samesplit ? NULL : build(&T, fin, fres, sizeof fres);
	memset(T.j.bconfig, 0, sizeof T.j.bconfig);
	kvcc_policy *cand = samek && samesplit ? S[0].p : pf;   /* the pick = the default: an A/A run */
	if (samek && samesplit && now_s() > T.t0 + T.budget) {
		cand = NULL;                      /* nothing to confirm and the budget spent: no A/A run */
		fprintf(stderr, "kvcc tune: the search kept the default; the time budget is spent, so no A/A confirmation run\n");
	}
	static Conf C1, C2;
	double tc0 = now_s();
	T.total += T.nb * (samesplit ? 1 : 2);
	if (cand && S[0].p && finalconfirm(&T, D, S[0].p, cand, -1, samek && samesplit ? 2 : FROUNDS, &C1) == 0) {
		confirmed = 1;
		if (!samek) {
			int win = 0, lose = 0;
			for (int b = 0; b < T.nb; b++)
				for (int ph = 0; ph < 2; ph++) {
					if (ph == 1 && splitdiff(&pr, &def, ka_bucket(T.buckets[b])))
						continue;  /* the split moved this decode too: judged below */
					int v = verdict(&C1, b, ph);
					win += v > 0, lose += v < 0;
				}
			keepk = win && !lose;
			if (!keepk)
				fprintf(stderr, "kvcc tune: confirmation: the pick's kernels are %s the default's beyond the noise margin "
				        "(%s): the default's kernels are kept\n", lose ? "slower than" : "not faster than",
				        lose ? "on some bucket" : "on every bucket");
		}
		out = keepk ? pkern : def;
		const Conf *cs = &C1;
		if (!samesplit && !keepk) {      /* the split alone, with the default's kernels */
			KxConfig sp = def;
			memcpy(sp.dtasks, pr.dtasks, sizeof pr.dtasks), memcpy(sp.dmin, pr.dmin, sizeof pr.dmin);
			kx_cfgstr(&sp, s2str, sizeof s2str);
			kvcc_policy *p2 = build(&T, s2str, fres, sizeof fres);
			cs = p2 && finalconfirm(&T, D, S[0].p, p2, 2, FROUNDS, &C2) == 0 ? &C2 : NULL;
			have2 = cs != NULL;
			if (p2)
				kvcc_close(p2);
		}
		for (int k = 0; k < KX_NBUCKET && cs; k++) {
			int m = 0, faster = 1;
			for (int b = 0; b < T.nb; b++)
				if (ka_bucket(T.buckets[b]) == k)
					m++, faster &= verdict(cs, b, 1) > 0;
			if (splitdiff(&pr, &def, k) && m && faster)
				out.dtasks[k] = pr.dtasks[k], out.dmin[k] = pr.dmin[k];
			else if (splitdiff(&pr, &def, k) && m)
				fprintf(stderr, "kvcc tune: confirmation: the decode split dt%d,dm%d of bucket %d (%s) is not faster than "
				        "the default's beyond the noise margin: the default's split is kept\n", pr.dtasks[k], pr.dmin[k], k,
				        RBUCKET[k]);
		}
	} else if (!samek || !samesplit)
		fprintf(stderr, "kvcc tune: the pick %s could not be confirmed (%s): the default is kept\n", fin,
		        cand ? "a measurement failed" : "it did not build");
	if (!keepk) {
		if (nvb)
			fprintf(stderr, "kvcc tune: the per-bucket compress kernels are dropped with it\n");
		for (int k = 0; k < KX_NBUCKET; k++)
			vb[k] = -1;
		nvb = 0, g1 = 1;
	}
	double tconf = now_s() - tc0;
	char cand_s[128];
	snprintf(cand_s, sizeof cand_s, "%s", fin);
	kx_cfgstr(&out, fin, sizeof fin);
	/* why, per measured bucket, in the database ('p' records of phase "confirm"; ms = the margin) */
	for (int b = 0; b < T.nb && confirmed; b++) {
		int k = ka_bucket(T.buckets[b]);
		const Conf *cs = have2 ? &C2 : &C1;
		char w[100];
		snprintf(w, sizeof w, "c %.2fx aa %.1f%%, d %.2fx aa %.1f%%: kernels %s, split %s",
		         C1.t[0][b][0] / C1.t[1][b][0], 100 * C1.aa[b][0], cs->t[0][b][1] / cs->t[1][b][1], 100 * cs->aa[b][1],
		         samek ? "default" : keepk ? "pick" : "default (not confirmed)",
		         !splitdiff(&pr, &def, k) ? "default" : splitdiff(&out, &def, k) ? "pick" : "default (not confirmed)");
		recordk(&T, 'p', "confirm", T.buckets[b], w, fmax(C1.m[b][0], cs->m[b][1]));
	}
	/* the record: the pick, and per runtime bucket its score kernels ("main": the pick's own; every
	** bucket written, so an earlier tune's per-bucket picks never outlive this one) */
	static const int rlo[KX_NBUCKET] = { 0, 4096, 16384, 65536 };
	for (int k = 0; k < KX_NBUCKET; k++) {
		double r = 1;
		for (int b = 0; b < T.nb && vb[k] >= 0; b++)
			if (ka_bucket(T.buckets[b]) == k)
				r = S[vb[k]].ms[b] / S[s1].ms[b];
		recordk(&T, 'p', "bpick", rlo[k], vb[k] >= 0 ? S[vb[k]].res : "main", r);
	}
	recordk(&T, 'p', "pick", 0, fin, g1);
	int rc = 0;
	if (ki_tdb_update(T.db, T.rec, T.nrec, why, sizeof why) != 0) {
		fprintf(stderr, "kvcc tune: %s\n", why);
		rc = 1;
	}
	double wall = now_s() - T.t0;
	printf("kvcc tune: %s %s d=%d g=%d on %s: %d configs, %d measurements in %.1f s (noise margin %.0f%%)\n",
	       T.j.f->name, ki_dtypename(T.spec.dtype), T.spec.head_dim, T.spec.group, T.devname, ns + nr + np + nx,
	       T.done, wall, fmax(MARGIN, T.maxmargin) * 100);
	if (T.verbose) {
		printf("%-8s %-32s %11s %11s %8s\n", "bucket", "stage: pick", "baseline ms", "picked ms", "speedup");
		for (int b = 0; b < T.nb; b++) {
			const Cand *st[4] = { &S[s1], &R[s2], &P[s3], nx ? &X[sx[b]] : NULL };
			const Cand *d0[4] = { &S[0], &R[0], &P[0], nx ? &X[0] : NULL };
			for (int k = 0; k < 4; k++) {
				if (!st[k] || st[k]->ms[b] <= 0 || d0[k]->ms[b] <= 0)
					continue;
				char lab[48];
				snprintf(lab, sizeof lab, "%s: %s", PHASE[k],
				         k == 0 ? (s1 ? S[s1].cfg : "default") : k == 1 ? (s2 ? strrchr(R[s2].cfg, 'r') : "rb11")
				         : k == 2 ? strrchr(P[s3].cfg, ',') + 1 : splits[sx[b]]);
				printf("%-8d %-32s %11.3f %11.3f %7.2fx\n", T.buckets[b], lab, d0[k]->ms[b], st[k]->ms[b],
				       d0[k]->ms[b] / st[k]->ms[b]);
			}
		}
	}
	if (confirmed) {
		printf("confirmation in %.1f s (%d threads, %d rounds of the default, the candidate and the default again, "
		       "rotated; A/A: the largest gap between the two defaults, the noise margin the larger of twice it and %.0f%%): "
		       "the default against %s\n", tconf, T.threads,
		       samek && samesplit ? 2 : FROUNDS, 100 * MARGIN,
		       samek && samesplit ? "itself (the search kept the default)" : cand_s);
		printf("%-8s %13s %10s %8s %6s %13s %10s %8s %6s\n", "bucket", "compress: def", "cand ms", "speedup", "A/A",
		       "decode: def", "cand ms", "speedup", "A/A");
		for (int b = 0; b < T.nb; b++)
			printf("%-8d %13.3f %10.3f %7.2fx %5.1f%% %13.3f %10.3f %7.2fx %5.1f%%\n", T.buckets[b], C1.t[0][b][0],
			       C1.t[1][b][0], C1.t[0][b][0] / C1.t[1][b][0], 100 * C1.aa[b][0], C1.t[0][b][1], C1.t[1][b][1],
			       C1.t[0][b][1] / C1.t[1][b][1], 100 * C1.aa[b][1]);
		if (have2) {
			printf("the default's kernels with the pick's split %s, decode only:\n", s2str);
			for (int b = 0; b < T.nb; b++)
				printf("%-8d %13s %10s %8s %6s %13.3f %10.3f %7.2fx %5.1f%%\n", T.buckets[b], "", "", "", "", C2.t[0][b][1],
				       C2.t[1][b][1], C2.t[0][b][1] / C2.t[1][b][1], 100 * C2.aa[b][1]);
		}
	}
	if (pf)
		kvcc_close(pf);
	closeall(S, ns), closeall(R + 1, nr - 1), closeall(P + pfrom, np - pfrom), closeall(X, nx);
	printf("pick: %s\n", fin);
	/* the per-bucket compress kernels (issue 15): the score kernels each runtime bucket runs */
	for (int k = 0; k < KX_NBUCKET; k++) {
		int m = 0;
		for (int b = 0; b < T.nb; b++)
			m += ka_bucket(T.buckets[b]) == k;
		if (!m)
			continue;
		printf("pick bucket %d (%s): %s", k, RBUCKET[k], vb[k] >= 0 ? S[vb[k]].res : "the pick's score kernels");
		for (int b = 0; b < T.nb && vb[k] >= 0; b++)
			if (ka_bucket(T.buckets[b]) == k)
				printf(" (score phase at n=%d: %.3f ms, the pick's %.3f ms)", T.buckets[b], S[vb[k]].ms[b], S[s1].ms[b]);
		printf("\n");
	}
	if (gpu) {             /* after the CPU: T.j builds CPU-only artifacts until here */
		double gw = 0;
		T.j.gpu = gpu;
		rc |= kt_tune_gpu(&T.j, T.db, T.verbose, &gw);
		printf("kvcc tune: GPU static model in %.1f s\n", gw);
	}
	for (int b = 0; b < T.nb; b++)
		freedata(&D[b]);
	free(T.rec), free(host), free(T.cold);
	ki_job_free(&T.j);
	return rc;
}
