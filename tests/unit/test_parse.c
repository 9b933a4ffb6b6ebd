/*
** The KIR parser (compiler/parse.c): print → parse → print round trips,
** what it accepts beyond the printer's exact layout, one-line errors at the
** offending token for malformed text, and a robustness run over prefixes
** and random mutations of printed policies.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"
#include "compiler/lex.h"

#define H "policy \"p\" source \"p.lua\"\n"

START_TEST(test_parse_roundtrip_samples)
{
	KiFn *(*make[])(void) = { t_snapkv, t_h2o, t_allops };
	for (size_t i = 0; i < sizeof make / sizeof make[0]; i++) {
		KiFn *f = make[i]();
		free(t_roundtrip(f));
		ki_free(f);
	}
}
END_TEST

/* The printer's exact text for SnapKV (print.c's header example). */
START_TEST(test_parse_snapkv_text)
{
	static const char want[] =
		"policy \"snapkv\" source \"policies/snapkv.lua\" @12:8\n"
		"param window = 64 @3:26\n"
		"param kernel = 5 @3:40\n"
		"%0 = input Q [group, obs, chan] @7:12\n"
		"%1 = input K [token, chan] @7:22\n"
		"%2 = dot %0, %1 chan [group, obs, token] @7:18\n"
		"%3 = info scale [] @7:40\n"
		"%4 = mul %2, %3 [group, obs, token] @7:35\n"
		"%5 = softmax %4 token [group, obs, token] @7:13\n"
		"%6 = mean %5 obs [group, token] @8:10\n"
		"%7 = mean %6 group [token] @8:25\n"
		"%8 = avgpool %7, $kernel token [token] @8:5\n"
		"score %8\n"
		"obs $window\n"
		"select topk scope=head keep_first=0 keep_recent=$window chunk=1 schedule=none beta=20 @14:12\n"
		"merge drop @15:11\n"
		"when prefill @16:10\n";
	KiFn *f = t_snapkv();
	char *s = t_roundtrip(f);
	ck_assert_str_eq(s, want);
	free(s);
	ki_free(f);
}
END_TEST

/* Parsed fields, not just the text: refs, positions, params, rules. */
START_TEST(test_parse_fields)
{
	KiFn *f = t_h2o();
	char *s = ki_print(f);
	KiFn *g = t_parse(s);
	ck_assert_str_eq(g->name, "h2o");
	ck_assert_str_eq(g->src, "policies/h2o.lua");
	ck_assert_uint_eq(g->line, 2);
	ck_assert_uint_eq(g->col, 8);
	ck_assert_int_eq(g->nins, f->nins);
	ck_assert(memcmp(g->ins, f->ins, (size_t)f->nins * sizeof *f->ins) == 0);
	ck_assert_int_eq(g->npar, 1);
	ck_assert_str_eq(g->par[0].name, "recent");
	ck_assert_uint_eq(g->par[0].line, 1);
	ck_assert_uint_eq(g->par[0].col, 24);
	ck_assert_int_eq(g->nst, 1);
	ck_assert(g->st[0].update == KI_REF(RK_INS, 3));
	ck_assert(g->score == KI_REF(RK_INS, 4));
	ck_assert(g->sel.keep_recent == KI_REF(RK_PAR, 0));
	ck_assert(KI_RKIND(g->sel.keep_first) == RK_CON && g->con[KI_RIDX(g->sel.keep_first)] == 4);
	ck_assert_int_eq(g->when.kind, WH_decode);
	ck_assert(KI_RKIND(g->when.every) == RK_CON && g->con[KI_RIDX(g->when.every)] == 1);
	ck_assert_uint_eq(g->merge.line, 0);
	KiErr e = { 0 };
	ck_assert_msg(ki_verify(g, &e) == 0, "%s", e.msg);
	free(s);
	ki_free(f);
	ki_free(g);
}
END_TEST

