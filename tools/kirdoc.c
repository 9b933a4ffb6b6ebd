/*
** kirdoc: prints the op index of doc/kir.md, a Markdown table generated
** from the op table in ops.h (a build tool with its own main, not part of
** libkvcc). `make doc-kir` puts its output between the markers
** <!-- ops --> and <!-- /ops --> of doc/kir.md; `make check-kirdoc` fails
** when the two differ, so the documentation cannot fall behind ops.h.
*/
#include <stdio.h>
#include <string.h>
#include "compiler/ops.h"

static const char *const rules[] = {
	[AR_LEAF] = "leaf", [AR_EW] = "elementwise", [AR_RED] = "reduce", [AR_DOT] = "dot",
	[AR_KEEP] = "keep", [AR_TOK] = "token", [AR_SAME] = "same", [AR_ROW] = "row",
	[AR_SEG] = "segment", [AR_SCAN] = "scan",
};

/* Markdown table cell text: '|' would end the cell. */
static void cell(const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			putchar('\\');
		putchar(*s);
	}
}

/* How an instruction with this op reads after "%N = " (see the grammar). */
static void form(const char *name, int nargs, int rule)
{
	static const char *const leaves[][2] = {
		{ "input", "name" }, { "state", "name" }, { "info", "name" },
		{ "index", "axis" }, { "size", "axis" }, { "weight", "name" }, { "carry", "name" },
	};
	if (strcmp(name, "scan") == 0) {
		printf("`scan` *name* `a, b`");
		return;
	}
	for (size_t i = 0; i < sizeof leaves / sizeof leaves[0]; i++)
		if (strcmp(name, leaves[i][0]) == 0) {
			printf("`%s` *%s*", name, leaves[i][1]);
			return;
		}
	printf("`%s", name);
	for (int k = 0; k < nargs; k++)
		printf("%s %c", k ? "," : "", 'a' + k);
	printf("`%s", rule == AR_RED || rule == AR_DOT || rule == AR_KEEP || rule == AR_SEG ? " *axis*" : "");
}

static void row(const char *name, int nargs, int rule, int flags, const char *doc)
{
	static const struct { int flag; const char *name; } flagnames[] = {
		{ KF_PURE, "pure" }, { KF_COMM, "comm" }, { KF_FOLD, "fold" },
	};
	printf("| ");
	form(name, nargs, rule);
	printf(" | %d | %s | ", nargs, rules[rule]);
	const char *sep = "";
	for (int i = 0; i < 3; i++)
		if (flags & flagnames[i].flag) {
			printf("%s%s", sep, flagnames[i].name);
			sep = ", ";
		}
	printf(" | ");
	cell(doc);
	printf(" |\n");
}

int main(void)
{
	printf("| form | args | axis rule | flags | meaning |\n");
	printf("|------|-----:|-----------|-------|---------|\n");
#define ROW(name, nargs, rule, flags, sem, doc) row(#name, nargs, AR_##rule, flags, doc);
	KI_OPS(ROW)
#undef ROW
	return 0;
}
