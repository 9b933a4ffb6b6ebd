/*
** The KIR lexer (compiler/lex.re): token kinds, values, positions, and the
** error tokens for malformed input.
*/
#include <math.h>
#include <string.h>
#include "tests/unit/unit.h"
#include "compiler/lex.h"

/* Lex all of text (len bytes) into toks; returns the count, the last being
** KT_EOF or the first KT_ERR. The lexer outlives the call: an error
** token's message may point into it. */
static KiLex l;
static int lexall(const char *text, size_t len, KiTok *toks, int max)
{
	ki_lexinit(&l, text, len);
	int n = 0;
	while (n < max) {
		int t = ki_lex(&l, &toks[n++]);
		if (t == KT_EOF || t == KT_ERR)
			break;
	}
	return n;
}

static int lexs(const char *text, KiTok *toks, int max)
{
	return lexall(text, strlen(text), toks, max);
}

START_TEST(test_lex_instruction_line)
{
	KiTok t[32];
	int n = lexs("%12 = dot %0, $win chan [group, token] @7:18\n", t, 32);
	static const int want[] = { KT_INS, KT_EQ, KT_IDENT, KT_INS, KT_COMMA, KT_PAR, KT_IDENT,
	                            KT_LBRACK, KT_IDENT, KT_COMMA, KT_IDENT, KT_RBRACK, KT_POS, KT_NL,
	                            KT_EOF };
	ck_assert_int_eq(n, 15);
	for (int i = 0; i < n; i++)
		ck_assert_msg(t[i].t == want[i], "token %d is %s, expected %s", i, ki_tokname(t[i].t),
		              ki_tokname(want[i]));
	ck_assert_uint_eq(t[0].a, 12);
	ck_assert_uint_eq(t[3].a, 0);
	ck_assert_int_eq((int)t[5].len, 4);
	ck_assert(memcmp(t[5].s, "$win", 4) == 0);
	ck_assert_uint_eq(t[12].a, 7);
	ck_assert_uint_eq(t[12].b, 18);
	ck_assert(memcmp(t[2].s, "dot", 3) == 0 && t[2].len == 3);
}
END_TEST

START_TEST(test_lex_positions)
{
	KiTok t[16];
	int n = lexs("a  b # comment, = [\n\tc\r\n  %3", t, 16);
	ck_assert_int_eq(n, 7);
	ck_assert_uint_eq(t[0].line, 1); ck_assert_uint_eq(t[0].col, 1);
	ck_assert_uint_eq(t[1].line, 1); ck_assert_uint_eq(t[1].col, 4);
	ck_assert_int_eq(t[2].t, KT_NL);
	ck_assert_uint_eq(t[2].col, 20);
	ck_assert_uint_eq(t[3].line, 2); ck_assert_uint_eq(t[3].col, 2);
	ck_assert_int_eq(t[4].t, KT_NL);
	ck_assert_int_eq((int)t[4].len, 2);
	ck_assert_int_eq(t[5].t, KT_INS);
	ck_assert_uint_eq(t[5].line, 3); ck_assert_uint_eq(t[5].col, 3);
	ck_assert_int_eq(t[6].t, KT_EOF);
	ck_assert_uint_eq(t[6].line, 3); ck_assert_uint_eq(t[6].col, 5);
}
END_TEST

