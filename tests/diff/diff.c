/*
** Differential matrix (DESIGN §9 tier 3): compiled x86 kernels (through
** libkvcc) vs the reference interpreter ki_run, for every policy × dtype ×
** head_dim × group × target, on odd lengths and padded strides.
**
** Checks per case: identical kept sets (lengths and positions), scores within
**   |x86 - ref| <= 1e-4 · max(1, max_t |ref_t|)   (f32 accumulation vs double)
** and bit-identical compacted K/V rows (merge rules: merged rows within merge_tol, 1e-4 f32, 2e-3
** f16, 1.6e-2 bf16, relative to max(1, |ref|); inputs are re-drawn when an evicted row's best and
** second-best cosine, or its best and the threshold, are closer than 1e-4). Inputs come from a fixed seed and are
** re-drawn when the interpreter's selection boundary has a relative margin
** < 1e-4 (so a legitimate f32/double difference cannot flip a token); for
** chunked or layer/model-scope selection, when any two candidates of a scope
** group (chunk means, same protection class) are closer than 1e-5 relative.
** A target whose CPU features this host lacks is a SKIP, never a pass.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <dlfcn.h>
#include <unistd.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "runtime/artifact.h"
#include "runtime/cpu.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "compiler/mplan.h"
#include "compiler/plan.h"
#include "codegen/x86/x86.h"
#include "dsl/dsl.h"
#define CASEGEN_SEED 0x12345678abcdefull
#include "tests/common/casegen.h"
#include "tests/common/manifest.h"

static int npass, nfail, nskip, nlse, ngen;   /* ngen: passing cases that ran generated token_map loops */
static int nmgap;           /* draws redrawn: a merge comparison within 1e-4 of its bound (KiResult.mgap) */
static const char *only;                     /* argv[1]: run only the cases whose name contains it */
typedef struct Cfg {
	const char *policy;      /* name */
	const char *file;        /* its .lua */
	int dtype, d, G, target;
	const char *param;       /* a param this case sets (the manifest's sweep), or NULL */
	double pval;             /* its value */
} Cfg;
static int unordered;        /* run_case: positions not in order (neighbours swapped): the masked causal kernels */

/* Chunked or shared-budget selection (chunk > 1, scope layer/model): the reference's greedy
** order over a whole scope group decides, so the relative margin is the smallest gap between
** any two candidates (chunk means) of a group within the same protection class. */
static double group_margin(const KiFn *f, const double *par, const KiCase *c, const KiResult *r)
{
	long S = (long)pval(f, par, f->sel.keep_first, 0), R = (long)pval(f, par, f->sel.keep_recent, 0);
	long ch = (long)pval(f, par, f->sel.chunk, 1);
	double worst = INFINITY, *v[2];
	v[0] = malloc(((size_t)c->L * c->H * c->n + 1) * sizeof(double));
	v[1] = malloc(((size_t)c->L * c->H * c->n + 1) * sizeof(double));
	int m[2] = { 0, 0 };
	for (int k = 0; k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n;
		for (long t0 = 0; t0 < n; t0 += ch) {
			long e = t0 + ch < n ? t0 + ch : n;
			double s = 0;
			for (long t = t0; t < e; t++)
				s += r->scores[(size_t)k * c->n + t];
			int prot = t0 < S || e > n - R;
			v[prot][m[prot]++] = s / (double)(e - t0);
		}
		/* the model schedules rank every instance's scores together (compress.c schedcounts) */
		int gs = f->sel.sched >= SCH_prefix ? SC_model : f->sel.scope;
		int last = gs == SC_head || (gs == SC_layer && k % c->H == c->H - 1) || k == c->L * c->H - 1;
		for (int p = 0; last && p < 2; p++) {
			qsort(v[p], (size_t)m[p], sizeof(double), cmpd);
			for (int i = 1; i < m[p]; i++) {
				double a = v[p][i - 1], b = v[p][i], sc = fmax(fabs(a), fabs(b));
				worst = fmin(worst, sc > 0 ? (a - b) / sc : 0);
			}
			m[p] = 0;
		}
	}
	free(v[0]), free(v[1]);
	return worst;
}

/* AdaKV's floor (scope layer, chunk 1): within a head the kept unprotected tokens are its best
** ones, and the layer's ranking of what the floors left keeps the best of those, so a rounding
** difference can change the kept sets only between a kept and an evicted token of one layer
** closer than the margin: the smallest relative gap between neighbours (by score) of a scope
** group's unprotected tokens, one kept and one evicted (the interpreter's sets). The same holds for a
** threshold at scope layer or model (kept: the best candidates >= tau; NaN scores never) and for
** mass at scope layer or model, chunk 1 (kept: the group's best min(count, protected + prefix)). */
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
	int per = f->sel.scope == SC_model ? c->L * c->H : c->H;      /* instances of a scope group */
	Lab *v = malloc(((size_t)c->L * c->H * c->n + 1) * sizeof *v);
	char *kept = malloc((size_t)c->n + 1);
	for (int k0 = 0; k0 < c->L * c->H; k0 += per) {
		int m = 0;
		for (int k = k0; k < k0 + per; k++) {
			int n = c->len ? c->len[k] : c->n;
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
			if (v[i - 1].kept != v[i].kept && isfinite(a) && isfinite(b))   /* an exact tie: 0 (f32 may split it) */
				worst = fmin(worst, sc > 0 ? (b - a) / sc : 0);
		}
	}
	free(v), free(kept);
	return worst;
}


/* segment sizes, starts and shift offsets at run time (tests/policies/segops.lua, params window,
** chunk, start, lag, big): a bad one fails the compression with KVCC_EINVAL at the instruction's
** position, as the interpreter refuses it; nothing in the cache changes */
static void segsizes(void)
{
	if (only && !strstr("segops run-time sizes", only))
		return;
	kvcc_spec s = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
	kvcc_policy *p = NULL;
	kvcc_plan *pl = NULL;
	enum { N = 24, D = 64 };
	static float K[N * D], V[N * D], Q[2 * 4 * D];
	int32_t pos[N], len[1] = { N };
	for (int i = 0; i < N * D; i++)
		K[i] = (float)((i * 37 % 101) / 50.0 - 1), V[i] = (float)((i * 53 % 97) / 48.0 - 1);
	for (int i = 0; i < 2 * 4 * D; i++)
		Q[i] = (float)((i * 29 % 89) / 44.0 - 1);
	kvcc_layout lay = { KVCC_F32, 1, 1, D, N, (int64_t)N * D, (int64_t)N * D, D };
	if (kvcc_compile_file("tests/policies/segops.lua", &s, &p) != 0 || kvcc_plan_create(p, &lay, 4, 1, &pl) != 0) {
		printf("FAIL segops run-time sizes: %s\n", kvcc_last_error());
		nfail++;
		kvcc_close(p);
		return;
	}
	/* one bad value per case (params by name: kv.params declares them in name order) */
	static const struct { const char *name; double v; } bad[] = {
		{ "chunk", 2.5 }, { "chunk", 0 }, { "start", -1 }, { "start", 0.5 }, { "lag", 1.5 }, { "lag", NAN },
		{ "big", -INFINITY } };
	int np = kvcc_param_count(p);
	for (int k = 0; k < 8; k++) {
		for (int t = 0; t < N; t++)
			pos[t] = t;
		len[0] = N;
		kvcc_cache c = { K, V, pos, len, NULL };
		kvcc_obs ob = { 4, Q, NULL, NULL };
		double par[8];
		for (int i = 0; i < np && i < 8; i++) {
			const char *nm = NULL;
			kvcc_param_info(p, i, &nm, &par[i]);
			if (k < 7 && nm && !strcmp(nm, bad[k].name))
				par[i] = bad[k].v;
		}
		kvcc_args a = { 0.5, -1, par, 1, NULL };
		int rc = kvcc_compress(pl, &c, &ob, &a);
		int ok = k == 7 ? rc == 0 && len[0] == N / 2
		                : rc == KVCC_EINVAL && strstr(kvcc_last_error(), "segops.lua:") &&
		                  strstr(kvcc_last_error(), "segment size must be an integer >= 1 or inf") && len[0] == N;
		if (ok)
			npass++;
		else {
			nfail++;
			printf("FAIL segops run-time sizes case %d: rc %d len %d: %s\n", k, rc, len[0], kvcc_last_error());
		}
		if (k == 0)
			printf("  %s\n", kvcc_last_error());
	}
	kvcc_plan_destroy(pl);
	kvcc_close(p);
}

/* merge summary's run-time errors (tests/policies/kmeans_prefill.lua: 4 rows, the merge at 12:14):
** a budget below the rows, and a flagged block that runs past the held rows, are KVCC_EINVAL at the
** merge's position, with the cache unchanged; a good call then compresses */
static void sumerrors(void)
{
	if (only && !strstr("merge summary run-time errors", only))
		return;
	kvcc_spec s = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
	kvcc_policy *p = NULL;
	kvcc_plan *pl = NULL;
	enum { N = 40, D = 64 };
	static float K[N * D], V[N * D], Q[2 * 8 * D], st[2 * N];
	int32_t pos[N], len[1] = { N };
	for (int i = 0; i < N * D; i++)
		K[i] = (float)((i * 37 % 101) / 50.0 - 1), V[i] = (float)((i * 53 % 97) / 48.0 - 1);
	for (int i = 0; i < 2 * 8 * D; i++)
		Q[i] = (float)((i * 29 % 89) / 44.0 - 1);
	kvcc_layout lay = { KVCC_F32, 1, 1, D, N, (int64_t)N * D, (int64_t)N * D, D };
	if (kvcc_compile_file("tests/policies/kmeans_prefill.lua", &s, &p) != 0 || kvcc_plan_create(p, &lay, 8, 1, &pl) != 0 ||
	    kvcc_state_count(p) != 2) {
		printf("FAIL merge summary run-time errors: %s\n", kvcc_last_error());
		nfail++;
		kvcc_close(p);
		return;
	}
	for (int k = 0; k < 3; k++) {
		for (int t = 0; t < N; t++)
			pos[t] = t, st[t] = 1, st[N + t] = k == 1 && t >= N - 2;    /* k 1: a block of 2 of its 4 rows */
		len[0] = N;
		kvcc_cache c = { K, V, pos, len, st };
		kvcc_obs ob = { 8, Q, NULL, NULL };
		kvcc_args a = { 0.5, k == 0 ? 3 : -1, NULL, 1, NULL };
		int rc = kvcc_compress(pl, &c, &ob, &a);
		const char *want = k == 0 ? "fewer than its 4 summary rows" : "start at row 38, but it holds 40";
		int ok = k == 2 ? rc == 0 && len[0] == N / 2 && st[N + N / 2 - 1] == 1 && st[N + N / 2 - 5] == 0
		                : rc == KVCC_EINVAL && strstr(kvcc_last_error(), "kmeans_prefill.lua:12:14: error: merge summary") &&
		                  strstr(kvcc_last_error(), want) && len[0] == N && pos[N - 1] == N - 1;
		if (ok)
			npass++;
		else {
			nfail++;
			printf("FAIL merge summary run-time errors case %d: rc %d len %d: %s\n", k, rc, len[0], kvcc_last_error());
		}
		if (k < 2)
			printf("  %s\n", kvcc_last_error());
	}
	kvcc_plan_destroy(pl);
	kvcc_close(p);
}

/* merge summary under AdaKV's floor and mass (session 12; DESIGN §3: the rows count in each
** head's floor, and a head that evicts must hold room for them): adakv_summary (2 rows, sinks 2,
** window 3) with a budget of 3 in a layer of two heads, one over it: the floor floor(0.5 * 3) = 1
** is at or below the 2 rows, so its rows meet it (no error, session 12 wt-floor12): the layer's
** ranking keeps 3 - 2 = 1 ordinary row per head, the sinks first (each head's token 0), so each
** holds 1 + 2 rows, x86 as the interpreter; summary_mass (2 rows, at 15:14) with one held row under
** the budget, p = 0 and no sinks or window (nothing protected, nothing in the prefix): it would
** evict its one row but holds fewer than 2: the interpreter and x86 both KVCC_EINVAL at the merge
** with the same line, cache unchanged. */
static void sumerrors2(void)
{
	if (only && !strstr("merge summary floor below C, mass run-time error", only))
		return;
	kvcc_spec s = { KVCC_F32, 8, 1, KVCC_TARGET_NATIVE };
	enum { N = 12, D = 8 };
	static float K[2 * N * D], V[2 * N * D], st[2 * 2 * N];
	for (int i = 0; i < 2 * N * D; i++)
		K[i] = (float)((i * 37 % 101) / 50.0 - 1), V[i] = (float)((i * 53 % 97) / 48.0 - 1);
	static const struct { const char *lua, *want; int len0, len1; long budget; double p; } cs[] = {
		{ "tests/policies/adakv_summary.lua", NULL, N, 3, 3, -1 },     /* succeeds: 1 + 2 rows each */
		{ "tests/policies/summary_mass.lua", "summary_mass.lua:15:14: error: merge summary: (layer 0, head 0) evicts "
		  "past its mass prefix but holds 1 rows, fewer than its 2 summary rows", 1, -1, 5, 0 },
	};
	for (int k = 0; k < 2; k++) {
		int H = cs[k].len1 >= 0 ? 2 : 1;
		kvcc_policy *p = NULL;
		kvcc_plan *pl = NULL;
		KiErr e = { 0 };
		KiFn *f = kd_loadfile(cs[k].lua, NULL, &e);
		kvcc_layout lay = { KVCC_F32, 1, H, D, N, (int64_t)H * N * D, (int64_t)N * D, D };
		if (!f || ki_runpasses(f, KI_DEFAULT_PASSES, 0, &e, NULL, NULL) != 0 || kvcc_compile_file(cs[k].lua, &s, &p) != 0 ||
		    kvcc_plan_create(p, &lay, 1, 1, &pl) != 0) {
			printf("FAIL merge summary floor below C, mass run-time error %d: %s %s\n", k, e.msg, kvcc_last_error());
			nfail++;
			kvcc_close(p);
			ki_free(f);
			continue;
		}
		double par[8];
		int np = kvcc_param_count(p);
		for (int i = 0; i < np && i < 8; i++) {
			const char *nm = NULL;
			kvcc_param_info(p, i, &nm, &par[i]);
			if (nm && cs[k].p >= 0 && (!strcmp(nm, "p") || !strcmp(nm, "sinks") || !strcmp(nm, "window")))
				par[i] = 0;         /* nothing protected, nothing in the prefix */
		}
		int32_t pos[2 * N], len[2] = { cs[k].len0, cs[k].len1 }, len0[2] = { cs[k].len0, cs[k].len1 };
		for (int t = 0; t < 2 * N; t++)
			pos[t] = t % N;
		for (int t = 0; t < 2 * H * N; t++)
			st[t] = t < H * N ? 1 : 0;          /* counts 1, no summary block */
		int32_t pos0[2 * N];            /* the interpreter's input (the compression rewrites pos) */
		memcpy(pos0, pos, sizeof pos0);
		float K0[2 * N * D], V0[2 * N * D];
		memcpy(K0, K, sizeof K0), memcpy(V0, V, sizeof V0);
		kvcc_cache c = { K, V, pos, len, st };
		kvcc_args a = { 0.5, cs[k].budget, par, 1, NULL };
		int rc = kvcc_compress(pl, &c, NULL, &a);
		int ok = !cs[k].want ? rc == 0 && len[0] == 3 && len[1] == 3 && pos[0] == 0 && pos[N] == 0 :
		         rc == KVCC_EINVAL && strstr(kvcc_last_error(), cs[k].want) && len[0] == len0[0] && pos[0] == 0;
		KiCase kc = { .L = 1, .H = H, .G = 1, .d = D, .n = N, .len = len0, .O = 0, .K = K0, .V = V0, .pos = pos0,
		              .dtype = KVCC_F32, .params = par, .ratio = 0.5, .budget = cs[k].budget };
		KiResult r = { 0 };
		KiErr ie = { 0 };
		int irc = ki_run(f, &kc, &r, &ie);
		if (!cs[k].want)         /* x86 as the interpreter: lengths and positions */
			for (int j = 0; j < H && (ok &= irc == 0); j++) {
				ok &= len[j] == r.len[j];
				for (int m = 0; ok && m < len[j]; m++)
					ok &= pos[j * N + m] == r.pos[j * N + m];
			}
		else
			ok &= irc != 0 && strstr(ie.msg, cs[k].want) != NULL;
		if (ok)
			npass++;
		else {
			nfail++;
			printf("FAIL merge summary floor below C, mass run-time error %d: rc %d len %d: %s; interpreter %d: %s\n", k, rc,
			       len[0], kvcc_last_error(), irc, ie.msg);
		}
		printf("  %s\n", kvcc_last_error());
		ki_result_free(&r);
		ki_free(f);
		kvcc_plan_destroy(pl);
		kvcc_close(p);
	}
}

