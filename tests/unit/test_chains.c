/*
** Long policies: chains of instructions as long as the limit (KI_MAXINS) go
** through every stage that walks operands — verifier, passes, plan, the
** reference interpreter (compress and the observe hook; a merge rule's pair
** expression and the ordinary values under it) and the CUDA C
** generator — on a 256 KiB stack, so that a recursion over operands (as deep
** as the chain) fails here rather than on a user's policy. One instruction
** more, or a param or state too many, is a parse error at the limit.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"
#include "compiler/interp.h"
#include "compiler/plan.h"
#include "codegen/ptx/ptx.h"

enum { CH_SCORE, CH_OBSERVE, CH_ATTN, CH_MERGE };

/* A policy whose score (or observe update) is a chain of n instructions in all. */
static char *chain(int n, int kind)
{
	size_t cap = (size_t)n * 48 + 1024, k = 0;
	char *s = malloc(cap);
	ck_assert_ptr_nonnull(s);
	k += (size_t)snprintf(s + k, cap - k, "policy \"chain\" source \"chain.lua\"\nstate acc = 0\n");
	int first;
	const char *ax = "[token]";
	if (kind == CH_ATTN) {
		k += (size_t)snprintf(s + k, cap - k, "%%0 = input Q [group, obs, chan]\n%%1 = input K [token, chan]\n"
		                      "%%2 = dot %%0, %%1 chan [group, obs, token]\n");
		first = 3, ax = "[group, obs, token]";
		n -= 3;    /* softmax, mean, mean at the end */
	} else if (kind == CH_OBSERVE) {
		k += (size_t)snprintf(s + k, cap - k, "%%0 = input K [token, chan]\n%%1 = norm %%0 chan [token]\n"
		                      "%%2 = attn [group, token]\n%%3 = sum %%2 group [token]\n");
		first = 4;
	} else {
		k += (size_t)snprintf(s + k, cap - k, "%%0 = input K [token, chan]\n%%1 = norm %%0 chan [token]\n");
		first = 2;
	}
	if (kind == CH_MERGE) {  /* half an ordinary [token, chan] chain under erow, half a pair chain */
		int m = n / 2;
		for (int i = first; i < m; i++)
			k += (size_t)snprintf(s + k, cap - k, "%%%d = add %%%d, 1 [token, chan]\n", i, i == first ? 0 : i - 1);
		k += (size_t)snprintf(s + k, cap - k, "%%%d = erow %%%d [chan]\n%%%d = krow %%0 [chan]\n"
		                      "%%%d = dot %%%d, %%%d chan []\n", m, m - 1, m + 1, m + 2, m, m + 1);
		first = m + 3, ax = "[]";
	}
	for (int i = first; i < n; i++)
		k += (size_t)snprintf(s + k, cap - k, "%%%d = add %%%d, 1 %s\n", i, i - 1, ax);
	if (kind == CH_ATTN)
		k += (size_t)snprintf(s + k, cap - k, "%%%d = softmax %%%d token [group, obs, token]\n"
		                      "%%%d = mean %%%d obs [group, token]\n%%%d = mean %%%d group [token]\nscore %%%d\n"
		                      "obs 2\n", n, n - 1, n + 1, n, n + 2, n + 1, n + 2);
	else if (kind == CH_OBSERVE)
		k += (size_t)snprintf(s + k, cap - k, "score %%1\nobserve acc %%%d\n", n - 1);
	else if (kind == CH_MERGE)
		k += (size_t)snprintf(s + k, cap - k, "score %%1\n");
	else
		k += (size_t)snprintf(s + k, cap - k, "score %%%d\n", n - 1);
	if (kind == CH_MERGE)
		snprintf(s + k, cap - k, "select topk\nmerge nearest sim=%%%d threshold=none weight=1 self=1 update=mean "
		         "keys=1 values=1 bias=0\nwhen prefill\n", n - 1);
	else
		snprintf(s + k, cap - k, "select topk\nmerge drop\nwhen %s\n", kind == CH_OBSERVE ? "decode every=1" : "prefill");
	return s;
}

typedef struct Job {
	const char *text;
	int kind;
	char fail[600];       /* empty: every stage passed */
} Job;

#define STAGE(cond, what) \
	do { if (!(cond)) { snprintf(j->fail, sizeof j->fail, "%s: %s", what, e.msg); goto out; } } while (0)