/* Constants come back bit for bit (interned by bits: -0 is not 0). */
START_TEST(test_parse_numbers_exact)
{
	static const double v[] = { -0.0, 0.0, 0.1, 1.0 / 3, 1e-310, 4.9406564584124654e-324, 1e15,
	                            999999999999999.0, 1e300, -1.7976931348623157e308, INFINITY,
	                            -INFINITY, 2.5e-7, 123.456, -42 };
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		KiFn *f = ki_new("n", "n.lua");
		ki_addparam(f, "p", v[i], 1, 1);
		KiRef c = ki_const(f, v[i]);
		KiRef x = t_ins(f, KO_input, KI_NIL, KI_NIL, KI_NIL, -1, IN_pos, 1, 1);
		f->score = t_ins(f, KO_add, x, c, KI_NIL, -1, 0, 1, 2);
		char *s = t_roundtrip(f);
		KiFn *g = t_parse(s);
		ck_assert_msg(memcmp(&g->par[0].def, &v[i], sizeof v[i]) == 0, "param %.17g", v[i]);
		KiRef r = g->ins[1].arg[1];
		ck_assert(KI_RKIND(r) == RK_CON);
		ck_assert_msg(memcmp(&g->con[KI_RIDX(r)], &v[i], sizeof v[i]) == 0, "const %.17g", v[i]);
		free(s);
		ki_free(f);
		ki_free(g);
	}
}
END_TEST

/* Beyond the exact layout: comments, blank lines, CRLF, no final newline,
** select fields in any order, missing rules keep ki_new's defaults. */
START_TEST(test_parse_lenient)
{
	const char *text =
		"# a comment\n\n"
		"policy \"p\" source \"p.lua\"   # trailing comment\r\n"
		"param w = 8\n"
		"\n"
		"%0 = input pos [token]\t@3:4\n"
		"%1 = add %0, $w [token]\n"
		"select topk beta=2 chunk=1 keep_recent=$w schedule=pyramid scope=layer keep_first=nil\n"
		"score %1";
	KiFn *f = t_parse(text);
	ck_assert_int_eq(f->nins, 2);
	ck_assert_uint_eq(f->ins[0].line, 3);
	ck_assert_uint_eq(f->ins[0].col, 4);
	ck_assert(f->score == KI_REF(RK_INS, 1));
	ck_assert_int_eq(f->sel.scope, SC_layer);
	ck_assert_int_eq(f->sel.sched, SCH_pyramid);
	ck_assert(f->sel.keep_first == KI_NIL);
	ck_assert(f->sel.keep_recent == KI_REF(RK_PAR, 0));
	ck_assert_int_eq(f->when.kind, WH_prefill);
	ck_assert_int_eq(f->merge.kind, MG_drop);
	/* axes in any order come back canonical */
	KiFn *g = t_parse(H "%0 = input K [chan, token]\nscore 1\n");
	ck_assert_uint_eq(g->ins[0].axes, AXM(AX_token) | AXM(AX_chan));
	ki_free(g);
	free(t_roundtrip(f));
	ki_free(f);
}
END_TEST

/* Names that are also number words or keywords print and parse back. */
START_TEST(test_parse_odd_names)
{
	KiFn *f = t_parse(H "param inf = 1\nparam nan = 2\nparam nil = 3\nstate inf = 0\nstate all = 1\n"
	                    "%0 = state inf [token]\n%1 = add %0, $inf [token]\n%2 = add %1, $nil [token]\n"
	                    "observe inf %2\nobs $nan\nscore %2\n");
	ck_assert_int_eq(f->npar, 3);
	ck_assert_str_eq(f->par[0].name, "inf");
	ck_assert(f->ins[1].arg[1] == KI_REF(RK_PAR, 0));
	ck_assert(f->obs == KI_REF(RK_PAR, 1));
	free(t_roundtrip(f));
	ki_free(f);
}
END_TEST

