/*
** Issue 12 (session 10): the f32 merge similarity on AMX (bf16x3 products, the exact re-check of
** near ties; codegen/x86/mamx3.c, runtime/merge.c similarity3, doc/merge-f32-amx.md) leaves the
** cache exactly as the f32 FMA path does. Each policy compiled twice, f32, from the
** same source: as the host gives it (on a CPU with amx-tile + amx-bf16 the similarity runs on
** AMX) and with KVCC_MERGE_AMX=0 (the FMA path, today's kernels); the same inputs through both,
** then K, V, positions, lengths and state compared byte for byte (snapkv_merge at head_dim 64 and 128,
** lookm at 64). Inputs (1 layer, 2 KV heads,
** 1,500 tokens at ratio 0.5 and 0.8: two blocks of evicted rows, a partial last kept tile):
**   random      keys uniform in [-1, 1] (few re-checks)
**   mean        a common direction + noise (cosines concentrated near each other)
**   ties        keys drawn from 11 base rows, each copy exact or nudged by one ulp in one
**               channel (exact and near ties everywhere: most rows re-checked)
**   nonfinite   random, plus evicted-looking rows with NaN, inf, 0 and 1e-30 channels and one
**               huge row (their rows re-checked), and in the second head a NaN key in the kept
**               window (the head takes the exact path whole)
** kvcc_plan_mstats says what the AMX path did: on an AMX host the rows it ran (> 0), the re-checked
** rows (> 0 for ties) and the whole-head fallbacks (> 0 for nonfinite); the FMA
** build's counters are 0. Without AMX (or KVCC_MERGE_AMX=0 in the environment) every case SKIPs
** its AMX half, saying why.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvcc.h"
#include "kvcc_compiler.h"

enum { L = 1, H = 2, G = 2, DMAX = 128, CAP = 1500 };
static int D;                 /* head_dim of this round: 64, then 128 (the bound depends on it) */
static int npass, nfail, nskip;
static uint64_t rs = 0x6d663332ull;
static double urand(void)
{
	rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
	return (double)(rs >> 11) / 9007199254740992.0;
}

static void inputs(int kind, float *K, float *V, float *Q, int nobs)
{
	size_t nkv = (size_t)L * H * CAP * D;
	float mu[DMAX], base[11][DMAX];
	for (int c = 0; c < D; c++)
		mu[c] = (float)(urand() * 4 - 2);
	for (int b = 0; b < 11; b++)
		for (int c = 0; c < D; c++)
			base[b][c] = (float)(urand() * 2 - 1);
	for (size_t i = 0; i < nkv; i++) {
		int c = (int)(i % D);
		K[i] = (float)(urand() * 2 - 1), V[i] = (float)(urand() * 2 - 1);
		if (kind == 1)
			K[i] = K[i] * 0.3f + mu[c];
	}
	if (kind == 2)
		for (size_t t = 0; t < (size_t)L * H * CAP; t++) {
			float *k = K + t * D;
			memcpy(k, base[(t * 7) % 11], (size_t)D * sizeof *k);
			if (t % 3 == 1)
				k[t % D] = nextafterf(k[t % D], INFINITY);
			else if (t % 3 == 2)
				k[(t / 3) % D] = nextafterf(k[(t / 3) % D], -INFINITY);
		}
	if (kind == 3) {
		float *k0 = K, *k1 = K + (size_t)CAP * D;   /* head 0, head 1 */
		k0[5 * D + 3] = NAN, k0[9 * D] = INFINITY;
		memset(k0 + 17 * D, 0, D * sizeof *k0);
		for (int c = 0; c < D; c++)
			k0[23 * D + c] = 1e-30f, k0[31 * D + c] = 1e30f;
		k1[(CAP - 10) * D + 7] = NAN;   /* inside the kept window (the last 64 tokens) */
	}
	for (size_t i = 0; i < (size_t)L * H * G * nobs * D; i++)
		Q[i] = (float)(urand() * 2 - 1);
}

