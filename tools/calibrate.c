/*
** kvcc calibrate — the weight files of policies that learn from a model (DESIGN §3
** "Weights, tables and scans"), computed from a llama2.c checkpoint through the model
** library of `kvcc eval` (lib/llama), written as one .npz whose arrays are named as the
** policies declare them (each policy file, kv.weights):
**
**   kvcc calibrate --model M --tokenizer T --data FILE [--stories a:b] [--chunk-chars K]
**        [--from TEXT] [--out W.npz] [--repeat N] [--trials N] [--seed S] [--sinks N]
**
**  1. Head classes, on repeated random tokens (RazorAttention's probe): BOS, then N random
**     tokens, then the same N again; at each position of the second copy, a head's
**     induction score is the attention (mean over its query heads) to the token after the
**     previous occurrence, its echo score the attention to the previous occurrence itself;
**     averaged over the positions and `trials` sequences.
**       induction, echo [layer, head]   the scores
**       razor [layer, head]             1 for RazorAttention's retrieval heads: the top 15%
**                                       by induction and the top 1% by echo (rounded counts,
**                                       ties to the lower (layer, head))
**       duo_rank [layer, head]          a head's rank by induction score, 0 = lowest: the
**                                       streaming-head order of DuoAttention (its learned
**                                       gates stand in for this score in the paper)
**       headkv [layer, head]            HeadKV's retrieval scores normalized to sum 1
**  2. Over the calibration texts (each [BOS] + its tokens, at most seq_len), the prefill with
**     full causal attention:
**       mu, cf [layer, head, group, chan(, chan)]   Expected Attention's query statistics:
**                                       the mean and covariance (population) of the pre-RoPE
**                                       queries at positions >= sinks, over all texts; the
**                                       covariance as its Cholesky factor cf (cf cf^T = cov
**                                       + 1e-6 * its mean diagonal, for a definite factor)
**       frac [layer, 99]                PrefixKV's offline per-layer eviction fractions at the
**                                       ratios 0.01 .. 0.99: per text, the layer scores s_l(t)
**                                       = sum over queries of the attention averaged over all
**                                       heads, the code's bisection (tolerance 5, start 4,
**                                       protect 1; compiler/select.c ki_prefix_forget),
**                                       evictions / n, averaged over the texts
**       gate_w, gate_b, gate_u          the seed's gate g_t = sigmoid(w . k_t + b + u g_{t-1})
**                                       [layer, head(, chan)]: a logistic regression per
**                                       (layer, head) of "was token t attended later" (the
**                                       mean over the later queries of its attention times
**                                       the query's visible count >= 1: above uniform), on
**                                       the post-RoPE key k_t and the previous token's label
**                                       for g_{t-1} (teacher forcing); Newton steps with an
**                                       L2 penalty 1e-2 on w and u
**  3. From the checkpoint: wo [layer, out, head, group, chan], the output projection
**     (o_proj.weight) of every layer, for CriticalKV.
**
** A progress bar goes to stderr when it is a terminal; the summary to stdout.
*/
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler/select.h"
#include "tools/npz.h"
#include "tools/tools.h"
#include "lib/llama/model.h"
#include "lib/llama/stories.h"
#include "lib/llama/tokenizer.h"

enum { NRATIO = 99 };

typedef struct Cal {
	const char *model, *tokenizer, *data, *stories, *from, *out;
	long chunk;
	int repeat, trials, sinks, progress;
	uint64_t seed;
	LlamaModel m;
	LlamaTokenizer tok;
	LlamaStories S;
	int lo, hi;
	int L, H, G, d, D;
	/* the observe hook's mode and sums */
	int mode;                 /* 0 repeated tokens, 1 calibration text */
	int pos, R, n;            /* current position; repeat length; text length */
	double *ind, *echo;       /* [L][H] */
	double *pref;             /* [L][n] PrefixKV layer scores of the current text */
	double *att, *cnt;        /* [L][H][n] attention above uniform received, later queries */
	double work, done;
} Cal;

static int usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvcc: calibrate: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (kvcc --help for usage)\n");
	return 2;
}

static int fail(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvcc: calibrate: error: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	return 1;
}

