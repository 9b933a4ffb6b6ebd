/*
** .npz reading and writing. Zip: the end-of-central-directory record gives
** the central directory, whose entries give each member's size and local
** header offset (zip64 extra fields understood); only stored (method 0)
** members are accepted. .npy: magic, version, a Python-dict header with
** descr, fortran_order and shape, then the raw data.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include "tools/npz.h"

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Parse one .npy image into *a. */
static int parse_npy(const unsigned char *p, size_t len, KtArray *a, const char *path, KiErr *e)
{
	if (len < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
		return ki_error(e, path, 0, 0, "member '%s' is not a .npy array", a->name), -1;
	size_t hl, off;
	if (p[6] == 1)
		hl = rd16(p + 8), off = 10;
	else if ((p[6] == 2 || p[6] == 3) && len >= 12)
		hl = rd32(p + 8), off = 12;
	else
		return ki_error(e, path, 0, 0, "member '%s': unsupported .npy version %d", a->name, p[6]), -1;
	if (hl > len - off)
		return ki_error(e, path, 0, 0, "member '%s': truncated .npy header", a->name), -1;
	char hdr[1024];
	if (hl >= sizeof hdr)
		return ki_error(e, path, 0, 0, "member '%s': .npy header too long", a->name), -1;
	memcpy(hdr, p + off, hl);
	hdr[hl] = 0;
	const char *d = strstr(hdr, "'descr':"), *fo = strstr(hdr, "'fortran_order':"), *sh = strstr(hdr, "'shape':");
	if (!d || !fo || !sh)
		return ki_error(e, path, 0, 0, "member '%s': malformed .npy header", a->name), -1;
	d = strchr(d + 8, '\'');
	if (!d || strlen(d) < 4)
		return ki_error(e, path, 0, 0, "member '%s': malformed descr", a->name), -1;
	char order = d[1];
	a->kind = d[2];
	char *dend;
	long isz = strtol(d + 3, &dend, 10);   /* bounded before the UCS4 x 4: no overflow */
	a->itemsize = dend > d + 3 && isz > 0 && isz <= 1024 ? (int)isz * (a->kind == 'U' ? 4 : 1) : 0;
	if (order == '>' || !a->kind || !strchr("fiubU", a->kind) || a->itemsize <= 0 ||
	    (a->kind == 'f' && a->itemsize != 4 && a->itemsize != 8))
		return ki_error(e, path, 0, 0, "member '%s': unsupported dtype '%.6s'", a->name, d + 1), -1;
	if (strncmp(fo + 16, " True", 5) == 0)
		return ki_error(e, path, 0, 0, "member '%s': Fortran order is not supported", a->name), -1;
	const char *q = strchr(sh, '(');
	if (!q)
		return ki_error(e, path, 0, 0, "member '%s': malformed shape", a->name), -1;
	q++;
	a->ndim = 0;
	a->count = 1;
	for (;;) {
		while (*q == ' ' || *q == ',')
			q++;
		if (*q == ')')
			break;
		char *end;
		long v = strtol(q, &end, 10);
		if (end == q || v < 0 || a->ndim == 8 || v > (1L << 40))
			return ki_error(e, path, 0, 0, "member '%s': malformed shape", a->name), -1;
		a->shape[a->ndim++] = v;
		if (v && a->count > ((size_t)1 << 40) / (size_t)v)
			return ki_error(e, path, 0, 0, "member '%s': array too large", a->name), -1;
		a->count *= (size_t)v;
		q = end;
	}
	size_t bytes = a->count * (size_t)a->itemsize;
	if (bytes > len - off - hl)
		return ki_error(e, path, 0, 0, "member '%s': truncated data (%zu bytes for shape, %zu present)",
		                a->name, bytes, len - off - hl), -1;
	a->data = malloc(bytes ? bytes : 1);
	if (!a->data)
		return ki_error(e, path, 0, 0, "out of memory"), -1;
	memcpy(a->data, p + off + hl, bytes);
	return 0;
}

int kt_npz_read(const char *path, KtNpz *z, KiErr *e)
{
	memset(z, 0, sizeof *z);
	size_t len;
	unsigned char *buf = (unsigned char *)ki_readfile(path, &len, e);
	if (!buf)
		return -1;
	int rc = -1;
	/* the end-of-central-directory record is in the last 64 KiB + 22 bytes */
	size_t eocd = (size_t)-1;
	for (size_t k = len >= 22 ? len - 22 + 1 : 0; k-- > 0 && len - k <= 65557;)
		if (rd32(buf + k) == 0x06054b50) {
			eocd = k;
			break;
		}
	if (eocd == (size_t)-1) {
		ki_error(e, path, 0, 0, "not an .npz file (no zip directory)");
		goto out;
	}
	uint64_t nent = rd16(buf + eocd + 10), cdoff = rd32(buf + eocd + 16);
	if (cdoff == 0xffffffffu || nent == 0xffff) {      /* zip64: the locator precedes */
		if (eocd < 20 || rd32(buf + eocd - 20) != 0x07064b50) {
			ki_error(e, path, 0, 0, "malformed zip64 directory");
			goto out;
		}
		uint64_t z64 = rd64(buf + eocd - 20 + 8);
		if (len < 56 || z64 > len - 56 || rd32(buf + z64) != 0x06064b50) {
			ki_error(e, path, 0, 0, "malformed zip64 directory");
			goto out;
		}
		nent = rd64(buf + z64 + 32), cdoff = rd64(buf + z64 + 48);
	}
	if (nent > 4096 || cdoff > len) {
		ki_error(e, path, 0, 0, "malformed zip directory");
		goto out;
	}
	z->a = calloc(nent + 1, sizeof *z->a);
	if (!z->a) {
		ki_error(e, path, 0, 0, "out of memory");
		goto out;
	}
	size_t p = cdoff;
	for (uint64_t i = 0; i < nent; i++) {
		if (p + 46 > len || rd32(buf + p) != 0x02014b50) {
			ki_error(e, path, 0, 0, "malformed zip directory entry %llu", (unsigned long long)i);
			goto out;
		}
		unsigned method = rd16(buf + p + 10);
		uint64_t csize = rd32(buf + p + 20), usize = rd32(buf + p + 24);
		size_t nlen = rd16(buf + p + 28), xlen = rd16(buf + p + 30), clen = rd16(buf + p + 32);
		uint64_t loff = rd32(buf + p + 42);
		if (p + 46 + nlen + xlen + clen > len) {
			ki_error(e, path, 0, 0, "malformed zip directory entry %llu", (unsigned long long)i);
			goto out;
		}
		/* zip64 extra field: the sizes and offset that were 0xffffffff, in order */
		for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
			unsigned id = rd16(buf + x), sz = rd16(buf + x + 2);
			if (x + 4 + sz > p + 46 + nlen + xlen)
				break;
			if (id == 1) {
				size_t q = x + 4, qe = x + 4 + sz;
				if (usize == 0xffffffffu && q + 8 <= qe) usize = rd64(buf + q), q += 8;
				if (csize == 0xffffffffu && q + 8 <= qe) csize = rd64(buf + q), q += 8;
				if (loff == 0xffffffffu && q + 8 <= qe) loff = rd64(buf + q);
			}
			x += 4 + sz;
		}
		KtArray *a = &z->a[z->n];
		size_t nm = nlen < sizeof a->name ? nlen : sizeof a->name - 1;
		memcpy(a->name, buf + p + 46, nm);
		a->name[nm] = 0;
		if (nm > 4 && strcmp(a->name + nm - 4, ".npy") == 0)
			a->name[nm - 4] = 0;
		if (method != 0) {
			ki_error(e, path, 0, 0, "member '%s' is compressed; write the file with np.savez "
			         "(not savez_compressed)", a->name);
			goto out;
		}
		if (loff > len || len - loff < 30 || rd32(buf + loff) != 0x04034b50) {   /* no wrap */
			ki_error(e, path, 0, 0, "member '%s': bad local header", a->name);
			goto out;
		}
		uint64_t data = loff + 30 + rd16(buf + loff + 26) + rd16(buf + loff + 28);
		if (data > len || csize > len - data || csize != usize) {
			ki_error(e, path, 0, 0, "member '%s' is truncated", a->name);
			goto out;
		}
		if (parse_npy(buf + data, (size_t)csize, a, path, e) != 0)
			goto out;
		z->n++;
		p += 46 + nlen + xlen + clen;
	}
	rc = 0;
out:
	free(buf);
	if (rc != 0)
		kt_npz_free(z);
	return rc;
}

