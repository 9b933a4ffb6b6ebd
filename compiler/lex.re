/*
** re2c lexer of the KIR text form (the grammar is in doc/kir.md; print.c
** writes it). Input is NUL-terminated and yyfill is off: the NUL at the
** limit is the end of input, a NUL before it is an error token. Every
** token records its line and column; numbers, %N and @line:col come out
** converted, with overflow reported as an error token at the token.
**
** Generated with: re2c -W --no-generation-date -o build/compiler/lex.c compiler/lex.re
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/lex.h"

static const char *const toknames[KT_NUM_] = {
	[KT_EOF] = "end of input",
	[KT_NL] = "end of line",
	[KT_IDENT] = "identifier",
	[KT_INS] = "instruction ref",
	[KT_PAR] = "param ref",
	[KT_NUM] = "number",
	[KT_STR] = "string",
	[KT_POS] = "position",
	[KT_EQ] = "'='",
	[KT_COMMA] = "','",
	[KT_LBRACK] = "'['",
	[KT_RBRACK] = "']'",
	[KT_ERR] = "error",
};

const char *ki_tokname(int t)
{
	return t >= 0 && t < KT_NUM_ ? toknames[t] : "?";
}

void ki_lexinit(KiLex *l, const char *text, size_t len)
{
	memset(l, 0, sizeof *l);
	l->cur = l->bol = (const unsigned char *)text;
	l->lim = l->cur + len;
	l->line = 1;
}

/* Decimal digits to an unsigned value; -1 when it exceeds max. */
static int digits(const unsigned char *p, const unsigned char *end, uint32_t max, uint32_t *v)
{
	uint64_t x = 0;
	for (; p < end; p++) {
		x = 10 * x + (uint64_t)(*p - '0');
		if (x > max)
			return -1;
	}
	*v = (uint32_t)x;
	return 0;
}

static int error(KiTok *t, const char *msg)
{
	t->t = KT_ERR;
	t->err = msg;
	return KT_ERR;
}

/* The number in t->s: the lexer's grammar is a subset of strtod's, so
** strtod consumes exactly the token. Overflow is an error; underflow to a
** subnormal or zero is accepted (the printer writes subnormals). */
static int number(KiTok *t)
{
	char buf[128];
	if (t->len >= sizeof buf)
		return error(t, "number too long");
	memcpy(buf, t->s, t->len);
	buf[t->len] = 0;
	char *end;
	errno = 0;
	t->num = strtod(buf, &end);
	if (end != buf + t->len)
		return error(t, "malformed number");
	if (errno == ERANGE && isinf(t->num))
		return error(t, "number out of range");
	t->t = KT_NUM;
	return KT_NUM;
}

/*
** The next token. Whitespace and comments are skipped; a newline is a token
** (statements end at one). Past the end, KT_EOF again and again.
*/
int ki_lex(KiLex *l, KiTok *t)
{
	const unsigned char *s;
	memset(t, 0, sizeof *t);
	for (;;) {
		s = l->cur;
		t->s = (const char *)s;
		t->line = l->line;
		t->col = (uint32_t)(s - l->bol) + 1;
		/*!re2c
		re2c:define:YYCTYPE = "unsigned char";
		re2c:define:YYCURSOR = "l->cur";
		re2c:define:YYMARKER = "l->mark";
		re2c:yyfill:enable = 0;
		re2c:indent:top = 2;

		dig = [0-9];
		id  = [A-Za-z_] [A-Za-z0-9_]*;
		num = "-"? dig+ ("." dig*)? ([eE] [+-]? dig+)? | "-"? ("inf" | "nan");

		"\x00" {
			if (l->cur - 1 < l->lim) {
				t->len = 1;
				return error(t, "embedded NUL byte");
			}
			l->cur--;   /* stay at the end */
			t->t = KT_EOF;
			return KT_EOF;
		}
		[ \t]+ { continue; }
		"#" [^\n\x00]* { continue; }
		"\r"? "\n" {
			t->t = KT_NL;
			t->len = (size_t)(l->cur - s);
			l->line++;
			l->bol = l->cur;
			return KT_NL;
		}
		"=" { t->len = 1; return t->t = KT_EQ; }
		"," { t->len = 1; return t->t = KT_COMMA; }
		"[" { t->len = 1; return t->t = KT_LBRACK; }
		"]" { t->len = 1; return t->t = KT_RBRACK; }
		"%" dig+ {
			t->len = (size_t)(l->cur - s);
			if (digits(s + 1, l->cur, 0x1fffffffu, &t->a) != 0)
				return error(t, "instruction number too large");
			return t->t = KT_INS;
		}
		"%" { t->len = 1; return error(t, "expected an instruction number after '%'"); }
		"$" id { t->len = (size_t)(l->cur - s); return t->t = KT_PAR; }
		"$" { t->len = 1; return error(t, "expected a param name after '$'"); }
		num {
			t->len = (size_t)(l->cur - s);
			return number(t);
		}
		id { t->len = (size_t)(l->cur - s); return t->t = KT_IDENT; }
		"\"" [^"\n\x00]* "\"" { t->len = (size_t)(l->cur - s); return t->t = KT_STR; }
		"\"" [^"\n\x00]* {
			t->len = (size_t)(l->cur - s);
			return error(t, "unterminated string");
		}
		"@" dig+ ":" dig+ {
			const unsigned char *colon = memchr(s, ':', (size_t)(l->cur - s));
			t->len = (size_t)(l->cur - s);
			if (digits(s + 1, colon, UINT32_MAX, &t->a) != 0 ||
			    digits(colon + 1, l->cur, UINT32_MAX, &t->b) != 0)
				return error(t, "position out of range");
			return t->t = KT_POS;
		}
		"@" { t->len = 1; return error(t, "malformed position (expected @line:col)"); }
		[^] {
			t->len = 1;
			if (*s >= 0x20 && *s < 0x7f)
				snprintf(l->errbuf, sizeof l->errbuf, "unexpected character '%c'", *s);
			else
				snprintf(l->errbuf, sizeof l->errbuf, "unexpected byte 0x%02x", *s);
			return error(t, l->errbuf);
		}
		*/
	}
}
