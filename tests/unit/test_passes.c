/*
** The KIR passes (compiler/passes.c): each pass on small policies written
** in the text form, checked against the expected text after the pass; the
** pass driver; and, through the reference interpreter, that the passes
** change nothing a policy computes.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"
#include "compiler/interp.h"

#define HDR "policy \"p\" source \"p.lua\"\n"
#define T "select topk scope=head keep_first=nil keep_recent=nil chunk=nil schedule=none beta=nil\n" \
          "merge drop\nwhen prefill\n"

/* Run `passes` (verifying after each) on HDR in; the result must print as
** HDR want, followed by T unless want has its own rule lines, and round trip. */
static void after(const char *passes, const char *in, const char *want)
{
	char text[4096], exp[4096];
	snprintf(text, sizeof text, HDR "%s", in);
	snprintf(exp, sizeof exp, HDR "%s%s", want, strstr(want, "select topk") ? "" : T);
	KiFn *f = t_parse(text);
	KiErr e = { 0 };
	ck_assert_msg(ki_runpasses(f, passes, 1, &e, NULL, NULL) == 0, "%s", e.msg);
	char *s = t_roundtrip(f);
	ck_assert_msg(strcmp(s, exp) == 0, "after %s:\n%s\nwanted:\n%s", passes, s, exp);
	free(s);
	ki_free(f);
}

START_TEST(test_fold_constants)
{
	after("fold",
	      "%0 = input pos [token]\n"
	      "%1 = add 2, 3 []\n"
	      "%2 = mul %1, 4 [] @2:7\n"
	      "%3 = add %0, %2 [token] @3:1\n"
	      "score %3\n",
	      "%0 = input pos [token]\n"
	      "%1 = add %0, 20 [token] @3:1\n"
	      "score %1\n");
	/* a folded score, select field and obs */
	after("fold",
	      "param w = 2\n"
	      "%0 = sub 1, 3 []\n"
	      "%1 = neg %0 []\n"
	      "score %1\n"
	      "obs %0\n",
	      "param w = 2\n"
	      "score 2\n"
	      "obs -2\n");
}
END_TEST

/* The interpreter's scalar semantics: IEEE double, NaN-propagating max/min,
** comparisons give 1 or 0, where tests a != 0. */
START_TEST(test_fold_semantics)
{
	after("fold",
	      "%0 = log -1 []\n%1 = sqrt 2 []\n%2 = pow 2, 0.5 []\n%3 = max nan, 1 []\n"
	      "%4 = min 1, -0 []\n%5 = lt 1, 2 []\n%6 = le 2, 1 []\n%7 = eq 0, -0 []\n"
	      "%8 = ne nan, nan []\n%9 = where nan, 5, 6 []\n%10 = div 1, 0 []\n%11 = neg 0 []\n"
	      "%12 = exp 1 []\n%13 = abs -inf []\n%14 = div 0, 0 []\n"
	      "%15 = input pos [token]\n"
	      "%16 = where %15, %0, %1 [token]\n%17 = where %15, %2, %3 [token]\n"
	      "%18 = where %15, %4, %5 [token]\n%19 = where %15, %6, %7 [token]\n"
	      "%20 = where %15, %8, %9 [token]\n%21 = where %15, %10, %11 [token]\n"
	      "%22 = where %15, %12, %13 [token]\n%23 = where %15, %14, %15 [token]\n"
	      "%24 = add %16, %17 [token]\n%25 = add %24, %18 [token]\n%26 = add %25, %19 [token]\n"
	      "%27 = add %26, %20 [token]\n%28 = add %27, %21 [token]\n%29 = add %28, %22 [token]\n"
	      "%30 = add %29, %23 [token]\n"
	      "score %30\n",
	      "%0 = input pos [token]\n"
	      "%1 = where %0, nan, 1.4142135623730951 [token]\n"
	      "%2 = where %0, 1.4142135623730951, nan [token]\n"
	      "%3 = where %0, -0, 1 [token]\n"
	      "%4 = where %0, 0, 1 [token]\n"
	      "%5 = where %0, 1, 5 [token]\n"
	      "%6 = where %0, inf, -0 [token]\n"
	      "%7 = where %0, 2.7182818284590451, inf [token]\n"
	      "%8 = where %0, nan, %0 [token]\n"
	      "%9 = add %1, %2 [token]\n%10 = add %9, %3 [token]\n%11 = add %10, %4 [token]\n"
	      "%12 = add %11, %5 [token]\n%13 = add %12, %6 [token]\n%14 = add %13, %7 [token]\n"
	      "%15 = add %14, %8 [token]\n"
	      "score %15\n");
}
END_TEST