START_TEST(test_lex_numbers)
{
	static const struct { const char *s; double v; } cases[] = {
		{ "0", 0 }, { "-0", -0.0 }, { "12", 12 }, { "-3.5", -3.5 }, { "1e-07", 1e-07 },
		{ "2.5E+3", 2500 }, { "1.", 1 }, { "inf", INFINITY }, { "-inf", -INFINITY },
		{ "123456789012345", 123456789012345.0 }, { "1.7976931348623157e+308", 1.7976931348623157e308 },
		{ "4.9406564584124654e-324", 4.9406564584124654e-324 }, { "1e-400", 0 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		KiTok t[4];
		lexs(cases[i].s, t, 4);
		ck_assert_msg(t[0].t == KT_NUM, "%s: %s", cases[i].s, ki_tokname(t[0].t));
		ck_assert_msg(memcmp(&t[0].num, &cases[i].v, sizeof(double)) == 0, "%s: %g", cases[i].s,
		              t[0].num);
		ck_assert_int_eq((int)t[0].len, (int)strlen(cases[i].s));
		ck_assert_int_eq(t[1].t, KT_EOF);
	}
	KiTok t[4];
	lexs("nan", t, 4);
	ck_assert_int_eq(t[0].t, KT_NUM);
	ck_assert(isnan(t[0].num));
	/* longest match: a word that starts like inf is an identifier */
	lexs("info", t, 4);
	ck_assert_int_eq(t[0].t, KT_IDENT);
	/* 1e without exponent digits: the number 1, then the identifier e */
	lexs("1e", t, 4);
	ck_assert_int_eq(t[0].t, KT_NUM);
	ck_assert_int_eq(t[1].t, KT_IDENT);
}
END_TEST

START_TEST(test_lex_strings)
{
	KiTok t[8];
	int n = lexs("policy \"snap kv#1\" source \"\"", t, 8);
	ck_assert_int_eq(n, 5);
	ck_assert_int_eq(t[1].t, KT_STR);
	ck_assert_int_eq((int)t[1].len, 11);
	ck_assert(memcmp(t[1].s, "\"snap kv#1\"", 11) == 0);
	ck_assert_int_eq(t[3].t, KT_STR);
	ck_assert_int_eq((int)t[3].len, 2);
}
END_TEST

/* Each malformed input gives one error token with this message and column. */
START_TEST(test_lex_errors)
{
	static const struct { const char *s; const char *msg; int col; } cases[] = {
		{ "a \"abc", "unterminated string", 3 },
		{ "\"abc\ndef\"", "unterminated string", 1 },
		{ "x %", "expected an instruction number after '%'", 3 },
		{ "%x", "expected an instruction number after '%'", 1 },
		{ "$ a", "expected a param name after '$'", 1 },
		{ "$1", "expected a param name after '$'", 1 },
		{ "@12", "malformed position (expected @line:col)", 1 },
		{ "@1:", "malformed position (expected @line:col)", 1 },
		{ "  &", "unexpected character '&'", 3 },
		{ "a\x80", "unexpected byte 0x80", 2 },
		{ "a\rb", "unexpected byte 0x0d", 2 },
		{ "-x", "unexpected character '-'", 1 },
		{ "%536870912", "instruction number too large", 1 },
		{ "%99999999999999999999", "instruction number too large", 1 },
		{ "@4294967296:1", "position out of range", 1 },
		{ "@1:99999999999", "position out of range", 1 },
		{ "1e999", "number out of range", 1 },
		{ "-1e400", "number out of range", 1 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		KiTok t[8];
		int n = lexs(cases[i].s, t, 8);
		ck_assert_msg(t[n - 1].t == KT_ERR, "'%s' lexed without error", cases[i].s);
		ck_assert_str_eq(t[n - 1].err, cases[i].msg);
		ck_assert_int_eq((int)t[n - 1].col, cases[i].col);
	}
}
END_TEST

START_TEST(test_lex_limits)
{
	KiTok t[8];
	/* the largest values that fit */
	lexs("%536870911 @4294967295:4294967295", t, 8);
	ck_assert_int_eq(t[0].t, KT_INS);
	ck_assert_uint_eq(t[0].a, 0x1fffffffu);
	ck_assert_int_eq(t[1].t, KT_POS);
	ck_assert_uint_eq(t[1].a, 4294967295u);
	ck_assert_uint_eq(t[1].b, 4294967295u);
	/* a number longer than the conversion buffer */
	char big[300];
	memset(big, '1', sizeof big - 1);
	big[sizeof big - 1] = 0;
	lexs(big, t, 8);
	ck_assert_int_eq(t[0].t, KT_ERR);
	ck_assert_str_eq(t[0].err, "number too long");
}
END_TEST

START_TEST(test_lex_embedded_nul)
{
	static const char text[] = "a b\0c";
	KiTok t[8];
	int n = lexall(text, sizeof text - 1, t, 8);
	ck_assert_int_eq(n, 3);
	ck_assert_int_eq(t[2].t, KT_ERR);
	ck_assert_str_eq(t[2].err, "embedded NUL byte");
	ck_assert_uint_eq(t[2].col, 4);
	/* a NUL inside a comment or a string is still reported */
	static const char c1[] = "# x\0y\n";
	n = lexall(c1, sizeof c1 - 1, t, 8);
	ck_assert_int_eq(t[n - 1].t, KT_ERR);
	static const char c2[] = "\"x\0y\"";
	n = lexall(c2, sizeof c2 - 1, t, 8);
	ck_assert_int_eq(t[n - 1].t, KT_ERR);
	ck_assert_str_eq(t[n - 1].err, "unterminated string");
}
END_TEST

START_TEST(test_lex_eof_sticks)
{
	KiTok t;
	ki_lexinit(&l, "x", 1);
	ck_assert_int_eq(ki_lex(&l, &t), KT_IDENT);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(ki_lex(&l, &t), KT_EOF);
		ck_assert_uint_eq(t.col, 2);
	}
	ki_lexinit(&l, "", 0);
	ck_assert_int_eq(ki_lex(&l, &t), KT_EOF);
	ck_assert_uint_eq(t.line, 1);
	ck_assert_uint_eq(t.col, 1);
}
END_TEST

START_TEST(test_lex_toknames)
{
	for (int i = 0; i < KT_NUM_; i++) {
		ck_assert_ptr_nonnull(ki_tokname(i));
		ck_assert_str_ne(ki_tokname(i), "?");
	}
	ck_assert_str_eq(ki_tokname(KT_NUM_), "?");
	ck_assert_str_eq(ki_tokname(-1), "?");
	ck_assert_str_eq(ki_tokname(KT_NL), "end of line");
}
END_TEST

Suite *lex_suite(void)
{
	Suite *s = suite_create("lex");
	TCase *tc = tcase_create("tokens");
	tcase_add_test(tc, test_lex_instruction_line);
	tcase_add_test(tc, test_lex_positions);
	tcase_add_test(tc, test_lex_numbers);
	tcase_add_test(tc, test_lex_strings);
	tcase_add_test(tc, test_lex_eof_sticks);
	tcase_add_test(tc, test_lex_toknames);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_test(tc, test_lex_errors);
	tcase_add_test(tc, test_lex_limits);
	tcase_add_test(tc, test_lex_embedded_nul);
	suite_add_tcase(s, tc);
	return s;
}