typedef struct Out {
	float *K, *V, *st;
	int32_t pos[L * H * CAP], len[L * H];
	int rc;
	char msg[300];
	int64_t ms[3];
} Out;

static void run(kvcc_policy *p, const float *K0, const float *V0, const float *Q, int nobs, double ratio, Out *o)
{
	size_t nkv = (size_t)L * H * CAP * D;
	int nst = kvcc_state_count(p);
	memcpy(o->K, K0, nkv * 4), memcpy(o->V, V0, nkv * 4);
	for (int s = 0; s < nst; s++) {
		double init;
		const char *nm;
		kvcc_state_info(p, s, &nm, &init);
		for (int i = 0; i < L * H * CAP; i++)
			o->st[(size_t)s * L * H * CAP + i] = (float)init;
	}
	for (int k = 0; k < L * H; k++) {
		o->len[k] = CAP;
		for (int j = 0; j < CAP; j++)
			o->pos[k * CAP + j] = j;
	}
	kvcc_layout lay = { KVCC_F32, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	kvcc_plan *pl = NULL;
	o->rc = kvcc_plan_create(p, &lay, nobs, 1, &pl);
	if (!o->rc) {
		kvcc_cache c = { o->K, o->V, o->pos, o->len, nst ? o->st : NULL };
		kvcc_obs ob = { nobs, Q, NULL, NULL };
		kvcc_args a = { ratio, -1, NULL, 1, NULL };
		o->rc = kvcc_compress(pl, &c, &ob, &a);
	}
	snprintf(o->msg, sizeof o->msg, "%s", o->rc ? kvcc_last_error() : "");
	memset(o->ms, 0, sizeof o->ms);
	if (pl)
		kvcc_plan_mstats(pl, o->ms);
	kvcc_plan_destroy(pl);
}

static const char *kname[4] = { "random", "mean", "ties", "nonfinite" };

static void policy(const char *path, int nobs, int amxhost)
{
	kvcc_spec spec = { KVCC_F32, D, G, KVCC_TARGET_NATIVE };
	kvcc_policy *pa = NULL, *pf = NULL;
	const char *env = getenv("KVCC_MERGE_AMX");
	char *keep = env ? strdup(env) : NULL;
	unsetenv("KVCC_MERGE_AMX");
	int ca = kvcc_compile_file(path, &spec, &pa);
	setenv("KVCC_MERGE_AMX", "0", 1);
	int cf = kvcc_compile_file(path, &spec, &pf);
	if (keep)
		setenv("KVCC_MERGE_AMX", keep, 1), free(keep);
	else
		unsetenv("KVCC_MERGE_AMX");
	if (ca || cf) {
		printf("FAIL %s: compile: %s\n", path, kvcc_last_error()), nfail++;
		kvcc_close(pa), kvcc_close(pf);
		return;
	}
	size_t nkv = (size_t)L * H * CAP * D, nst = (size_t)kvcc_state_count(pa) * L * H * CAP + 1;
	float *K0 = malloc(nkv * 4), *V0 = malloc(nkv * 4), *Q = malloc((size_t)L * H * G * nobs * D * 4);
	Out *oa = calloc(1, sizeof *oa), *of = calloc(1, sizeof *of);
	oa->K = malloc(nkv * 4), oa->V = malloc(nkv * 4), oa->st = malloc(nst * 4);
	of->K = malloc(nkv * 4), of->V = malloc(nkv * 4), of->st = malloc(nst * 4);
	for (int kind = 0; kind < 4; kind++)
		for (int r = 0; r < 2; r++) {
			double ratio = r ? 0.8 : 0.5;
			inputs(kind, K0, V0, Q, nobs);
			run(pa, K0, V0, Q, nobs, ratio, oa);
			run(pf, K0, V0, Q, nobs, ratio, of);
			int bad = oa->rc != of->rc || strcmp(oa->msg, of->msg) || memcmp(oa->len, of->len, sizeof oa->len) ||
			          memcmp(oa->pos, of->pos, sizeof oa->pos);
			for (int k = 0; !bad && k < L * H; k++) {
				size_t o = (size_t)k * CAP, n = (size_t)of->len[k];
				bad = memcmp(oa->K + o * D, of->K + o * D, n * D * 4) || memcmp(oa->V + o * D, of->V + o * D, n * D * 4);
			}
			bad = bad || memcmp(oa->st, of->st, (nst - 1) * 4);
			if (of->ms[0] || of->ms[1] || of->ms[2]) {
				printf("FAIL %s %s %.1f: the KVCC_MERGE_AMX=0 build ran the AMX path (%lld rows)\n", path, kname[kind],
				       ratio, (long long)of->ms[0]), nfail++;
				continue;
			}
			if (bad) {
				printf("FAIL %s %s ratio %.1f: the AMX build's cache differs from the FMA build's (rc %d / %d: %s / %s; "
				       "AMX rows %lld, re-checked %lld, whole heads %lld)\n", path, kname[kind], ratio, oa->rc, of->rc,
				       oa->msg, of->msg, (long long)oa->ms[0], (long long)oa->ms[1], (long long)oa->ms[2]), nfail++;
				continue;
			}
			if (!amxhost) {
				printf("SKIP %s %s ratio %.1f: no AMX path (%s): both builds are the FMA path\n", path, kname[kind], ratio,
				       env && !strcmp(env, "0") ? "KVCC_MERGE_AMX=0" : "this CPU has no amx-tile / amx-bf16"), nskip++;
				continue;
			}
			/* what the AMX path did: it ran (nonfinite: where no kept row is non-finite); near ties
			** re-checked; a kept NaN: a whole head */
			int want1 = kind == 2, want2 = kind == 3;
			if ((kind != 3 && oa->ms[0] <= 0) || (want1 && oa->ms[1] <= 0) || (want2 && oa->ms[2] <= 0)) {
				printf("FAIL %s %s ratio %.1f: AMX rows %lld, re-checked %lld, whole heads %lld (expected > 0%s%s)\n", path,
				       kname[kind], ratio, (long long)oa->ms[0], (long long)oa->ms[1], (long long)oa->ms[2],
				       want1 ? ", re-checked > 0" : "", want2 ? ", whole heads > 0" : ""), nfail++;
				continue;
			}
			printf("ok %s d=%d %s ratio %.1f: identical; AMX rows %lld, re-checked %lld (%.2f %%), whole heads %lld\n", path,
			       D, kname[kind], ratio, (long long)oa->ms[0], (long long)oa->ms[1], oa->ms[0] ? 100.0 * oa->ms[1] / oa->ms[0] : 0.0,
			       (long long)oa->ms[2]);
			npass++;
		}
	free(oa->K), free(oa->V), free(oa->st), free(of->K), free(of->V), free(of->st), free(oa), free(of);
	free(K0), free(V0), free(Q);
	kvcc_close(pa), kvcc_close(pf);
}

int main(void)
{
	/* the AMX path runs where the CPU has it and the environment does not turn it off */
	const char *env = getenv("KVCC_MERGE_AMX");
	int amx = 0;
	FILE *ci = fopen("/proc/cpuinfo", "r");
	char line[4096];
	while (ci && fgets(line, sizeof line, ci))
		if (!strncmp(line, "flags", 5)) {
			amx = strstr(line, " amx_tile") && strstr(line, " amx_bf16");
			break;
		}
	if (ci)
		fclose(ci);
	amx = amx && !(env && !strcmp(env, "0"));
	/* the cosine-of-keys policies whose merge reads no similarity (the AMX path's scope) */
	for (D = 64; D <= DMAX; D *= 2) {
		policy("policies/snapkv_merge.lua", 64, amx);   /* its window */
		if (D == 64)                                     /* (its scores cost CAP^2 per head) */
			policy("policies/lookm.lua", CAP, amx);      /* obs = kv.all */
	}
	printf("%d passed, %d failed, %d skipped\n", npass, nfail, nskip);
	return nfail ? 1 : 0;
}