static void bar(Cal *C, const char *stage)
{
	if (!C->progress)
		return;
	double f = C->work > 0 ? C->done / C->work : 1;
	char b[31];
	int k = (int)(f * 30);
	for (int i = 0; i < 30; i++)
		b[i] = i < k ? '=' : i == k ? '>' : ' ';
	b[30] = 0;
	fprintf(stderr, "\r  calibrate [%s] %3.0f%%  %-28s", b, 100 * f, stage);
	fflush(stderr);
}

/* xorshift64*: the random tokens, reproducible from --seed */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

/* The reference attention's hook: probs [G][n] of (layer, kv head) at position C->pos. */
static void observe(void *user, int l, int h, const float *probs, int n, int G)
{
	Cal *C = user;
	int p = C->pos;
	if (C->mode == 0) {
		int R = C->R;
		if (p <= R)                       /* the first copy (and BOS) */
			return;
		int j = p - R - 1, prev = 1 + j;  /* the previous occurrence of this token */
		double a = 0, e = 0;
		for (int g = 0; g < G; g++) {
			a += prev + 1 < n ? probs[g * n + prev + 1] : 0;
			e += probs[g * n + prev];
		}
		C->ind[l * C->H + h] += a / G;
		C->echo[l * C->H + h] += e / G;
		return;
	}
	size_t lh = (size_t)l * C->H + h;
	for (int t = 0; t < n; t++) {
		double a = 0;
		for (int g = 0; g < G; g++)
			a += probs[g * n + t];
		C->pref[(size_t)l * C->n + t] += a / (C->H * G);
		if (t < n - 1) {                  /* a later query: attention x visible count */
			C->att[lh * C->n + t] += a / G * n;
			C->cnt[lh * C->n + t] += 1;
		}
	}
}

/* The top round(p N) of x (ties to the lower index) marked in out (set to 1). */
static void topfrac(const double *x, int N, double p, double *out)
{
	int k = (int)nearbyint(p * N);
	char *taken = calloc((size_t)N, 1);
	for (int j = 0; taken && j < k; j++) {
		int best = -1;
		for (int i = 0; i < N; i++)
			if (!taken[i] && (best < 0 || x[i] > x[best]))
				best = i;
		taken[best] = 1;
		out[best] = 1;
	}
	free(taken);
}

/* Cholesky of the n x n SPD matrix a (lower, in place); -1 when not definite. */
static int cholesky(double *a, int n)
{
	for (int j = 0; j < n; j++) {
		double s = a[j * n + j];
		for (int k = 0; k < j; k++)
			s -= a[j * n + k] * a[j * n + k];
		if (!(s > 0))
			return -1;
		a[j * n + j] = sqrt(s);
		for (int i = j + 1; i < n; i++) {
			double t = a[i * n + j];
			for (int k = 0; k < j; k++)
				t -= a[i * n + k] * a[j * n + k];
			a[i * n + j] = t / a[j * n + j];
		}
		for (int k = j + 1; k < n; k++)
			a[j * n + k] = 0;
	}
	return 0;
}

/* Solve (L L^T) x = b with the factor from cholesky. */
static void cholsolve(const double *a, int n, double *b)
{
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < i; k++)
			b[i] -= a[i * n + k] * b[k];
		b[i] /= a[i * n + i];
	}
	for (int i = n - 1; i >= 0; i--) {
		for (int k = i + 1; k < n; k++)
			b[i] -= a[k * n + i] * b[k];
		b[i] /= a[i * n + i];
	}
}

