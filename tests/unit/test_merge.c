/*
** The merge stage of the reference interpreter (compiler/merge.c) on cases small enough
** to work out by hand (the expected numbers below are written from doc/dsl.md "Merge",
** not from the code): next_kept with the additive update, nearest with ties and a
** threshold, summary rows (built, none when nothing is evicted, a budget below them), NaN
** similarities, and the case checks. The golden tier checks the published policies
** against the numpy oracle.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "tests/unit/unit.h"
#include "compiler/interp.h"
#include "dsl/dsl.h"
#include "compiler/mplan.h"

/* One (layer, head), 4 tokens, d = 2. score = sum of the key: tokens 0 and 2 win. */
static float K4[8] = { 1, 0, 0, -1, 2, 0, 0, -2 };
static float V4[8] = { 1, 1, 10, 20, 2, 2, 100, 100 };

static KiFn *policy(const char *merge)
{
	char text[1024];
	snprintf(text, sizeof text,
	         "local kv = require 'kvcc'\n"
	         "return kv.policy 'm' {\n"
	         "  score = function(x) return x.K:sum('chan') end,\n"
	         "  select = kv.topk {},\n"
	         "  merge = %s,\n"
	         "}\n", merge);
	KiErr e = { 0 };
	KiFn *f = kd_load("m.lua", text, strlen(text), NULL, &e);
	ck_assert_msg(f != NULL, "%s", e.msg);
	return f;
}

static int run(const KiFn *f, const float *K, long budget, KiResult *r, KiErr *e)
{
	KiCase c = { .L = 1, .H = 1, .G = 1, .d = 2, .n = 4, .K = K, .V = V4, .budget = budget };
	return ki_run(f, &c, r, e);
}

static void row(const float *got, double a, double b)
{
	ck_assert_msg(fabs(got[0] - a) < 1e-6 && fabs(got[1] - b) < 1e-6, "row (%g, %g), expected (%g, %g)",
	              got[0], got[1], a, b);
}

