/*
** Compile cache: lookup, checked load, locked build, atomic install (see cache.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "compiler/cache.h"
#include "codegen/x86/x86.h"
#include "compiler/interp.h"
#include "runtime/artifact.h"

/* the trailer every artifact carries (runtime/artifact.h: KaTrailer, checked by kvcc_open too) */
typedef KaTrailer Footer;

static int mkdirs(const char *path)
{
	char tmp[1024];
	if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
		return -1;
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
		return -1;
	struct stat st;
	return stat(tmp, &st) == 0 && S_ISDIR(st.st_mode) && access(tmp, W_OK | X_OK) == 0 ? 0 : -1;
}

int ki_cache_dir(char *buf, size_t n, char *why, size_t wn)
{
	const char *d = getenv("KVCC_CACHE_DIR");
	if (d && (!strcmp(d, "off") || !*d)) {
		snprintf(why, wn, "KVCC_CACHE_DIR=%s: the cache is off", d);
		return -1;
	}
	if (d)
		snprintf(buf, n, "%s", d);
	else {
		const char *home = getenv("HOME");
		if (!home || !*home) {
			snprintf(why, wn, "neither KVCC_CACHE_DIR nor HOME is set");
			return -1;
		}
		snprintf(buf, n, "%s/.cache/kvcc", home);
	}
	if (mkdirs(buf) != 0) {
		snprintf(why, wn, "cache directory %s is not usable: %s", buf, strerror(errno));
		return -1;
	}
	return 0;
}

/* a regular file's bytes; anything else (a FIFO, a device, a directory) is not read: NULL, errno
** EINVAL, at once (opened without blocking) */
static char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return NULL;
	}
	FILE *fp = fdopen(fd, "rb");
	if (!fp) {
		close(fd);
		return NULL;
	}
	char *buf = NULL;
	if (fseek(fp, 0, SEEK_END) == 0) {
		long sz = ftell(fp);
		if (sz >= 0 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)sz + 1))) {
			if (fread(buf, 1, (size_t)sz, fp) != (size_t)sz) {
				free(buf);
				buf = NULL;
			} else
				*len = (size_t)sz, buf[sz] = 0;
		}
	}
	fclose(fp);
	return buf;
}

/* the key fields that differ between two descriptions "a=1 b=2 ..." */
static void descdiff(const char *want, const char *have, char *out, size_t n)
{
	out[0] = 0;
	size_t used = 0;
	const char *w = want;
	while (*w) {
		const char *we = strchr(w, ' ');
		size_t wl = we ? (size_t)(we - w) : strlen(w);
		const char *eq = memchr(w, '=', wl);
		if (eq) {
			size_t kl = (size_t)(eq - w) + 1;
			const char *h = have, *found = NULL;
			size_t hl = 0;
			while (h && *h) {
				const char *he = strchr(h, ' ');
				size_t l = he ? (size_t)(he - h) : strlen(h);
				if (l >= kl && !memcmp(h, w, kl)) {
					found = h, hl = l;
					break;
				}
				h = he ? he + 1 : NULL;
			}
			if (!found || hl != wl || memcmp(found, w, wl)) {
				int k = snprintf(out + used, n - used, "%s%.*s (cached %.*s, wanted %.*s)", used ? ", " : "",
				                 (int)(kl - 1), w, found ? (int)(hl - kl) : 1, found ? found + kl : "?",
				                 (int)(wl - kl), w + kl);
				if (k < 0 || (size_t)k >= n - used)
					return;
				used += (size_t)k;
			}
		}
		w = we ? we + 1 : w + wl;
	}
}

static int readtrailer(const char *buf, size_t len, Footer *ft, const char **desc, char *why, size_t wn)
{
	const char *w;
	if (ka_trailer_check(buf, len, ft, &w) != 0) {
		snprintf(why, wn, "%s", w);
		return -1;
	}
	*desc = buf + ft->elfsize;
	return 0;
}