START_TEST(test_fold_identities)
{
	after("fold",
	      "param p = 3\n"
	      "%0 = input pos [token]\n"
	      "%1 = mul %0, 1 [token]\n%2 = mul 1, %1 [token]\n%3 = add 0, %2 [token]\n"
	      "%4 = add %3, -0 [token]\n%5 = sub %4, 0 [token]\n%6 = div %5, 1 [token]\n"
	      "%7 = where 1, %6, $p [token]\n%8 = where 0, $p, %7 [token]\n"
	      "%9 = mul $p, 1 []\n%10 = add %8, %9 [token]\n"
	      "score %10\n",
	      "param p = 3\n"
	      "%0 = input pos [token]\n"
	      "%1 = add %0, $p [token]\n"
	      "score %1\n");
}
END_TEST

/* Identities that would change the result axes, and ops that are not
** foldable, stay. */
START_TEST(test_fold_keeps)
{
	const char *keep =
		"param p = 3\n"
		"%0 = input pos [token]\n"
		"%1 = where 1, $p, %0 [token]\n"
		"%2 = where 0, %0, $p [token]\n"
		"%3 = sub 0, %0 [token]\n"
		"%4 = div 1, %0 [token]\n"
		"%5 = hmean 3 []\n"
		"%6 = rand 7 [token]\n"
		"%7 = mul %0, 2 [token]\n"
		"%8 = add %1, %2 [token]\n%9 = add %3, %4 [token]\n%10 = add %5, %6 [token]\n"
		"%11 = add %8, %9 [token]\n%12 = add %10, %7 [token]\n%13 = add %11, %12 [token]\n"
		"score %13\n";
	after("fold", keep, keep);
}
END_TEST

START_TEST(test_canon)
{
	after("canon",
	      "param p = 1\n"
	      "%0 = input pos [token]\n"
	      "%1 = add 3, %0 [token]\n"
	      "%2 = mul $p, %1 [token]\n"
	      "%3 = max %2, %1 [token]\n"
	      "%4 = sub 3, %3 [token]\n"
	      "%5 = eq 2, $p []\n"
	      "%6 = min %5, %4 [token]\n"
	      "%7 = input K [token, chan]\n"
	      "%8 = dot %7, %7 chan [token]\n"
	      "%9 = ne %8, %6 [token]\n"
	      "score %9\n",
	      "param p = 1\n"
	      "%0 = input pos [token]\n"
	      "%1 = add %0, 3 [token]\n"
	      "%2 = mul %1, $p [token]\n"
	      "%3 = max %1, %2 [token]\n"
	      "%4 = sub 3, %3 [token]\n"
	      "%5 = eq $p, 2 []\n"
	      "%6 = min %4, %5 [token]\n"
	      "%7 = input K [token, chan]\n"
	      "%8 = dot %7, %7 chan [token]\n"
	      "%9 = ne %6, %8 [token]\n"
	      "score %9\n");
}
END_TEST

