/*
** The lexer of the KIR text form (lex.re, generated into build/compiler/lex.c
** by re2c). parse.c pulls one token at a time; each token carries its text,
** its line and column in the text, and its value (numbers, %N, @line:col)
** already converted and range-checked, so the parser never re-scans digits.
**
** The input is a buffer of `len` bytes followed by a NUL (text[len] == 0).
** A NUL before `len` is an error token ("embedded NUL byte"), the one at
** `len` is the end of input.
*/
#ifndef KVCC_LEX_H
#define KVCC_LEX_H

#include <stddef.h>
#include <stdint.h>
#include "compiler/ir.h"

enum {
	KT_EOF,      /* end of input; returned again on every later call */
	KT_NL,       /* end of line ("\n" or "\r\n") */
	KT_IDENT,    /* [A-Za-z_][A-Za-z0-9_]* */
	KT_INS,      /* %N: instruction ref, N in a */
	KT_PAR,      /* $name: param ref, the name is s+1 .. s+len */
	KT_NUM,      /* number, value in num: 12, -3.5, 1e-07, inf, -inf, nan */
	KT_STR,      /* "...": no escapes, no newline; the text without quotes is s+1, len-2 */
	KT_POS,      /* @line:col, line in a, col in b */
	KT_EQ,       /* = */
	KT_COMMA,    /* , */
	KT_LBRACK,   /* [ */
	KT_RBRACK,   /* ] */
	KT_ERR,      /* malformed input; the message is in err */
	KT_NUM_
};

typedef struct KiTok {
	int t;                /* KT_* */
	const char *s;        /* the token's text in the input (not NUL-terminated) */
	size_t len;           /* its length in bytes */
	uint32_t line, col;   /* where it starts, both from 1; col counts bytes */
	double num;           /* KT_NUM: the value */
	uint32_t a, b;        /* KT_INS: N in a; KT_POS: line in a, col in b */
	const char *err;      /* KT_ERR: what is wrong (points into the lexer) */
} KiTok;

typedef struct KiLex {
	const unsigned char *cur;   /* next byte to scan (re2c YYCURSOR) */
	const unsigned char *mark;  /* backtracking point (re2c YYMARKER) */
	const unsigned char *lim;   /* the terminating NUL: text + len */
	const unsigned char *bol;   /* first byte of the current line */
	uint32_t line;              /* current line, from 1 */
	char errbuf[64];            /* message of the last KT_ERR when formatted */
} KiLex;

/* lex.re */
KC_FUNC void ki_lexinit(KiLex *l, const char *text, size_t len);
KC_FUNC int ki_lex(KiLex *l, KiTok *t);          /* fills *t, returns t->t */
KC_FUNC const char *ki_tokname(int t);           /* "identifier", "end of line", ... */

/* parse.c: ki_parse for a buffer that may hold NUL bytes (text[len] must be
** 0, as ki_readfile gives it); a NUL before len is reported, not taken for
** the end. ki_parse(text, ...) is ki_parsen(text, strlen(text), ...). */
KC_FUNC KiFn *ki_parsen(const char *text, size_t len, const char *file, KiErr *e);

#endif