/* Each malformed text gives exactly this error line and a NULL result. */
static const struct { const char *text; const char *msg; } bad[] = {
	/* refs */
	{ H "%0 = input pos [token]\n%1 = add %0, $nope [token]\n",
	  "t.kir:3:14: error: unknown param '$nope'" },
	{ H "%0 = input pos [token]\n%1 = add %0, %1 [token]\n",
	  "t.kir:3:14: error: forward reference to %1 in instruction %1" },
	{ H "%0 = input pos [token]\n%1 = add %7, %0 [token]\n",
	  "t.kir:3:10: error: forward reference to %7 in instruction %1" },
	{ H "%0 = input pos [token]\nscore %3\n",
	  "t.kir:3:7: error: undefined instruction %3 (there are 1)" },
	{ H "%0 = neg %x [token]\n",
	  "t.kir:2:10: error: expected an instruction number after '%'" },
	{ H "%0 = input pos [token]\n%1 = neg foo [token]\n",
	  "t.kir:3:10: error: expected an operand (%N, $param, number or nil), found 'foo'" },
	{ H "%1 = input K [token, chan]\n",
	  "t.kir:2:1: error: expected instruction %0, found %1 (instructions are numbered in order)" },
	{ H "%0 = input pos [token]\n%0 = input pos [token]\n",
	  "t.kir:3:1: error: expected instruction %1, found %0 (instructions are numbered in order)" },
	{ H "%0 = state acc [token]\n", "t.kir:2:12: error: unknown state 'acc'" },
	{ H "observe acc 1\n", "t.kir:2:9: error: unknown state 'acc'" },
	{ H "state acc = 0\nobserve acc 1\nobserve acc 2\n",
	  "t.kir:4:9: error: duplicate observe for state 'acc'" },
	/* ops and arity */
	{ H "%0 = frob %1 [token]\n", "t.kir:2:6: error: unknown op 'frob'" },
	{ H "%0 = 5 [token]\n", "t.kir:2:6: error: expected an op name, found '5'" },
	{ H "%0 = input pos [token]\n%1 = add %0 [token]\n",
	  "t.kir:3:13: error: add takes 2 operands, found 1" },
	{ H "%0 = input pos [token]\n%1 = where %0, %0 [token]\n",
	  "t.kir:3:19: error: where takes 3 operands, found 2" },
	{ H "%0 = input pos [token]\n%1 = neg %0, %0 [token]\n",
	  "t.kir:3:12: error: neg takes 1 operand, found more" },
	{ H "%0 = neg [token]\n", "t.kir:2:10: error: neg takes 1 operand, found 0" },
	{ H "%0 = attn 1 [group, token]\n", "t.kir:2:11: error: attn takes 0 operands, found more" },
	{ H "%0 = input K [token, chan]\n%1 = sum %0 [token]\n",
	  "t.kir:3:13: error: sum needs an axis name, found '['" },
	/* names and axes */
	{ H "%0 = input K [token, chan]\n%1 = sum %0 tok [token]\n",
	  "t.kir:3:13: error: unknown axis 'tok'" },
	{ H "%0 = input K [token, chen]\n", "t.kir:2:22: error: unknown axis 'chen'" },
	{ H "%0 = input K [token, head]\n", "t.kir:2:22: error: 'head' is not a tensor axis" },
	{ H "%0 = input K [token, token]\n", "t.kir:2:22: error: duplicate axis 'token'" },
	{ H "%0 = input K [token chan]\n", "t.kir:2:21: error: expected ',' or ']', found 'chan'" },
	{ H "%0 = input K [token,\n", "t.kir:2:21: error: expected an axis name, found end of line" },
	{ H "%0 = input K\n", "t.kir:2:13: error: expected '[' (the result axes), found end of line" },
	{ H "%0 = input X [token]\n",
	  "t.kir:2:12: error: unknown input 'X' (inputs: K V Q lse pos qpos)" },
	{ H "%0 = info temperature []\n",
	  "t.kir:2:11: error: unknown info 'temperature' (scale layer head nlayers nheads step)" },
	{ H "%0 = index time [token]\n", "t.kir:2:12: error: unknown axis 'time'" },
	{ H "%0 = size head []\n", "t.kir:2:11: error: 'head' is not a tensor axis" },
	/* statements */
	{ H "%0 input pos [token]\n", "t.kir:2:4: error: expected '=', found 'input'" },
	{ H "param x 1\n", "t.kir:2:9: error: expected '=', found '1'" },
	{ H "param x = y\n", "t.kir:2:11: error: expected a number, found 'y'" },
	{ H "param 5 = 1\n", "t.kir:2:7: error: expected a param name, found '5'" },
	{ H "param w = 1\nparam w = 2\n", "t.kir:3:7: error: duplicate param 'w'" },
	{ H "state s = 1\nstate s = 2\n", "t.kir:3:7: error: duplicate state 's'" },
	{ H "param abcdefghijabcdefghijabcdefghijab = 1\n",
	  "t.kir:2:7: error: param name too long (at most 31 bytes)" },
	{ H "score 1\nscore 2\n", "t.kir:3:1: error: duplicate score" },
	{ H "score 1 2\n", "t.kir:2:9: error: expected end of line, found '2'" },
	{ H "obs some\n",
	  "t.kir:2:5: error: expected an operand (%N, $param, number or nil), found 'some'" },
	{ H "frobnicate 1\n", "t.kir:2:1: error: unknown statement 'frobnicate'" },
	{ H "= 1\n", "t.kir:2:1: error: expected a statement, found '='" },
	{ H H, "t.kir:2:1: error: duplicate policy header" },
	{ H "select topk foo=1\n",
	  "t.kir:2:13: error: unknown select field 'foo' (fields: scope keep_first keep_recent chunk schedule beta tau p floor keep sa sb cap)" },
	{ H "select topk chunk=1 chunk=2\n", "t.kir:2:21: error: duplicate select field 'chunk'" },
	{ H "select topk scope=global\n",
	  "t.kir:2:19: error: expected a scope (head, layer or model), found 'global'" },
	{ H "select topk schedule=linear\n",
	  "t.kir:2:22: error: expected a schedule (none, pyramid, prefix or dynamic), found 'linear'" },
	{ H "select random\n", "t.kir:2:8: error: expected a select rule (topk, threshold or mass), found 'random'" },
	{ H "select topk chunk 1\n", "t.kir:2:19: error: expected '=', found '1'" },
	{ H "merge keep\n", "t.kir:2:7: error: expected a merge rule (drop nearest next runs summary), found 'keep'" },
	{ H "when sometimes\n", "t.kir:2:6: error: expected prefill or decode, found 'sometimes'" },
	{ H "when decode\n", "t.kir:2:12: error: expected every=, found end of line" },
	{ H "when prefill\nwhen prefill\n", "t.kir:3:1: error: duplicate when" },
	/* header */
	{ "", "t.kir:1:1: error: expected 'policy' (the header line), found end of input" },
	{ "param x = 1\n", "t.kir:1:1: error: expected 'policy' (the header line), found 'param'" },
	{ "policy p source \"s\"\n", "t.kir:1:8: error: expected the policy name (a string), found 'p'" },
	{ "policy \"p\"\n", "t.kir:1:11: error: expected 'source', found end of line" },
	{ "policy \"p\" source \"s\" @3\n",
	  "t.kir:1:23: error: malformed position (expected @line:col)" },
	{ "policy \"abc\n", "t.kir:1:8: error: unterminated string" },
	{ "policy \"0123456789012345678901234567890123456789012345678901234567890123\" source \"\"\n",
	  "t.kir:1:8: error: policy name too long (at most 63 bytes)" },
	/* lexical and numeric limits */
	{ H "param x = 1e999\n", "t.kir:2:11: error: number out of range" },
	{ H "param x = -1e400\n", "t.kir:2:11: error: number out of range" },
	{ H "%99999999999 = input pos [token]\n", "t.kir:2:1: error: instruction number too large" },
	{ H "%0 = input pos [token] @99999999999:1\n", "t.kir:2:24: error: position out of range" },
	{ H "%0 = input pos [token] @0:1\n", "t.kir:2:24: error: bad position (lines count from 1)" },
	{ H "score 1 & 2\n", "t.kir:2:9: error: unexpected character '&'" },
	{ H "param \xc3\xa9 = 1\n", "t.kir:2:7: error: unexpected byte 0xc3" },
};