START_TEST(test_cse)
{
	after("cse",
	      "%0 = input K [token, chan] @1:1\n"
	      "%1 = input K [token, chan] @2:1\n"
	      "%2 = norm %0 chan [token] @3:1\n"
	      "%3 = norm %1 chan [token] @4:1\n"
	      "%4 = sum %1 chan [token] @5:1\n"
	      "%5 = add %2, %3 [token] @6:1\n"
	      "%6 = add %2, %3 [token] @7:1\n"
	      "%7 = mul %5, %6 [token] @8:1\n"
	      "%8 = add %7, %4 [token] @9:1\n"
	      "score %8\n",
	      "%0 = input K [token, chan] @1:1\n"
	      "%1 = norm %0 chan [token] @3:1\n"
	      "%2 = sum %0 chan [token] @5:1\n"
	      "%3 = add %1, %1 [token] @6:1\n"
	      "%4 = mul %3, %3 [token] @8:1\n"
	      "%5 = add %4, %2 [token] @9:1\n"
	      "score %5\n");
	/* same op and operands but another axis, or another input: different */
	const char *keep =
		"%0 = input Q [group, obs, chan]\n"
		"%1 = mean %0 obs [group, chan]\n"
		"%2 = mean %0 group [obs, chan]\n"
		"%3 = input V [token, chan]\n"
		"%4 = input K [token, chan]\n"
		"%5 = state s [token]\n"
		"%6 = state t [token]\n"
		"%7 = add %5, %6 [token]\n"
		"score %7\n";
	char in[1024];
	snprintf(in, sizeof in, "state s = 0\nstate t = 0\n%s", keep);
	after("cse", in, in);
}
END_TEST

/* Commuted operands merge once canon has ordered them. */
START_TEST(test_canon_cse)
{
	const char *in =
		"%0 = input pos [token]\n"
		"%1 = input K [token, chan]\n"
		"%2 = rmax %1 chan [token]\n"
		"%3 = mul %0, %2 [token]\n"
		"%4 = mul %2, %0 [token]\n"
		"%5 = sub %3, %4 [token]\n"
		"score %5\n";
	after("cse", in, in);
	after("canon,cse", in,
	      "%0 = input pos [token]\n"
	      "%1 = input K [token, chan]\n"
	      "%2 = rmax %1 chan [token]\n"
	      "%3 = mul %0, %2 [token]\n"
	      "%4 = sub %3, %3 [token]\n"
	      "score %4\n");
}
END_TEST

START_TEST(test_dce)
{
	after("dce",
	      "param unused = 1\n"
	      "param w = 2\n"
	      "state acc = 0\n"
	      "state idle = 5\n"
	      "%0 = input Q [group, obs, chan]\n"
	      "%1 = input pos [token] @2:2\n"
	      "%2 = mul %1, 7 [token]\n"
	      "%3 = state acc [token] @4:4\n"
	      "%4 = attn [group, token]\n"
	      "%5 = sum %4 group [token]\n"
	      "%6 = add %3, %5 [token]\n"
	      "%7 = add %1, 9 [token]\n"
	      "%8 = size obs []\n"
	      "score %7\n"
	      "observe acc %6\n"
	      "select topk keep_first=11 keep_recent=$w\n"
	      "when decode every=13\n",
	      "param unused = 1\n"
	      "param w = 2\n"
	      "state acc = 0\n"
	      "state idle = 5\n"
	      "%0 = input pos [token] @2:2\n"
	      "%1 = state acc [token] @4:4\n"
	      "%2 = attn [group, token]\n"
	      "%3 = sum %2 group [token]\n"
	      "%4 = add %1, %3 [token]\n"
	      "%5 = add %0, 9 [token]\n"
	      "score %5\n"
	      "observe acc %4\n"
	      "select topk scope=head keep_first=11 keep_recent=$w chunk=nil schedule=none beta=nil\n"
	      "merge drop\nwhen decode every=13\n");
}
END_TEST

/* dce compacts the constant table; the values stay where they are used. */
START_TEST(test_dce_constants)
{
	KiFn *f = ki_new("c", "c.lua");
	ki_const(f, 100);
	KiRef x = t_ins(f, KO_input, KI_NIL, KI_NIL, KI_NIL, -1, IN_pos, 1, 1);
	t_ins(f, KO_add, x, ki_const(f, 101), KI_NIL, -1, 0, 1, 2);
	f->score = t_ins(f, KO_mul, x, ki_const(f, 102), KI_NIL, -1, 0, 1, 3);
	f->sel.keep_first = ki_const(f, 103);
	f->obs = ki_const(f, 104);
	char *before = ki_print(f);
	KiErr e = { 0 };
	ck_assert_int_eq(ki_runpasses(f, "dce", 1, &e, NULL, NULL), 0);
	ck_assert_int_eq(f->nins, 2);
	ck_assert_int_eq(f->ncon, 3);
	ck_assert(f->con[0] == 102 && f->con[1] == 103 && f->con[2] == 104);
	ck_assert(f->sel.keep_first == KI_REF(RK_CON, 1));
	char *s = t_roundtrip(f);
	ck_assert_ptr_nonnull(strstr(s, "%1 = mul %0, 102 [token] @1:3\n"));
	ck_assert_ptr_null(strstr(s, "101"));
	free(s);
	free(before);
	ki_free(f);
}
END_TEST