/* e = 1 → the next kept token 2 (v2 + 0.5 v1); e = 3 has no kept token after it. */
START_TEST(test_merge_next_sum)
{
	KiFn *f = policy("kv.next_kept { m = 1, weight = 0.5, keys = false, update = 'sum' }");
	KiErr e = { 0 };
	KiResult r;
	ck_assert_msg(run(f, K4, 2, &r, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(r.len[0], 2);
	ck_assert_int_eq(r.kept[0], 0);
	ck_assert_int_eq(r.kept[1], 2);
	row(&r.V[0], 1, 1);
	row(&r.V[2], 7, 12);
	row(&r.K[2], 2, 0);                  /* keys untouched */
	ck_assert(r.count[0] == 1 && r.count[1] == 2);
	ck_assert_int_eq(r.sumat[0], -1);
	ki_result_free(&r);
	ki_free(f);
}
END_TEST

/* Both evicted keys are orthogonal to both kept ones: cosine 0 ties, the lower
** position (token 0) takes both; weights 1 (self) and 2 (each evicted). */
START_TEST(test_merge_nearest_tie)
{
	KiFn *f = policy("kv.nearest { weight = 2 }");
	KiErr e = { 0 };
	KiResult r;
	ck_assert_msg(run(f, K4, 2, &r, &e) == 0, "%s", e.msg);
	row(&r.K[0], 0.2, -1.2);
	row(&r.V[0], 44.2, 48.2);
	row(&r.K[2], 2, 0);
	row(&r.V[2], 2, 2);
	ck_assert(r.count[0] == 3 && r.count[1] == 1);
	ki_result_free(&r);
	ki_free(f);
	/* with a threshold above the similarity nothing merges */
	f = policy("kv.nearest { threshold = 0.5 }");
	ck_assert_msg(run(f, K4, 2, &r, &e) == 0, "%s", e.msg);
	row(&r.V[0], 1, 1);
	ck_assert(r.count[0] == 1);
	ki_result_free(&r);
	ki_free(f);
}
END_TEST

/* A NaN key: its score is NaN (evicted), its similarities NaN: never merged. */
START_TEST(test_merge_nan_never)
{
	float K[8];
	memcpy(K, K4, sizeof K);
	K[2] = NAN;
	K[6] = 0, K[7] = 0.5;            /* token 3: (0, 0.5), cosine 0 with both kept */
	KiFn *f = policy("kv.nearest {}");
	KiErr e = { 0 };
	KiResult r;
	ck_assert_msg(run(f, K, 2, &r, &e) == 0, "%s", e.msg);
	/* token 3 → token 0 (tie at 0), token 1 dropped */
	row(&r.V[0], (1 + 100) / 2.0, (1 + 100) / 2.0);
	ck_assert(r.count[0] == 2 && r.count[1] == 1);
	ki_result_free(&r);
	ki_free(f);
}
END_TEST

/* Summary rows: budget 3 keeps 2 ordinary rows and the mean of tokens 1 and 3;
** budget 4 evicts nothing and builds none; budget 0 is below the summary row. */
START_TEST(test_merge_summary)
{
	KiFn *f = policy("kv.summary { rows = 1 }");
	KiErr e = { 0 };
	KiResult r;
	ck_assert_msg(run(f, K4, 3, &r, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(r.len[0], 3);
	ck_assert_int_eq(r.sumat[0], 2);
	ck_assert(r.kept[0] == 0 && r.kept[1] == 2 && r.kept[2] == -1);
	row(&r.K[4], 0, -1.5);
	row(&r.V[4], 55, 60);
	ck_assert_int_eq(r.pos[2], 3);
	ck_assert(r.count[2] == 2);
	ki_result_free(&r);
	ck_assert_msg(run(f, K4, 4, &r, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(r.len[0], 4);
	ck_assert_int_eq(r.sumat[0], -1);
	ki_result_free(&r);
	ck_assert_int_eq(run(f, K4, 0, &r, &e), -1);
	ck_assert_str_eq(e.msg, "m.lua:5:14: error: merge summary: the budget keeps 0 rows of (layer 0, "
	                 "head 0), fewer than its 1 summary rows");
	ki_free(f);
}
END_TEST

/* An existing summary row (row 3 of the case) takes the newly evicted tokens as a
** count-weighted running mean; it is never selected itself. */
START_TEST(test_merge_summary_online)
{
	KiFn *f = policy("kv.summary { rows = 1 }");
	float K[8] = { 1, 0, 0, -1, 2, 0, 4, 4 };
	double count[4] = { 1, 1, 1, 3 };
	int32_t sumat[1] = { 3 };
	KiCase c = { .L = 1, .H = 1, .G = 1, .d = 2, .n = 4, .K = K, .V = V4, .budget = 3,
	             .count = count, .sumat = sumat };
	KiErr e = { 0 };
	KiResult r;
	ck_assert_msg(ki_run(f, &c, &r, &e) == 0, "%s", e.msg);
	/* ordinary rows 0, 1, 2; keep 2 (0 and 2); token 1 joins the summary (count 3 + 1) */
	ck_assert_int_eq(r.len[0], 3);
	ck_assert(r.kept[0] == 0 && r.kept[1] == 2 && r.kept[2] == 3);
	row(&r.K[4], (3 * 4 + 0) / 4.0, (3 * 4 - 1) / 4.0);
	row(&r.V[4], (3 * 100 + 10) / 4.0, (3 * 100 + 20) / 4.0);
	ck_assert(r.count[2] == 4);
	ki_result_free(&r);
	/* a policy without summary rows refuses a case that has them */
	KiFn *g = policy("kv.nearest {}");
	ck_assert_int_eq(ki_run(g, &c, &r, &e), -1);
	ck_assert_str_eq(e.msg, "m.lua:5:14: error: the case has summary rows but the policy's merge rule "
	                 "builds none");
	ki_free(g);
	ki_free(f);
}
END_TEST

/* The similarity's form (compiler/mplan.c): the tiled-product form or pair by pair. */
START_TEST(test_merge_simform)
{
	static const struct { const char *sim; int fast; const char *why; } cases[] = {
		{ "nil", 1, NULL },                                            /* the default cosine */
		{ "function(e, k) return e.K:dot(k.K, 'chan') end", 1, NULL },
		{ "function(e, k) return (k.K * 2):dot(e.K:exp(), 'chan') / e.count end", 1, NULL },
		{ "function(e, k) return -(e.K:norm('chan')^2) + 2 * e.K:dot(k.K, 'chan') - k.K:norm('chan')^2 end", 1, NULL },
		{ "function(e, k) local d = e.K - k.K; return -d:dot(d, 'chan') end", 0,
		  "a value of both rows other than their dot product over chan (e.g. |e - k|)" },
		{ "function(e, k) return e.K:dot(k.K, 'chan') + e.V:dot(k.V, 'chan') end", 0,
		  "the similarity has more than one product of the two rows" },
		{ "function(e, k) return e.score + k.score end", 0, "the similarity has no product of the two rows" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char m[512];
		snprintf(m, sizeof m, "kv.nearest { sim = %s }", cases[i].sim);
		KiFn *f = policy(m);
		KiErr e = { 0 };
		ck_assert(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0);
		KiMSim s;
		ki_msimform(f, f->merge.sim, &s);
		ck_assert_msg(s.fast == cases[i].fast, "case %zu: fast %d (%s)", i, s.fast, s.why ? s.why : "");
		if (!s.fast)
			ck_assert_str_eq(s.why, cases[i].why);
		else {
			ck_assert_int_eq(f->ins[s.eop].op == KO_erow || f->ins[s.eop].op == KO_exp, 1);
			ck_assert(s.nepi >= 0 && s.dot >= 0);
		}
		ki_free(f);
	}
}
END_TEST

Suite *merge_suite(void)
{
	Suite *s = suite_create("merge");
	TCase *tc = tcase_create("interp");
	tcase_add_test(tc, test_merge_next_sum);
	tcase_add_test(tc, test_merge_nearest_tie);
	tcase_add_test(tc, test_merge_nan_never);
	tcase_add_test(tc, test_merge_summary);
	tcase_add_test(tc, test_merge_summary_online);
	tcase_add_test(tc, test_merge_simform);
	suite_add_tcase(s, tc);
	return s;
}