/*
** Logistic regression by Newton steps: X [m][p] (last column 1, the bias, unpenalized),
** y [m] in {0, 1}; theta [p] out. Returns the training accuracy.
*/
static double logistic(const double *X, const double *y, int m, int p, double lambda, double *theta)
{
	double *Hm = malloc((size_t)p * p * sizeof *Hm), *g = malloc((size_t)p * sizeof *g);
	memset(theta, 0, (size_t)p * sizeof *theta);
	for (int it = 0; Hm && g && it < 30; it++) {
		memset(Hm, 0, (size_t)p * p * sizeof *Hm);
		for (int j = 0; j < p; j++)
			g[j] = j < p - 1 ? -lambda * theta[j] : 0;
		for (int i = 0; i < m; i++) {
			const double *x = &X[(size_t)i * p];
			double z = 0;
			for (int j = 0; j < p; j++)
				z += x[j] * theta[j];
			double pr = 1 / (1 + exp(-z)), w = pr * (1 - pr) + 1e-9;
			for (int j = 0; j < p; j++) {
				g[j] += (y[i] - pr) * x[j];
				for (int k = 0; k <= j; k++)
					Hm[j * p + k] += w * x[j] * x[k];
			}
		}
		for (int j = 0; j < p; j++) {
			for (int k = 0; k < j; k++)
				Hm[k * p + j] = Hm[j * p + k];
			Hm[j * p + j] += j < p - 1 ? lambda : 1e-9;
		}
		if (cholesky(Hm, p) != 0)
			break;
		cholsolve(Hm, p, g);
		double step = 0;
		for (int j = 0; j < p; j++)
			theta[j] += g[j], step += fabs(g[j]);
		if (step < 1e-10)
			break;
	}
	free(Hm), free(g);
	int right = 0;
	for (int i = 0; i < m; i++) {
		double z = 0;
		for (int j = 0; j < p; j++)
			z += X[(size_t)i * p + j] * theta[j];
		right += (z >= 0) == (y[i] > 0.5);
	}
	return m ? (double)right / m : 1;
}

static int parse(Cal *C, int argc, char **argv)
{
	C->repeat = 32, C->trials = 16, C->sinks = 4, C->seed = 12345, C->out = "calibration.npz";
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			printf("usage: kvcc calibrate --model M --tokenizer T --data FILE [--stories a:b]\n"
			       "       [--chunk-chars K] [--from TEXT] [--out W.npz] [--repeat N] [--trials N]\n"
			       "       [--seed S] [--sinks N]\n"
			       "weights of the learned policies from a model (tools/calibrate.c; doc/dsl.md)\n");
			return -1;
		}
		if (!v || (v[0] == '-' && strcmp(a, "--from")))
			return usage("unknown option or missing value '%s'", a);
		i++;
		if (!strcmp(a, "--model")) C->model = v;
		else if (!strcmp(a, "--tokenizer")) C->tokenizer = v;
		else if (!strcmp(a, "--data")) C->data = v;
		else if (!strcmp(a, "--stories")) C->stories = v;
		else if (!strcmp(a, "--from")) C->from = v;
		else if (!strcmp(a, "--out")) C->out = v;
		else if (!strcmp(a, "--chunk-chars")) {
			C->chunk = strtol(v, &end, 10);
			if (*end || C->chunk < 1)
				return usage("--chunk-chars needs a positive integer, got '%s'", v);
		} else if (!strcmp(a, "--repeat") || !strcmp(a, "--trials") || !strcmp(a, "--sinks")) {
			long x = strtol(v, &end, 10), lo = !strcmp(a, "--sinks") ? 0 : 1;
			if (*end || x < lo || x > 200)
				return usage("%s needs an integer in 0..200 (--repeat, --trials: from 1)", a);
			*(!strcmp(a, "--repeat") ? &C->repeat : !strcmp(a, "--trials") ? &C->trials : &C->sinks) = (int)x;
		} else if (!strcmp(a, "--seed")) {
			C->seed = strtoull(v, &end, 10);
			if (*end)
				return usage("--seed needs an integer, got '%s'", v);
		} else
			return usage("unknown option '%s'", a);
	}
	if (!C->model || !C->tokenizer || !C->data)
		return usage("%s", "needs --model, --tokenizer and --data");
	return 0;
}

/* Stage 1: induction and echo scores. */
static int heads(Cal *C, LlamaState *s)
{
	uint64_t st = C->seed ? C->seed : 1;
	int R = C->repeat, V = C->m.cfg.vocab_size;
	int *ids = malloc((size_t)(2 * R + 1) * sizeof *ids);
	if (!ids)
		return fail("%s", "out of memory");
	C->mode = 0, C->R = R;
	for (int tr = 0; tr < C->trials; tr++) {
		ids[0] = LLAMA_TOK_BOS;
		for (int j = 0; j < R; j++)
			ids[1 + j] = ids[1 + R + j] = 3 + (int)(rnd(&st) % (uint64_t)(V - 3));
		llama_cache_reset(&s->cache);
		for (int p = 0; p < 2 * R + 1; p++) {
			C->pos = p;
			if (!llama_forward(s, ids[p], p)) {
				free(ids);
				return fail("%s", s->err);
			}
		}
		C->done += 2 * R + 1;
		bar(C, "repeated random tokens");
	}
	free(ids);
	for (int k = 0; k < C->L * C->H; k++)
		C->ind[k] /= (double)R * C->trials, C->echo[k] /= (double)R * C->trials;
	return 0;
}