START_TEST(test_parse_errors)
{
	const char *text = bad[_i].text, *msg = bad[_i].msg;
	KiErr e = { 0 };
	KiFn *f = ki_parse(text, "t.kir", &e);
	ck_assert_msg(f == NULL, "parsed without error:\n%s", text);
	ck_assert_int_eq(e.set, 1);
	ck_assert_msg(strcmp(e.msg, msg) == 0, "case %d:\n%s\ngave  %s\nwanted %s", _i, text, e.msg, msg);
	ck_assert_ptr_null(strchr(e.msg, '\n'));
}
END_TEST

START_TEST(test_parse_embedded_nul)
{
	static const char text[] = H "param a = 1\n\0param b = 2\n";
	KiErr e = { 0 };
	ck_assert_ptr_null(ki_parsen(text, sizeof text - 1, "t.kir", &e));
	ck_assert_str_eq(e.msg, "t.kir:3:1: error: embedded NUL byte");
	/* through ki_parse the NUL is the end of the text */
	KiErr e2 = { 0 };
	KiFn *f = ki_parse(text, "t.kir", &e2);
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(f->npar, 1);
	ki_free(f);
}
END_TEST

START_TEST(test_parse_too_many_states)
{
	size_t cap = 300 * 32 + 64, n = 0;
	char *text = malloc(cap);
	n += (size_t)snprintf(text + n, cap - n, H);
	for (int i = 0; i <= 256; i++)
		n += (size_t)snprintf(text + n, cap - n, "state s%d = 0\n", i);
	KiErr e = { 0 };
	ck_assert_ptr_null(ki_parse(text, "t.kir", &e));
	ck_assert_str_eq(e.msg, "t.kir:258:7: error: too many states (at most 256)");
	free(text);
}
END_TEST

