/*
** Diagnostics and small utilities shared by every stage. Errors are values:
** a stage formats its first error as one line "file:line:col: error: msg"
** into a KcErr and returns -1; nothing here exits or aborts on user input.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include "compiler/ir.h"

void kc_verror(KcErr *e, const char *src, uint32_t line, uint32_t col, const char *fmt, va_list ap)
{
	if (!e || e->set)
		return;   /* keep the first error: later ones are usually consequences */
	char msg[400];
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (src && line)
		snprintf(e->msg, sizeof e->msg, "%s:%u:%u: error: %s", src, line, col ? col : 1, msg);
	else if (src && *src)
		snprintf(e->msg, sizeof e->msg, "%s: error: %s", src, msg);
	else
		snprintf(e->msg, sizeof e->msg, "error: %s", msg);
	e->set = 1;
}

void kc_error(KcErr *e, const char *src, uint32_t line, uint32_t col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kc_verror(e, src, line, col, fmt, ap);
	va_end(ap);
}

/* Out of memory is not a user error we can report with a position; the
** compiler is short-lived, so it is the one place that gives up. */
void *kc_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fputs("kvcc: out of memory\n", stderr);
		abort();
	}
	return q;
}

/* Read a whole file, NUL-terminated. */
char *kc_readfile(const char *path, size_t *len, KcErr *e)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		kc_error(e, path, 0, 0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	size_t cap = 4096, n = 0;
	char *buf = kc_xrealloc(NULL, cap);
	for (;;) {
		size_t r = fread(buf + n, 1, cap - n - 1, fp);
		n += r;
		if (r == 0)
			break;
		if (cap - n - 1 == 0)
			buf = kc_xrealloc(buf, cap *= 2);
	}
	int bad = ferror(fp);
	fclose(fp);
	if (bad) {
		free(buf);
		kc_error(e, path, 0, 0, "read error");
		return NULL;
	}
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}