int ki_cache_check(const char *path, uint64_t key, const char *desc, char *why, size_t wn)
{
	size_t len = 0;
	char *buf = slurp(path, &len);
	if (!buf) {
		snprintf(why, wn, "%s", errno == ENOENT ? "no artifact for this key"
		                        : errno == EINVAL ? "not a regular file" : strerror(errno));
		return -1;
	}
	Footer ft;
	const char *d;
	int rc = -1;
	if (readtrailer(buf, len, &ft, &d, why, wn) != 0)
		goto out;
	if (ft.key != key || strlen(desc) != ft.desclen || memcmp(desc, d, ft.desclen) != 0) {
		char diff[400];
		char *have = strndup(d, ft.desclen);
		descdiff(desc, have ? have : "", diff, sizeof diff);
		free(have);
		snprintf(why, wn, "mismatched artifact under this name: %s", diff[0] ? diff : "key differs");
		goto out;
	}
	if (len < 4 || memcmp(buf, "\177ELF", 4) != 0) {
		snprintf(why, wn, "corrupted (not ELF)");
		goto out;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

int ki_cache_seal(const char *path, uint64_t key, const char *desc)
{
	size_t len = 0;
	char *buf = slurp(path, &len);
	if (!buf)
		return -1;
	Footer ft = { (uint32_t)strlen(desc), 0, key, len, 0, KA_TRAILER_MAGIC };
	ft.hash = ka_fnv(&ft, offsetof(Footer, hash), ka_fnv(desc, ft.desclen, ka_fnv(buf, len, 0)));
	free(buf);
	FILE *fp = fopen(path, "ab");
	if (!fp)
		return -1;
	int ok = fwrite(desc, 1, ft.desclen, fp) == ft.desclen && fwrite(&ft, sizeof ft, 1, fp) == 1;
	ok &= fflush(fp) == 0 && fsync(fileno(fp)) == 0;
	return fclose(fp) == 0 && ok ? 0 : -1;
}

/* why a key is not cached: the nearest artifact of the same policy, field by field */
static void nearest(const char *dir, const char *prefix, const char *desc, char *why, size_t wn)
{
	DIR *dp = opendir(dir);
	if (!dp)
		return;
	struct dirent *de;
	char best[400] = "";
	int bestn = 1 << 30;
	size_t pl = strlen(prefix);
	while ((de = readdir(dp))) {
		size_t nl = strlen(de->d_name);
		if (strncmp(de->d_name, prefix, pl) || nl < 3 || strcmp(de->d_name + nl - 3, ".so"))
			continue;
		char p[1400];
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		size_t len = 0;
		char *buf = slurp(p, &len);
		Footer ft;
		const char *d;
		char w2[64];
		if (buf && readtrailer(buf, len, &ft, &d, w2, sizeof w2) == 0) {
			char *have = strndup(d, ft.desclen), diff[400];
			descdiff(desc, have ? have : "", diff, sizeof diff);
			int nd = 1;
			for (const char *c = diff; *c; c++)
				nd += *c == ',' && c[1] == ' ';
			if (diff[0] && nd < bestn)
				bestn = nd, snprintf(best, sizeof best, "%s", diff);
			free(have);
		}
		free(buf);
	}
	closedir(dp);
	if (best[0])
		snprintf(why, wn, "no artifact for this key; the nearest cached one of this policy differs in %s", best);
	else
		snprintf(why, wn, "no artifact of this policy in the cache");
}

static int pidalive(long pid)
{
	return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* 1: we hold the lock; 0: proceed without it (timeout or unusable); */
static int lockit(const char *lock, const char *art, uint64_t key, const char *desc, int verbose, int *appeared)
{
	const char *ts = getenv("KVCC_CACHE_LOCK_TIMEOUT");
	double timeout = ts && *ts ? atof(ts) * 1e3 : 30e3, t0 = ki_now_ms();
	*appeared = 0;
	for (int round = 0;; round++) {
		int fd = open(lock, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd >= 0) {
			char b[32];
			int k = snprintf(b, sizeof b, "%ld\n", (long)getpid());
			int ok = write(fd, b, (size_t)k) == k;
			close(fd);
			(void)ok;
			return 1;
		}
		if (errno != EEXIST)
			return 0;
		char why[64];
		if (ki_cache_check(art, key, desc, why, sizeof why) == 0) {
			*appeared = 1;
			return 0;
		}
		long pid = 0;
		FILE *fp = fopen(lock, "r");
		int got = fp && fscanf(fp, "%ld", &pid) == 1;
		if (fp)
			fclose(fp);
		if (got && !pidalive(pid)) {
			if (verbose)
				fprintf(stderr, "kvcc: cache: removing the stale lock %s (pid %ld is gone)\n", lock, pid);
			/* rename first so that two recoverers cannot both remove a fresh lock */
			char tmp[1450];
			snprintf(tmp, sizeof tmp, "%s.stale.%ld", lock, (long)getpid());
			if (rename(lock, tmp) == 0 && unlink(tmp) == 0)
				continue;
		}
		/* an empty lock file for a second: a writer died mid-write. A lock that cannot be removed
		** (a directory, a directory we cannot write) waits out the timeout like a held one. */
		if (!got && round > 200 && unlink(lock) == 0)
			continue;
		if (ki_now_ms() - t0 > timeout) {
			if (verbose)
				fprintf(stderr, "kvcc: cache: lock %s still held by pid %ld after %.1f s; building without it\n", lock,
				        pid, timeout / 1e3);
			return 0;
		}
		struct timespec sl = { 0, 5 * 1000 * 1000 };
		nanosleep(&sl, NULL);
	}
}

int ki_cache_get(const KiFn *f, const kvcc_spec *spec, const char *extra, int verbose, KiBuild build, void *ud,
                 char *path, size_t n, KiErr *e)
{
	char dir[1024], why[600] = "";
	double t0 = ki_now_ms();
	if (ki_cache_dir(dir, sizeof dir, why, sizeof why) != 0) {
		if (verbose)
			fprintf(stderr, "kvcc: cache off: %s\n", why);
		return 1;
	}
	KxKey K;
	char *kir = NULL, *host = NULL;
	if (kx_speckey(f, spec, &K, &kir, &host) != 0) {
		free(kir), free(host);
		return 1;                      /* the build reports it (target unavailable) */
	}
	uint64_t key = kx_keyhash(&K);
	char desc[2048], prefix[128];
	kx_keydesc(&K, desc, sizeof desc);
	if (extra && *extra) {             /* e.g. the GPU targets and the NVRTC that compiles them */
		char gd[1000];          /* the whole of extra: its bytes are hashed (per-bucket configs, issue 15) */
		int gl = snprintf(gd, sizeof gd, " %s", extra);
		size_t dl = strlen(desc);
		snprintf(desc + dl, sizeof desc - dl, "%s", gd);
		key = ki_fnv(gd, (size_t)gl, key);
	}
	int m = 0;
	for (const char *c = f->name; *c && m < 40; c++)
		prefix[m++] = (char)((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		                     *c == '_' || *c == '-' ? *c : '_');
	prefix[m] = 0;
	snprintf(prefix + m, sizeof prefix - (size_t)m, "-");
	char art[1400], lock[1410];
	snprintf(art, sizeof art, "%s/%s%s-d%d-g%d-%016llx.so", dir, prefix, ki_dtypename(spec->dtype), spec->head_dim,
	         spec->group, (unsigned long long)key);
	snprintf(lock, sizeof lock, "%s.lock", art);
	int rc = 1;
	if (ki_cache_check(art, key, desc, why, sizeof why) == 0) {
		if (verbose)
			fprintf(stderr, "kvcc: cache hit: %s (%.2f ms)\n", art, ki_now_ms() - t0);
		rc = 0;
		goto done;
	}
	if (!strcmp(why, "no artifact for this key"))
		nearest(dir, prefix, desc, why, sizeof why);
	int appeared = 0, held = lockit(lock, art, key, desc, verbose, &appeared);
	char w2[200];
	if (appeared || (held && ki_cache_check(art, key, desc, w2, sizeof w2) == 0)) {
		if (verbose)
			fprintf(stderr, "kvcc: cache hit: %s (built by another process meanwhile)\n", art);
		if (held)
			unlink(lock);
		rc = 0;
		goto done;
	}
	static int counter;
	char tmp[1500];
	snprintf(tmp, sizeof tmp, "%s/.tmp-%016llx-%ld-%d.so", dir, (unsigned long long)key, (long)getpid(),
	         __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
	double ms = 0;
	int b = build(ud, tmp, &ms, e);
	if (b == -2 || (b == 0 && (ki_cache_seal(tmp, key, desc) != 0 || rename(tmp, art) != 0))) {
		/* the cache cannot be written (a full disk, …): the caller builds into its output */
		fprintf(stderr, "kvcc: warning: cache: cannot write %s (%s); compiling without the cache\n",
		        b == -2 ? tmp : art, b == -2 ? e->msg : strerror(errno));
		e->set = 0, e->msg[0] = 0;
		unlink(tmp);
		rc = 1;
	} else if (b != 0) {
		unlink(tmp);
		rc = -1;
	} else {
		if (verbose)
			fprintf(stderr, "kvcc: cache miss (%s): built %s in %.1f ms\n", why, art, ms);
		rc = 0;
	}
	if (held)
		unlink(lock);
done:
	if (rc == 0)
		snprintf(path, n, "%s", art);
	free(kir), free(host);
	return rc;
}

