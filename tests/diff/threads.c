/*
** The pool does not change results (DESIGN §7): kvcc_compress_batch on plans of 1, 2 and 4
** threads, from the same inputs, leaves byte-identical caches (K, V rows held, positions,
** lengths, state) and returns the same code and error message. Select runs one scope group per
** pool task (runtime/compress.c selectrun) and compaction one instance per task; scope layer and
** model groups span heads, so a group split across threads, or a group's keys written by two,
** shows here. Every policy of the manifest's noalloc matrix plus the scope / threshold / floor /
** summary / mass ones, f32, a contiguous batch of 3 sequences (unequal lengths per head where
** the policy allows), two rounds of ratio / budget. mass_signed fails on its negative scores in
** several (layer, head)s: the first one in (sequence, layer, head) order is the one reported,
** as one thread reports it; errorder: also when a higher group fails first in time.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "dsl/dsl.h"
#define CASEGEN_SEED 0x7e2ead5ull
#include "tests/common/casegen.h"
#include "tests/common/manifest.h"
#include "tests/common/policycase.h"

enum { L = 3, H = 2, G = 2, D = 32, CAP = 83, NS = 3, NT = 3 };
static const int thr[NT] = { 1, 2, 4 };
static int npass, nfail;

static void run_policy(const char *path)
{
	kvcc_spec spec = { KVCC_F32, D, G, KVCC_TARGET_NATIVE };
	KiFn *f;
	kvcc_policy *p;
	if (cg_open(path, path, &spec, &f, &p) != 0) {
		nfail++;
		return;
	}
	int hm = 0, eq = f->obs_all || f->sel.sched == SCH_dynamic;
	for (int i = 0; i < f->nins; i++)
		hm |= f->ins[i].op == KO_hmean;
	int nst = kvcc_state_count(p);
	double par[32];
	int maxobs = cg_params(f, p, par, CAP);
	size_t LHC = (size_t)L * H * CAP, nkv = LHC * D, nq = (size_t)L * H * G * CAP * D, nstf = (size_t)nst * LHC + 1;
	float *K0 = malloc(NS * nkv * 4), *V0 = malloc(NS * nkv * 4), *Q = malloc(nq * 4), *st0 = malloc(NS * nstf * 4);
	float *K[NT], *V[NT], *st[NT];
	int32_t *pos[NT], len[NT][NS][L * H];
	kvcc_plan *pl[NT] = { 0 };
	for (size_t i = 0; i < nq; i++)
		Q[i] = (float)(urand() * 4 - 2);
	for (int t = 0; t < NT; t++) {
		K[t] = malloc(NS * nkv * 4), V[t] = malloc(NS * nkv * 4), st[t] = malloc(NS * nstf * 4);
		pos[t] = malloc(NS * LHC * 4);
	}
	kvcc_layout lay = { KVCC_F32, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	for (int t = 0; t < NT; t++)
		if (kvcc_plan_create_batch(p, &lay, NULL, NS, maxobs, thr[t], &pl[t]) != 0 ||
		    cg_setweights(f, pl[t], L, H, G, D) != 0) {
			printf("FAIL %s: plan (%d threads): %s\n", path, thr[t], kvcc_last_error()), nfail++;
			goto out;
		}
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < NS * nkv; i++)
			K0[i] = (float)(urand() * 2 - 1), V0[i] = (float)(urand() * 2 - 1);
		for (size_t i = 0; i < NS * nstf; i++)
			st0[i] = 0;
		for (int s = 0; s < nst; s++) {
			double init;
			const char *snm = NULL;
			kvcc_state_info(p, s, &snm, &init);
			for (int b = 0; b < NS; b++)
				for (size_t i = 0; i < LHC; i++)
					st0[b * nstf + (size_t)s * LHC + i] = (float)init;
		}
		int rc[NT];
		char msg[NT][600];
		for (int t = 0; t < NT; t++) {
			memcpy(K[t], K0, NS * nkv * 4), memcpy(V[t], V0, NS * nkv * 4), memcpy(st[t], st0, NS * nstf * 4);
			kvcc_seq sq[NS];
			for (int b = 0; b < NS; b++) {
				int n = CAP - 5 - 7 * b - 20 * round;
				for (int k = 0; k < L * H; k++) {
					len[t][b][k] = hm || eq ? n : n - 3 * (k % H) - (k / H);
					for (int j = 0; j < CAP; j++)
						pos[t][(size_t)b * LHC + (size_t)k * CAP + j] = j;
				}
				sq[b] = (kvcc_seq){ K[t] + b * nkv, V[t] + b * nkv, pos[t] + (size_t)b * LHC, len[t][b],
				                    nst ? st[t] + b * nstf : NULL, { f->obs_all ? len[t][b][0] : maxobs, Q, NULL, NULL },
				                    NULL, 0, NULL };
			}
			kvcc_batch bt = { .nseq = NS, .seq = sq };
			kvcc_args a = { round ? 0.3 : 0.6, round ? 29 : -1, par, 1, NULL };
			rc[t] = kvcc_compress_batch(pl[t], &bt, &a);
			snprintf(msg[t], sizeof msg[t], "%s", rc[t] ? kvcc_last_error() : "");
		}
		for (int t = 1; t < NT; t++) {
			int bad = rc[t] != rc[0] || strcmp(msg[t], msg[0]) || memcmp(len[t], len[0], sizeof len[0]);
			for (int b = 0; !bad && !rc[0] && b < NS; b++)
				for (int k = 0; !bad && k < L * H; k++) {
					size_t o = (size_t)b * LHC + (size_t)k * CAP, n = (size_t)len[0][b][k];
					bad = memcmp(pos[t] + o, pos[0] + o, n * 4) || memcmp(K[t] + o * D, K[0] + o * D, n * D * 4) ||
					      memcmp(V[t] + o * D, V[0] + o * D, n * D * 4);
					for (int s = 0; !bad && s < nst; s++)
						bad = memcmp(st[t] + b * nstf + (size_t)s * LHC + (size_t)k * CAP,
						             st[0] + b * nstf + (size_t)s * LHC + (size_t)k * CAP, n * 4);
				}
			if (bad)
				printf("FAIL %s round %d: %d threads differ from 1 (rc %d / %d: %s / %s)\n", path, round, thr[t], rc[t],
				       rc[0], msg[t], msg[0]), nfail++;
			else
				npass++;
		}
		if (strstr(path, "mass_signed") && (!rc[0] || !strstr(msg[0], "(layer 0, head 0)"))) {
			printf("FAIL %s: expected the error of (layer 0, head 0), got rc %d: %s\n", path, rc[0], msg[0]), nfail++;
		}
	}
out:
	for (int t = 0; t < NT; t++) {
		kvcc_plan_destroy(pl[t]);
		free(K[t]), free(V[t]), free(st[t]), free(pos[t]);
	}
	free(K0), free(V0), free(Q), free(st0);
	kvcc_close(p);
	ki_free(f);
}

/*
** The threaded select's error order (runtime/compress.c selecttask): of failing groups the lowest
** one's error is reported, as one thread reports it, also when a higher group fails first in
** time. mass_signed (scope head: a group per (layer, head)) with head 0 long (2^20 tokens, its
** negative score at the last unprotected token: it fails after a full scan) and head 1 short (16
** tokens, negative at token 0: it fails at once, while the other thread is still in head 0).
** Expected: head 0's error (token 2^20 - 3) at 1 and 2 threads, every repetition.
*/
static void errorder(void)
{
	enum { EN = 1 << 20, ED = 8, EH = 2, REP = 6 };
	kvcc_spec spec = { KVCC_F32, ED, 1, KVCC_TARGET_NATIVE };
	KiFn *f;
	kvcc_policy *p;
	if (cg_open("tests/policies/mass_signed.lua", "mass_signed (error order)", &spec, &f, &p) != 0) {
		nfail++;
		return;
	}
	size_t nkv = (size_t)EH * EN * ED;
	float *K = malloc(nkv * 4), *V = malloc(nkv * 4);
	int32_t *pos = malloc((size_t)EH * EN * 4), len[EH];
	kvcc_layout lay = { KVCC_F32, 1, EH, ED, EN, (int64_t)EH * EN * ED, (int64_t)EN * ED, ED };
	for (int t = 1; t <= 2 && K && V && pos; t++) {
		kvcc_plan *pl = NULL;
		if (kvcc_plan_create(p, &lay, 0, t, &pl) != 0) {
			printf("FAIL error order: plan (%d threads): %s\n", t, kvcc_last_error()), nfail++;
			continue;
		}
		int ok = 0;
		for (int r = 0; r < REP; r++) {
			len[0] = EN, len[1] = 16;
			for (size_t i = 0; i < nkv; i++)
				K[i] = 1, V[i] = 0;
			for (int c = 0; c < ED; c++)          /* head 0: token EN - 3; head 1: token 0 */
				K[(size_t)(EN - 3) * ED + c] = -1, K[(size_t)EN * ED + c] = -1;
			for (size_t i = 0; i < (size_t)EH * EN; i++)
				pos[i] = (int32_t)(i % EN);
			kvcc_cache c = { K, V, pos, len, NULL };
			kvcc_obs o = { 0, NULL, NULL, NULL };
			kvcc_args a = { 0.5, -1, NULL, t, NULL };
			int rc = kvcc_compress(pl, &c, &o, &a);
			char want[80];
			snprintf(want, sizeof want, "(layer 0, head 0) has -8 at token %d", EN - 3);
			if (rc == KVCC_EINVAL && strstr(kvcc_last_error(), want))
				ok++;
			else
				printf("FAIL error order, %d threads, repetition %d: rc %d: %s (expected %s)\n", t, r, rc,
				       kvcc_last_error(), want);
		}
		if (ok == REP)
			npass++;
		else
			nfail++;
		kvcc_plan_destroy(pl);
	}
	free(K), free(V), free(pos);
	kvcc_close(p);
	ki_free(f);
}

int main(void)
{
	static const char *extra[] = { "tests/policies/scope_layer.lua", "tests/policies/scope_model.lua",
	                               "tests/policies/floor_layer.lua", "tests/policies/threshold_layer.lua",
	                               "tests/policies/threshold_model.lua", "tests/policies/summary_layer.lua",
	                               "tests/policies/mass_head.lua", "tests/policies/mass_signed.lua",
	                               "tests/policies/mass_model.lua", "tests/policies/threshold_chunk_layer.lua",
	                               "tests/policies/threshold_chunk_model.lua" };
	MfPolicy pols[MANIFEST_MAX];
	char why[256];
	int npol = mf_read("noalloc", pols, MANIFEST_MAX, why, sizeof why);
	for (int i = 0; i < npol; i++)
		run_policy(pols[i].file);
	if (npol <= 0)
		return printf("FAIL manifest: %s\n0 passed, 1 failed\n", npol < 0 ? why : "no noalloc policy"), 1;
	for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
		run_policy(extra[i]);
	errorder();
	printf("1, 2, 4 threads: %d policies (the noalloc matrix + %zu), f32, %d sequences\n", npol,
	       sizeof extra / sizeof *extra, NS);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