/* --- the driver ------------------------------------------------------------------------ */

static void dumpname(const KiFn *f, const char *pass, void *ud)
{
	char *log = ud;
	(void)f;
	strcat(log, pass);
	strcat(log, " ");
}

START_TEST(test_runpasses_driver)
{
	KiFn *f = t_snapkv();
	char log[256] = "";
	KiErr e = { 0 };
	ck_assert_int_eq(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, dumpname, log), 0);
	ck_assert_str_eq(log, "fold canon cse dce ");
	log[0] = 0;
	ck_assert_int_eq(ki_runpasses(f, "", 1, &e, dumpname, log), 0);
	ck_assert_str_eq(log, "");
	ck_assert_int_eq(ki_runpasses(f, "dce,dce", 0, &e, dumpname, log), 0);
	ck_assert_str_eq(log, "dce dce ");
	ck_assert(!e.set);
	ki_free(f);
}
END_TEST

START_TEST(test_runpasses_errors)
{
	static const struct { const char *names, *msg; } cases[] = {
		{ "fold,fold2", "error: unknown pass 'fold2' (passes: fold, canon, cse, dce)" },
		{ "cse,", "error: unknown pass '' (passes: fold, canon, cse, dce)" },
		{ ",cse", "error: unknown pass '' (passes: fold, canon, cse, dce)" },
		{ "fold,,dce", "error: unknown pass '' (passes: fold, canon, cse, dce)" },
		{ "FOLD", "error: unknown pass 'FOLD' (passes: fold, canon, cse, dce)" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		KiFn *f = t_snapkv();
		char *before = ki_print(f), log[64] = "";
		KiErr e = { 0 };
		ck_assert_int_eq(ki_runpasses(f, cases[i].names, 1, &e, dumpname, log), -1);
		ck_assert_str_eq(e.msg, cases[i].msg);
		/* names are checked before any pass runs */
		ck_assert_str_eq(log, "");
		char *now = ki_print(f);
		ck_assert_str_eq(before, now);
		free(before);
		free(now);
		ki_free(f);
	}
	/* an invalid input is reported before any pass runs when verifying */
	KiFn *f = t_snapkv();
	f->score = KI_NIL;
	KiErr e = { 0 };
	ck_assert_int_eq(ki_runpasses(f, "fold", 1, &e, NULL, NULL), -1);
	ck_assert_str_eq(e.msg, "policies/snapkv.lua:12:8: error: policy 'snapkv' has no score");
	ki_free(f);
}
END_TEST

/* Every pass keeps the samples valid and printable; applying the default
** pipeline twice changes nothing the second time. */
START_TEST(test_passes_idempotent)
{
	KiFn *(*make[])(void) = { t_snapkv, t_h2o, t_allops };
	for (size_t i = 0; i < sizeof make / sizeof make[0]; i++) {
		KiFn *f = make[i]();
		KiErr e = { 0 };
		ck_assert_msg(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0, "%s", e.msg);
		char *s1 = t_roundtrip(f);
		ck_assert_int_eq(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL), 0);
		char *s2 = ki_print(f);
		ck_assert_str_eq(s1, s2);
		free(s1);
		free(s2);
		ki_free(f);
	}
}
END_TEST

/* --- semantics: the interpreter gives the same bits before and after ---------------------- */