/* threshold with summary rows at scope layer (M15): a layer of two heads of 8 rows under a budget of 8
** (sinks 1, window 3: rows 0, 5, 6, 7 protected), head 0 every row above tau, head 1 rows 1-3
** below it: the layer evicts, each head keeps at most 6; head 0's 8 candidates are cut to 6, head 1
** holds 5, so the layer keeps 11 of its count 12 (x86 must recount the candidates after the cut,
** else the twelfth pick is a cut row); x86 against the interpreter, positions and lengths */
static void sumthrgrp(void)
{
	if (only && !strstr("merge summary threshold layer: the cut candidates", only))
		return;
	kvcc_spec s = { KVCC_F32, 8, 1, KVCC_TARGET_NATIVE };
	enum { N = 8, D = 8, H = 2 };
	static float K[H * N * D], V[H * N * D], st[2 * H * N];
	for (int h = 0; h < H; h++)
		for (int t = 0; t < N; t++)
			for (int c = 0; c < D; c++) {
				int neg = h == 1 && t >= 1 && t <= 3;
				K[(h * N + t) * D + c] = (float)((neg ? -0.1 : 0.1) * (t + 1) + 0.01 * c);
				V[(h * N + t) * D + c] = (float)(0.05 * (t - c));
			}
	KiErr e = { 0 };
	const char *lua = "tests/policies/summary_threshold_layer.lua";
	KiFn *f = kd_loadfile(lua, NULL, &e);
	kvcc_policy *p = NULL;
	kvcc_plan *pl = NULL;
	kvcc_layout lay = { KVCC_F32, 1, H, D, N, (int64_t)H * N * D, (int64_t)N * D, D };
	if (!f || ki_runpasses(f, KI_DEFAULT_PASSES, 0, &e, NULL, NULL) != 0 || kvcc_compile_file(lua, &s, &p) != 0 ||
	    kvcc_plan_create(p, &lay, 1, 1, &pl) != 0) {
		printf("FAIL merge summary threshold layer: the cut candidates: %s %s\n", e.msg, kvcc_last_error());
		nfail++;
		kvcc_close(p);
		ki_free(f);
		return;
	}
	double par[8];
	int np = kvcc_param_count(p);
	for (int i = 0; i < np && i < 8; i++) {
		const char *nm = NULL;
		kvcc_param_info(p, i, &nm, &par[i]);
		if (nm && !strcmp(nm, "tau"))
			par[i] = 0;
	}
	int32_t pos[H * N], len[H] = { N, N }, len0[H] = { N, N };
	for (int t = 0; t < H * N; t++)
		pos[t] = t % N;
	for (int t = 0; t < 2 * H * N; t++)
		st[t] = t < H * N ? 1 : 0;          /* counts 1, no summary block */
	KiCase kc = { .L = 1, .H = H, .G = 1, .d = D, .n = N, .len = len0, .O = 0, .K = K, .V = V, .pos = pos,
	              .dtype = KVCC_F32, .params = par, .ratio = 0.5, .budget = N };
	KiResult r = { 0 };
	int irc = ki_run(f, &kc, &r, &e);
	kvcc_cache c = { K, V, pos, len, st };
	kvcc_args a = { 0.5, N, par, 1, NULL };
	int rc = irc ? -1 : kvcc_compress(pl, &c, NULL, &a);
	int ok = irc == 0 && rc == 0 && r.len[0] == 8 && r.len[1] == 7;     /* 6 + 2 rows, 5 + 2 rows */
	for (int k = 0; ok && k < H; k++) {
		ok = len[k] == r.len[k];
		for (int m = 0; ok && m < len[k]; m++)
			ok = pos[k * N + m] == r.pos[k * N + m];
	}
	if (ok)
		npass++;
	else {
		nfail++;
		printf("FAIL merge summary threshold layer: the cut candidates: rc %d %d, lengths %d %d, reference %d %d: %s %s\n",
		       irc, rc, len[0], len[1], r.len ? r.len[0] : -1, r.len ? r.len[1] : -1, e.msg, kvcc_last_error());
	}
	ki_result_free(&r);
	ki_free(f);
	kvcc_plan_destroy(pl);
	kvcc_close(p);
}

