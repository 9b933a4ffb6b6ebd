/*
** Compile-cache tests (DESIGN §6, compiler/cache.h), in a private $KVCC_CACHE_DIR:
**   every key component changed → a different key (and, for the ones a caller
**   can change: dtype, head_dim, group, target, policy KIR → a new artifact);
**   a second compile is a hit (same inode); truncated / corrupted / mismatched
**   artifacts are misses that rebuild (new inode, loads); a stale lock (dead pid)
**   is recovered at once; a live lock times out and the build still succeeds;
**   N processes compiling the same policy at once all succeed and leave one artifact.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "codegen/x86/x86.h"
#include "compiler/cache.h"

static int npass, nfail;
static char dir[512];

#define T(name, cond) do { if (cond) npass++; else { nfail++; printf("FAIL %s: %s\n", name, kvcc_last_error()); } } while (0)

static int count(const char *suffix, char *first, size_t n)
{
	DIR *dp = opendir(dir);
	int c = 0;
	struct dirent *de;
	while (dp && (de = readdir(dp))) {
		size_t l = strlen(de->d_name), sl = strlen(suffix);
		if (de->d_name[0] != '.' ? (l >= sl && !strcmp(de->d_name + l - sl, suffix)) : !strcmp(suffix, ".tmp") &&
		    !strncmp(de->d_name, ".tmp", 4)) {
			if (!c && first)
				snprintf(first, n, "%s/%s", dir, de->d_name);
			c++;
		}
	}
	if (dp)
		closedir(dp);
	return c;
}

static ino_t inode(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? st.st_ino : 0;
}

static int compile(const char *pol, int dtype, int d, int g, int target)
{
	kvcc_spec s = { dtype, d, g, target };
	kvcc_policy *p = NULL;
	int rc = kvcc_compile_file(pol, &s, &p);
	kvcc_close(p);
	return rc;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void keys(void)
{
	KxKey a, b;
	kx_keyfill(&a, "kir", "0.1.0", "+avx2,+fma", 0, 128, 4, 0, 16);
	uint64_t k0 = kx_keyhash(&a);
	int ok = 1;
	for (int f = 0; f < 13; f++) {
		b = a;
		switch (f) {
		case 0: b.kir = "kir2"; break;
		case 1: b.version = "0.1.1"; break;
		case 2: b.features = "+avx2,+fma,+evex512"; break;
		case 3: b.options = "O3"; break;
		case 4: snprintf(b.llvm, sizeof b.llvm, "18.1"); break;
		case 5: snprintf(b.triple, sizeof b.triple, "aarch64-unknown-linux-gnu"); break;
		case 6: b.dtype = 2; break;
		case 7: b.head_dim = 64; break;
		case 8: b.group = 2; break;
		case 9: b.target = 1; break;
		case 10: b.vec_width = 8; break;
		case 11: b.abi = 99; break;
		case 12: b.build = "Jan  1 2000 00:00:00"; break;
		}
		if (kx_keyhash(&b) == k0) {
			printf("FAIL key: component %d does not change the key\n", f);
			ok = 0;
		}
	}
	T("every key component changes the key", ok);
}

int main(void)
{
	snprintf(dir, sizeof dir, "%s/kvcc-cache-test-%ld", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
	setenv("KVCC_CACHE_DIR", dir, 1);
	keys();
	const char *pol = "policies/knorm.lua";
	char art[1024] = "", tmp[2200];
	T("cold compile", compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE) == 0 && count(".so", art, sizeof art) == 1);
	ino_t i0 = inode(art);
	T("warm compile is a hit", compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE) == 0 && inode(art) == i0 &&
	                               count(".so", NULL, 0) == 1);
	T("dtype → miss", compile(pol, KVCC_F32, 64, 2, KVCC_TARGET_NATIVE) == 0 && count(".so", NULL, 0) == 2);
	T("head_dim → miss", compile(pol, KVCC_F32, 32, 2, KVCC_TARGET_NATIVE) == 0 && count(".so", NULL, 0) == 3);
	T("group → miss", compile(pol, KVCC_F32, 32, 1, KVCC_TARGET_NATIVE) == 0 && count(".so", NULL, 0) == 4);
	T("target → miss", compile(pol, KVCC_F32, 32, 1, KVCC_TARGET_SCALAR) == 0 && count(".so", NULL, 0) == 5);
	/* the same policy with another param default: another KIR */
	snprintf(tmp, sizeof tmp, "%s/p.lua", dir);
	FILE *fp = fopen(tmp, "w");
	fputs("local kv = require \"kvcc\"\nlocal P = kv.params { recent = 7 }\nreturn kv.policy \"knorm\" {\n"
	      "  score = function(x) return -x.K:norm(\"chan\") end,\n  select = kv.topk { keep_recent = P.recent },\n}\n", fp);
	fclose(fp);
	T("policy KIR → miss", compile(tmp, KVCC_F32, 32, 1, KVCC_TARGET_SCALAR) == 0 && count(".so", NULL, 0) == 6);
	unlink(tmp);
	/* truncated, corrupted, mismatched: rebuilt, never loaded */
	struct stat st;
	stat(art, &st);
	T("truncate", truncate(art, st.st_size / 2) == 0);
	T("truncated artifact → rebuild", compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE) == 0 && inode(art) != i0 &&
	                                      stat(art, &st) == 0 && count(".so", NULL, 0) == 6);
	i0 = inode(art);
	fp = fopen(art, "r+b");
	fseek(fp, st.st_size / 3, SEEK_SET);
	int ch = fgetc(fp);
	fseek(fp, st.st_size / 3, SEEK_SET);
	fputc(ch ^ 0x5a, fp);
	fclose(fp);
	T("corrupted artifact → rebuild", compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE) == 0 && inode(art) != i0);
	char other[1024];
	DIR *dp = opendir(dir);
	struct dirent *de;
	other[0] = 0;
	while ((de = readdir(dp)))
		if (strstr(de->d_name, "f32-d64-g2"))
			snprintf(other, sizeof other, "%s/%s", dir, de->d_name);
	closedir(dp);
	snprintf(tmp, sizeof tmp, "cp %s %s", other, art);      /* a valid artifact of another key, in place */
	int cp = other[0] && system(tmp) == 0;
	i0 = inode(art);
	T("mismatched artifact → rebuild", cp && compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE) == 0 && inode(art) != i0);
	/* stale lock: a dead pid */
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	unlink(art);
	snprintf(tmp, sizeof tmp, "%s.lock", art);
	fp = fopen(tmp, "w");
	fprintf(fp, "%ld\n", (long)dead);
	fclose(fp);
	/* A lock wait long enough to tell "recovered at once" from "waited the lock out" whatever the
	** machine's load: a compile takes seconds at most, a missed stale lock waits 120 s. */
	setenv("KVCC_CACHE_LOCK_TIMEOUT", "120", 1);
	double t0 = now();
	T("stale lock (dead pid) recovered without waiting the lock out",
	  compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE) == 0 && now() - t0 < 100 && access(tmp, F_OK) != 0 &&
	  access(art, F_OK) == 0);
	/* a live holder that never finishes: time out, build anyway */
	unlink(art);
	fp = fopen(tmp, "w");
	fprintf(fp, "%ld\n", (long)getppid());
	fclose(fp);
	setenv("KVCC_CACHE_LOCK_TIMEOUT", "0.3", 1);
	t0 = now();
	int rc = compile(pol, KVCC_BF16, 64, 2, KVCC_TARGET_NATIVE);
	double dt = now() - t0;
	T("live lock times out, build succeeds", rc == 0 && dt >= 0.3 && dt < 100 && access(art, F_OK) == 0);
	unlink(tmp);
	unsetenv("KVCC_CACHE_LOCK_TIMEOUT");
	/* concurrent compiles of one policy into an empty cache */
	for (int round = 0; round < 3; round++) {
		snprintf(tmp, sizeof tmp, "rm -rf %s", dir);
		if (system(tmp) != 0)
			break;
		enum { NP = 4 };
		pid_t pids[NP];
		for (int i = 0; i < NP; i++)
			if ((pids[i] = fork()) == 0) {
				char out[600];
				snprintf(out, sizeof out, "%s.out%d.so", dir, i);
				kvcc_spec s = { KVCC_BF16, 128, 4, KVCC_TARGET_NATIVE };
				kvcc_policy *p = NULL;
				int r1 = kvcc_compile_so("policies/snapkv.lua", &s, out, 0);
				int r2 = kvcc_compile_file("policies/snapkv.lua", &s, &p);
				int r3 = r1 == 0 ? kvcc_open(out, &p) : -1;
				unlink(out);
				_exit(r1 == 0 && r2 == 0 && r3 == 0 ? 0 : 1);
			}
		int allok = 1;
		for (int i = 0; i < NP; i++) {
			int stt = 0;
			waitpid(pids[i], &stt, 0);
			allok &= WIFEXITED(stt) && WEXITSTATUS(stt) == 0;
		}
		T("concurrent compiles all succeed, one artifact, no temp/lock left",
		  allok && count(".so", NULL, 0) == 1 && count(".lock", NULL, 0) == 0 && count(".tmp", NULL, 0) == 0);
	}
	snprintf(tmp, sizeof tmp, "rm -rf %s", dir);
	if (system(tmp) != 0)
		printf("cannot remove %s\n", dir);
	printf("cache: %d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