const KtArray *kt_npz_get(const KtNpz *z, const char *name)
{
	for (int i = 0; i < z->n; i++)
		if (strcmp(z->a[i].name, name) == 0)
			return &z->a[i];
	return NULL;
}

void kt_npz_free(KtNpz *z)
{
	for (int i = 0; z->a && i < z->n; i++)
		free(z->a[i].data);
	free(z->a);
	memset(z, 0, sizeof *z);
}

double kt_array_get(const KtArray *a, size_t k)
{
	const unsigned char *p = (const unsigned char *)a->data + k * (size_t)a->itemsize;
	switch (a->kind) {
	case 'f': {
		if (a->itemsize == 4) { float v; memcpy(&v, p, 4); return v; }
		double v; memcpy(&v, p, 8); return v;
	}
	case 'b': return p[0] != 0;
	case 'i': case 'u': {
		uint64_t u = 0;
		for (int i = a->itemsize - 1; i >= 0; i--)
			u = u << 8 | p[i];
		if (a->kind == 'i' && a->itemsize < 8 && (u >> (8 * a->itemsize - 1)) & 1)
			u |= ~0ull << (8 * a->itemsize);
		return a->kind == 'i' ? (double)(int64_t)u : (double)u;
	}
	}
	return 0;
}

int kt_array_str(const KtArray *a, char *buf, size_t len)
{
	if (a->kind != 'U' || a->count != 1 || len == 0)
		return -1;
	size_t n = (size_t)a->itemsize / 4, k = 0;
	const unsigned char *p = a->data;
	for (size_t i = 0; i < n && k + 1 < len; i++) {
		uint32_t c = rd32(p + 4 * i);
		if (!c)
			break;
		buf[k++] = c < 128 ? (char)c : '?';
	}
	buf[k] = 0;
	return 0;
}

