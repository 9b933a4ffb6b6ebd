/*
** Helpers shared by the harnesses: the input as a file (a memfd, so nothing
** touches the disk and thousands of execs a second stay cheap), as a C
** string, and the report of a broken invariant.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "tests/fuzz/fuzz.h"

const char *fz_file(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char name[64];
	if (fd < 0) {
		fd = memfd_create("kvcc-fuzz", 0);
		if (fd < 0)
			return NULL;
		snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) != 0)
		return NULL;
	for (size_t k = 0; k < size;) {
		ssize_t w = pwrite(fd, data + k, size - k, (off_t)k);
		if (w <= 0)
			return NULL;
		k += (size_t)w;
	}
	return name;
}

char *fz_text(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return NULL;
	memcpy(s, data, size);
	s[size] = 0;
	return s;
}

void fz_bug(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz: BUG: %s\n%s\n", what, detail ? detail : "");
	abort();
}