/* The first error wins: a KiErr already set is left alone. */
START_TEST(test_parse_keeps_first_error)
{
	KiErr e = { 1, "earlier", 0 };
	ck_assert_ptr_null(ki_parse("junk", "t.kir", &e));
	ck_assert_str_eq(e.msg, "earlier");
}
END_TEST

/* --- robustness: prefixes and random mutations -------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* Parse len bytes of s; it either parses (and then its print round trips)
** or sets a one-line error. Either way nothing leaks (checked under ASan). */
static void tryparse(const char *s, size_t len)
{
	char *buf = malloc(len + 1);
	memcpy(buf, s, len);
	buf[len] = 0;
	KiErr e = { 0 };
	KiFn *f = ki_parsen(buf, len, "fuzz.kir", &e);
	if (f) {
		ck_assert(!e.set);
		char *p = ki_print(f);
		KiFn *g = t_parse(p);
		char *q = ki_print(g);
		ck_assert_str_eq(p, q);
		free(p);
		free(q);
		ki_free(g);
		ki_free(f);
	} else {
		ck_assert(e.set);
		ck_assert(strncmp(e.msg, "fuzz.kir:", 9) == 0);
		ck_assert_ptr_null(strchr(e.msg, '\n'));
	}
	free(buf);
}

START_TEST(test_parse_prefixes)
{
	KiFn *(*make[])(void) = { t_snapkv, t_h2o, t_allops };
	for (size_t i = 0; i < sizeof make / sizeof make[0]; i++) {
		KiFn *f = make[i]();
		char *s = ki_print(f);
		size_t n = strlen(s);
		for (size_t k = 0; k <= n; k++)
			tryparse(s, k);
		free(s);
		ki_free(f);
	}
}
END_TEST

START_TEST(test_parse_mutations)
{
	static const char pool[] = "%$@=,[]\"#:-.0123456789einaftokchgrpsu \n\t\r\0\x80\xff";
	KiFn *(*make[])(void) = { t_snapkv, t_h2o, t_allops };
	rng = 0x9e3779b97f4a7c15ull;
	for (int round = 0; round < 3000; round++) {
		KiFn *f = make[round % 3]();
		char *s = ki_print(f);
		size_t n = strlen(s);
		ki_free(f);
		s = realloc(s, n + 64);
		int edits = 1 + (int)(rnd() % 4);
		for (int k = 0; k < edits && n > 0; k++) {
			size_t at = rnd() % n;
			switch (rnd() % 4) {
			case 0:   /* replace a byte */
				s[at] = pool[rnd() % (sizeof pool - 1)];
				break;
			case 1:   /* delete a byte */
				memmove(s + at, s + at + 1, n - at);
				n--;
				break;
			case 2:   /* insert a byte (at most 4 edits: the 64 spare bytes suffice) */
				memmove(s + at + 1, s + at, n - at + 1);
				s[at] = pool[rnd() % (sizeof pool - 1)];
				n++;
				break;
			case 3:   /* flip a bit */
				s[at] ^= (char)(1 << (rnd() % 8));
				break;
			}
		}
		tryparse(s, n);
		free(s);
	}
}
END_TEST

Suite *parse_suite(void)
{
	Suite *s = suite_create("parse");
	TCase *tc = tcase_create("roundtrip");
	tcase_add_test(tc, test_parse_roundtrip_samples);
	tcase_add_test(tc, test_parse_snapkv_text);
	tcase_add_test(tc, test_parse_fields);
	tcase_add_test(tc, test_parse_numbers_exact);
	tcase_add_test(tc, test_parse_lenient);
	tcase_add_test(tc, test_parse_odd_names);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_parse_errors, 0, (int)(sizeof bad / sizeof bad[0]));
	tcase_add_test(tc, test_parse_embedded_nul);
	tcase_add_test(tc, test_parse_too_many_states);
	tcase_add_test(tc, test_parse_keeps_first_error);
	suite_add_tcase(s, tc);
	tc = tcase_create("robustness");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_parse_prefixes);
	tcase_add_test(tc, test_parse_mutations);
	suite_add_tcase(s, tc);
	return s;
}