static float frand(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)((*s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

static void interp(const KiFn *f, KiResult *r)
{
	enum { L = 2, Hh = 2, G = 2, D = 8, N = 24, O = 4 };
	static float K[L * Hh * N * D], V[L * Hh * N * D], Q[L * Hh * G * O * D], lse[L * Hh * G * O];
	uint32_t s = 12345;
	for (size_t i = 0; i < sizeof K / sizeof K[0]; i++)
		K[i] = frand(&s), V[i] = frand(&s);
	for (size_t i = 0; i < sizeof Q / sizeof Q[0]; i++)
		Q[i] = 4 * frand(&s);
	for (size_t i = 0; i < sizeof lse / sizeof lse[0]; i++)
		lse[i] = 3 + frand(&s);
	KiCase c;
	memset(&c, 0, sizeof c);
	c.L = L, c.H = Hh, c.G = G, c.d = D, c.n = N, c.O = O;
	c.K = K, c.V = V, c.Q = Q, c.lse = lse;
	c.dtype = KVCC_F32;
	c.ratio = 0.5;
	c.budget = -1;
	/* the declared weights, filled with small values (out axes: 5 unless fixed) */
	static KiWData wd[KI_MAXW];
	static double wdata[KI_MAXW][L * Hh * G * D * 8];
	for (int i = 0; i < f->nw; i++) {
		wd[i].name = f->w[i].name, wd[i].ndim = f->w[i].ndim, wd[i].data = wdata[i];
		size_t cnt = 1;
		for (int k = 0; k < f->w[i].ndim; k++) {
			static const long ext[WA_NUM] = { L, Hh, G, D, 5 };
			wd[i].shape[k] = f->w[i].ax[k] == WA_out && f->w[i].size ? f->w[i].size : ext[f->w[i].ax[k]];
			cnt *= (size_t)wd[i].shape[k];
		}
		ck_assert(cnt <= sizeof wdata[0] / sizeof wdata[0][0]);
		for (size_t k = 0; k < cnt; k++)
			wdata[i][k] = frand(&s);
	}
	c.nw = f->nw, c.w = wd;
	KiErr e = { 0 };
	memset(r, 0, sizeof *r);
	ck_assert_msg(ki_run(f, &c, r, &e) == 0, "%s", e.msg);
}

static const char eqpolicy[] =
	"policy \"eq\" source \"eq.lua\"\n"
	"param window = 4\n"
	"param kernel = 3\n"
	"%0 = input Q [group, obs, chan]\n"
	"%1 = input K [token, chan]\n"
	"%2 = dot %0, %1 chan [group, obs, token]\n"
	"%3 = info scale []\n"
	"%4 = mul %3, %2 [group, obs, token]\n"
	"%5 = softmax %4 token [group, obs, token]\n"
	"%6 = mean %5 obs [group, token]\n"
	"%7 = mean %6 group [token]\n"
	"%8 = avgpool %7, $kernel token [token]\n"
	"%9 = input K [token, chan]\n"
	"%10 = norm %9 chan [token]\n"
	"%11 = norm %1 chan [token]\n"
	"%12 = sub %10, %11 [token]\n"
	"%13 = add 2, 3 []\n"
	"%14 = mul %13, 0.001 []\n"
	"%15 = mul %12, %14 [token]\n"
	"%16 = add %8, %15 [token]\n"
	"%17 = mul 1, %16 [token]\n"
	"%18 = div %17, 1 [token]\n"
	"%19 = input pos [token]\n"
	"%20 = lt %19, 5 [token]\n"
	"%21 = max %18, %11 [token]\n"
	"%22 = max %11, %18 [token]\n"
	"%23 = add %21, %22 [token]\n"
	"%24 = mul %23, %10 [token]\n"
	"score %24\n"
	"obs $window\n"
	"select topk scope=head keep_first=1 keep_recent=$window chunk=1 schedule=none beta=20\n"
	"merge drop\n"
	"when prefill\n";

START_TEST(test_passes_preserve_results)
{
	for (int k = 0; k < 3; k++) {
		KiFn *f = k == 0 ? t_parse(eqpolicy) : k == 1 ? t_snapkv() : t_allops();
		f->obs_all = 0;
		if (f->obs == KI_NIL)
			f->obs = ki_const(f, 4);
		KiResult r0, r1;
		interp(f, &r0);
		KiErr e = { 0 };
		int before = f->nins;
		ck_assert_msg(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0, "%s", e.msg);
		if (k == 0)
			ck_assert_int_lt(f->nins, before);
		interp(f, &r1);
		size_t n = (size_t)r0.L * (size_t)r0.H * (size_t)r0.n;
		ck_assert(memcmp(r0.scores, r1.scores, n * sizeof *r0.scores) == 0);
		ck_assert(memcmp(r0.len, r1.len, (size_t)r0.L * (size_t)r0.H * sizeof *r0.len) == 0);
		ck_assert(memcmp(r0.kept, r1.kept, n * sizeof *r0.kept) == 0);
		ki_result_free(&r0);
		ki_result_free(&r1);
		ki_free(f);
	}
}
END_TEST

/* The observe hook too: H2O reads its state in the hook and in the score,
** and cse merges the two reads. Two decode steps, then compression. */
START_TEST(test_passes_preserve_observe)
{
	enum { L = 2, Hh = 2, G = 2, D = 8, N = 16 };
	static float K[L * Hh * N * D], V[L * Hh * N * D], q[2][L * Hh * G * D];
	uint32_t s = 777;
	for (size_t i = 0; i < sizeof K / sizeof K[0]; i++)
		K[i] = frand(&s), V[i] = frand(&s);
	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < sizeof q[k] / sizeof q[k][0]; i++)
			q[k][i] = 4 * frand(&s);
	KiCase c;
	memset(&c, 0, sizeof c);
	c.L = L, c.H = Hh, c.G = G, c.d = D, c.n = N;
	c.K = K, c.V = V;
	c.dtype = KVCC_F32;
	c.ratio = 0.25;
	c.budget = -1;
	double st[2][L * Hh * N];
	KiResult r[2];
	KiFn *f = t_h2o();
	for (int pass = 0; pass < 2; pass++) {
		KiErr e = { 0 };
		if (pass == 1) {
			int before = f->nins;
			ck_assert_msg(ki_runpasses(f, KI_DEFAULT_PASSES, 1, &e, NULL, NULL) == 0, "%s", e.msg);
			ck_assert_int_lt(f->nins, before);
		}
		for (size_t i = 0; i < L * Hh * N; i++)
			st[pass][i] = f->st[0].init;
		for (int k = 0; k < 2; k++)
			ck_assert_msg(ki_observe(f, &c, q[k], st[pass], NULL, &e) == 0, "%s", e.msg);
		c.state = st[pass];
		ck_assert_msg(ki_run(f, &c, &r[pass], &e) == 0, "%s", e.msg);
	}
	ck_assert(memcmp(st[0], st[1], sizeof st[0]) == 0);
	ck_assert(memcmp(r[0].scores, r[1].scores, L * Hh * N * sizeof(double)) == 0);
	ck_assert(memcmp(r[0].kept, r[1].kept, L * Hh * N * sizeof(int32_t)) == 0);
	ki_result_free(&r[0]);
	ki_result_free(&r[1]);
	ki_free(f);
}
END_TEST

Suite *passes_suite(void)
{
	Suite *s = suite_create("passes");
	TCase *tc = tcase_create("fold");
	tcase_add_test(tc, test_fold_constants);
	tcase_add_test(tc, test_fold_semantics);
	tcase_add_test(tc, test_fold_identities);
	tcase_add_test(tc, test_fold_keeps);
	suite_add_tcase(s, tc);
	tc = tcase_create("canon_cse_dce");
	tcase_add_test(tc, test_canon);
	tcase_add_test(tc, test_cse);
	tcase_add_test(tc, test_canon_cse);
	tcase_add_test(tc, test_dce);
	tcase_add_test(tc, test_dce_constants);
	suite_add_tcase(s, tc);
	tc = tcase_create("driver");
	tcase_add_test(tc, test_runpasses_driver);
	tcase_add_test(tc, test_runpasses_errors);
	tcase_add_test(tc, test_passes_idempotent);
	tcase_add_test(tc, test_passes_preserve_results);
	tcase_add_test(tc, test_passes_preserve_observe);
	suite_add_tcase(s, tc);
	return s;
}