static void *pipeline(void *ud)
{
	Job *j = ud;
	KiErr e = { 0 };
	KiPlan p;
	KiResult r;
	KpCudaOut out;
	enum { N = 8, D = 4, O = 2 };
	static float K[N * D], V[N * D], Q[O * D], q[D];
	static double state[N];
	for (int i = 0; i < N * D; i++)
		K[i] = (float)((i * 7) % 5) - 2, V[i] = (float)(i % 3);
	for (int i = 0; i < O * D; i++)
		Q[i] = (float)(i % 4) - 1.5f;
	q[0] = 1;
	KiCase c = { .L = 1, .H = 1, .G = 1, .d = D, .n = N, .O = O, .K = K, .V = V, .Q = Q, .dtype = KVCC_F32,
	             .ratio = 0.5, .budget = -1 };
	KiFn *f = ki_parse(j->text, "chain.kir", &e);
	STAGE(f, "parse");
	STAGE(ki_verify(f, &e) == 0, "verify");
	STAGE(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0, "passes");
	if (j->kind == CH_ATTN) {
		/* the fused attn_score kernels take no chain between the dot and the softmax: the
		** planner walks all of it and refuses with a position, without recursing */
		STAGE(ki_plan(f, &p, &e) != 0 && strstr(e.msg, "not generated yet"), "plan (a refusal)");
		e = (KiErr){ 0 };
	} else if (j->kind == CH_MERGE) {     /* no merge kernels yet (support.c) */
		STAGE(ki_plan(f, &p, &e) != 0 && strstr(e.msg, "not compiled to kernels yet"), "plan (a refusal)");
		e = (KiErr){ 0 };
	} else {
		STAGE(ki_plan(f, &p, &e) == 0, "plan");
		ki_plan_free(&p);
	}
	STAGE(ki_run(f, &c, &r, &e) == 0, "interpreter");
	ki_result_free(&r);
	if (j->kind == CH_OBSERVE)
		STAGE(ki_observe(f, &c, q, state, NULL, &e) == 0, "observe");
	KpCudaOpts o = { .dtype = KVCC_BF16, .head_dim = 64, .group = 1, .gen_only = 1 };
	if (j->kind == CH_ATTN)       /* the GPU backend applies the same planner first */
		STAGE(kp_compile_cuda(f, &o, &out, &e) != 0 && strstr(e.msg, "not generated yet"), "CUDA C (a refusal)");
	else if (j->kind == CH_MERGE)
		STAGE(kp_compile_cuda(f, &o, &out, &e) != 0 && strstr(e.msg, "not compiled to kernels yet"),
		      "CUDA C (a refusal)");
	else {
		STAGE(kp_compile_cuda(f, &o, &out, &e) == 0, "CUDA C");
		kp_cuda_free(&out);
	}
out:
	ki_free(f);
	return NULL;
}

/* Run the pipeline on a thread with a small stack. */
static void run_small_stack(int kind)
{
	Job j = { .text = chain(KI_MAXINS, kind), .kind = kind };
	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 256 << 10);
	ck_assert_int_eq(pthread_create(&t, &a, pipeline, &j), 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&a);
	free((char *)j.text);
	ck_assert_msg(j.fail[0] == 0, "chain of %d: %s", KI_MAXINS, j.fail);
}

START_TEST(test_chain_score) { run_small_stack(CH_SCORE); }
END_TEST

START_TEST(test_chain_observe) { run_small_stack(CH_OBSERVE); }
END_TEST

START_TEST(test_chain_attn) { run_small_stack(CH_ATTN); }
END_TEST

START_TEST(test_chain_merge) { run_small_stack(CH_MERGE); }
END_TEST

/* KI_MAXINS + 1 instructions: an error at the first one too many */
START_TEST(test_chain_limit)
{
	char *s = chain(KI_MAXINS + 1, CH_SCORE);
	KiErr e = { 0 };
	KiFn *f = ki_parse(s, "big.kir", &e);
	ck_assert_ptr_null(f);
	char want[128];
	snprintf(want, sizeof want, "big.kir:%d:1: error: policy too large (more than %d KIR instructions)",
	         KI_MAXINS + 3, KI_MAXINS);
	ck_assert_str_eq(e.msg, want);
	free(s);
}
END_TEST

/* one param, state or weight more than a policy.lua may declare */
START_TEST(test_param_state_limits)
{
	char *s = malloc(64 * 1024);
	size_t k = (size_t)sprintf(s, "policy \"p\" source \"p.lua\"\n");
	for (int i = 0; i <= KI_MAXPAR; i++)
		k += (size_t)sprintf(s + k, "param p%d = 1\n", i);
	KiErr e = { 0 };
	ck_assert_ptr_null(ki_parse(s, "p.kir", &e));
	char want[128];
	snprintf(want, sizeof want, "p.kir:%d:7: error: too many params (at most %d)", KI_MAXPAR + 2, KI_MAXPAR);
	ck_assert_str_eq(e.msg, want);
	k = (size_t)sprintf(s, "policy \"p\" source \"p.lua\"\n");
	for (int i = 0; i <= KI_MAXST; i++)
		k += (size_t)sprintf(s + k, "state s%d = 0\n", i);
	memset(&e, 0, sizeof e);
	ck_assert_ptr_null(ki_parse(s, "p.kir", &e));
	snprintf(want, sizeof want, "p.kir:%d:7: error: too many states (at most %d)", KI_MAXST + 2, KI_MAXST);
	ck_assert_str_eq(e.msg, want);
	k = (size_t)sprintf(s, "policy \"p\" source \"p.lua\"\n");
	for (int i = 0; i <= KI_MAXW; i++)
		k += (size_t)sprintf(s + k, "weight w%d [layer, head]\n", i);
	memset(&e, 0, sizeof e);
	ck_assert_ptr_null(ki_parse(s, "p.kir", &e));
	snprintf(want, sizeof want, "p.kir:%d:8: error: too many weights (at most %d)", KI_MAXW + 2, KI_MAXW);
	ck_assert_str_eq(e.msg, want);
	free(s);
}
END_TEST

Suite *chains_suite(void)
{
	Suite *s = suite_create("chains");
	TCase *tc = tcase_create("chains");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_chain_score);
	tcase_add_test(tc, test_chain_observe);
	tcase_add_test(tc, test_chain_attn);
	tcase_add_test(tc, test_chain_merge);
	tcase_add_test(tc, test_chain_limit);
	tcase_add_test(tc, test_param_state_limits);
	suite_add_tcase(s, tc);
	return s;
}