typedef struct Acc {
	double *qs, *qq;          /* [L][Hq][d], [L][Hq][d][d] sums of pre-RoPE queries */
	double nq;
	double *frac;             /* [L][99] */
	int ntext;
	double **X, **Y;          /* per (layer, head): gate features [m][d+2], labels [m] */
	int *m, *cap;
} Acc;

/* Inverse of the model's RoPE (adjacent pairs): the pre-RoPE query from the captured one. */
static void unrope(const float *q, int hd, int pos, double *out)
{
	for (int i = 0; i < hd; i += 2) {
		double ang = (double)pos * pow(10000.0, -(double)i / (double)hd);
		double c = (double)(float)cos(ang), s = (double)(float)sin(ang), a = q[i], b = q[i + 1];
		out[i] = a * c + b * s;
		out[i + 1] = -a * s + b * c;
	}
}

static int grow(Acc *A, int k, int need, int p)
{
	if (A->m[k] + need <= A->cap[k])
		return 0;
	int cap = (A->cap[k] + need) * 2;
	double *x = realloc(A->X[k], (size_t)cap * p * sizeof *x), *y = x ? realloc(A->Y[k], (size_t)cap * sizeof *y) : NULL;
	if (x)
		A->X[k] = x;
	if (y)
		A->Y[k] = y;
	if (!x || !y)
		return -1;
	A->cap[k] = cap;
	return 0;
}

/* Stage 2, one text: prefill with the hook, then the statistics of this text. */
static int text(Cal *C, LlamaState *s, LlamaObs *obs, const int *ids, int n, Acc *A)
{
	int L = C->L, H = C->H, G = C->G, d = C->d, Hq = H * G;
	C->mode = 1, C->n = n;
	memset(C->pref, 0, (size_t)L * n * sizeof *C->pref);
	memset(C->att, 0, (size_t)L * H * n * sizeof *C->att);
	memset(C->cnt, 0, (size_t)L * H * n * sizeof *C->cnt);
	llama_cache_reset(&s->cache);
	obs->start = 0, obs->count = 0;
	s->obs = obs;
	for (int p = 0; p < n; p++) {
		C->pos = p;
		if (!llama_forward(s, ids[p], p))
			return fail("%s", s->err);
	}
	s->obs = NULL;
	/* Expected Attention: pre-RoPE queries at positions >= sinks */
	double *qp = malloc((size_t)d * sizeof *qp);
	if (!qp)
		return fail("%s", "out of memory");
	for (int l = 0; l < L; l++)
		for (int qh = 0; qh < Hq; qh++)
			for (int p = C->sinks; p < n; p++) {
				unrope(obs->q + (((size_t)l * Hq + qh) * obs->window + p) * d, d, p, qp);
				double *qs = &A->qs[((size_t)l * Hq + qh) * d], *qq = &A->qq[((size_t)l * Hq + qh) * d * d];
				for (int i = 0; i < d; i++) {
					qs[i] += qp[i];
					for (int j = 0; j < d; j++)
						qq[i * d + j] += qp[i] * qp[j];
				}
			}
	A->nq += n > C->sinks ? n - C->sinks : 0;
	free(qp);
	/* PrefixKV: per-layer evictions at each ratio (start 4 + protect 1 protected) */
	long *len = malloc((size_t)L * sizeof *len), *forget = malloc((size_t)L * sizeof *forget), bad[2];
	if (!len || !forget) {
		free(len), free(forget);
		return fail("%s", "out of memory");
	}
	for (int l = 0; l < L; l++)
		len[l] = n;
	for (int r = 1; r <= NRATIO; r++) {
		if (ki_prefix_forget(C->pref, L, len, n, (double)n * L * (r / 100.0), 5, 5, 200, forget, bad) != 0) {
			free(len), free(forget);
			return fail("%s", "PrefixKV's bisection failed on the layer scores");
		}
		for (int l = 0; l < L; l++)
			A->frac[l * NRATIO + r - 1] += (double)forget[l] / n;
	}
	free(len), free(forget);
	A->ntext++;
	/* the gate's training rows: key, previous label, 1 -> label */
	int p = d + 2;
	for (int l = 0; l < L; l++)
		for (int h = 0; h < H; h++) {
			int k = l * H + h;
			if (grow(A, k, n, p) != 0)
				return fail("%s", "out of memory");
			const float *K = llama_cache_k(&s->cache, l, h);
			double prev = 1;         /* BOS: attended (a sink) */
			for (int t = 1; t < n - 1; t++) {
				size_t at = ((size_t)l * H + h) * n + t;
				double lab = C->cnt[at] > 0 && C->att[at] / C->cnt[at] >= 1 ? 1 : 0;
				double *x = &A->X[k][(size_t)A->m[k] * p];
				for (int c = 0; c < d; c++)
					x[c] = K[(size_t)t * d + c];
				x[d] = prev, x[d + 1] = 1;
				A->Y[k][A->m[k]++] = lab;
				prev = lab;
			}
		}
	return 0;
}