static void run_case(const Cfg *cf, const char *host)
{
	char name[200];
	snprintf(name, sizeof name, "%s %s d=%d G=%d %s", cf->policy, ki_dtypename(cf->dtype), cf->d, cf->G,
	         kx_targetname(cf->target));
	if (cf->param)
		snprintf(name + strlen(name), sizeof name - strlen(name), " %s=%g", cf->param, cf->pval);
	if (unordered)
		snprintf(name + strlen(name), sizeof name - strlen(name), " unordered-pos");
	kvcc_spec spec = { cf->dtype, cf->d, cf->G, cf->target };
	if (only && !strstr(name, only))
		return;
	if (!kx_vecwidth(&spec, host)) {
		printf("SKIP %s: this CPU lacks the features of target %s\n", name, kx_targetname(cf->target));
		nskip++;
		return;
	}
	const char *path = cf->file;
	kvcc_policy *p;
	KiErr e = { 0 };
	KiFn *f = kd_loadfile(path, NULL, &e);
	if (!f || ki_runpasses(f, KI_DEFAULT_PASSES, 0, &e, NULL, NULL) != 0) {
		printf("FAIL %s: load: %s\n", name, e.msg);
		nfail++;
		return;
	}
	if (kvcc_compile_file(path, &spec, &p) != 0) {
		printf("FAIL %s: compile: %s\n", name, kvcc_last_error());
		nfail++;
		ki_free(f);
		return;
	}
	int L = f->sel.sched >= SCH_prefix ? 5 : 2, H = 2, G = cf->G, d = cf->d;   /* schedules: rounds over layers */
	int n = 37 + 2 * (int)(urand() * 40);              /* odd capacity */
	/* KVCC_DIFF_N: this capacity instead (tests/tune/variants.sh: heads of n - 2k tokens on both sides
	** of a per-bucket boundary, issue 15) */
	if (getenv("KVCC_DIFF_N") && atoi(getenv("KVCC_DIFF_N")) > 8)
		n = atoi(getenv("KVCC_DIFF_N"));
	double par[32];
	for (int i = 0; i < f->npar; i++)
		par[i] = f->par[i].def;
	int wi = ki_findparam(f, "window");
	if (wi >= 0 && par[wi] > 8)
		par[wi] = 8;
	if (cf->param && ki_findparam(f, cf->param) >= 0)
		par[ki_findparam(f, cf->param)] = cf->pval;
	/* threshold or mass over chunks (issue 13): no recent window in half the cases (by n, no draw),
	** so the shorter last chunk competes against tau or the prefix, or is left out */
	int ri = ki_findparam(f, "recent");
	if (f->sel.kind != SEL_topk && pval(f, par, f->sel.chunk, 1) > 1 && ri >= 0 && n % 4 == 1) {
		par[ri] = 0;
		snprintf(name + strlen(name), sizeof name - strlen(name), " recent=0");
	}
	int grouped = pval(f, par, f->sel.chunk, 1) > 1 || f->sel.scope != SC_head || f->sel.sched >= SCH_prefix;
	int O = f->obs_all ? n : KI_RKIND(f->obs) ? (int)pval(f, par, f->obs, 0) : 0;
	int hm = 0;
	for (int i = 0; i < f->nins; i++)
		hm |= f->ins[i].op == KO_hmean;
	int32_t len[10], len0[10];
	for (int k = 0; k < L * H; k++)
		len0[k] = f->obs_all || f->sel.sched == SCH_dynamic ? n : hm ? n - 2 * (k / H) : n - 2 * k;
	int pad = (cf->d / 8) % 2 ? 8 : 0;               /* padded token stride on some cases */
	int64_t st = d + pad;
	size_t esz = cf->dtype == KVCC_F32 ? 4 : 2, nkv = (size_t)L * H * n * d, nq = (size_t)L * H * G * O * d;
	float *K = malloc(nkv * 4 + 4), *V = malloc(nkv * 4 + 4), *Q = malloc(nq * 4 + 4), *sc = malloc((size_t)L * H * n * 4);
	/* member counts (a merge that keeps them, compiler/mplan.h ki_mcounts: the policy's only state
	** row at prefill): drawn 1..3, as after earlier merges; the interpreter takes them as KiCase.count */
	int cn = ki_mcounts(f);
	double *cref = malloc((size_t)L * H * n * sizeof(double) + 8);
	/* merge summary (cn 2): the flag row "summary" after the counts, 0 at prefill (no block yet) */
	float *cst = cn ? malloc((size_t)cn * L * H * n * sizeof(float)) : NULL;
	for (int i = 0; i < L * H * n; i++)
		cref[i] = cn ? 1 + (int)(urand() * 3) : 1;
	char *Ks = malloc((size_t)L * H * n * st * esz), *Vs = malloc((size_t)L * H * n * st * esz), *Qs = malloc(nq * esz + 2);
	int32_t *pos = malloc((size_t)L * H * n * 4);
	KiResult r = { 0 };
	float *lse = NULL;
	double ratio = urand() < 0.5 ? 0.5 : 0.3;
	long budget = urand() < 0.3 ? n / 3 : -1;
	/* some budgets below the protected count (sinks first, then the newest recent tokens) */
	long nprot = (long)pval(f, par, f->sel.keep_first, 0) + (long)pval(f, par, f->sel.keep_recent, 0);
	if (nprot > 1 && urand() < 0.3)
		budget = nprot / 2;
	/* positions: the index, 1000 + index (a cache that was compressed before) or gapped;
	** no qpos: the observation queries are at the last held tokens' positions */
	int poskind = (int)(urand() * 3);
	int32_t *posr = malloc((size_t)L * H * n * 4);
	for (int k = 0; k < L * H; k++)
		for (int t = 0, p = 0; t < n; t++, p += poskind == 2 ? 1 + (int)(urand() * 4) : 1)
			posr[(size_t)k * n + t] = poskind == 1 ? 1000 + t : p;
	for (int k = 0; k < L * H && unordered; k++)   /* unordered: t and t ^ 1 swapped within the held tokens */
		for (int t = 0; t + 1 < len0[k]; t += 2) {
			int32_t x = posr[(size_t)k * n + t];
			posr[(size_t)k * n + t] = posr[(size_t)k * n + t + 1], posr[(size_t)k * n + t + 1] = x;
		}
	/* summary rows under threshold (issue 12): every head under its budget in half the cases (by
	** n, no draw), where a head that evicts below tau keeps at most n - C rows; in half of those a
	** tau below every score, so that only the NaN tokens go (often fewer than C) */
	int ti = ki_findparam(f, "tau");
	if (f->merge.kind == MG_summary && f->sel.kind == SEL_threshold && n % 4 == 3) {
		budget = n;
		if (ti >= 0 && n % 8 == 7)
			par[ti] = -1e30;
		snprintf(name + strlen(name), sizeof name - strlen(name), " budget=n%s", n % 8 == 7 ? " tau=-1e30" : "");
	}
	/* summary rows under mass (issue 12, scope head): every head under its budget in half the
	** cases (by n, no draw), where a head whose prefix leaves rows out keeps at most n - C; in
	** half of those a p near 1, so that few rows go (often fewer than C) */
	int pi = ki_findparam(f, "p");
	if (f->merge.kind == MG_summary && f->sel.kind == SEL_mass && n % 4 == 3) {
		budget = n;
		if (pi >= 0 && n % 8 == 7)
			par[pi] = 0.98;
		snprintf(name + strlen(name), sizeof name - strlen(name), " budget=n%s", n % 8 == 7 ? " p=0.98" : "");
	}
	/* summary rows under a group budget (topk, scope layer / model; the heads hold n - 2k rows): a
	** budget of n - 1 in a third of the cases (by n, no draw) leaves head 0 over it by one row and
	** every other head under it, so the group's ranking takes rows from heads under their count;
	** each head must end holding no more than it held, the group no more than its budget */
	int sumgrp = f->merge.kind == MG_summary && (f->sel.kind == SEL_topk || f->sel.kind == SEL_threshold) &&
	             f->sel.scope != SC_head;
	if (sumgrp && n % 3 == 1) {
		budget = n - 1;
		snprintf(name + strlen(name), sizeof name - strlen(name), " budget=n-1");
	}
	snprintf(name + strlen(name), sizeof name - strlen(name), "%s%s", poskind == 1 ? " pos+1000" :
	         poskind == 2 ? " gapped" : "", budget >= 0 && budget < nprot ? " budget<protected" : "");
	KiWData wd[KI_MAXW];
	float *wf = NULL;
	double *wdv = NULL;
	if (f->nw && cg_weights(f, L, H, G, d, wd, &wf, &wdv) != 0) {
		printf("FAIL %s: weights: out of memory or an out axis\n", name);
		goto out;
	}
	int ok = 0;
	for (int attempt = 0; attempt < 20 && !ok; attempt++) {
		for (size_t i = 0; i < nkv; i++) {
			K[i] = ki_round((float)(urand() * 2 - 1), cf->dtype);
			V[i] = ki_round((float)(urand() * 2 - 1), cf->dtype);
		}
		for (size_t i = 0; i < nq; i++)
			Q[i] = ki_round((float)(urand() * 4 - 2), cf->dtype);
		/* merge runs (issue 12): about half the neighbouring keys close (runs of several tokens) */
		for (size_t i = d; f->merge.kind == MG_runs && i < nkv; i += d)
			if (i % ((size_t)n * d) && urand() < 0.6)
				for (int ch = 0; ch < d; ch++)
					K[i + ch] = ki_round(0.9f * K[i - d + ch] + 0.3f * K[i + ch], cf->dtype);
		KiCase c = { .L = L, .H = H, .G = G, .d = d, .n = n, .len = len0, .O = O, .K = K, .V = V, .Q = O ? Q : NULL,
		             .pos = posr, .dtype = cf->dtype, .params = par, .ratio = ratio, .budget = budget,
		             .nw = f->nw, .w = wd, .count = cn ? cref : NULL };
		ki_result_free(&r);
		if (ki_run(f, &c, &r, &e) != 0) {
			printf("FAIL %s: interpreter: %s\n", name, e.msg);
			goto out;
		}
		ok = f->sel.sched >= SCH_prefix ? floor_margin(f, par, &c, &r) >= 1e-5 && sched_margin(f, par, &c, &r) >= 1e-5 :
		     f->sel.floor || (grouped && (f->sel.kind == SEL_threshold ||
		                                  (f->sel.kind == SEL_mass && pval(f, par, f->sel.chunk, 1) == 1))) ?
		     floor_margin(f, par, &c, &r) >= 1e-5 :
		     grouped ? group_margin(f, par, &c, &r) >= 1e-5 : case_margin(f, par, &c, &r) >= 1e-4;
		long held = 0, room = 0;
		for (int k = 0; sumgrp && ok && k < L * H; k++) {
			held += r.len[k], room += budget >= 0 && budget < len0[k] ? budget : len0[k];
			if (r.len[k] > len0[k]) {
				printf("FAIL %s: interpreter: head %d holds %d rows after the compression, %d before\n", name, k,
				       r.len[k], len0[k]);
				goto out;
			}
		}
		if (sumgrp && ok && budget >= 0 && held > room) {
			printf("FAIL %s: interpreter: the heads hold %ld rows, over the budget's %ld\n", name, held, room);
			goto out;
		}
		const int oks = ok;
		ok = ok && merge_margin(f, par, &c, &r) >= 1e-4;
		nmgap += oks && !ok && r.mgap < 1e-4;   /* e.g. CaM's draw u within rounding of p: a new draw */
	}
	if (!ok) {
		printf("SKIP %s: no tie-free input in 20 draws\n", name);
		nskip++;
		goto done;
	}
	/* pass 0: no lse; pass 1 (policies that read Q): the exact lse of every observation
	** query (double, causal over the held tokens), which lets the fused attn_score skip
	** attn_stats: the same kept sets and scores are required */
	lse = O ? malloc((size_t)L * H * G * O * sizeof(float)) : NULL;
	for (int uselse = 0; uselse < (O && !unordered ? 2 : 1); uselse++) {
	if (uselse)
		for (int k = 0; k < L * H; k++)
			for (int g = 0; g < G; g++)
				for (int o = 0; o < O; o++) {
					const float *qv = &Q[(((size_t)k * G + g) * O + o) * d];
					int qp = len0[k] - O + o;
					double mx = -INFINITY, sum = 0, *sv = malloc(((size_t)len0[k] + 1) * sizeof(double));
					for (int t = 0; t < len0[k] && t <= qp; t++) {
						double dot = 0;
						for (int ch = 0; ch < d; ch++)
							dot += (double)qv[ch] * K[((size_t)k * n + t) * d + ch];
						sv[t] = dot / sqrt((double)d);
						mx = fmax(mx, sv[t]);
					}
					for (int t = 0; t < len0[k] && t <= qp; t++)
						sum += exp(sv[t] - mx);
					lse[((size_t)k * G + g) * O + o] = (float)(mx + log(sum));
					free(sv);
				}
	for (int k = 0; k < L * H; k++)
		for (int t = 0; t < n; t++) {
			pos[(size_t)k * n + t] = posr[(size_t)k * n + t];
			for (int ch = 0; ch < d; ch++) {
				encode(K[((size_t)k * n + t) * d + ch], cf->dtype, Ks + (((size_t)k * n + t) * st + ch) * esz);
				encode(V[((size_t)k * n + t) * d + ch], cf->dtype, Vs + (((size_t)k * n + t) * st + ch) * esz);
			}
		}
	for (size_t i = 0; i < nq; i++)
		encode(Q[i], cf->dtype, Qs + i * esz);
	memcpy(len, len0, sizeof len);
	kvcc_layout lay = { cf->dtype, L, H, d, n, (int64_t)H * n * st, (int64_t)n * st, st };
	kvcc_plan *pl;
	if (kvcc_plan_create(p, &lay, O, 0, &pl) != 0) {
		printf("FAIL %s: plan: %s\n", name, kvcc_last_error());
		goto out;
	}
	for (int i = 0; cn && i < L * H * n; i++)
		cst[i] = (float)cref[i];
	for (int i = 0; cn > 1 && i < L * H * n; i++)
		cst[(size_t)L * H * n + i] = 0;
	kvcc_cache cache = { Ks, Vs, pos, len, cst };
	kvcc_obs obs = { O, Qs, uselse ? lse : NULL, NULL };
	kvcc_args args = { ratio, budget, par, 0, sc };
	int rc = 0;
	for (int i = 0, wo = 0; i < f->nw && !rc; i++) {     /* the plan's weights: the same values */
		int64_t shp[KI_MAXWDIM];
		size_t cnt = 1;
		for (int j = 0; j < wd[i].ndim; j++)
			shp[j] = wd[i].shape[j], cnt *= (size_t)shp[j];
		rc = kvcc_plan_set_weight(pl, wd[i].name, wf + wo, wd[i].ndim, shp);
		wo += (int)cnt;
	}
	if (!rc)
		rc = kvcc_compress(pl, &cache, &obs, &args);
	kvcc_plan_destroy(pl);
	if (rc != 0) {
		printf("FAIL %s: compress: %s\n", name, kvcc_last_error());
		goto out;
	}
	for (int k = 0; k < L * H; k++) {
		double mx = 1;
		for (int t = 0; t < len0[k]; t++)       /* the scale of the finite scores (inf: equal or not) */
			if (isfinite(r.scores[(size_t)k * n + t]))
				mx = fmax(mx, fabs(r.scores[(size_t)k * n + t]));
		for (int t = 0; t < len0[k]; t++) {
			double a = sc[(size_t)k * n + t], b = r.scores[(size_t)k * n + t];
			if (!(a == b || fabs(a - b) <= 1e-4 * mx) && !(isnan(a) && isnan(b))) {
				printf("FAIL %s: score (l%d h%d t%d) x86 %.9g ref %.9g\n", name, k / H, k % H, t, a, b);
				goto out;
			}
		}
		if (sumgrp && len[k] > len0[k]) {
			printf("FAIL %s: head %d holds %d rows after the compression, %d before\n", name, k, len[k], len0[k]);
			goto out;
		}
		if (len[k] != r.len[k]) {
			printf("FAIL %s: head %d keeps %d tokens, reference %d\n", name, k, len[k], r.len[k]);
			goto out;
		}
		for (int m = 0; m < len[k]; m++) {
			if (pos[(size_t)k * n + m] != r.pos[(size_t)k * n + m]) {
				printf("FAIL %s: head %d kept[%d] at position %d, reference %d\n", name, k, m,
				       pos[(size_t)k * n + m], r.pos[(size_t)k * n + m]);
				goto out;
			}
			if (cn > 1 && cst[(size_t)(L * H + k) * n + m] != (r.sumat[k] >= 0 && m >= r.sumat[k])) {
				printf("FAIL %s: head %d row %d summary flag %g, reference summary rows from %d\n", name, k, m,
				       cst[(size_t)(L * H + k) * n + m], r.sumat[k]);
				goto out;
			}
			if (cn && cst[(size_t)k * n + m] != r.count[(size_t)k * n + m]) {   /* integer counts: exact */
				printf("FAIL %s: head %d row %d member count %g, reference %g\n", name, k, m, cst[(size_t)k * n + m],
				       r.count[(size_t)k * n + m]);
				goto out;
			}
			for (int ch = 0; ch < d && f->merge.kind != MG_drop; ch++) {   /* merged rows: the tolerance */
				size_t ri = ((size_t)k * n + m) * d + ch, xi = ((size_t)k * n + m) * st + ch;
				double xk = decode(Ks + xi * esz, cf->dtype), xv = decode(Vs + xi * esz, cf->dtype);
				double rk = r.K[ri], rv = r.V[ri], tol = merge_tol(cf->dtype);
				if (!(fabs(xk - rk) <= tol * fmax(1, fabs(rk))) || !(fabs(xv - rv) <= tol * fmax(1, fabs(rv)))) {
					printf("FAIL %s: merged row %d of head %d, chan %d: x86 K %.9g V %.9g, reference K %.9g V %.9g\n",
					       name, m, k, ch, xk, xv, rk, rv);
					goto out;
				}
			}
			for (int ch = 0; ch < d && f->merge.kind == MG_drop; ch++) {
				char bk[4], bv[4];
				encode(r.K[((size_t)k * n + m) * d + ch], cf->dtype, bk);
				encode(r.V[((size_t)k * n + m) * d + ch], cf->dtype, bv);
				if (memcmp(bk, Ks + (((size_t)k * n + m) * st + ch) * esz, esz) ||
				    memcmp(bv, Vs + (((size_t)k * n + m) * st + ch) * esz, esz)) {
					printf("FAIL %s: compacted K/V row %d of head %d differs\n", name, m, k);
					goto out;
				}
			}
		}
	}
	if (!uselse && O && !unordered)
		strcat(name, " (and with lse)");
	nlse += uselse;
	}
	npass++;
	{
		KiPlan kp;
		KiErr pe = { 0 };
		if (ki_plan(f, &kp, &pe) == 0) {
			ngen += kp.ngen > 0;
			ki_plan_free(&kp);
		}
	}
	goto done;
out:
	nfail++;
done:
	ki_result_free(&r);
	free(K), free(V), free(Q), free(sc), free(Ks), free(Vs), free(Qs), free(pos), free(posr), free(lse);
	free(wf), free(wdv), free(cref), free(cst);
	kvcc_close(p);
	ki_free(f);
}

/* --- generated select / compact kernels against C references, on every target ---------------- */

/* The reference candidate key of [t0, t1) of n tokens: protected (sinks t0 < S, the recent
** window t1 > n - R) first, by rank: sinks by position, then the newest of the window
** (DESIGN §3); the others by score; then the lower index. */
static uint64_t refkey(float v, long t0, long t1, long n, long S, long R, uint32_t idx)
{
	uint32_t u;
	int prot = t0 < S || t1 > n - R;
	if (t0 < S)
		u = 0x80000000u | (0x7ffffffeu - (uint32_t)t0);
	else if (prot)
		u = 0x7fffffffu - (uint32_t)(n - t1);
	else if (isnan(v))
		u = 0;
	else {
		if (v == 0)
			v = 0;
		memcpy(&u, &v, 4);
		u = (u & 0x80000000u) ? ~u : u | 0x80000000u;
	}
	return (uint64_t)prot << 63 | (uint64_t)u << 31 | (0x7fffffffu - (idx & 0x7fffffffu));
}

