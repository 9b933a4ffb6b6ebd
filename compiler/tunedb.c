/*
** The tuning database (compiler/tunedb.h): a text file
**
**   kvcc-tune-db 1 BODYBYTES BODYHASH
**   KIND KERNEL PHASE BUCKET DEV DEVNAME VERSION CFG MS      (tab-separated, one per line)
**
** BODYHASH = FNV-1a of everything after the header line; any mismatch (truncated, edited,
** half-written by something else) and the whole file is untrusted.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/file.h>
#include "compiler/tunedb.h"
#include "compiler/cache.h"
#include "compiler/interp.h"
#include "codegen/x86/x86.h"
#include "runtime/artifact.h"

#define MAGIC "kvcc-tune-db 1"

int ki_tdb_path(char *buf, size_t n, char *why, size_t wn)
{
	char dir[1024];
	if (ki_cache_dir(dir, sizeof dir, why, wn) != 0)
		return -1;
	snprintf(buf, n, "%s/tune.db", dir);
	return 0;
}

void ki_tdb_free(KtDb *db)
{
	free(db->r);
	memset(db, 0, sizeof *db);
}

int ki_tdb_add(KtDb *db, const KtRec *r)
{
	if (db->n == db->cap) {
		int nc = db->cap ? 2 * db->cap : 64;
		KtRec *p = realloc(db->r, (size_t)nc * sizeof *p);
		if (!p)
			return -1;
		db->r = p, db->cap = nc;
	}
	db->r[db->n++] = *r;
	return 0;
}

/* one field of a tab-separated line into buf (no tabs or newlines inside) */
static int field(char **p, char *buf, size_t n)
{
	size_t k = strcspn(*p, "\t\n");
	if (k >= n || (*p)[k] == 0)
		return -1;
	memcpy(buf, *p, k);
	buf[k] = 0;
	*p += k + 1;
	return 0;
}

static int parseline(char *line, KtRec *r)
{
	char f[9][100];
	char *p = line;
	for (int i = 0; i < 9; i++)
		if (field(&p, f[i], sizeof f[i]) != 0)
			return -1;
	if (*p != 0 || strlen(f[0]) != 1 || (f[0][0] != 't' && f[0][0] != 'p'))
		return -1;
	char *e1, *e2, *e3, *e4;
	memset(r, 0, sizeof *r);
	if (strlen(f[2]) >= sizeof r->phase || strlen(f[5]) >= sizeof r->devname || strlen(f[6]) >= sizeof r->version ||
	    strlen(f[7]) >= sizeof r->cfg)
		return -1;
	r->kind = f[0][0];
	r->kernel = strtoull(f[1], &e1, 16);
	memcpy(r->phase, f[2], strlen(f[2]) + 1);
	r->bucket = (int)strtol(f[3], &e2, 10);
	r->dev = strtoull(f[4], &e3, 16);
	memcpy(r->devname, f[5], strlen(f[5]) + 1);
	memcpy(r->version, f[6], strlen(f[6]) + 1);
	memcpy(r->cfg, f[7], strlen(f[7]) + 1);
	r->ms = strtod(f[8], &e4);
	return *e1 || *e2 || *e3 || *e4 || !f[1][0] || !f[4][0] ? -1 : 0;
}

static void untrusted(KtDb *db, const char *path, const char *what)
{
	db->n = 0, db->corrupt = 1;
	snprintf(db->why, sizeof db->why, "%s: %s", path, what);
}

int ki_tdb_load(const char *path, KtDb *db)
{
	memset(db, 0, sizeof *db);
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return 0;
	char hdr[128];
	unsigned long long len = 0, hash = 0;
	if (!fgets(hdr, sizeof hdr, fp) || sscanf(hdr, MAGIC " %llu %llx", &len, &hash) != 2 ||
	    strncmp(hdr, MAGIC " ", strlen(MAGIC) + 1) != 0 || len > (64u << 20)) {
		fclose(fp);
		untrusted(db, path, "not a tuning database (bad header)");
		return 0;
	}
	char *body = malloc(len + 1);
	size_t got = body ? fread(body, 1, len + 1, fp) : 0;
	fclose(fp);
	if (!body || got != len || ki_fnv(body, len, 0xcbf29ce484222325ull) != hash) {
		free(body);
		untrusted(db, path, got < len ? "truncated" : "corrupted (length or hash mismatch)");
		return 0;
	}
	body[len] = 0;
	for (char *line = body; *line;) {
		char *nl = strchr(line, '\n');
		if (!nl) {
			untrusted(db, path, "corrupted (unterminated record)");
			break;
		}
		char save = nl[1];
		nl[1] = 0;
		KtRec r;
		if (parseline(line, &r) != 0 || ki_tdb_add(db, &r) != 0) {
			untrusted(db, path, "corrupted (bad record)");
			break;
		}
		nl[1] = save;
		line = nl + 1;
	}
	free(body);
	return 0;
}