static int save(Cal *C, Acc *A, double *acc)
{
	int L = C->L, H = C->H, G = C->G, d = C->d, D = C->D, Hq = H * G, LH = L * H;
	KtNpz w = { 0 };
	KiErr e = { 0 };
	double *razor = calloc((size_t)LH, sizeof *razor), *rank = calloc((size_t)LH, sizeof *rank);
	double *hk = calloc((size_t)LH, sizeof *hk), *mu = calloc((size_t)L * Hq * d, sizeof *mu);
	double *cf = calloc((size_t)L * Hq * d * d, sizeof *cf), *frac = calloc((size_t)L * NRATIO, sizeof *frac);
	double *gw = calloc((size_t)LH * d, sizeof *gw), *gb = calloc((size_t)LH, sizeof *gb);
	double *gu = calloc((size_t)LH, sizeof *gu), *th = calloc((size_t)d + 2, sizeof *th);
	int rc = 1;
	if (!razor || !rank || !hk || !mu || !cf || !frac || !gw || !gb || !gu || !th) {
		fail("%s", "out of memory");
		goto done;
	}
	topfrac(C->ind, LH, 0.15, razor);
	topfrac(C->echo, LH, 0.01, razor);
	double tot = 0;
	for (int k = 0; k < LH; k++) {
		for (int j = 0; j < LH; j++)       /* rank ascending, ties to the lower index */
			rank[k] += C->ind[j] < C->ind[k] || (C->ind[j] == C->ind[k] && j < k);
		tot += C->ind[k];
	}
	for (int k = 0; k < LH; k++)
		hk[k] = tot > 0 ? C->ind[k] / tot : 1.0 / LH;
	for (int k = 0; k < L * Hq; k++) {
		double *m = &mu[(size_t)k * d], *c = &cf[(size_t)k * d * d], diag = 0;
		for (int i = 0; i < d; i++)
			m[i] = A->nq > 0 ? A->qs[(size_t)k * d + i] / A->nq : 0;
		for (int i = 0; i < d; i++)
			for (int j = 0; j < d; j++)
				c[i * d + j] = A->nq > 0 ? A->qq[((size_t)k * d + i) * d + j] / A->nq - m[i] * m[j] : 0;
		for (int i = 0; i < d; i++)
			diag += c[i * d + i] / d;
		for (int i = 0; i < d; i++)
			c[i * d + i] += 1e-6 * (diag > 0 ? diag : 1);
		if (cholesky(c, d) != 0) {
			fail("%s", "a query covariance is not definite");
			goto done;
		}
	}
	for (int k = 0; k < L * NRATIO; k++)
		frac[k] = A->ntext ? A->frac[k] / A->ntext : 0;
	for (int k = 0; k < LH; k++) {
		acc[k] = logistic(A->X[k], A->Y[k], A->m[k], d + 2, 1e-2, th);
		memcpy(&gw[(size_t)k * d], th, (size_t)d * sizeof *th);
		gu[k] = th[d], gb[k] = th[d + 1];
		C->done += 1;
		bar(C, "gate fit");
	}
	long sLH[2] = { L, H }, sq[5] = { L, H, G, d, d }, sf[2] = { L, NRATIO }, sg[3] = { L, H, d };
	long so[5] = { L, D, H, G, d };
	double *wo = malloc((size_t)L * D * D * sizeof *wo);
	if (!wo) {
		fail("%s", "out of memory");
		goto done;
	}
	for (size_t k = 0; k < (size_t)L * D * D; k++)
		wo[k] = C->m.wo[k];
	int bad = kt_npz_add(&w, "induction", "<f8", 2, sLH, C->ind);
	bad |= kt_npz_add(&w, "echo", "<f8", 2, sLH, C->echo);
	bad |= kt_npz_add(&w, "razor", "<f8", 2, sLH, razor);
	bad |= kt_npz_add(&w, "duo_rank", "<f8", 2, sLH, rank);
	bad |= kt_npz_add(&w, "headkv", "<f8", 2, sLH, hk);
	bad |= kt_npz_add(&w, "mu", "<f8", 4, sq, mu);
	bad |= kt_npz_add(&w, "cf", "<f8", 5, sq, cf);
	bad |= kt_npz_add(&w, "frac", "<f8", 2, sf, frac);
	bad |= kt_npz_add(&w, "gate_w", "<f8", 3, sg, gw);
	bad |= kt_npz_add(&w, "gate_b", "<f8", 2, sLH, gb);
	bad |= kt_npz_add(&w, "gate_u", "<f8", 2, sLH, gu);
	bad |= kt_npz_add(&w, "wo", "<f8", 5, so, wo);
	free(wo);
	if (bad) {
		fail("%s", "out of memory");
		goto done;
	}
	if (kt_npz_write(C->out, &w, &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		goto done;
	}
	rc = 0;
done:
	kt_npz_free(&w);
	free(razor), free(rank), free(hk), free(mu), free(cf), free(frac), free(gw), free(gb), free(gu), free(th);
	return rc;
}

static void summary(const Cal *C, const Acc *A, const double *acc)
{
	int L = C->L, H = C->H;
	printf("kvcc calibrate: %s, %d repeated-token sequences of 2 x %d, %d calibration texts -> %s\n",
	       C->model, C->trials, C->repeat, A->ntext, C->out);
	printf("%-6s %-5s %10s %10s %7s %9s %10s\n", "layer", "head", "induction", "echo", "razor", "duo_rank",
	       "gate acc");
	double r[4096];
	int nr = L * H < 4096 ? L * H : 4096;
	for (int k = 0; k < nr; k++) {
		r[k] = 0;
		for (int j = 0; j < L * H; j++)
			r[k] += C->ind[j] < C->ind[k] || (C->ind[j] == C->ind[k] && j < k);
	}
	double rz[4096] = { 0 };
	topfrac(C->ind, nr, 0.15, rz);
	topfrac(C->echo, nr, 0.01, rz);
	for (int k = 0; k < nr; k++)
		printf("%-6d %-5d %10.4f %10.4f %7.0f %9.0f %10.3f\n", k / H, k % H, C->ind[k], C->echo[k], rz[k], r[k],
		       acc[k]);
	printf("PrefixKV fractions at r = 0.25 / 0.5 / 0.75:");
	for (int l = 0; l < L; l++)
		printf("  layer %d %.3f/%.3f/%.3f", l, A->frac[l * NRATIO + 24] / A->ntext,
		       A->frac[l * NRATIO + 49] / A->ntext, A->frac[l * NRATIO + 74] / A->ntext);
	printf("\n");
}

int kt_calibrate(int argc, char **argv)
{
	Cal *C = calloc(1, sizeof *C);
	Acc A;
	memset(&A, 0, sizeof A);
	LlamaState s;
	LlamaObs obs;
	memset(&s, 0, sizeof s);
	memset(&obs, 0, sizeof obs);
	double *acc = NULL;
	int **ids = NULL, *ntok = NULL, nst = 0;
	char err[700];
	if (!C)
		return fail("%s", "out of memory");
	int rc = parse(C, argc, argv);
	if (rc) {
		free(C);
		return rc < 0 ? 0 : rc;
	}
	rc = 1;
	if (llama_model_load(&C->m, C->model, err, sizeof err) || llama_tok_load(&C->tok, C->tokenizer, err, sizeof err) ||
	    llama_stories_load(&C->S, C->data, C->chunk, C->from, err, sizeof err)) {
		fail("%s", err);
		goto done;
	}
	const LlamaConfig *cfg = &C->m.cfg;
	if (C->tok.vocab_size != cfg->vocab_size) {
		fail("%s", "the tokenizer's vocabulary is not the model's");
		goto done;
	}
	if (llama_parse_range(C->stories, C->S.n, &C->lo, &C->hi) || C->hi <= C->lo) {
		rc = usage("bad or empty --stories '%s'", C->stories ? C->stories : "");
		goto done;
	}
	C->L = cfg->n_layers, C->H = cfg->n_kv_heads, C->G = cfg->group, C->d = cfg->head_dim, C->D = cfg->dim;
	if (2 * C->repeat + 1 > cfg->seq_len) {
		rc = usage("--repeat: 2 N + 1 must fit the model's seq_len%s", "");
		goto done;
	}
	int L = C->L, H = C->H, Hq = H * C->G, d = C->d, n = cfg->seq_len;
	nst = C->hi - C->lo;
	ids = calloc((size_t)nst, sizeof *ids), ntok = calloc((size_t)nst, sizeof *ntok);
	C->ind = calloc((size_t)L * H, sizeof *C->ind), C->echo = calloc((size_t)L * H, sizeof *C->echo);
	C->pref = calloc((size_t)L * n, sizeof *C->pref);
	C->att = calloc((size_t)L * H * n, sizeof *C->att), C->cnt = calloc((size_t)L * H * n, sizeof *C->cnt);
	A.qs = calloc((size_t)L * Hq * d, sizeof *A.qs), A.qq = calloc((size_t)L * Hq * d * d, sizeof *A.qq);
	A.frac = calloc((size_t)L * NRATIO, sizeof *A.frac);
	A.X = calloc((size_t)L * H, sizeof *A.X), A.Y = calloc((size_t)L * H, sizeof *A.Y);
	A.m = calloc((size_t)L * H, sizeof *A.m), A.cap = calloc((size_t)L * H, sizeof *A.cap);
	acc = calloc((size_t)L * H, sizeof *acc);
	if (!ids || !ntok || !C->ind || !C->echo || !C->pref || !C->att || !C->cnt || !A.qs || !A.qq || !A.frac ||
	    !A.X || !A.Y || !A.m || !A.cap || !acc || llama_state_init(&s, &C->m, n, 0) ||
	    llama_obs_init(&obs, cfg, n)) {
		fail("%s", "out of memory");
		goto done;
	}
	C->work = (double)C->trials * (2 * C->repeat + 1) + L * H;
	for (int si = 0; si < nst; si++) {
		size_t len = C->S.len[C->lo + si];
		ids[si] = malloc(llama_tok_max_ids(len) * sizeof(int));
		int k = ids[si] ? llama_tok_encode(&C->tok, C->S.text[C->lo + si], len, 1, ids[si]) : -1;
		if (k < 0) {
			snprintf(err, sizeof err, "text %d cannot be encoded", C->lo + si);
			fail("%s", err);
			goto done;
		}
		ntok[si] = k < n ? k : n;
		C->work += ntok[si];
	}
	s.observe = observe, s.observe_user = C;
	C->progress = isatty(2);
	if (heads(C, &s) != 0)
		goto done;
	for (int si = 0; si < nst; si++) {
		if (ntok[si] < 2)
			continue;
		if (text(C, &s, &obs, ids[si], ntok[si], &A) != 0)
			goto done;
		C->done += ntok[si];
		bar(C, "calibration texts");
	}
	if (!A.ntext) {
		fail("%s", "no calibration text has two tokens");
		goto done;
	}
	if (save(C, &A, acc) != 0)
		goto done;
	if (C->progress)
		fprintf(stderr, "\r\033[K");
	summary(C, &A, acc);
	rc = 0;
done:
	if (C->progress && rc)
		fprintf(stderr, "\n");
	for (int k = 0; A.X && k < C->L * C->H; k++)
		free(A.X[k]), free(A.Y[k]);
	free(A.X), free(A.Y), free(A.m), free(A.cap), free(A.qs), free(A.qq), free(A.frac), free(acc);
	for (int si = 0; ids && si < nst; si++)
		free(ids[si]);
	free(ids), free(ntok), free(C->ind), free(C->echo), free(C->pref), free(C->att), free(C->cnt);
	llama_obs_free(&obs);
	llama_state_free(&s);
	llama_stories_free(&C->S);
	llama_tok_free(&C->tok);
	llama_model_free(&C->m);
	free(C);
	return rc;
}
