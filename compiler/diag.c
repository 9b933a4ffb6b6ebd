/*
** Diagnostics and small utilities shared by every stage. Errors are values:
** a stage formats its first error as one line "file:line:col: error: msg"
** into a KiErr and returns -1; nothing here exits or aborts, on user input
** or when memory runs out.
*/
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include "compiler/ir.h"

void ki_verror(KiErr *e, const char *src, uint32_t line, uint32_t col, const char *fmt, va_list ap)
{
	if (!e || e->set)
		return;   /* keep the first error: later ones are usually consequences */
	char msg[400];
	vsnprintf(msg, sizeof msg, fmt, ap);
	e->nomem = strstr(msg, "out of memory") != NULL;
	if (src && line)
		snprintf(e->msg, sizeof e->msg, "%s:%u:%u: error: %s", src, line, col ? col : 1, msg);
	else if (src && *src)
		snprintf(e->msg, sizeof e->msg, "%s: error: %s", src, msg);
	else
		snprintf(e->msg, sizeof e->msg, "error: %s", msg);
	e->set = 1;
}

void ki_error(KiErr *e, const char *src, uint32_t line, uint32_t col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ki_verror(e, src, line, col, fmt, ap);
	va_end(ap);
}

/* realloc for the compiler's tables: NULL when memory runs out (p is then
** untouched), which the caller turns into an "out of memory" error. Size 0
** allocates one byte, so NULL always means failure. */
void *ki_realloc(void *p, size_t n)
{
	return realloc(p, n ? n : 1);
}

/* Open path for reading without waiting on it: a FIFO or a socket (whose
** open or read can block forever) and a directory are errors. */
static FILE *openfile(const char *path, KiErr *e)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		ki_error(e, path, 0, 0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	FILE *fp = NULL;
	if (fstat(fd, &st) != 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
		ki_error(e, path, 0, 0, "cannot open: %s", strerror(errno));
	else if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISDIR(st.st_mode))
		ki_error(e, path, 0, 0, "cannot read %s (a file is needed)", S_ISFIFO(st.st_mode) ? "a FIFO"
		         : S_ISSOCK(st.st_mode) ? "a socket" : "a directory");
	else if (!(fp = fdopen(fd, "rb")))
		ki_error(e, path, 0, 0, "cannot open: %s", strerror(errno));
	if (!fp)
		close(fd);
	return fp;
}

/* Read a whole file, NUL-terminated; at most max bytes (a longer file, or
** one that never ends such as /dev/zero, is an error, as running out of
** memory is; so are a FIFO, a socket and a directory). */
char *ki_readfilemax(const char *path, size_t max, size_t *len, KiErr *e)
{
	FILE *fp = openfile(path, e);
	if (!fp)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = ki_realloc(NULL, cap), *nb;
	int oom = !buf, big = 0;
	while (!oom && !big) {
		size_t r = fread(buf + n, 1, cap - n - 1, fp);
		n += r;
		if (r == 0)
			break;
		big = n > max;
		if (!big && n == cap - 1) {
			if (cap > SIZE_MAX / 2 || !(nb = ki_realloc(buf, cap * 2)))
				oom = 1;
			else
				buf = nb, cap *= 2;
		}
	}
	int bad = ferror(fp);
	fclose(fp);
	if (oom || big || bad) {
		free(buf);
		if (big)
			ki_error(e, path, 0, 0, "file too large (more than %zu bytes)", max);
		else if (oom)
			ki_error(e, path, 0, 0, "out of memory reading the file");
		else
			ki_error(e, path, 0, 0, "read error");
		return NULL;
	}
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

char *ki_readfile(const char *path, size_t *len, KiErr *e)
{
	return ki_readfilemax(path, SIZE_MAX - 1, len, e);
}

double ki_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double ki_thread_cpu_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
