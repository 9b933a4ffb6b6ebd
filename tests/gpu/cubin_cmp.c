/*
** cubin_cmp A.cubin B.cubin: the machine code of two CUBINs compared section by section — every
** .text.<kernel> of A must be in B with the same bytes, and B must have no other .text section.
** Prints one line per kernel; exit 0 when all are the same, 1 when not, 2 on a bad file.
** (tests/gpu/ptxas_same.sh: one NVVM run + ptxas per arch against one NVRTC program per arch.)
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned char *d; size_t n; } Buf;

static int load(const char *path, Buf *b)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return -1;
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	b->d = n > 0 ? malloc((size_t)n) : NULL;
	b->n = b->d && fread(b->d, 1, (size_t)n, fp) == (size_t)n ? (size_t)n : 0;
	fclose(fp);
	return b->n >= 64 && !memcmp(b->d, "\177ELF", 4) && b->d[4] == 2 ? 0 : -1;
}

static uint64_t rd(const Buf *b, size_t off, int size)
{
	uint64_t v = 0;
	if (off + (size_t)size > b->n)
		return 0;
	for (int i = size - 1; i >= 0; i--)
		v = v << 8 | b->d[off + (size_t)i];
	return v;
}

/* section i: its name (in *nm, NULL if bad), file offset and size */
static int section(const Buf *b, int i, const char **nm, size_t *off, size_t *size)
{
	size_t shoff = rd(b, 0x28, 8), es = rd(b, 0x3A, 2), strx = rd(b, 0x3E, 2);
	size_t h = shoff + (size_t)i * es, hs = shoff + strx * es;
	size_t name = rd(b, h, 4), stroff = rd(b, hs + 0x18, 8);
	*off = rd(b, h + 0x18, 8), *size = rd(b, h + 0x20, 8);
	if (rd(b, h + 4, 4) == 8)   /* SHT_NOBITS (.nv.shared.*): no bytes in the file */
		*size = 0;
	*nm = stroff + name < b->n && memchr(b->d + stroff + name, 0, b->n - stroff - name) ? (const char *)b->d + stroff + name : NULL;
	return *nm && *off + *size <= b->n ? 0 : -1;
}

static int nsec(const Buf *b) { return (int)rd(b, 0x3C, 2); }

static int find(const Buf *b, const char *want, size_t *off, size_t *size)
{
	for (int i = 0; i < nsec(b); i++) {
		const char *nm;
		if (section(b, i, &nm, off, size) == 0 && !strcmp(nm, want))
			return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	Buf a = { 0 }, b = { 0 };
	if (argc != 3 || load(argv[1], &a) != 0 || load(argv[2], &b) != 0) {
		fprintf(stderr, "usage: cubin_cmp A.cubin B.cubin (64-bit ELF files)\n");
		return 2;
	}
	int bad = 0, na = 0, nb = 0;
	for (int i = 0; i < nsec(&a); i++) {
		const char *nm;
		size_t o1, s1, o2, s2;
		if (section(&a, i, &nm, &o1, &s1) != 0)
			return fprintf(stderr, "%s: bad section %d\n", argv[1], i), 2;
		if (strncmp(nm, ".text.", 6))
			continue;
		na++;
		if (find(&b, nm, &o2, &s2) != 0) {
			printf("%s: only in %s\n", nm, argv[1]), bad = 1;
			continue;
		}
		int same = s1 == s2 && !memcmp(a.d + o1, b.d + o2, s1);
		printf("%s: %zu / %zu bytes, %s\n", nm + 6, s1, s2, same ? "the same" : "DIFFERENT");
		bad |= !same;
	}
	for (int i = 0; i < nsec(&b); i++) {
		const char *nm;
		size_t o, s;
		if (section(&b, i, &nm, &o, &s) == 0 && !strncmp(nm, ".text.", 6))
			nb++;
	}
	if (nb != na || na == 0)
		printf("%d .text sections in %s, %d in %s\n", na, argv[1], nb, argv[2]), bad = 1;
	free(a.d), free(b.d);
	return bad;
}