int kt_npz_add(KtNpz *z, const char *name, const char *descr, int ndim, const long *shape, const void *data)
{
	KtArray *t = ki_realloc(z->a, (size_t)(z->n + 1) * sizeof *z->a);
	if (!t)
		return -1;
	z->a = t;
	KtArray *a = &z->a[z->n];
	memset(a, 0, sizeof *a);
	snprintf(a->name, sizeof a->name, "%s", name);
	a->kind = descr[1];
	a->itemsize = atoi(descr + 2);
	a->ndim = ndim;
	a->count = 1;
	for (int i = 0; i < ndim; i++)
		a->shape[i] = shape[i], a->count *= (size_t)shape[i];
	size_t bytes = a->count * (size_t)a->itemsize;
	if (!(a->data = ki_realloc(NULL, bytes)))
		return -1;
	memcpy(a->data, data, bytes);
	z->n++;
	return 0;
}

static uint32_t crc32(const unsigned char *p, size_t n, uint32_t crc)
{
	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
	}
	return ~crc;
}

static void wr16(FILE *f, uint32_t v) { fputc((int)(v & 255), f); fputc((int)(v >> 8 & 255), f); }
static void wr32(FILE *f, uint32_t v) { wr16(f, v & 0xffff); wr16(f, v >> 16); }

/* One .npy image in memory (NULL: out of memory). */
static unsigned char *npy_image(const KtArray *a, size_t *len)
{
	char hdr[512], shape[256] = "";
	for (int i = 0; i < a->ndim; i++)
		snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%ld,%s", a->shape[i],
		         i + 1 < a->ndim ? " " : "");
	if (a->ndim > 1)
		shape[strlen(shape) - 1] = 0;   /* (2, 3) not (2, 3,) */
	int hl = snprintf(hdr, sizeof hdr, "{'descr': '<%c%d', 'fortran_order': False, 'shape': (%s), }",
	                  a->kind, a->itemsize, shape);
	int total = 10 + hl + 1, pad = (64 - total % 64) % 64;
	size_t bytes = a->count * (size_t)a->itemsize;
	size_t n = (size_t)total + (size_t)pad + bytes;
	unsigned char *p = ki_realloc(NULL, n);
	if (!p)
		return NULL;
	memcpy(p, "\x93NUMPY\x01\x00", 8);
	p[8] = (unsigned char)((hl + pad + 1) & 255), p[9] = (unsigned char)((hl + pad + 1) >> 8);
	memcpy(p + 10, hdr, (size_t)hl);
	memset(p + 10 + hl, ' ', (size_t)pad);
	p[10 + hl + pad] = '\n';
	memcpy(p + total + pad, a->data, bytes);
	*len = n;
	return p;
}