static int cmpu64d(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

static void selcompact_case(int dtype, int d, int target, const char *host)
{
	char name[160], so[96];
	snprintf(name, sizeof name, "select+compact kernels %s d=%d %s", ki_dtypename(dtype), d, kx_targetname(target));
	kvcc_spec spec = { dtype, d, 1, target };
	if (!kx_vecwidth(&spec, host)) {
		printf("SKIP %s: this CPU lacks the features of target %s\n", name, kx_targetname(target));
		nskip++;
		return;
	}
	snprintf(so, sizeof so, "/tmp/kvcc-diff-sel-%d-%d-%d-%d.so", (int)getpid(), dtype, d, target);
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	/* chunkkv: its chunk is a param, so the chunk kernels (ckeys, kcount, ckeepidx) are generated;
	** a policy with chunk 1 gets stubs for them (codegen/x86/emit.c uses) */
	if (kvcc_compile_so("policies/chunkkv.lua", &spec, so, 0) != 0 || !(dl = dlopen(so, RTLD_NOW | RTLD_LOCAL)) ||
	    !(A = dlsym(dl, KVCC_DESC_SYMBOL)) || !A->selkeys || !A->topk || !A->keepidx || !A->compact ||
	    !A->ckeys || !A->kcount || !A->ckeepidx) {
		printf("FAIL %s: compile/load: %s\n", name, kvcc_last_error());
		nfail++;
		if (dl)
			dlclose(dl);
		remove(so);
		return;
	}
	remove(so);
	const char *why = NULL;
	int n = 3000 + (int)(urand() * 500);
	float *sc = malloc((size_t)n * 4);
	uint64_t *key = malloc((size_t)n * 8), *ref = malloc((size_t)n * 8), *srt = malloc((size_t)n * 8);
	int32_t *idx = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4), *pos0 = malloc((size_t)n * 4);
	size_t esz = dtype == KVCC_F32 ? 4 : 2, ld = (size_t)d + 8;
	char *K = malloc((size_t)n * ld * esz), *V = malloc((size_t)n * ld * esz);
	char *K0 = malloc((size_t)n * ld * esz), *V0 = malloc((size_t)n * ld * esz);
	float *st = malloc((size_t)2 * (n + 7) * 4), *st0 = malloc((size_t)2 * (n + 7) * 4);
	for (int rep = 0; rep < 6 && !why; rep++) {
		/* scores with NaN, ±0, ±inf and many exact ties */
		for (int i = 0; i < n; i++) {
			double u = urand();
			sc[i] = u < 0.05 ? NAN : u < 0.1 ? -0.0f : u < 0.15 ? 0.0f : u < 0.17 ? INFINITY : u < 0.19 ? -INFINITY
			        : u < 0.5 ? (float)(int)(urand() * 8) / 4 : (float)(urand() * 4 - 2);
		}
		long S = rep % 3, R = rep % 2 ? 7 : 0;
		uint32_t base = rep == 5 ? 0x7ffffff0u   /* the index field wraps: keys stay distinct */ : (uint32_t)(rep * 100000);
		A->selkeys(sc, n, S, R, base, key);
		for (int i = 0; i < n && !why; i++) {
			ref[i] = refkey(sc[i], i, i + 1, n, S, R, base + (uint32_t)i);
			if (key[i] != ref[i])
				why = "selkeys differs from the reference key";
		}
		memcpy(srt, ref, (size_t)n * 8);
		qsort(srt, (size_t)n, 8, cmpu64d);
		long wants[] = { 1, 2, n / 3, n / 2, n - 1, n };
		for (int w = 0; w < 6 && !why; w++) {
			uint64_t thr = A->topk(key, n, wants[w]);
			if (thr != srt[wants[w] - 1])
				why = "topk threshold differs from the sorted reference";
			int64_t m = A->keepidx(key, n, thr, idx);
			if (m != wants[w] && !why)
				why = "keepidx count differs";
			for (int64_t i = 1; i < m && !why; i++)
				if (idx[i] <= idx[i - 1] || key[idx[i]] < thr)
					why = "keepidx list not sorted / not the kept set";
		}
		/* chunk keys (odd n: partial last chunk), counts and the expanded kept list */
		for (int ch = 2; ch <= 8 && !why; ch += ch == 3 ? 5 : 1) {
			int nf = n / ch, nch = (n + ch - 1) / ch;
			A->ckeys(sc, n, S, R, base, ch, key);
			for (int j = 0; j < nch && !why; j++) {
				int t0 = j * ch, e = t0 + ch < n ? t0 + ch : n;
				double s = 0;
				for (int t = t0; t < e; t++)
					s += sc[t];
				ref[j] = refkey((float)(s / (e - t0)), t0, e, n, S, R, base + (uint32_t)t0);
				if (key[j] != ref[j])
					why = "ckeys differs from the reference chunk key";
			}
			memcpy(srt, ref, (size_t)nf * 8);
			qsort(srt, (size_t)nf, 8, cmpu64d);
			for (int w = 0; w < 4 && !why; w++) {
				int want = w == 0 ? 1 : w == 1 ? nf / 3 : w == 2 ? nf - 1 : nf;
				if (A->kcount(key, nf, srt[want - 1]) != want)
					why = "kcount differs from the sorted reference";
				int64_t m = A->ckeepidx(key, n, ch, srt[want - 1], w & 1, idx), mr = 0;
				for (int t = 0; t < n && !why; t++) {
					int kept = t / ch < nf ? key[t / ch] >= srt[want - 1] : w & 1;
					if (kept && (mr >= m || idx[mr++] != t))
						why = "ckeepidx list differs from the kept chunks' positions";
				}
				if (!why && mr != m)
					why = "ckeepidx count differs";
			}
		}
		/* compaction: random kept subset (also none / all / a kept prefix) */
		int m = 0;
		for (int i = 0; i < n; i++)
			if (rep == 0 ? 0 : rep == 1 ? 1 : rep == 2 ? i < n / 2 : urand() < 0.4)
				idx[m++] = i;
		for (size_t i = 0; i < (size_t)n * ld * esz; i++)
			K[i] = (char)(urand() * 256), V[i] = (char)(urand() * 256);
		for (int i = 0; i < n; i++)
			pos[i] = 5 * i + 3, st[i] = (float)urand(), st[n + 7 + i] = (float)urand();
		memcpy(K0, K, (size_t)n * ld * esz), memcpy(V0, V, (size_t)n * ld * esz), memcpy(pos0, pos, (size_t)n * 4);
		memcpy(st0, st, (size_t)2 * (n + 7) * 4);
		A->compact(K, V, (int64_t)ld, idx, m, rep == 4 ? NULL : pos, rep == 3 ? NULL : st, rep == 3 ? 0 : 2, n + 7);
		for (int i = 0; i < m && !why; i++) {
			size_t a = (size_t)i * ld * esz, s0 = (size_t)idx[i] * ld * esz;
			if (memcmp(K + a, K0 + s0, (size_t)d * esz) || memcmp(V + a, V0 + s0, (size_t)d * esz))
				why = "compacted K/V row differs";
			else if (memcmp(K + a + d * esz, K0 + a + d * esz, 8 * esz))
				why = "compaction wrote into the row padding";
			else if (rep != 4 && pos[i] != pos0[idx[i]])
				why = "compacted pos differs";
			else if (rep != 3 && (st[i] != st0[idx[i]] || st[n + 7 + i] != st0[n + 7 + idx[i]]))
				why = "compacted state differs";
		}
		for (int i = m; i < n && !why; i++)
			if (memcmp(K + (size_t)i * ld * esz, K0 + (size_t)i * ld * esz, ld * esz) || (rep == 4 && pos[i] != pos0[i]))
				why = "compaction wrote past the kept rows";
	}
	if (why)
		printf("FAIL %s: %s\n", name, why), nfail++;
	else
		npass++;
	free(sc), free(key), free(ref), free(srt), free(idx), free(pos), free(pos0);
	free(K), free(V), free(K0), free(V0), free(st), free(st0);
	dlclose(dl);
}

/* negative tests: corrupted artifacts, bad layouts */
/* --- generated token_map loops (tmap) against the reference's elementwise ops ----------------- */

/* A token_map kernel case runs when its name passes the filter and the CPU has the target's
** features (else a skip that says so). */
static int tmap_wanted(const char *name, const kvcc_spec *spec, const char *host)
{
	if (only && !strstr(name, only))
		return 0;
	if (!kx_vecwidth(spec, host)) {
		printf("SKIP %s: this CPU lacks the features of target %s\n", name, kx_targetname(spec->target));
		nskip++;
		return 0;
	}
	return 1;
}

/* Writes the case's policy, compiles it for spec, opens the artifact and plans the artifact's
** own KIR: NULL, or what failed; *planned says whether kp needs ki_plan_free. */
static const char *tmap_artifact(const char *lua, const char *so, const char *src, const kvcc_spec *spec, void **dl,
                                 const kvcc_artifact **A, KiFn **f, KiPlan *kp, int *planned)
{
	KiErr e = { 0 };
	FILE *fp = fopen(lua, "w");
	if (!fp)
		return "cannot write the policy";
	fputs(src, fp), fclose(fp);
	if (kvcc_compile_so(lua, spec, so, 0) != 0 || !(*dl = dlopen(so, RTLD_NOW | RTLD_LOCAL)) ||
	    !(*A = dlsym(*dl, KVCC_DESC_SYMBOL)) || !(*A)->tmap || !(*f = ki_parse((*A)->kir, lua, &e)) ||
	    (*f)->nins > 60)
		return "compile/load";
	if (ki_plan(*f, kp, &e) != 0)
		return "plan";
	*planned = 1;
	return NULL;
}

/* a policy with the default cosine merge (kv.nearest {}) written to lua and compiled for spec into
** so, then opened (*dl, *A): NULL, or what failed */
static const char *cosine_artifact(const char *lua, const char *so, const kvcc_spec *spec, void **dl,
                                   const kvcc_artifact **A)
{
	const char *src = "local kv = require \"kvcc\"\nreturn kv.policy \"mbest_edge\" {\n"
	                  "  score = function(x) return x.K:sum(\"chan\") end,\n"
	                  "  select = kv.topk {},\n  merge = kv.nearest {},\n}\n";
	FILE *fp = fopen(lua, "w");
	if (!fp)
		return "cannot write the policy";
	fputs(src, fp), fclose(fp);
	if (kvcc_compile_so(lua, spec, so, 0) != 0 || !(*dl = dlopen(so, RTLD_NOW | RTLD_LOCAL)) ||
	    !(*A = dlsym(*dl, KVCC_DESC_SYMBOL)) || !(*A)->mbest || !(*A)->msimx || !(*A)->mscal)
		return "compile/load";
	return NULL;
}

/* a direct kernel case's verdict, its artifact closed and removed */
static void kcase_end(const char *name, const char *why, void *dl, const char *lua, const char *so)
{
	if (why)
		printf("FAIL %s: %s\n", name, why), nfail++;
	else
		npass++;
	if (dl)
		dlclose(dl);
	remove(lua), remove(so);
}

/* mbest of the default cosine (kv.nearest {}: sim = e·k / max(|e||k|, 1e-8)) against the formula
** written here in f32, on dots and norms that hold NaN, ±inf, ±0, 1e±30 and ordinary values (rows
** 0-19 ordinary only, 20-29 large, the rest any): per evicted row the kept token of the greatest similarity
** (NaN never, ties → the lower index) and its value, bit for bit; two tiles (64 + 36 kept) */
static void mbest_edge_case(int target, const char *host)
{
	static const float dv[] = { 1, -1, 2, 0.5f, 3, -3.25f, 7, 0.0f, -0.0f, NAN, INFINITY, -INFINITY, 1e30f, 1e-30f, -1e-30f, 3e30f, 2e29f };
	static const float nv[] = { 1, 2, 4, 0.5f, 3, 0.0f, NAN, INFINITY, 1e30f, 1e-30f, 1e20f, 3e20f, 7e19f };
	enum { NE = 40, NK = 100, NO = 7, NOD = 9 };
	char name[96], lua[96], so[96];
	snprintf(name, sizeof name, "mbest edge %s", kx_targetname(target));
	kvcc_spec spec = { KVCC_F32, 64, 1, target };
	if (!tmap_wanted(name, &spec, host))
		return;
	snprintf(lua, sizeof lua, "/tmp/kvcc-diff-mbest-%d.lua", (int)getpid());
	snprintf(so, sizeof so, "/tmp/kvcc-diff-mbest-%d-%d.so", (int)getpid(), target);
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	char whyb[200];
	const char *why = cosine_artifact(lua, so, &spec, &dl, &A);
	if (!why && (A->desc->nes != 1 || A->desc->nks != 1))
		why = "the cosine's row scalars are not one norm per side";
	static float S[NE * 64 * 2], es[NE], ks[NK + 64], lv[NE * 16];
	static int32_t li[NE * 16];
	int W = why ? 1 : A->desc->vec_width;
	uint32_t r = 12345;
	for (int q = 0; !why && q < NE; q++) {
		/* rows 20-29: dots 3e30, 2e29 against kept norms 7e19-3e20 from token 64 on (products past
		** the f32 range; their first tile NaN) */
		int big = q >= 20 && q < 30, od = q < 20 ? NOD - 2 : NOD + 8, on = q < 20 ? NO - 2 : NO + 6;
		for (int j = 0; j < 2 * 64; j++)
			r = r * 1103515245u + 12345u,
			S[q * 128 + j] = !big ? dv[(r >> 16) % (unsigned)od] : j < 64 ? NAN : dv[NOD + 6 + (r >> 16) % 2u];
		r = r * 1103515245u + 12345u, es[q] = nv[(r >> 16) % (unsigned)(big ? NO - 2 : on)];
	}
	for (int k = 0; k < NK + 64; k++)
		r = r * 1103515245u + 12345u, ks[k] = nv[k < 50 ? (r >> 16) % (NO - 2u) : k < 64 ? (r >> 16) % (NO + 6u)
		                                                       : NO + 3 + (r >> 16) % 3u];
	if (!why) {
		for (int i = 0; i < NE * W; i++)
			lv[i] = -INFINITY, li[i] = -1;
		static float T[NE * 64];
		for (int t = 0; t < 2; t++) {
			for (int q = 0; q < NE; q++)
				memcpy(T + q * 64, S + q * 128 + t * 64, 64 * sizeof(float));
			A->mbest(T, NE, t ? NK - 64 : 64, t * 64, es, NE, ks, NK, NULL, lv, li);
		}
	}
	for (int q = 0; !why && q < NE; q++) {
		float bv = -INFINITY, gv = -INFINITY;
		int bi = -1, gi = -1;
		for (int k = 0; k < NK; k++) {
			float p = es[q] * ks[k], den = p > 1e-8f ? p : isnan(p) ? p : 1e-8f;
			float sim = S[q * 128 + k] / den;
			if (!isnan(sim) && (bi < 0 || sim > bv))
				bv = sim, bi = k;
		}
		for (int l = 0; l < W; l++)   /* the runtime's reduction of the lanes */
			if (li[q * W + l] >= 0 && (gi < 0 || lv[q * W + l] > gv || (lv[q * W + l] == gv && li[q * W + l] < gi)))
				gv = lv[q * W + l], gi = li[q * W + l];
		if (gi != bi || (bi >= 0 && memcmp(&gv, &bv, 4))) {
			snprintf(whyb, sizeof whyb, "evicted row %d: kept %d sim %g, the formula's kept %d sim %g", q, gi,
			         (double)gv, bi, (double)bv);
			why = whyb;
		}
	}
	kcase_end(name, why, dl, lua, so);
}