/* the same record (a later one replaces it): kind, kernel, phase, bucket, device, version, and
** for timings the config */
static int samekey(const KtRec *a, const KtRec *b)
{
	return a->kind == b->kind && a->kernel == b->kernel && !strcmp(a->phase, b->phase) && a->bucket == b->bucket &&
	       a->dev == b->dev && !strcmp(a->version, b->version) && (a->kind == 'p' || !strcmp(a->cfg, b->cfg));
}

static int writedb(const char *path, const KtDb *db, char *why, size_t wn)
{
	size_t cap = 256 + (size_t)db->n * 400, n = 0;
	char *body = malloc(cap);
	if (!body)
		return snprintf(why, wn, "out of memory"), -1;
	for (int i = 0; i < db->n; i++) {
		const KtRec *r = &db->r[i];
		n += (size_t)snprintf(body + n, cap - n, "%c\t%016llx\t%s\t%d\t%016llx\t%s\t%s\t%s\t%.6g\n", r->kind,
		                      (unsigned long long)r->kernel, r->phase, r->bucket, (unsigned long long)r->dev,
		                      r->devname, r->version, r->cfg, r->ms);
	}
	char tmp[1200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	FILE *fp = fopen(tmp, "wb");
	int ok = fp && fprintf(fp, MAGIC " %zu %016llx\n", n, (unsigned long long)ki_fnv(body, n, 0xcbf29ce484222325ull)) > 0 &&
	         fwrite(body, 1, n, fp) == n;
	if (fp && fclose(fp) != 0)
		ok = 0;
	free(body);
	if (!ok || rename(tmp, path) != 0) {
		snprintf(why, wn, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* tune.db.lock held (flock, so a dead holder releases it), waiting up to 60 s: fd or -1 */
static int lockdb(const char *path, char *why, size_t wn)
{
	char lk[1200];
	snprintf(lk, sizeof lk, "%s.lock", path);
	int fd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return snprintf(why, wn, "cannot open %s: %s", lk, strerror(errno)), -1;
	for (int i = 0; i < 6000; i++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	close(fd);
	return snprintf(why, wn, "%s: held for more than 60 s", lk), -1;
}

int ki_tdb_update(const char *path, const KtRec *add, int nadd, char *why, size_t wn)
{
	int fd = lockdb(path, why, wn);
	if (fd < 0)
		return -1;
	KtDb db;
	ki_tdb_load(path, &db);
	if (db.corrupt)
		fprintf(stderr, "kvcc: tuning database %s; rebuilt\n", db.why);
	int rc = 0;
	for (int i = 0; i < nadd && !rc; i++) {
		int k = 0;
		for (int j = 0; j < db.n; j++)
			if (!samekey(&db.r[j], &add[i]))
				db.r[k++] = db.r[j];
		db.n = k;
		if (ki_tdb_add(&db, &add[i]) != 0)
			rc = -1, snprintf(why, wn, "out of memory");
	}
	if (!rc)
		rc = writedb(path, &db, why, wn);
	ki_tdb_free(&db);
	flock(fd, LOCK_UN);
	close(fd);
	return rc;
}

uint64_t ki_tdb_device(char *name, size_t n)
{
	char model[256] = "unknown CPU", line[512];
	FILE *fp = fopen("/proc/cpuinfo", "r");
	while (fp && fgets(line, sizeof line, fp))
		if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
			char *v = strchr(line, ':') + 1;
			v += strspn(v, " \t");
			v[strcspn(v, "\n")] = 0;
			snprintf(model, sizeof model, "%s", v);
			break;
		}
	if (fp)
		fclose(fp);
	const char *over = getenv("KVCC_TUNE_DEVICE");
	if (over && *over)
		snprintf(model, sizeof model, "%s", over);
	for (char *c = model; *c; c++)      /* the database's separators */
		if (*c == '\t' || *c == '\n')
			*c = ' ';
	char *fs = kx_hostfeatures();
	uint64_t h = ki_fnv(model, strlen(model), 0xcbf29ce484222325ull);
	h = ki_fnv("|", 1, h);
	if (fs)
		h = ki_fnv(fs, strlen(fs), h);
	free(fs);
	if (name)
		snprintf(name, n, "%s", model);
	return h;
}

/* The meaning of the configs the records hold: bumped whenever a knob's meaning changes under the
** same kvcc version, so that a pick recorded under the old meaning is ignored (as another version's),
** never applied with the new one. t2 (session 12): decode's `pf` counts 128-byte units of each
** stream, no longer tokens. */
#define KI_TDB_REV "t2"

const char *ki_tdb_version(void)
{
	const char *v = getenv("KVCC_TUNE_VERSION");
	return v && *v && !strpbrk(v, "\t\n") ? v : KVCC_VERSION "+" KI_TDB_REV;
}

uint64_t ki_tdb_kernel(const KiFn *f, const kvcc_spec *spec)
{
	char *kir = ki_print(f), buf[96];
	uint64_t h = kir ? ki_fnv(kir, strlen(kir), 0xcbf29ce484222325ull) : 0;
	free(kir);
	snprintf(buf, sizeof buf, "|dt%d|d%d|g%d|t%d", spec->dtype, spec->head_dim, spec->group, spec->target);
	return ki_fnv(buf, strlen(buf), h);
}

int ki_tdb_lookup(const char *path, uint64_t kernel, char *cfg, size_t n, int verbose)
{
	KtDb db;
	if (access(path, F_OK) != 0)          /* no database: no fingerprint to compute */
		return 0;
	ki_tdb_load(path, &db);
	if (db.corrupt && verbose)
		fprintf(stderr, "kvcc: tuning database %s: not used\n", db.why);
	uint64_t dev = ki_tdb_device(NULL, 0);
	const char *ver = ki_tdb_version();
	int found = 0, odev = 0, over = 0;
	const char *oname = "";
	for (int i = 0; i < db.n; i++) {
		const KtRec *r = &db.r[i];
		if (r->kernel != kernel)
			continue;
		if (!strcmp(r->phase, "gpu"))
			continue;          /* GPU static picks: ki_tdb_gpulookup */
		if (r->dev != dev)
			odev++, oname = r->devname;
		else if (strcmp(r->version, ver))
			over++;
		else if (r->kind == 'p' && !strcmp(r->phase, "pick"))
			snprintf(cfg, n, "%s", r->cfg), found = 1;
	}
	if (verbose && odev)
		fprintf(stderr, "kvcc: tuning database: %d record%s of this policy from another device (%s) ignored\n", odev,
		        odev > 1 ? "s" : "", oname);
	if (verbose && over)
		fprintf(stderr, "kvcc: tuning database: %d record%s of this policy from another kvcc version ignored\n", over,
		        over > 1 ? "s" : "");
	ki_tdb_free(&db);
	return found;
}

int ki_tdb_lookup_buckets(const char *path, uint64_t kernel, char cfg[][128], int nb)
{
	KtDb db;
	for (int b = 0; b < nb; b++)
		cfg[b][0] = 0;
	if (access(path, F_OK) != 0)
		return 0;
	ki_tdb_load(path, &db);
	uint64_t dev = ki_tdb_device(NULL, 0);
	const char *ver = ki_tdb_version();
	int found = 0;
	for (int i = 0; i < db.n; i++) {
		const KtRec *r = &db.r[i];
		int b = ka_bucket(r->bucket);
		if (r->kernel == kernel && r->kind == 'p' && !strcmp(r->phase, "bpick") && r->dev == dev &&
		    !strcmp(r->version, ver) && b < nb && strcmp(r->cfg, "main") != 0) {   /* "main": the pick's own */
			found += !cfg[b][0];
			snprintf(cfg[b], 128, "%s", r->cfg);
		}
	}
	ki_tdb_free(&db);
	return found;
}

uint64_t ki_tdb_gpudev(const char *archs, int nvrtc_major, int nvrtc_minor)
{
	char buf[128];
	snprintf(buf, sizeof buf, "gpu-static|%s|nvrtc%d.%d", archs, nvrtc_major, nvrtc_minor);
	return ki_fnv(buf, strlen(buf), 0xcbf29ce484222325ull);
}

int ki_tdb_gpulookup(const char *path, uint64_t kernel, const char *archs, uint64_t gdev, char *cfg, size_t n)
{
	KtDb db;
	if (access(path, F_OK) != 0)
		return 0;
	ki_tdb_load(path, &db);
	const char *ver = ki_tdb_version();
	size_t na = strlen(archs);
	int found = 0;
	for (int i = 0; i < db.n; i++) {
		const KtRec *r = &db.r[i];
		if (r->kind == 'p' && r->kernel == kernel && r->dev == gdev && !strcmp(r->phase, "gpu") &&
		    !strcmp(r->version, ver) && !strncmp(r->cfg, archs, na) && r->cfg[na] == '|')
			snprintf(cfg, n, "%s", r->cfg + na + 1), found = 1;
	}
	ki_tdb_free(&db);
	return found;
}