/* Where kt_npz_write writes: a new temporary file next to path (*tmp, renamed
** over path at the end, so that readers never see half a file), or path itself
** when it exists and is not a regular file (a device such as /dev/null, which a
** rename would replace; a FIFO without a reader is an error, not a wait).
** NULL with e set. */
static FILE *npz_open(const char *path, char **tmp, KiErr *e)
{
	struct stat st;
	int fd;
	*tmp = NULL;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);   /* a directory: EISDIR */
	else {
		size_t n = strlen(path) + 32;   /* never truncated: a cut name could be another file */
		if (!(*tmp = ki_realloc(NULL, n)))
			return ki_error(e, path, 0, 0, "out of memory"), NULL;
		snprintf(*tmp, n, "%s.tmp%ld", path, (long)getpid());
		fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);   /* never an existing file */
	}
	FILE *f = fd >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0 ? fdopen(fd, "wb") : NULL;
	if (!f) {
		ki_error(e, path, 0, 0, "cannot write: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		if (fd >= 0 && *tmp)
			remove(*tmp);
		free(*tmp), *tmp = NULL;
	}
	return f;
}

int kt_npz_write(const char *path, const KtNpz *z, KiErr *e)
{
	char *tmp = NULL;
	uint32_t *offs = ki_realloc(NULL, (size_t)(z->n + 1) * sizeof *offs);
	uint32_t *crcs = ki_realloc(NULL, (size_t)(z->n + 1) * sizeof *crcs);
	uint32_t *sizes = ki_realloc(NULL, (size_t)(z->n + 1) * sizeof *sizes);
	FILE *f = NULL;
	if (!offs || !crcs || !sizes)
		ki_error(e, path, 0, 0, "out of memory");
	else
		f = npz_open(path, &tmp, e);
	if (!f) {
		free(offs), free(crcs), free(sizes);
		return -1;
	}
	long off = 0;
	int nomem = 0;
	for (int i = 0; i < z->n && !nomem; i++) {
		size_t n;
		unsigned char *img = npy_image(&z->a[i], &n);
		if (!img) {
			nomem = 1;
			break;
		}
		char name[128];
		snprintf(name, sizeof name, "%s.npy", z->a[i].name);
		size_t nl = strlen(name);
		offs[i] = (uint32_t)off, crcs[i] = crc32(img, n, 0), sizes[i] = (uint32_t)n;
		wr32(f, 0x04034b50); wr16(f, 20); wr16(f, 0); wr16(f, 0); wr16(f, 0); wr16(f, 0x21);
		wr32(f, crcs[i]); wr32(f, sizes[i]); wr32(f, sizes[i]); wr16(f, (uint32_t)nl); wr16(f, 0);
		fwrite(name, 1, nl, f);
		fwrite(img, 1, n, f);
		off += 30 + (long)nl + (long)n;
		free(img);
	}
	long cd = off;
	for (int i = 0; i < z->n && !nomem; i++) {
		char name[128];
		snprintf(name, sizeof name, "%s.npy", z->a[i].name);
		size_t nl = strlen(name);
		wr32(f, 0x02014b50); wr16(f, 20); wr16(f, 20); wr16(f, 0); wr16(f, 0); wr16(f, 0); wr16(f, 0x21);
		wr32(f, crcs[i]); wr32(f, sizes[i]); wr32(f, sizes[i]); wr16(f, (uint32_t)nl);
		wr16(f, 0); wr16(f, 0); wr16(f, 0); wr16(f, 0); wr32(f, 0); wr32(f, offs[i]);
		fwrite(name, 1, nl, f);
		off += 46 + (long)nl;
	}
	wr32(f, 0x06054b50); wr16(f, 0); wr16(f, 0); wr16(f, (uint32_t)z->n); wr16(f, (uint32_t)z->n);
	wr32(f, (uint32_t)(off - cd)); wr32(f, (uint32_t)cd); wr16(f, 0);
	free(offs), free(crcs), free(sizes);
	int bad = ferror(f);
	int rc = 0;
	if (fclose(f) != 0 || bad || nomem || off > 0xffffffffL)
		rc = -1, ki_error(e, path, 0, 0, nomem ? "out of memory" : "write failed");
	else if (tmp && rename(tmp, path) != 0)
		rc = -1, ki_error(e, path, 0, 0, "cannot rename the written file into place");
	if (rc && tmp)
		remove(tmp);
	free(tmp);
	return rc;
}