/* msimx (codegen/x86/msimx.c: merge nearest's AMX similarity + arg-max, issue 12) of the default
** cosine on bf16 rows, head_dim 64, 70 evicted × 100 kept (partial tiles on both sides), against
** the formula in double here: per evicted row the kept token of the greatest e·k / max(|e||k|,
** 1e-8) where its top two differ by more than 1e-5 (relative), and its dot e·k (to 1e-5); kept
** rows 7 and 41 equal and evicted row 5 equal to them: an exact tie → 7; then a zero evicted row
** and a NaN kept row: msimx declines (1: the caller's qkt + mbest) */
static uint16_t bfh(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float bff(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* an msimx case's artifact (cosine_artifact at /tmp/kvcc-diff-TAG-PID.{lua,so}): 1 when the case
** does not run (filtered out, or SKIP: no AMX), else 0 with *why the compile's failure or NULL */
static int msimx_open(const char *name, const char *tag, const kvcc_spec *spec, const char *host, char lua[96],
                      char so[96], void **dl, const kvcc_artifact **A, const char **why)
{
	if (!tmap_wanted(name, spec, host))
		return 1;
	snprintf(lua, 96, "/tmp/kvcc-diff-%s-%d.lua", tag, (int)getpid());
	snprintf(so, 96, "/tmp/kvcc-diff-%s-%d.so", tag, (int)getpid());
	*why = cosine_artifact(lua, so, spec, dl, A);
	if (!*why && (!((*A)->desc->flags & KA_FAMX) || kr_amx_enable() != 0)) {
		printf("SKIP %s: no AMX (kx_amx, or the OS refuses the tile state): msimx is a stub\n", name);
		nskip++;
		dlclose(*dl), remove(lua), remove(so);
		return 1;
	}
	return 0;
}

static void msimx_case(const char *host)
{
	enum { NE = 70, NK = 100, D = 64 };
	const char *name = "msimx cosine bf16 d=64 native", *why = NULL;
	char lua[96], so[96], whyb[200];
	kvcc_spec spec = { KVCC_BF16, D, 1, KVCC_TARGET_NATIVE };
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	if (msimx_open(name, "msimx", &spec, host, lua, so, &dl, &A, &why))
		return;
	/* the workspace parts 64-byte aligned, as runtime/merge.c's layout gives them (msimx stores
	** the packed rows with aligned vector stores) */
	static _Alignas(64) uint16_t K[NK * D], E[NE * D], V[(NK + NE) * D];
	static _Alignas(64) float es[2 * NE + 64], ks[2 * NK + 64], kinv[NK + 64], bkey[NE + 64], bdot[NE + 64];
	static _Alignas(64) int32_t bidx[NE + 64];
	static _Alignas(64) uint16_t Ep[(NE + NK + 64) * D];
	uint32_t r = 777;
	for (int i = 0; i < NK * D; i++)
		r = r * 1103515245u + 12345u, K[i] = bfh((float)((int)(r >> 16) % 2001 - 1000) / 500.0f);
	for (int i = 0; i < NE * D; i++)
		r = r * 1103515245u + 12345u, E[i] = bfh((float)((int)(r >> 16) % 2001 - 1000) / 500.0f);
	memcpy(K + 41 * D, K + 7 * D, D * 2), memcpy(E + 5 * D, K + 7 * D, D * 2);
	for (int pass = 0; !why && pass < 3; pass++) {
		if (pass == 1)
			memset(E + 9 * D, 0, D * 2);                           /* |e| = 0: the clamp */
		if (pass == 2)
			memcpy(E + 9 * D, E + 10 * D, D * 2), K[60 * D + 3] = 0x7fc0;   /* NaN */
		A->mscal(E, V, D, NE, 0, NULL, es, NE);
		A->mscal(K, V, D, NK, 1, NULL, ks, NK);
		int64_t rc = A->msimx(K, D, NK, E, NE, es, ks, Ep, kinv, bkey, bdot, bidx);
		if (rc != (pass ? 1 : 0)) {
			snprintf(whyb, sizeof whyb, "pass %d: msimx returned %lld", pass, (long long)rc);
			why = whyb;
		}
		for (int e = 0; !why && !pass && e < NE; e++) {
			double best = -INFINITY, second = -INFINITY, bd = 0;
			int bi = -1;
			for (int k = 0; k < NK; k++) {
				double dot = 0, ne = 0, nk = 0;
				for (int c = 0; c < D; c++) {
					double x = bff(E[e * D + c]), y = bff(K[k * D + c]);
					dot += x * y, ne += x * x, nk += y * y;
				}
				double den = sqrt(ne) * sqrt(nk), sim = dot / (den > 1e-8 ? den : 1e-8);
				if (sim > best)
					second = best, best = sim, bi = k, bd = dot;
				else if (sim > second)
					second = sim;
			}
			int tie = e == 5;
			/* a mark (bkey NaN: the caller re-checks the row on the exact path) only at a near tie
			** of the formula (NK = 100: the kept rows past m in the last 32-row block must not
			** count as runners-up) */
			if (isnan(bkey[e]) && best - second > 1e-4 * fabs(best)) {
				snprintf(whyb, sizeof whyb, "evicted row %d marked as a near tie, its best two %.9g %.9g", e, best,
				         second);
				why = whyb;
			}
			if (!why && (tie || best - second > 1e-5 * fabs(best)) && (bidx[e] != bi || fabs(bdot[e] - bd) > 1e-5 * fabs(bd) + 1e-6)) {
				snprintf(whyb, sizeof whyb, "evicted row %d: kept %d dot %g, the formula's kept %d dot %g", e,
				         (int)bidx[e], (double)bdot[e], bi, bd);
				why = whyb;
			}
		}
	}
	kcase_end(name, why, dl, lua, so);
}

/* msimx's near ties (issue 12, session 12): kept rows in pairs k, 3k (small integers / 4: exact in
** bf16, every dot exact in f32 whatever the order), evicted rows 4k + {-1, 0, 1} per channel, so that
** the top two of a row are often the pair, mathematically tied, and the f32 rounding alone orders
** them: msimx's ranking key fl(e·k · fl(1/B)) and the policy's similarity fl(e·k / fl(max(A B, c)))
** (the qkt + mbest path, written here in f32 from the kernels' row norms es / ks) then pick
** different kept tokens for some rows. Checked: msimx applies (0); every row it does not mark (bkey
** NaN: re-checked by the caller) has the similarity's arg-max (ties → the lower index) and its exact
** dot; the data has such flips (else the case proves nothing) and each is marked. Then the whole
** merge through the runtime (score x.t: the newer half kept): the merged cache bit for bit the same
** with and without msimx (KVCC_MSIMX=0). */
static void msimx_ties_case(const char *host)
{
	enum { P = 64, NK = 2 * P, NE = 256, D = 64 };
	const char *name = "msimx near ties bf16 d=64 native", *why = NULL;
	char lua[96], so[96], whyb[240];
	kvcc_spec spec = { KVCC_BF16, D, 1, KVCC_TARGET_NATIVE };
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	if (msimx_open(name, "msimxt", &spec, host, lua, so, &dl, &A, &why))
		return;
	/* the cache: evicted rows 0 .. NE-1, kept pairs after them (the runtime part keeps the newer half) */
	static _Alignas(64) uint16_t C[(NE + NK) * D], V[(NE + NK) * D], C2[(NE + NK) * D], V2[(NE + NK) * D];
	static _Alignas(64) float es[2 * NE + 64], ks[2 * NK + 64], kinv[NK + 64], bkey[NE + 64], bdot[NE + 64];
	static _Alignas(64) int32_t bidx[NE + 64];
	static _Alignas(64) uint16_t Ep[(NE + NK + 64) * D];
	uint16_t *K = C + NE * D, *E = C;
	uint32_t r = 4242;
	for (int i = 0; i < P; i++)
		for (int c = 0; c < D; c++) {
			r = r * 1103515245u + 12345u;
			int x = (int)((r >> 16) % 7) - 3;
			K[(2 * i) * D + c] = bfh((float)x / 4), K[(2 * i + 1) * D + c] = bfh(3.0f * (float)x / 4);
		}
	for (int e = 0; e < NE; e++)
		for (int c = 0; c < D; c++) {
			r = r * 1103515245u + 12345u;
			E[e * D + c] = bfh(bff(K[(2 * (e % P)) * D + c]) * 4 + (float)((int)((r >> 16) % 3) - 1));
		}
	for (int i = 0; i < (NE + NK) * D; i++)
		r = r * 1103515245u + 12345u, V[i] = bfh((float)((int)((r >> 16) % 2001) - 1000) / 500.0f);
	int flips = 0, marked = 0;
	if (!why) {
		A->mscal(E, V, D, NE, 0, NULL, es, NE);
		A->mscal(K, V, D, NK, 1, NULL, ks, NK);
		int64_t rc = A->msimx(K, D, NK, E, NE, es, ks, Ep, kinv, bkey, bdot, bidx);
		if (rc != 0)
			snprintf(whyb, sizeof whyb, "msimx returned %lld", (long long)rc), why = whyb;
	}
	for (int e = 0; !why && e < NE; e++) {
		int bs = -1, bk = -1;
		float vs = 0, vk = 0, dots[NK];
		for (int k = 0; k < NK; k++) {
			double dot = 0;
			for (int c = 0; c < D; c++)
				dot += (double)bff(E[e * D + c]) * bff(K[k * D + c]);
			dots[k] = (float)dot;                    /* exact: integers / 4 */
			float den = es[e] * ks[k], sim = dots[k] / (den > 1e-8f ? den : 1e-8f), key = dots[k] * (1.0f / ks[k]);
			if (bs < 0 || sim > vs)
				bs = k, vs = sim;
			if (bk < 0 || key > vk)
				bk = k, vk = key;
		}
		int mk = isnan(bkey[e]);
		marked += mk, flips += bs != bk;
		if (bs != bk && !mk)
			snprintf(whyb, sizeof whyb, "evicted row %d: key form picks %d, the similarity %d, not marked (kernel: %d)", e,
			         bk, bs, (int)bidx[e]), why = whyb;
		else if (!mk && (bidx[e] != bs || bdot[e] != dots[bs]))
			snprintf(whyb, sizeof whyb, "evicted row %d: kept %d dot %a, the similarity's kept %d dot %a", e, (int)bidx[e],
			         (double)bdot[e], bs, (double)dots[bs]), why = whyb;
	}
	if (!why && !flips)
		why = "no row whose key form and similarity disagree: the data proves nothing";
	if (!why) {   /* the runtime's merge: msimx + re-check vs the tiles alone */
		FILE *fp = fopen(lua, "w");
		kvcc_policy *pol = NULL;
		kvcc_plan *pl = NULL;
		if (fp)
			fputs("local kv = require \"kvcc\"\nreturn kv.policy \"ties\" {\n  score = function(x) return x.t end,\n"
			      "  select = kv.topk {},\n  merge = kv.nearest {},\n}\n", fp), fclose(fp);
		kvcc_layout lay = { KVCC_BF16, 1, 1, D, NE + NK, (int64_t)(NE + NK) * D, (int64_t)(NE + NK) * D, D };
		if (!fp || kvcc_compile_file(lua, &spec, &pol) != 0 || kvcc_plan_create(pol, &lay, 0, 1, &pl) != 0)
			why = "compile / plan of the x.t policy";
		const char *old = getenv("KVCC_MSIMX");
		char oldc[64];
		int had = old != NULL;
		snprintf(oldc, sizeof oldc, "%s", old ? old : "");
		memcpy(C2, C, sizeof C), memcpy(V2, V, sizeof V);
		for (int mode = 0; !why && mode < 2; mode++) {
			uint16_t *k = mode ? C2 : C, *v = mode ? V2 : V;
			setenv("KVCC_MSIMX", mode ? "0" : "1", 1);
			int32_t pos[NE + NK], len = NE + NK;
			for (int t = 0; t < NE + NK; t++)
				pos[t] = t;
			kvcc_cache c = { k, v, pos, &len, NULL };
			kvcc_obs o = { 0, NULL, NULL, NULL };
			kvcc_args a = { .ratio = 0, .budget = NK };
			if (kvcc_compress(pl, &c, &o, &a) != 0 || len != NK)
				why = "compress";
		}
		if (had)
			setenv("KVCC_MSIMX", oldc, 1);
		else
			unsetenv("KVCC_MSIMX");
		/* the runs above compacted and merged C, V in place (the first) and C2, V2 (the second) */
		for (int i = 0; !why && i < NK * D; i++)
			if (C[i] != C2[i] || V[i] != V2[i])
				snprintf(whyb, sizeof whyb, "merged row %d channel %d: msimx 0x%04x / 0x%04x, KVCC_MSIMX=0 0x%04x / 0x%04x",
				         i / D, i % D, C[i], V[i], C2[i], V2[i]), why = whyb;
		kvcc_plan_destroy(pl);
		kvcc_close(pol);
	}
	if (!why)
		printf("  (%s: %d of %d rows flipped between the key form and the similarity, %d marked)\n", name, flips, NE,
		       marked);
	kcase_end(name, why, dl, lua, so);
}

/* mscal (codegen/x86/merge.c, issue 12 session 11: whole blocks of 16 rows in the lanes, the
** rest one row at a time) of the default cosine's row norm, both sides, 37 rows at token stride
** 2 d (the gaps hold NaN: a stride error shows): rows 32-36 (the scalar loop's) copy rows 3, 17,
** 23 (a NaN), 21 (overflows to inf) and 0 (the first block's), so each pair must come out the same
** bit for bit; every ordinary row against sqrt(sum x^2) in double (relative 1e-5), row 22 (zero)
** 0, row 23 NaN, row 21 inf */
static void mscal16_case(int dt, int D, const char *host)
{
	enum { N = 37 };
	char name[96], lua[96], so[96], whyb[200];
	snprintf(name, sizeof name, "mscal16 cosine %s d=%d native", dt == KVCC_F32 ? "f32" : "bf16", D);
	kvcc_spec spec = { dt, D, 1, KVCC_TARGET_NATIVE };
	if (!tmap_wanted(name, &spec, host))
		return;
	snprintf(lua, sizeof lua, "/tmp/kvcc-diff-mscal16-%d.lua", (int)getpid());
	snprintf(so, sizeof so, "/tmp/kvcc-diff-mscal16-%d.so", (int)getpid());
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	const char *why = cosine_artifact(lua, so, &spec, &dl, &A);
	static float X[N * 2 * 128], out[3 * N];
	static uint16_t Xh[N * 2 * 128];
	static const int cp[5][2] = { { 32, 3 }, { 33, 17 }, { 34, 23 }, { 35, 21 }, { 36, 0 } };
	uint32_t r = 4242;
	for (int i = 0; i < N * 2 * D; i++) {
		r = r * 1103515245u + 12345u;
		int t = i / (2 * D), c = i % (2 * D);
		X[i] = c >= D ? NAN : t == 21 ? 1e20f : t == 22 ? 0.0f : (float)((int)(r >> 16) % 2001 - 1000) / 500.0f;
	}
	X[23 * 2 * D + 5] = NAN;
	for (int k = 0; k < 5; k++)
		memcpy(X + cp[k][0] * 2 * D, X + cp[k][1] * 2 * D, (size_t)D * sizeof *X);
	for (int i = 0; i < N * 2 * D; i++)
		Xh[i] = bfh(X[i]);
	const void *K = dt == KVCC_F32 ? (const void *)X : (const void *)Xh;
	for (int side = 0; !why && side < 2; side++) {
		for (int i = 0; i < 3 * N; i++)
			out[i] = -7;
		A->mscal(K, K, 2 * D, N, side, NULL, out, N);
		for (int k = 0; !why && k < 5; k++)
			if (memcmp(&out[cp[k][0]], &out[cp[k][1]], 4)) {
				snprintf(whyb, sizeof whyb, "side %d: row %d (scalar loop) %a, row %d (block) %a", side, cp[k][0],
				         (double)out[cp[k][0]], cp[k][1], (double)out[cp[k][1]]);
				why = whyb;
			}
		for (int i = 0; !why && i < N; i++) {
			double s = 0;
			for (int c = 0; c < D; c++) {
				double x = dt == KVCC_F32 ? X[i * 2 * D + c] : bff(Xh[i * 2 * D + c]);
				s += x * x;
			}
			double want = sqrt(s), got = out[i];
			int ok = i == 21 || i == 35 ? isinf(got) && got > 0 : i == 23 || i == 34 ? isnan(got)
			         : fabs(got - want) <= 1e-5 * want;
			if (!ok) {
				snprintf(whyb, sizeof whyb, "side %d: row %d norm %g, the formula's %g", side, i, got, want);
				why = whyb;
			}
		}
	}
	kcase_end(name, why, dl, lua, so);
}

/* one policy per op over per-token states a, b, c (leaves the loop reads through its context);
** the test hands the generated loop its own state arrays: NaN, ±inf, ±0, ordinary values, every
** pair */
static void tmap_case(int opi, int target, const char *host)
{
	static const struct { const char *name, *expr; } ops[] = {
		{ "neg", "-a" }, { "exp", "a:exp()" }, { "log", "a:log()" }, { "sqrt", "a:sqrt()" }, { "abs", "a:abs()" },
		{ "add", "a + b" }, { "sub", "a - b" }, { "mul", "a * b" }, { "div", "a / b" }, { "pow", "a ^ b" },
		{ "max", "a:max(b)" }, { "min", "a:min(b)" }, { "lt", "a:lt(b)" }, { "le", "a:le(b)" },
		{ "eq", "a:eq(b)" }, { "ne", "a:ne(b)" }, { "where", "kv.where(a, b, c)" },
	};
	static const float sv[] = { NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1, -1, 2, 0.5f, -3.25f, 1e30f, 7 };
	enum { NS = sizeof sv / sizeof sv[0], N = NS * NS };
	char name[160], lua[96], so[96], src[640];
	snprintf(name, sizeof name, "tmap %s %s", ops[opi].name, kx_targetname(target));
	kvcc_spec spec = { KVCC_F32, 64, 1, target };
	if (!tmap_wanted(name, &spec, host))
		return;
	snprintf(lua, sizeof lua, "/tmp/kvcc-diff-tmap-%d-%d.lua", (int)getpid(), opi);
	snprintf(so, sizeof so, "/tmp/kvcc-diff-tmap-%d-%d-%d.so", (int)getpid(), opi, target);
	snprintf(src, sizeof src,
	         "local kv = require \"kvcc\"\nreturn kv.policy \"tmap_%s\" {\n"
	         "  state = { a = kv.token_state(0), b = kv.token_state(0), c = kv.token_state(0) },\n"
	         "  score = function(x, st)\n    local a, b, c = st.a, st.b, st.c\n    return %s\n  end,\n"
	         "  observe = function(x, st) st.a, st.b, st.c = st.a, st.b, st.c end,\n"
	         "  select = kv.topk {},\n  when = kv.decode { every = 1 },\n}\n", ops[opi].name, ops[opi].expr);
	KiFn *f = NULL;
	KiPlan kp;
	int planned = 0;
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	char whyb[200];
	float *vals[64] = { 0 }, *st = NULL;
	const char *why = tmap_artifact(lua, so, src, &spec, &dl, &A, &f, &kp, &planned);
	if (!why && (kp.ngen != 1 || kp.ngenins != ki_nargs(f->ins[KI_RIDX(f->score)].op) + 1))
		why = "the op and its state leaves are not one generated loop";
	int s = -1, o = why ? -1 : KI_RIDX(f->score);
	for (int i = 0; !why && i < f->nins; i++)
		if (kp.tgen[i] == KI_GEN_START)
			s = i;
	if (!why && (s < 0 || !kp.tout[o] || kp.tout[s]))
		why = "not one loop storing only the score";
	for (int i = 0; !why && i < f->nins; i++)
		if (!(vals[i] = calloc(N + 1, sizeof(float))))
			why = "out of memory";
	if (!why && !(st = calloc(3 * N, sizeof(float))))
		why = "out of memory";
	if (!why) {
		const KiIns *in = &f->ins[o];
		for (int k = 0; k < ki_nargs(in->op); k++) {
			KiRef r = in->arg[k];
			if (KI_RKIND(r) != RK_INS || f->ins[KI_RIDX(r)].op != KO_state) {
				why = "operand is not a state";
				break;
			}
			for (int t = 0; t < N; t++)   /* a: major, b: minor, c: reversed */
				st[f->ins[KI_RIDX(r)].aux * N + t] = sv[k == 0 ? t / NS : k == 1 ? t % NS : (N - 1 - t) % NS];
		}
		for (int n = N; !why && n >= N - 20; n -= 7) {     /* vector tails */
			for (int t = 0; t < N; t++)
				vals[o][t] = 12345;
			kvcc_tmap_ctx c = { .vals = vals, .state = st, .n = n, .sstride = N };
			A->tmap(s, &c);
			for (int t = 0; t < N && !why; t++) {
				float x = vals[o][t];
				if (t >= n) {
					if (x != 12345)
						why = "wrote past n";
					continue;
				}
				double op3[3] = { 0, 0, 0 };
				for (int k = 0; k < ki_nargs(in->op); k++)
					op3[k] = st[f->ins[KI_RIDX(in->arg[k])].aux * N + t];
				float ref = (float)ki_evalew(in->op, op3[0], op3[1], op3[2]);
				int exact = in->op != KO_exp && in->op != KO_log && in->op != KO_pow;
				uint32_t ux, ur;
				memcpy(&ux, &x, 4), memcpy(&ur, &ref, 4);
				int ok = isnan(x) ? isnan(ref) : exact ? ux == ur
				                                      : x == ref || (isfinite(ref) && fabsf(x - ref) <= 2e-7f * fabsf(ref));
				if (!ok) {
					snprintf(whyb, sizeof whyb, "n=%d t=%d: (%g, %g, %g) -> %g, reference %g", n, t, op3[0], op3[1],
					         op3[2], (double)x, (double)ref);
					why = whyb;
				}
			}
		}
	}
	if (why)
		printf("FAIL %s: %s\n", name, why), nfail++;
	else
		npass++;
	for (int i = 0; i < 64; i++)
		free(vals[i]);
	free(st);
	if (dl)
		dlclose(dl);
	if (planned)
		ki_plan_free(&kp);
	ki_free(f);
	unlink(so), unlink(lua);
}

/* token reductions and pools in generated loops against the interpreter (ki_run) on per-token
** states a, b that hold NaN, ±inf, ±0 or ordinary values; n from 1 (below every vector width)
** up, pool windows wider than n. Every loop of the score runs in order, as the runtime does. */
static void tmap_edge_case(int ei, int target, const char *host)
{
	static const char *const ex[] = {
		"kv.avgpool(a, 3)", "kv.maxpool(a, 5) - b", "kv.avgpool(a, 301) + kv.maxpool(b, 301)",
		"a + b:max(\"token\")", "a:sum(\"token\") + b", "b - a:min(\"token\")", "a:mean(\"token\") * b",
		"a:norm(\"token\") + kv.maxpool(b, 2)",
	};
	/* 1e10: large, but its squares stay finite in f32 (no f32-only overflow against the double
	** reference) */
	static const float sv[] = { NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1, -1, 2, 0.5f, -3.25f, 7, 1e10f };
	static const int ns[] = { 1, 2, 3, 5, 8, 13, 17, 33, 40 };
	enum { NS = sizeof sv / sizeof sv[0], NMAX = 40 };
	char name[200], lua[96], so[96], src[700];
	snprintf(name, sizeof name, "tmap edge %s %s", ex[ei], kx_targetname(target));
	kvcc_spec spec = { KVCC_F32, 8, 1, target };
	if (!tmap_wanted(name, &spec, host))
		return;
	snprintf(lua, sizeof lua, "/tmp/kvcc-diff-edge-%d-%d.lua", (int)getpid(), ei);
	snprintf(so, sizeof so, "/tmp/kvcc-diff-edge-%d-%d-%d.so", (int)getpid(), ei, target);
	snprintf(src, sizeof src,
	         "local kv = require \"kvcc\"\nreturn kv.policy \"tmap_edge\" {\n"
	         "  state = { a = kv.token_state(0), b = kv.token_state(0) },\n"
	         "  observe = function(x, st) st.a, st.b = st.a, st.b end,\n"
	         "  score = function(x, st)\n    local a, b = st.a, st.b\n    return %s\n  end,\n"
	         "  select = kv.topk {},\n  when = kv.decode { every = 1 },\n}\n", ex[ei]);
	KiErr e = { 0 };
	KiFn *f = NULL;
	KiPlan kp;
	int planned = 0;
	void *dl = NULL;
	const kvcc_artifact *A = NULL;
	char whyb[300];
	float *vals[64] = { 0 }, st[2 * NMAX], KV[NMAX * 8] = { 0 };
	double dst[2 * NMAX];
	const char *why = tmap_artifact(lua, so, src, &spec, &dl, &A, &f, &kp, &planned);
	if (!why && !kp.ngen)
		why = "not generated";
	for (int i = 0; !why && i < f->nins; i++)
		if (!(vals[i] = calloc(NMAX + 1, sizeof(float))))
			why = "out of memory";
	for (int v = 0; v < 2 && !why; v++)           /* v 0: special values, 1: ordinary ones */
		for (size_t ni = 0; ni < sizeof ns / sizeof ns[0] && !why; ni++) {
			int n = ns[ni], o = KI_RIDX(f->score);
			for (int t = 0; t < 2 * NMAX; t++) {
				int k = (t * 5 + ei + (int)ni) % NS;
				st[t] = v ? sv[6 + k % (NS - 6)] * (float)(t % 7 + 1) : sv[k];
			}
			for (int s = 0; s < 2; s++)
				for (int t = 0; t < n; t++)
					dst[s * n + t] = st[s * NMAX + t];
			kvcc_tmap_ctx c = { .vals = vals, .state = st, .n = n, .sstride = NMAX };
			for (int i = 0; i < f->nins; i++)
				if (kp.tgen[i] == KI_GEN_START)
					A->tmap(i, &c);
			KiCase kc = { .L = 1, .H = 1, .G = 1, .d = 8, .n = n, .K = KV, .V = KV, .state = dst, .dtype = KVCC_F32,
			              .ratio = 0.5, .budget = -1 };
			KiResult r = { 0 };
			if (ki_run(f, &kc, &r, &e) != 0) {
				snprintf(whyb, sizeof whyb, "interpreter: %.200s", e.msg);
				why = whyb;
			}
			for (int t = 0; t < n && !why; t++) {
				double x = vals[o][t], ref = (float)r.scores[t];
				if (isnan(x) ? !isnan(ref) : !(x == ref || fabs(x - ref) <= 1e-5 * fmax(1, fabs(ref)))) {
					snprintf(whyb, sizeof whyb, "values %d n=%d t=%d: %g, reference %g", v, n, t, x, ref);
					why = whyb;
				}
			}
			ki_result_free(&r);
		}
	if (why)
		printf("FAIL %s: %s\n", name, why), nfail++;
	else
		npass++;
	for (int i = 0; i < 64; i++)
		free(vals[i]);
	if (dl)
		dlclose(dl);
	if (planned)
		ki_plan_free(&kp);
	ki_free(f);
	unlink(so), unlink(lua);
}

/* Random valid policies that read x.Q: those that read it only as x.Q:dot(x.K, "chan") plan,
** compile and match the interpreter (run_case); any other use of x.Q is refused by the plan
** (what `kvcc check` runs) with a position, and compile refuses it too -- before, such a
** policy compiled and kvcc_compress read a query buffer that was never set. */
static void qread_case(int k, const char *host)
{
	static const char *const qterm[] = {
		"x.Q:sum(\"chan\"):mean(\"obs\"):mean(\"group\")",
		"x.Q:dot(x.Q, \"chan\"):mean(\"obs\"):sum(\"group\")",
		"x.Q:norm(\"chan\"):max(\"obs\"):min(\"group\")",
		"(x.Q * x.scale):abs():sum(\"chan\"):mean(\"obs\"):mean(\"group\")",
		"kv.softmax(x.Q:sum(\"chan\"), \"obs\"):max(\"obs\"):sum(\"group\")",
		"x.Q:mean(\"group\"):dot(x.K:mean(\"token\"), \"chan\"):mean(\"obs\")",
		"x.Q:max(\"chan\"):max(\"obs\"):max(\"group\")",
	};
	static const char *const base[] = {
		"-x.K:norm(\"chan\")",
		"kv.softmax(x.Q:dot(x.K, \"chan\") * x.scale, \"token\"):mean(\"obs\"):mean(\"group\")",
		"kv.softmax(x.K:dot(x.Q, \"chan\"), \"token\"):sum(\"obs\"):max(\"group\") + x.t * 0.01",
	};
	int nq = sizeof qterm / sizeof qterm[0], nb = sizeof base / sizeof base[0];
	int control = k % 3 == 0, qi = (int)(urand() * nq), bi = (int)(urand() * nb);
	double c = 0.25 + urand();
	char name[300], path[96], lua[104], src[900];
	snprintf(path, sizeof path, "/tmp/kvcc-diff-qread-%d-%d", (int)getpid(), k);
	snprintf(lua, sizeof lua, "%s.lua", path);
	snprintf(src, sizeof src, "local kv = require \"kvcc\"\nlocal P = kv.params { window = 4 }\n"
	         "return kv.policy \"qread\" {\n  score = function(x)\n    return %s%s%.3g * %s\n  end,\n"
	         "  select = kv.topk { keep_recent = 2 },\n}\n", base[bi], control ? "" : " + ",
	         control ? 0.0 : c, control ? "" : qterm[qi]);
	if (control)      /* the base alone: x.Q only through the dot (or not at all) */
		snprintf(src, sizeof src, "local kv = require \"kvcc\"\nlocal P = kv.params { window = 4 }\n"
		         "return kv.policy \"qread\" {\n  score = function(x)\n    return %s\n  end,\n"
		         "  select = kv.topk { keep_recent = 2 },\n}\n", base[bi]);
	snprintf(name, sizeof name, "qread: x.Q %s: %s", control ? "through the dot" : "elementwise",
	         control ? base[bi] : qterm[qi]);
	if (only && !strstr(name, only))
		return;
	FILE *fp = fopen(lua, "w");
	if (!fp || fputs(src, fp) < 0 || fclose(fp) != 0) {
		printf("FAIL %s: cannot write %s\n", name, lua), nfail++;
		return;
	}
	KiErr e = { 0 };
	KiFn *f = kd_loadfile(lua, NULL, &e);
	KiPlan kp;
	int planned = f && ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0 && ki_plan(f, &kp, &e) == 0;
	if (planned)
		ki_plan_free(&kp);
	ki_free(f);
	if (planned) {
		Cfg cf = { "qread", lua, KVCC_F32, 64, 2, KVCC_TARGET_NATIVE, NULL, 0 };
		int before = nfail;
		run_case(&cf, host);
		if (!control && nfail == before)
			printf("FAIL %s: planned and ran, but x.Q is read elementwise\n", name), nfail++;
	} else {
		kvcc_spec spec = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
		kvcc_policy *p = NULL;
		char where[120];
		snprintf(where, sizeof where, "%s:5:", lua);
		if (control)
			printf("FAIL %s: refused: %s\n", name, e.msg), nfail++;
		else if (!strstr(e.msg, where) || !strstr(e.msg, "the kernels read x.Q only as x.Q:dot(x.K"))
			printf("FAIL %s: check says %s\n", name, e.msg), nfail++;
		else if (kvcc_compile_file(lua, &spec, &p) == 0)
			printf("FAIL %s: check refuses it, compile does not\n", name), nfail++, kvcc_close(p);
		else
			npass++;
	}
	unlink(lua);
}

static void robustness(const char *host)
{
	(void)host;
	kvcc_spec s = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
	const char *so = "/tmp/kvcc-diff-knorm.so";
	int ok = kvcc_compile_so("policies/knorm.lua", &s, so, 0) == 0;
	kvcc_policy *p = NULL;
	ok = ok && kvcc_open(so, &p) == 0;
	kvcc_layout bad = { KVCC_F32, 1, 1, 64, 10, 640, 640, 32 };   /* token stride < head_dim */
	kvcc_plan *pl = NULL;
	ok = ok && kvcc_plan_create(p, &bad, 0, 1, &pl) == KVCC_EINVAL;
	kvcc_layout wrongd = { KVCC_F32, 1, 1, 32, 10, 320, 320, 32 };
	ok = ok && kvcc_plan_create(p, &wrongd, 0, 1, &pl) == KVCC_ESPEC;
	kvcc_layout lay = { KVCC_F32, 1, 1, 64, 10, 640, 640, 64 };
	float KV[640] = { 0 };
	int32_t len = 11;
	ok = ok && kvcc_plan_create(p, &lay, 0, 1, &pl) == 0;
	kvcc_cache c = { KV, KV, NULL, &len, NULL };
	kvcc_args a = { 0.5, -1, NULL, 1, NULL };
	ok = ok && kvcc_compress(pl, &c, NULL, &a) == KVCC_EINVAL;   /* len > capacity */
	len = 10;
	a.ratio = 1.5;
	ok = ok && kvcc_compress(pl, &c, NULL, &a) == KVCC_EINVAL;
	kvcc_plan_destroy(pl);
	kvcc_close(p);
	/* one byte of the embedded KIR text changed, then one of the descriptor blob: both refused
	** before loading by the file's checksum trailer (issue 10; the descriptor's own hash is
	** checked after it) */
	FILE *fp = fopen(so, "r+b");
	static char buf[1 << 20];
	size_t nb = fp ? fread(buf, 1, sizeof buf, fp) : 0;
	char *desc = nb ? memmem(buf, nb, KA_MAGIC, sizeof KA_MAGIC) : NULL;
	char *kir = nb ? memmem(buf, nb, "policy \"knorm\"", 14) : NULL;
	int rc = -1, rk = -1;
	if (fp && desc && kir) {
		kir[8] = 'X';
		fseek(fp, kir - buf, SEEK_SET);
		fwrite(kir, 1, 14, fp);
		fflush(fp);
		rk = kvcc_open(so, &p);
		kvcc_close(p);
		p = NULL;
		desc[20] ^= 1;                 /* inside KaHdr.version */
		fseek(fp, desc - buf, SEEK_SET);
		fwrite(desc, 1, 24, fp);
		fflush(fp);
		rc = kvcc_open(so, &p);
	}
	if (fp)
		fclose(fp);
	ok = ok && rk == KVCC_EARTIFACT && rc == KVCC_EARTIFACT && strstr(kvcc_last_error(), "checksum");
	ok = ok && kvcc_open("policies/knorm.lua", &p) == KVCC_EARTIFACT;
	remove(so);
	if (ok)
		npass++;
	else
		printf("FAIL robustness: %s\n", kvcc_last_error()), nfail++;
}

/* make check's sample (--every N): a case runs when the sum of its indices is a multiple of N */
static int sampled(int sum, int n) { return n <= 1 || sum % n == 0; }

/* NaN and inf logits in attn_score (issue 15, session 12; codegen/x86/gen.h KX_EXPNAN): SnapKV
** (policies/snapkv.lua, window 8) on keys with a NaN or an inf value against the interpreter. Head
** 0: a NaN in token 5's key, which every observation query sees: each softmax row's sum is NaN
** in the interpreter (compiler/interp.c evalsoftmax: the max skips NaN, `sum > 0` fails), so every
** probability of the row is 0 and all of the head's scores are 0. Head 1: a NaN in the last
** token's key, which only the last query sees (causal): that row adds nothing, the others are
** as usual. Head 2: +inf in token 70's key (a 64-token tile boundary behind): +inf logits where
** the query's value is positive (inf - inf: the row adds nothing), -inf (a 0) where negative.
** Through the one-pass score (sstate, sacce) and the two-pass one (KVCC_EXPWS=0: sstat, sacc),
** with each Q·K kind of bf16 (the default, AMX where the CPU has it; vdpbf16ps; f32 FMAs), f32
** storage and f16 on the AVX2 target (vexp's 8 lanes): the scores within the matrix's tolerance,
** the same kept sets. Session 11's kernels
** took exp(NaN) as 0, kept the rest of such a row and failed here; the max's reduction assumed
** no NaN (nnan) and could drop a lane. */
static void nankey_case(int dtype, int target, const char *cfg, int expws0, const char *host)
{
	char name[160];
	snprintf(name, sizeof name, "nan-key snapkv %s d=64 G=2 %s%s%s%s", ki_dtypename(dtype), kx_targetname(target),
	         cfg ? " config " : "", cfg ? cfg : "", expws0 ? " KVCC_EXPWS=0" : "");
	if (only && !strstr(name, only))
		return;
	kvcc_spec spec = { dtype, 64, 2, target };
	if (!kx_vecwidth(&spec, host)) {
		printf("SKIP %s: this CPU lacks the target's features\n", name);
		nskip++;
		return;
	}
	if (cfg && strstr(cfg, "dot1") && !kx_bf16dot(&spec, host, kx_vecwidth(&spec, host))) {
		printf("SKIP %s: no avx512bf16 here (or KVCC_BF16DOT=0): the vdpbf16ps Q·K is not generated\n", name);
		nskip++;
		return;
	}
	enum { L = 1, H = 3, G = 2, D = 64, N = 150, O = 8 };
	KiErr e = { 0 };
	KiFn *f = kd_loadfile("policies/snapkv.lua", NULL, &e);
	kvcc_policy *p = NULL;
	const char *oc = getenv("KVCC_CONFIG"), *ow = getenv("KVCC_EXPWS");
	char *ocs = oc ? strdup(oc) : NULL, *ows = ow ? strdup(ow) : NULL;
	if (cfg)
		setenv("KVCC_CONFIG", cfg, 1);
	int crc = f ? kvcc_compile_file("policies/snapkv.lua", &spec, &p) : -1;
	if (!f || ki_runpasses(f, KI_DEFAULT_PASSES, 0, &e, NULL, NULL) != 0 || crc != 0 || ki_findparam(f, "window") < 0) {
		printf("FAIL %s: load / compile: %s\n", name, f ? kvcc_last_error() : e.msg);
		nfail++;
		goto restore;
	}
	size_t nkv = (size_t)L * H * N * D, nq = (size_t)L * H * G * O * D, esz = dtype == KVCC_F32 ? 4 : 2;
	float *K = malloc(nkv * 4), *V = malloc(nkv * 4), *Q = malloc(nq * 4), *sc = malloc((size_t)L * H * N * 4);
	char *Ks = malloc(nkv * esz), *Vs = malloc(nkv * esz), *Qs = malloc(nq * esz);
	int32_t len[H], len0[H], pos[H * N];
	double par[32];
	for (int i = 0; i < f->npar && i < 32; i++)
		par[i] = f->par[i].def;
	par[ki_findparam(f, "window")] = O;
	for (size_t i = 0; i < nkv; i++)
		K[i] = ki_round((float)(urand() * 2 - 1), dtype), V[i] = ki_round((float)(urand() * 2 - 1), dtype);
	for (size_t i = 0; i < nq; i++)
		Q[i] = ki_round((float)(urand() * 4 - 2), dtype);
	K[((size_t)0 * N + 5) * D + 3] = NAN;
	K[((size_t)1 * N + N - 1) * D] = NAN;
	K[((size_t)2 * N + 70) * D + 1] = INFINITY;
	for (int k = 0; k < H; k++) {
		len0[k] = len[k] = N;
		for (int t = 0; t < N; t++)
			pos[k * N + t] = t;
	}
	for (size_t i = 0; i < nkv; i++)
		encode(K[i], dtype, Ks + i * esz), encode(V[i], dtype, Vs + i * esz);
	for (size_t i = 0; i < nq; i++)
		encode(Q[i], dtype, Qs + i * esz);
	KiCase c = { .L = L, .H = H, .G = G, .d = D, .n = N, .len = len0, .O = O, .K = K, .V = V, .Q = Q, .dtype = dtype,
	             .params = par, .ratio = 0.5, .budget = -1 };
	KiResult r = { 0 };
	kvcc_layout lay = { dtype, L, H, D, N, (int64_t)H * N * D, (int64_t)N * D, D };
	kvcc_plan *pl = NULL;
	if (expws0)
		setenv("KVCC_EXPWS", "0", 1);
	int rc = ki_run(f, &c, &r, &e);
	if (rc != 0)
		printf("FAIL %s: interpreter: %s\n", name, e.msg);
	else if (kvcc_plan_create(p, &lay, O, 1, &pl) != 0)
		printf("FAIL %s: plan: %s\n", name, kvcc_last_error()), rc = -1;
	else {
		kvcc_cache cache = { Ks, Vs, pos, len, NULL };
		kvcc_obs obs = { O, Qs, NULL, NULL };
		kvcc_args args = { 0.5, -1, par, 0, sc };
		if ((rc = kvcc_compress(pl, &cache, &obs, &args)) != 0)
			printf("FAIL %s: compress: %s\n", name, kvcc_last_error());
		kvcc_plan_destroy(pl);
	}
	int zeros = 0;
	for (int k = 0; k < H && rc == 0; k++) {
		double mx = 1;
		for (int t = 0; t < N; t++)
			if (isfinite(r.scores[(size_t)k * N + t]))
				mx = fmax(mx, fabs(r.scores[(size_t)k * N + t]));
		for (int t = 0; t < N && rc == 0; t++) {
			double a = sc[(size_t)k * N + t], b = r.scores[(size_t)k * N + t];
			zeros += k == 0 && b == 0;
			if (!(a == b || fabs(a - b) <= 1e-4 * mx) && !(isnan(a) && isnan(b)))
				printf("FAIL %s: score (head %d, token %d) x86 %.9g, interpreter %.9g\n", name, k, t, a, b), rc = -1;
		}
		for (int m = 0; m < len[k] && rc == 0; m++)
			if (len[k] != r.len[k] || pos[(size_t)k * N + m] != r.pos[(size_t)k * N + m])
				printf("FAIL %s: head %d keeps %d tokens (kept[%d] at %d), interpreter %d (%d)\n", name, k, len[k], m,
				       pos[(size_t)k * N + m], r.len[k], r.pos[(size_t)k * N + m]), rc = -1;
	}
	if (rc == 0 && zeros != N)   /* the interpreter's rule as this test reads it (not the code under test) */
		printf("FAIL %s: the interpreter's head 0 has %d of %d scores 0, expected all\n", name, zeros, N), rc = -1;
	rc == 0 ? npass++ : nfail++;
	ki_result_free(&r);
	free(K), free(V), free(Q), free(sc), free(Ks), free(Vs), free(Qs);
restore:
	if (ocs)
		setenv("KVCC_CONFIG", ocs, 1);
	else
		unsetenv("KVCC_CONFIG");
	if (ows)
		setenv("KVCC_EXPWS", ows, 1);
	else
		unsetenv("KVCC_EXPWS");
	free(ocs), free(ows);
	kvcc_close(p);
	ki_free(f);
}

int main(int argc, char **argv)
{
	/* [--every N] [NAME]: N > 1 samples the policy matrix (make check's time budget: case
	** (policy, dtype, head_dim, group) runs when their index sum is a multiple of N, so every
	** value of each runs; check-diff-full runs all); NAME runs only cases whose name has it */
	int every = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--every") && i + 1 < argc)
			every = atoi(argv[++i]) > 1 ? atoi(argv[i]) : 1;
		else
			only = argv[i];
	}
	static const int dims[] = { 8, 64, 96, 128 }, groups[] = { 1, 2, 4 };
	MfPolicy pols[MANIFEST_MAX], cps[MANIFEST_MAX];
	char why[256];
	int npol = mf_read("diff", pols, MANIFEST_MAX, why, sizeof why);
	int ncp = npol < 0 ? -1 : mf_read("chunk", cps, MANIFEST_MAX, why, sizeof why);
	if (npol < 0 || ncp < 0) {
		printf("FAIL manifest: %s\n0 passed, 1 failed, 0 skipped\n", why);
		return 1;
	}
	/* difffull: the policies only the full matrix (no --every) or a named policy runs (make check's time) */
	if (every == 1 || only) {
		MfPolicy extra[MANIFEST_MAX];
		int ne = mf_read("difffull", extra, MANIFEST_MAX, why, sizeof why);
		if (ne > MANIFEST_MAX - npol) {      /* never drop a policy silently */
			printf("FAIL manifest: more than %d policies with the -full ones\n0 passed, 1 failed, 0 skipped\n",
			       MANIFEST_MAX);
			return 1;
		}
		for (int e = 0; e < ne; e++)
			pols[npol++] = extra[e];
	}
	char *host = kx_hostfeatures();
	/* AMX (kx_amx): the default config runs the native bf16 cases with head_dim a multiple of 32
	** through the AMX Q·K tile; a host without it says so and counts a SKIP, never a pass */
	kvcc_spec amxs = { KVCC_BF16, 128, 4, KVCC_TARGET_NATIVE };
	const char *ecfg = getenv("KVCC_CONFIG");
	if (!kx_amx(&amxs, host, kx_vecwidth(&amxs, host))) {
		printf("SKIP AMX Q·K tile (tdpbf16ps): this CPU or its OS lacks amx-tile / amx-bf16; the native bf16 cases run "
		       "vdpbf16ps or f32 FMAs\n");
		nskip++;
	} else if (ecfg && strstr(ecfg, "amx0"))
		printf("AMX Q·K tile: off (KVCC_CONFIG=%s)\n", ecfg);
	else
		printf("AMX Q·K tile: the native bf16 cases with head_dim 64, 96, 128 run tdpbf16ps\n");
	/* merge rules (slower: the interpreter's pair-by-pair merge), the model schedules (5 layers;
	** prefixkv_bisect observes every position) and keep counts (select keep: one generated
	** function, the same on every spec) are sampled 3 times more sparsely in make check,
	** and their other targets for one dtype per policy */
	int mrg[MANIFEST_MAX], keepc[MANIFEST_MAX];
	for (int pi = 0; pi < npol; pi++) {
		KiErr me = { 0 };
		KiFn *mf = kd_loadfile(pols[pi].file, NULL, &me);
		mrg[pi] = mf && (mf->merge.kind != MG_drop || mf->sel.sched >= SCH_prefix || mf->sel.keep);
		keepc[pi] = mf && mf->sel.keep;
		ki_free(mf);
	}
	for (int pi = 0; pi < npol; pi++)
		for (int dt = 0; dt < 3; dt++)
			for (int di = 0; di < 4; di++)
				for (int gi = 0; gi < 3; gi++) {
					Cfg c = { pols[pi].name, pols[pi].file, dt, dims[di], groups[gi], KVCC_TARGET_NATIVE, NULL, 0 };
					int pe = every > 1 && mrg[pi] ? 3 * every : every;
					if ((pi + dt + di + gi) % pe == 0)
						run_case(&c, host);
				}
	if (every > 1)
		printf("the policy matrix sampled: 1 case in %d, of merge rules, model schedules and keep counts 1 in %d; the targets and "
		       "chunk values one dtype each (check-diff-full runs all)\n", every, 3 * every);
	/* the v3 / scalar / v4 targets: every dtype of each; sampled (make check), each target runs
	** once per policy, its dtype rotating with the policy and the target (a keep count's policy:
	** one target, rotating with the policy) */
	for (int pi = 0; pi < npol; pi++)
		for (int dt = 0; dt < 3; dt++) {
			const char *pn = pols[pi].name, *pf = pols[pi].file;
			Cfg tc[] = { { pn, pf, dt, 96, 2, KVCC_TARGET_V3, NULL, 0 }, { pn, pf, dt, 64, 4, KVCC_TARGET_SCALAR, NULL, 0 },
			             { pn, pf, dt, 128, 4, KVCC_TARGET_V4, NULL, 0 } };
			for (int k = 0; k < 3; k++)
				if (every == 1 || (keepc[pi] ? dt == pi % 3 && k == (pi + 1) % 3 : (pi + dt + k) % 3 == 0))
					run_case(&tc[k], host);
		}
	/* chunked selection: chunk 2, 3, 8 on odd and even lengths (partial last chunks), scopes
	** head / layer / model, sinks and recent protected (the manifest's chunk policies) */
	for (int pi = 0; pi < ncp; pi++) {
		const MfPolicy *m = &cps[pi];
		for (int ci = 0; ci < m->nval; ci++)
			for (int dt = 0; dt < 3; dt++) {
				const char *pp = m->param[0] ? m->param : NULL;
				Cfg c[] = { { m->name, m->file, dt, 64, 2, KVCC_TARGET_NATIVE, pp, m->val[ci] },
				            { m->name, m->file, dt, 96, 2, KVCC_TARGET_V3, pp, m->val[ci] },
				            { m->name, m->file, dt, 128, 4, KVCC_TARGET_V4, pp, m->val[ci] },
				            { m->name, m->file, dt, 64, 4, KVCC_TARGET_SCALAR, pp, m->val[ci] } };
				for (int k = 0; k < 4; k++)
					if (every == 1 || (pi + ci + dt + k) % 3 == 0)  /* sampled: each target once per value */
						run_case(&c[k], host);
			}
	}
	/* causal attention over positions that are not in order (the masked attn_stats / attn_score
	** kernels), every dtype */
	for (int pi = 0; pi < 4; pi++) {
		static const char *up[] = { "snapkv", "tova", "observed_attention", "pyramidkv" };
		char file[64];
		snprintf(file, sizeof file, "policies/%s.lua", up[pi]);
		for (int dt = 0; dt < 3; dt++) {
			Cfg c = { up[pi], file, dt, 64, 2, KVCC_TARGET_NATIVE, NULL, 0 };
			unordered = 1;
			run_case(&c, host);
			unordered = 0;
		}
	}
	segsizes();
	sumerrors();
	sumerrors2();
	sumthrgrp();
	/* kv.random's seed at run time (ki_seed): past f32's 24 bits, fractional, negative, and the
	** values that count as 0 (NaN, infinities, magnitudes >= 2^63) */
	static const double seeds[] = { 987654321, 1099511627779.0, -5.7, 1e30, -INFINITY, NAN };
	for (int k = 0; k < 6; k++) {
		Cfg c = { "random", "policies/random.lua", k % 3, 64, 2, KVCC_TARGET_NATIVE, "seed", seeds[k] };
		run_case(&c, host);
	}
	/* every elementwise op of the generated token_map loops, on every target, vector tails */
	for (int dt = 0; dt < 3; dt++) {
		static const int td[] = { 8, 64 }, tg[] = { 1, 4 };
		for (int di = 0; di < 2; di++)
			for (int gi = 0; gi < 2; gi++) {
				Cfg c = { "tmap_ops", "tests/diff/tmap_ops.lua", dt, td[di], tg[gi], KVCC_TARGET_NATIVE, NULL, 0 };
				if (sampled(dt + di + gi, every))
					run_case(&c, host);
			}
		const char *on = "tmap_ops", *of = "tests/diff/tmap_ops.lua";
		Cfg tc[] = { { on, of, dt, 96, 2, KVCC_TARGET_V3, NULL, 0 }, { on, of, dt, 64, 4, KVCC_TARGET_SCALAR, NULL, 0 },
		             { on, of, dt, 128, 4, KVCC_TARGET_V4, NULL, 0 } };
		for (int k = 0; k < 3; k++)
			if (sampled(dt + k, every > 1 ? 3 : 1))
				run_case(&tc[k], host);
	}
	/* reductions over group / chan / token, pools, leaves and scalars in generated loops; loops
	** on both sides of the cross-head barrier */
	for (int dt = 0; dt < 3; dt++) {
		for (int di = 0; di < 4; di++)
			for (int gi = 0; gi < 3; gi++) {
				Cfg c = { "tmap_red", "tests/diff/tmap_red.lua", dt, dims[di], groups[gi], KVCC_TARGET_NATIVE, NULL, 0 };
				if (sampled(dt + di + gi, every))
					run_case(&c, host);
				if (gi != 1 && di % 2 == 0 && sampled(dt + di / 2 + gi / 2, every > 1 ? 2 : 1)) {
					Cfg h = { "tmap_hmean", "tests/diff/tmap_hmean.lua", dt, dims[di], groups[gi], KVCC_TARGET_NATIVE,
					          NULL, 0 };
					run_case(&h, host);
				}
			}
		for (int pi = 0; pi < 2; pi++) {
			const char *tn = pi ? "tmap_hmean" : "tmap_red";
			const char *tp = pi ? "tests/diff/tmap_hmean.lua" : "tests/diff/tmap_red.lua";
			Cfg tc[] = { { tn, tp, dt, 96, 2, KVCC_TARGET_V3, NULL, 0 }, { tn, tp, dt, 64, 4, KVCC_TARGET_SCALAR, NULL, 0 },
			             { tn, tp, dt, 128, 4, KVCC_TARGET_V4, NULL, 0 } };
			for (int k = 0; k < 3; k++)
				if (sampled(pi + dt + k, every > 1 ? 3 : 1))
					run_case(&tc[k], host);
		}
	}
	for (int dt = 0; dt < 3 && !only; dt++) {
		static const int sd[] = { 8, 64, 96, 256 };
		for (int di = 0; di < 4; di++)
			selcompact_case(dt, sd[di], KVCC_TARGET_NATIVE, host);
		selcompact_case(dt, 96, KVCC_TARGET_V3, host);
		selcompact_case(dt, 128, KVCC_TARGET_V4, host);
		selcompact_case(dt, 64, KVCC_TARGET_SCALAR, host);
		selcompact_case(dt, 8, KVCC_TARGET_SCALAR, host);
	}
	for (int k = 0; k < 12; k++)
		qread_case(k, host);
	/* each op and edge case on the three targets; sampled (make check): on one, rotating */
	static const int t3[] = { KVCC_TARGET_NATIVE, KVCC_TARGET_V3, KVCC_TARGET_SCALAR };
	for (int op = 0; op < 17; op++)
		for (int k = 0; k < 3; k++)
			if (sampled(op + k, every > 1 ? 3 : 1))
				tmap_case(op, t3[k], host);
	for (int ei = 0; ei < 8; ei++)
		for (int k = 0; k < 3; k++)
			if (sampled(ei + k, every > 1 ? 3 : 1))
				tmap_edge_case(ei, t3[k], host);
	for (int k = 0; k < 3; k++)
		mbest_edge_case(t3[k], host);
	msimx_case(host);
	msimx_ties_case(host);
	mscal16_case(KVCC_BF16, 64, host);
	mscal16_case(KVCC_F32, 32, host);
	for (int x = 0; x < 2; x++) {   /* issue 15, session 12: NaN / inf logits, every score path */
		static const char *nc[3] = { NULL, "amx0,dot1", "amx0,dot0" };
		for (int k = 0; k < 3; k++)
			nankey_case(KVCC_BF16, KVCC_TARGET_NATIVE, nc[k], x, host);
		nankey_case(KVCC_F32, KVCC_TARGET_NATIVE, NULL, x, host);
		nankey_case(KVCC_F16, KVCC_TARGET_V3, NULL, x, host);   /* 8 lanes: vexp, not vexpn */
	}
	if (!only || !strcmp(only, "robustness"))
		robustness(host);
	free(host);
	printf("(%d of the passing cases also passed with a given lse: one pass over K)\n", nlse);
	printf("(%d of the passing cases ran generated token_map loops)\n", ngen);
	printf("(%d draws redrawn: a merge comparison, e.g. CaM's Bernoulli draw, within 1e-4 of its bound)\n", nmgap);
	printf("%d passed, %d failed, %d skipped\n", npass, nfail, nskip);
	return nfail ? 1 : 0;
}
