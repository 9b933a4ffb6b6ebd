/*
** The C API used wrongly (issue 10): NULL arguments, strides and max_obs whose products
** overflow, an unknown target, two threads on one plan, a policy closed before its plans,
** and damaged artifacts (truncated at several offsets, single bytes flipped through code and
** data, a FIFO, a directory, a bare name with LD_LIBRARY_PATH elsewhere). Every case must be
** a clean error code with a message, never a crash, a hang or a use-after-free (check-san runs
** this under ASan + UBSan); weights given wrongly (an unknown name, a wrong shape, NaN, a
** missing one at compress); kvcc_last_error's contract (set by a failure, left by a success,
** per thread). Usage: api_misuse WORKDIR (policies/ from the repository root).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <math.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <stdint.h>
#include "kvcc.h"
#include "kvcc_compiler.h"

static int nfail, ncase;

static void check(const char *what, int ok)
{
	ncase++;
	if (!ok) {
		nfail++;
		printf("FAIL %s (last error: %s)\n", what, kvcc_last_error());
	}
}

/* rc is code and the message is not empty */
static int is(int rc, int code) { return rc == code && kvcc_last_error()[0] != 0; }

static char dir[900];

static void path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static int build(const char *pol, const char *out)
{
	kvcc_spec s = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
	int rc = kvcc_compile_so(pol, &s, out, 0);
	if (rc)
		printf("cannot compile %s: %s\n", pol, kvcc_last_error());
	return rc;
}

static char *slurp(const char *p, size_t *n)
{
	FILE *f = fopen(p, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	*n = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc(*n);
	if (b && fread(b, 1, *n, f) != *n)
		free(b), b = NULL;
	fclose(f);
	return b;
}

static void spit(const char *p, const char *b, size_t n)
{
	FILE *f = fopen(p, "wb");
	if (f) {
		fwrite(b, 1, n, f);
		fclose(f);
	}
}

/* --- a small cache the plans run on ------------------------------------------------------------ */
enum { L = 1, H = 2, G = 2, D = 64, CAP = 1024 };

static kvcc_layout layout(void)
{
	kvcc_layout l = { KVCC_F32, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	return l;
}

typedef struct Cache {
	float *K, *V, *Q;
	int32_t len[L * H], pos[L * H * CAP];
	int nobs;
	kvcc_cache c;
	kvcc_obs o;
} Cache;

static void cache_init(Cache *c, int nobs, unsigned seed)
{
	size_t n = (size_t)L * H * CAP * D;
	c->K = malloc(n * sizeof(float)), c->V = malloc(n * sizeof(float));
	c->Q = malloc((size_t)L * H * G * nobs * D * sizeof(float));
	for (size_t i = 0; i < n; i++)
		c->K[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 255) / 128 - 1, c->V[i] = c->K[i];
	for (size_t i = 0; i < (size_t)L * H * G * nobs * D; i++)
		c->Q[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 255) / 128 - 1;
	c->nobs = nobs;
	c->c = (kvcc_cache){ c->K, c->V, c->pos, c->len, NULL };
	c->o = (kvcc_obs){ nobs, c->Q, NULL, NULL };
}

static void cache_reset(Cache *c)
{
	for (int k = 0; k < L * H; k++) {
		c->len[k] = CAP;
		for (int t = 0; t < CAP; t++)
			c->pos[k * CAP + t] = t;
	}
}

static void cache_free(Cache *c) { free(c->K), free(c->V), free(c->Q); }

static int compress(kvcc_plan *pl, Cache *c)
{
	cache_reset(c);
	kvcc_args a = { 0, CAP / 2, NULL, 0, NULL };
	return kvcc_compress(pl, &c->c, &c->o, &a);
}

/* --- two threads on one plan ------------------------------------------------------------------- */
typedef struct Racer {
	kvcc_plan *pl;
	Cache c;
	int calls, busy, other;
	volatile int *stop;
} Racer;

static void *race(void *arg)
{
	Racer *r = arg;
	for (int i = 0; i < 20000 && !*r->stop; i++) {
		int rc = compress(r->pl, &r->c);
		r->calls++;
		if (rc == KVCC_EBUSY)
			r->busy++;
		else if (rc != 0)
			r->other++;
	}
	return NULL;
}

static void threads(kvcc_policy *p, int nobs)
{
	kvcc_layout lay = layout();
	kvcc_plan *pl = NULL;
	check("plan for two threads", kvcc_plan_create(p, &lay, nobs, 2, &pl) == 0);
	if (!pl)
		return;
	volatile int stop = 0;
	Racer a = { .pl = pl, .stop = &stop }, b = { .pl = pl, .stop = &stop };
	cache_init(&a.c, nobs, 1), cache_init(&b.c, nobs, 2);
	pthread_t ta, tb;
	pthread_create(&ta, NULL, race, &a);
	pthread_create(&tb, NULL, race, &b);
	/* until one call met the other (or 20000 calls each): a deadlock never returns */
	while (a.busy + b.busy < 4 && a.calls < 20000 && b.calls < 20000)
		usleep(1000);
	stop = 1;
	pthread_join(ta, NULL), pthread_join(tb, NULL);
	printf("two threads on one plan: %d + %d calls, %d EBUSY, %d other errors\n", a.calls, b.calls, a.busy + b.busy,
	       a.other + b.other);
	check("two threads: every call is 0 or KVCC_EBUSY", a.other + b.other == 0);
	check("two threads: a call meeting another gets KVCC_EBUSY", a.busy + b.busy > 0);
	check("the plan works after the race", compress(pl, &a.c) == 0);
	cache_free(&a.c), cache_free(&b.c);
	kvcc_plan_destroy(pl);
}

/* --- kvcc_last_error's contract (include/kvcc.h): like errno ------------------------------------- */
typedef struct Other { char msg[600]; int rc; } Other;

static void *otherfail(void *arg)
{
	Other *o = arg;
	kvcc_policy *p = NULL;
	o->rc = kvcc_open("/nonexistent-kvcc-other/b.so", &p);
	snprintf(o->msg, sizeof o->msg, "%s", kvcc_last_error());
	return NULL;
}

static void lasterror(const char *so)
{
	kvcc_policy *p = NULL;
	char m1[600];
	int rc = kvcc_open("/nonexistent-kvcc-dir/a.so", &p);
	snprintf(m1, sizeof m1, "%s", kvcc_last_error());
	check("last_error: a failed call sets it", rc < 0 && strstr(m1, "nonexistent-kvcc-dir"));
	rc = kvcc_open(so, &p);
	check("last_error: a successful kvcc_open leaves it", rc == 0 && !strcmp(kvcc_last_error(), m1));
	if (rc)
		return;
	int nobs = 0;
	kvcc_policy_obs(p, NULL, &nobs);
	kvcc_layout lay = layout();
	kvcc_plan *pl = NULL;
	rc = kvcc_plan_create(p, &lay, nobs, 2, &pl);
	check("last_error: a successful kvcc_plan_create leaves it", rc == 0 && !strcmp(kvcc_last_error(), m1));
	Cache c;
	cache_init(&c, nobs, 3);
	rc = pl ? compress(pl, &c) : -1;
	check("last_error: a successful kvcc_compress (2 threads) leaves it", rc == 0 && !strcmp(kvcc_last_error(), m1));
	Other o = { "", 0 };
	pthread_t t;
	pthread_create(&t, NULL, otherfail, &o);
	pthread_join(t, NULL);
	check("last_error: another thread's failure is its own", o.rc < 0 && strstr(o.msg, "nonexistent-kvcc-other") &&
	                                                           !strcmp(kvcc_last_error(), m1));
	kvcc_plan *pl2 = NULL;
	rc = kvcc_plan_create(p, NULL, nobs, 1, &pl2);
	check("last_error: the next failure replaces it", rc < 0 && kvcc_last_error()[0] && strcmp(kvcc_last_error(), m1));
	cache_free(&c);
	kvcc_plan_destroy(pl);
	kvcc_close(p);
}

/* --- the API's arguments ----------------------------------------------------------------------- */
static void arguments(const char *so)
{
	kvcc_policy *p = (kvcc_policy *)1;
	check("kvcc_open(path, NULL)", is(kvcc_open(so, NULL), KVCC_EINVAL));
	check("kvcc_open(NULL, &p)", is(kvcc_open(NULL, &p), KVCC_EINVAL) && p == NULL);
	kvcc_close(NULL);
	kvcc_plan_destroy(NULL);
	kvcc_spec s;
	check("kvcc_policy_spec(NULL)", is(kvcc_policy_spec(NULL, &s), KVCC_EINVAL));
	check("kvcc_param_index(NULL)", is(kvcc_param_index(NULL, "window"), KVCC_EINVAL));
	check("kvcc_compress(NULL)", is(kvcc_compress(NULL, NULL, NULL, NULL), KVCC_EINVAL));
	check("kvcc_decode_layer(NULL)", is(kvcc_decode_layer(NULL, NULL, 0, NULL, NULL), KVCC_EINVAL));
	check("kvcc_append(NULL)", is(kvcc_append(NULL, NULL, 0, NULL, NULL, 0), KVCC_EINVAL));
	check("kvcc_compress_batch(NULL)", is(kvcc_compress_batch(NULL, NULL, NULL), KVCC_EINVAL));
	check("kvcc_plan_set_params(NULL)", is(kvcc_plan_set_params(NULL, NULL), KVCC_EINVAL));
	kvcc_spec bad = { KVCC_F32, 64, 2, 9 };
	char out[1000];
	path(out, sizeof out, "target9.so");
	int rc = kvcc_compile_so("policies/snapkv.lua", &bad, out, 0);
	check("spec.target = 9 refused", rc != 0 && strstr(kvcc_last_error(), "target") && access(out, F_OK) != 0);
	check("kvcc_compile_so(NULL)", is(kvcc_compile_so(NULL, &bad, out, 0), KVCC_EINVAL));

	if (kvcc_open(so, &p) != 0) {
		check("open the artifact", 0);
		return;
	}
	int nobs = 0;
	kvcc_policy_obs(p, NULL, &nobs);
	kvcc_layout lay = layout();
	kvcc_plan *pl = (kvcc_plan *)1;
	check("kvcc_plan_create(p, NULL)", is(kvcc_plan_create(p, NULL, 1, 1, &pl), KVCC_EINVAL) && pl == NULL);
	check("kvcc_plan_create(NULL, lay)", is(kvcc_plan_create(NULL, &lay, 1, 1, &pl), KVCC_EINVAL));
	check("kvcc_plan_create(.., NULL out)", is(kvcc_plan_create(p, &lay, 1, 1, NULL), KVCC_EINVAL));
	/* stride products that overflow int64: 2^62 * 1024 wraps to 0 */
	kvcc_layout big = lay;
	big.stride_token = (int64_t)1 << 62, big.stride_head = (int64_t)1 << 62, big.stride_layer = (int64_t)1 << 62;
	pl = NULL;
	rc = kvcc_plan_create(p, &big, 1, 1, &pl);
	check("huge stride_token refused", is(rc, KVCC_EINVAL) && strstr(kvcc_last_error(), "stride") && !pl);
	kvcc_plan_destroy(pl);
	big = lay, big.stride_token = INT64_MAX, big.stride_head = INT64_MAX;
	pl = NULL;
	check("stride_token = INT64_MAX refused", is(kvcc_plan_create(p, &big, 1, 1, &pl), KVCC_EINVAL) && !pl);
	kvcc_plan_destroy(pl);
	big = lay, big.stride_head = INT64_MAX / 2, big.kv_heads = 2;
	pl = NULL;
	check("stride_head * kv_heads overflowing refused", is(kvcc_plan_create(p, &big, 1, 1, &pl), KVCC_EINVAL) && !pl);
	kvcc_plan_destroy(pl);
	pl = NULL;
	check("max_obs = INT_MAX refused", is(kvcc_plan_create(p, &lay, INT_MAX, 1, &pl), KVCC_EINVAL) &&
	                                       strstr(kvcc_last_error(), "max_obs") && !pl);
	kvcc_plan_destroy(pl);
	pl = NULL;
	check("max_obs = INT_MAX/2 refused", is(kvcc_plan_create(p, &lay, INT_MAX / 2, 1, &pl), KVCC_EINVAL) && !pl);
	kvcc_plan_destroy(pl);

	/* a count param (snapkv's window is keep_recent) given out of range at run time: an error
	** from compress, never a float-to-integer conversion out of range (UBSan sees one) */
	int wi = kvcc_param_index(p, "window"), np = kvcc_param_count(p);
	if (wi >= 0 && np > 0 && np <= 64) {
		double par[64];
		for (int i = 0; i < np; i++)
			kvcc_param_info(p, i, NULL, &par[i]);
		const double bad[] = { 1e30, NAN, -1, 2.5 };
		const char *name[] = { "window = 1e30 refused", "window = nan refused", "window = -1 refused",
		                       "window = 2.5 refused" };
		kvcc_plan *pw = NULL;
		Cache cw;
		cache_init(&cw, nobs, 5);
		int ok = kvcc_plan_create(p, &lay, nobs, 1, &pw) == 0;
		for (int k = 0; k < 4; k++) {
			par[wi] = bad[k];
			cache_reset(&cw);
			kvcc_args a = { 0, CAP / 2, par, 0, NULL };
			check(name[k], ok && is(kvcc_compress(pw, &cw.c, &cw.o, &a), KVCC_EINVAL) &&
			                   strstr(kvcc_last_error(), "keep_recent"));
		}
		kvcc_plan_destroy(pw);
		cache_free(&cw);
	} else
		check("snapkv has a window param", 0);

	/* a policy closed before its plans: they keep it loaded (ASan sees any use after free) */
	kvcc_plan *p1 = NULL, *p2 = NULL;
	check("plans", kvcc_plan_create(p, &lay, nobs, 1, &p1) == 0 && kvcc_plan_create(p, &lay, nobs, 1, &p2) == 0);
	kvcc_close(p);
	Cache c;
	cache_init(&c, nobs, 3);
	check("compress after kvcc_close (first plan)", p1 && compress(p1, &c) == 0);
	kvcc_plan_destroy(p1);
	check("compress after kvcc_close (second plan)", p2 && compress(p2, &c) == 0);
	float q[H * G * D], o[H * G * D];
	for (int i = 0; i < H * G * D; i++)
		q[i] = 0.01f * (float)(i % 17);
	check("decode after kvcc_close", p2 && kvcc_decode_layer(p2, &c.c, 0, q, o) == 0);
	kvcc_plan_destroy(p2);
	cache_free(&c);
}

/* --- damaged artifacts ------------------------------------------------------------------------- */
static int refused(const char *p)
{
	kvcc_policy *pol = NULL;
	int rc = kvcc_open(p, &pol);
	kvcc_close(pol);
	return (rc == KVCC_EARTIFACT || rc == KVCC_EIO) && pol == NULL && kvcc_last_error()[0];
}

static void artifacts(const char *so)
{
	size_t n = 0;
	char *b = slurp(so, &n), p[1000], what[200];
	if (!b) {
		check("read the artifact", 0);
		return;
	}
	path(p, sizeof p, "damaged.so");
	size_t cuts[] = { 0, 3, 4, 64, 1000, n / 4, n / 2, n - 4096, n - 100, n - 41, n - 40, n - 16, n - 1 };
	for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
		spit(p, b, cuts[i]);
		snprintf(what, sizeof what, "truncated to %zu of %zu bytes: refused", cuts[i], n);
		check(what, refused(p));
	}
	for (int i = 0; i < 24; i++) {     /* through the ELF header, code, data, the trailer */
		size_t at = i == 23 ? n - 1 : (size_t)i * (n / 23) + 17 * (size_t)i + 5;
		b[at] ^= 0x5a;
		spit(p, b, n);
		b[at] ^= 0x5a;
		snprintf(what, sizeof what, "byte %zu of %zu flipped: refused", at, n);
		check(what, refused(p));
	}
	spit(p, b, n);
	kvcc_policy *pol = NULL;
	check("the undamaged copy loads", kvcc_open(p, &pol) == 0);
	kvcc_close(pol);
	/* the same bytes without the trailer: not written by kvcc compile */
	spit(p, b, n - 40 - 0);
	check("artifact without its trailer refused", refused(p));
	path(p, sizeof p, "fifo.so");
	unlink(p);
	check("mkfifo", mkfifo(p, 0644) == 0);
	check("a FIFO: refused at once", refused(p) && strstr(kvcc_last_error(), "regular"));
	check("a directory: refused", refused(dir));
	path(p, sizeof p, "missing.so");
	check("a missing file: KVCC_EIO", is(kvcc_open(p, &pol), KVCC_EIO));
	free(b);
}

/* The child of a re-exec with LD_LIBRARY_PATH = DIR/lib (holding another policy as pol.so) in
** DIR/cwd (holding h2o as pol.so): "pol.so" is ./pol.so. */
static int bare_child(void)
{
	kvcc_policy *p = NULL;
	if (kvcc_open("pol.so", &p) != 0) {
		printf("bare name: %s\n", kvcc_last_error());
		return 1;
	}
	int ok = !strcmp(kvcc_policy_name(p), "h2o");
	printf("bare name pol.so opened policy %s\n", kvcc_policy_name(p));
	kvcc_close(p);
	return ok ? 0 : 1;
}

static void bare(const char *so, const char *self)
{
	char cwd[1000], lib[1000], a[1100], top[1000];
	path(cwd, sizeof cwd, "cwd"), path(lib, sizeof lib, "lib");
	mkdir(cwd, 0755), mkdir(lib, 0755);
	snprintf(a, sizeof a, "%s/pol.so", lib);
	size_t n;
	char *b = slurp(so, &n);
	if (b)
		spit(a, b, n);
	free(b);
	snprintf(a, sizeof a, "%s/pol.so", cwd);
	if (!getcwd(top, sizeof top) || build("policies/h2o.lua", a) != 0) {
		check("build h2o", 0);
		return;
	}
	char cmd[4000];
	snprintf(cmd, sizeof cmd, "cd '%s' && LD_LIBRARY_PATH='%s' '%s' --bare", cwd, lib, self);
	check("a bare name opens ./name, never the library search path", system(cmd) == 0);
}

/* --- weights (kvcc_plan_set_weight): tests/policies/wtest.lua declares five ------------------ */
static void weights(void)
{
	char so[1000];
	path(so, sizeof so, "wtest.so");
	kvcc_spec s = { KVCC_F32, D, G, KVCC_TARGET_NATIVE };
	kvcc_policy *p = NULL;
	kvcc_plan *pl = NULL;
	if (kvcc_compile_so("tests/policies/wtest.lua", &s, so, 0) != 0 || kvcc_open(so, &p) != 0) {
		check("weights: compile and open tests/policies/wtest.lua", 0);
		return;
	}
	kvcc_layout lay = layout();
	check("weights: plan", kvcc_plan_create(p, &lay, 0, 1, &pl) == 0);
	const char *nm = NULL;
	int nd = 0;
	check("weights: count and info", kvcc_weight_count(p) == 5 && kvcc_weight_info(p, 0, &nm, &nd) == 0 && nm &&
	      nd >= 2 && is(kvcc_weight_info(p, 5, &nm, &nd), KVCC_EINVAL));
	static float w[L * H * G * D * 4];
	int64_t wk[3] = { L, H, D }, wb[2] = { L, H };
	Cache c;
	cache_init(&c, 0, 7);
	if (pl) {
		check("weights: compress before any weight is given", is(compress(pl, &c), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "was not given"));
		check("weights: an unknown name", is(kvcc_plan_set_weight(pl, "nope", w, 2, wb), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "declares no weight 'nope'"));
		int64_t tr[3] = { H, L, D };
		check("weights: a wrong shape", is(kvcc_plan_set_weight(pl, "wk", w, 3, tr), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "has shape"));
		int64_t bad[3] = { L, H, D + 1 };
		check("weights: a wrong size", is(kvcc_plan_set_weight(pl, "wk", w, 3, bad), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "has shape"));
		check("weights: too few dimensions", is(kvcc_plan_set_weight(pl, "wk", w, 2, wk), KVCC_EINVAL));
		check("weights: null data", is(kvcc_plan_set_weight(pl, "wk", NULL, 3, wk), KVCC_EINVAL));
		check("weights: null shape", is(kvcc_plan_set_weight(pl, "wk", w, 3, NULL), KVCC_EINVAL));
		w[5] = 0.0f / 0.0f;
		check("weights: a NaN", is(kvcc_plan_set_weight(pl, "wk", w, 3, wk), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "non-finite"));
		w[5] = 1.0f / 0.0f;
		check("weights: an infinity", is(kvcc_plan_set_weight(pl, "wk", w, 3, wk), KVCC_EINVAL));
		w[5] = 0;
		check("weights: wk and wb given", kvcc_plan_set_weight(pl, "wk", w, 3, wk) == 0 &&
		      kvcc_plan_set_weight(pl, "wb", w, 2, wb) == 0);
		check("weights: compress with three still missing", is(compress(pl, &c), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "was not given"));
		int64_t wq[3] = { H, G, D }, wt[2] = { D, L }, wg[3] = { G, L, H };
		check("weights: all given", kvcc_plan_set_weight(pl, "wq", w, 3, wq) == 0 &&
		      kvcc_plan_set_weight(pl, "wt", w, 2, wt) == 0 && kvcc_plan_set_weight(pl, "wg", w, 3, wg) == 0);
		check("weights: compress", compress(pl, &c) == 0);
		w[0] = 2;              /* new values: no recompilation, the plan takes them */
		check("weights: changed and compress again", kvcc_plan_set_weight(pl, "wk", w, 3, wk) == 0 &&
		      compress(pl, &c) == 0);
	}
	check("weights: null plan", is(kvcc_plan_set_weight(NULL, "wk", w, 3, wk), KVCC_EINVAL));
	cache_free(&c);
	kvcc_plan_destroy(pl);
	kvcc_close(p);
	remove(so);
	/* weights with an out axis (tests/policies/wout.lua: c [chan], a [layer, head, chan, out], b [out, chan]):
	** the first one given fixes the out size, the packed buffer is laid out again keeping what was
	** given; both orders keep the same tokens */
	if (kvcc_compile_so("tests/policies/wout.lua", &s, so, 0) != 0 || kvcc_open(so, &p) != 0) {
		check("out axis: compile and open tests/policies/wout.lua", 0);
		return;
	}
	{
		enum { NO = 3 };
		static float wa[L * H * D * 4], wb2[4 * D];
		for (int i = 0; i < L * H * D * 4; i++)
			wa[i] = (float)((i * 37) % 11) / 11 - 0.5f;
		for (int i = 0; i < 4 * D; i++)
			wb2[i] = (float)((i * 53) % 13) / 13 - 0.5f;
		int64_t sa[4] = { L, H, D, NO }, sb[2] = { NO, D }, sa4[4] = { L, H, D, 4 }, sb0[2] = { 0, D };
		kvcc_plan *p1 = NULL, *p2 = NULL;
		Cache c1, c2;
		cache_init(&c1, 0, 17), cache_init(&c2, 0, 17);
		int ok = kvcc_plan_create(p, &lay, 0, 1, &p1) == 0 && kvcc_plan_create(p, &lay, 0, 1, &p2) == 0;
		check("out axis: plans", ok);
		if (ok) {
			check("out axis: an out size of 0", is(kvcc_plan_set_weight(p1, "b", wb2, 2, sb0), KVCC_EINVAL) &&
			      strstr(kvcc_last_error(), "has shape"));
			int64_t sc[1] = { D };
			check("out axis: c (no out axis) first", kvcc_plan_set_weight(p1, "c", wb2 + 7, 1, sc) == 0);
			check("out axis: b sets it (3)", kvcc_plan_set_weight(p1, "b", wb2, 2, sb) == 0);
			check("out axis: a with another out size", is(kvcc_plan_set_weight(p1, "a", wa, 4, sa4), KVCC_EINVAL) &&
			      strstr(kvcc_last_error(), "out 3"));
			check("out axis: compress with a missing", is(compress(p1, &c1), KVCC_EINVAL));
			check("out axis: a given", kvcc_plan_set_weight(p1, "a", wa, 4, sa) == 0);
			check("out axis: the other order", kvcc_plan_set_weight(p2, "a", wa, 4, sa) == 0 &&
			      kvcc_plan_set_weight(p2, "b", wb2, 2, sb) == 0 && kvcc_plan_set_weight(p2, "c", wb2 + 7, 1, sc) == 0);
			int same = compress(p1, &c1) == 0 && compress(p2, &c2) == 0;
			for (int k = 0; same && k < L * H; k++) {
				same = c1.len[k] == c2.len[k] && c1.len[k] == CAP / 2;
				for (int t = 0; same && t < c1.len[k]; t++)
					same = c1.pos[k * CAP + t] == c2.pos[k * CAP + t];
			}
			check("out axis: both orders keep the same tokens", same);
		}
		kvcc_plan_destroy(p1), kvcc_plan_destroy(p2);
		cache_free(&c1), cache_free(&c2);
		kvcc_close(p);
		remove(so);
	}
	/* select mass over a negative score: a message with the place, never a crash */
	p = NULL, pl = NULL;
	if (kvcc_compile_so("tests/policies/mass_signed.lua", &s, so, 0) != 0 || kvcc_open(so, &p) != 0) {
		check("mass: compile and open tests/policies/mass_signed.lua", 0);
		return;
	}
	cache_init(&c, 0, 11);
	check("mass: plan", kvcc_plan_create(p, &lay, 0, 1, &pl) == 0);
	if (pl)
		check("mass: a negative score is an error with its place", is(compress(pl, &c), KVCC_EINVAL) &&
		      strstr(kvcc_last_error(), "mass_signed.lua:7:") && strstr(kvcc_last_error(), "mass needs scores >= 0"));
	cache_free(&c);
	kvcc_plan_destroy(pl);
	kvcc_close(p);
	remove(so);
}

/* select keep: a count that is NaN or ±inf is the interpreter's error, word for word (the same
** words tests/errors/run_weights.py expects of kvcc run), from the generated count (kvcc_keepn);
** so are the prefix schedule over negative scores, the schedules' bad arguments and DynamicKV over
** unequal lengths (kvcc_schedcnt's -2, -1, -4, -3) */
static void keepcounts(void)
{
	static const struct { const char *pol; double s; const char *want; int uneq; } kc[] = {
		{ "tests/errors/policies/keep_nan.lua", 0,
		  "tests/errors/policies/keep_nan.lua:4:15: error: select: the keep count of (layer 0, head 0) is nan", 0 },
		{ "tests/errors/policies/keep_inf.lua", -1,
		  "tests/errors/policies/keep_inf.lua:5:15: error: select: the keep count of (layer 0, head 1) is -inf", 0 },
		{ "tests/errors/policies/keep_inf.lua", 1,
		  "tests/errors/policies/keep_inf.lua:5:15: error: select: the keep count of (layer 0, head 1) is inf", 0 },
		/* the prefix schedule over negative scores (the generated kvcc_schedcnt's -2) */
		{ "tests/errors/policies/prefix_neg.lua", 0,
		  "tests/errors/policies/prefix_neg.lua:3:82: error: select: the prefix schedule needs finite scores >= 0, "
		  "(layer 0, head 0) has -1 at token 1", 0 },
		/* the schedules' bad arguments from a param (schedcnt's -1 and -4) and DynamicKV over
		** unequal lengths (-3: head 1 holds one row fewer) */
		{ "tests/errors/policies/prefix_tol.lua", -1,
		  "tests/errors/policies/prefix_tol.lua:4:81: error: select: the prefix schedule needs a tol in 0..1e9 "
		  "and iters an integer in 0..1e4 (got -1, 200)", 0 },
		{ "tests/errors/policies/dynamic_rmax.lua", -1,
		  "tests/errors/policies/dynamic_rmax.lua:5:83: error: select: the dynamic schedule needs a ratio_max >= 0 "
		  "and every >= 1 (got -1, 4)", 0 },
		{ "tests/errors/policies/dynamic_rmax.lua", 0,
		  "tests/errors/policies/dynamic_rmax.lua:5:83: error: select: the dynamic schedule needs the same length in "
		  "every (layer, head)", 1 },
	};
	enum { NKC = sizeof kc / sizeof kc[0] };
	kvcc_spec s = { KVCC_F32, D, G, KVCC_TARGET_NATIVE };
	kvcc_layout lay = layout();
	for (int i = 0; i < NKC; i++) {
		char so[1000], nm[40];  /* one file per case, removed at the end: a new file in a removed
		                         ** one's inode would be taken for the library still mapped */
		snprintf(nm, sizeof nm, "keepcount%d.so", i);
		path(so, sizeof so, nm);
		kvcc_policy *p = NULL;
		kvcc_plan *pl = NULL;
		char what[200];
		snprintf(what, sizeof what, "keep count: %s (s = %g) is the interpreter's error", kc[i].pol, kc[i].s);
		if (kvcc_compile_so(kc[i].pol, &s, so, 0) != 0 || kvcc_open(so, &p) != 0 ||
		    kvcc_plan_create(p, &lay, 0, 1, &pl) != 0) {
			check(what, 0);
			printf("  %s\n", kvcc_last_error());
		} else {
			Cache c;
			cache_init(&c, 0, 17);
			cache_reset(&c);
			if (kc[i].uneq)
				c.len[1] = CAP - 1;
			kvcc_args a = { 0, CAP / 2, kc[i].s != 0 ? &kc[i].s : NULL, 0, NULL };  /* compress's params */
			int rc = kvcc_compress(pl, &c.c, &c.o, &a), ok = is(rc, KVCC_EINVAL) && !strcmp(kvcc_last_error(), kc[i].want);
			check(what, ok);
			if (!ok)
				printf("  want: %s\n  got:  status %d, %s\n", kc[i].want, rc, kvcc_last_error());
			cache_free(&c);
		}
		kvcc_plan_destroy(pl);
		kvcc_close(p);
	}
	for (int i = 0; i < NKC; i++) {
		char so[1000], nm[40];
		snprintf(nm, sizeof nm, "keepcount%d.so", i);
		path(so, sizeof so, nm);
		remove(so);
	}
}

/* Decode reads nothing outside the rows it was given (session 12: decode's bf16 pairs are read by
** zero-masked loads that start 2 bytes before a row chunk, the lane there masked off): one head's
** K and V each fill whole pages between PROT_NONE pages, so a read before the first row or past
** the last faults and this program dies (check-lib fails). bf16, f16 and f32 at head_dim 128,
** group 4 (the pairs' path: 16 lanes, d a multiple of 32); each output channel must lie within
** the V column's range (attention is a convex combination of the rows). */
static void guard_decode(void)
{
	enum { GD = 128, GG = 4, GN = 64 };
	static const int dt[3] = { KVCC_BF16, KVCC_F16, KVCC_F32 };
	static const uint16_t bf[5] = { 0xbf80, 0xbf00, 0, 0x3f00, 0x3f80 }, hf[5] = { 0xbc00, 0xb800, 0, 0x3800, 0x3c00 };
	static const float ff[5] = { -1, -0.5f, 0, 0.5f, 1 };
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	for (int i = 0; i < 3; i++) {
		char what[120];
		snprintf(what, sizeof what, "decode %s d=%d G=%d between guard pages", i == 0 ? "bf16" : i == 1 ? "f16" : "f32",
		         GD, GG);
		size_t esz = dt[i] == KVCC_F32 ? 4 : 2, span = (size_t)GN * GD * esz;   /* 4 or 8 pages of 4 KiB */
		if (span % pg) {
			printf("SKIP %s: the rows do not fill whole pages of %zu bytes\n", what, pg);
			continue;
		}
		char *m = mmap(NULL, 2 * span + 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED) {
			check("mmap for the guard pages", 0);
			return;
		}
		mprotect(m, pg, PROT_NONE), mprotect(m + pg + span, pg, PROT_NONE), mprotect(m + 2 * pg + 2 * span, pg, PROT_NONE);
		char *K = m + pg, *V = m + 2 * pg + span;
		float lo[GD], hi[GD], q[GG * GD], out[GG * GD];
		for (int c = 0; c < GD; c++)
			lo[c] = INFINITY, hi[c] = -INFINITY;
		unsigned r = 99;
		for (int t = 0; t < GN; t++)
			for (int c = 0; c < GD; c++) {
				int a = (int)((r = r * 1103515245u + 12345u) >> 16) % 5, v = (int)((r = r * 1103515245u + 12345u) >> 16) % 5;
				size_t o = (size_t)t * GD + c;
				if (esz == 4)
					((float *)K)[o] = ff[a], ((float *)V)[o] = ff[v];
				else
					((uint16_t *)K)[o] = (i ? hf : bf)[a], ((uint16_t *)V)[o] = (i ? hf : bf)[v];
				lo[c] = ff[v] < lo[c] ? ff[v] : lo[c], hi[c] = ff[v] > hi[c] ? ff[v] : hi[c];
			}
		for (int k = 0; k < GG * GD; k++)
			q[k] = (float)((int)((r = r * 1103515245u + 12345u) >> 16) % 9 - 4) / 4;
		kvcc_spec s = { dt[i], GD, GG, KVCC_TARGET_NATIVE };
		kvcc_layout lay = { dt[i], 1, 1, GD, GN, (int64_t)GN * GD, (int64_t)GN * GD, GD };
		kvcc_policy *p = NULL;
		kvcc_plan *pl = NULL;
		if (kvcc_compile_file("policies/snapkv.lua", &s, &p) != 0 || kvcc_plan_create(p, &lay, 0, 1, &pl) != 0) {
			check(what, 0);
		} else {
			int32_t len[1] = { GN };
			int ns = kvcc_state_count(p);
			float *st = ns > 0 ? calloc((size_t)ns * GN, sizeof(float)) : NULL;
			kvcc_cache c = { K, V, NULL, len, st };
			int ok = kvcc_decode_layer(pl, &c, 0, q, out) == 0;
			for (int k = 0; ok && k < GG * GD; k++)
				ok = out[k] >= lo[k % GD] - 1e-6f && out[k] <= hi[k % GD] + 1e-6f;
			check(what, ok);
			free(st);
		}
		kvcc_plan_destroy(pl);
		kvcc_close(p);
		munmap(m, 2 * span + 3 * pg);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--bare"))
		return bare_child();
	if (argc != 2) {
		fprintf(stderr, "usage: api_misuse WORKDIR\n");
		return 2;
	}
	char self[1000];
	ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
	self[k > 0 ? k : 0] = 0;
	snprintf(dir, sizeof dir, "%s", argv[1]);
	mkdir(dir, 0755);
	char so[1000];
	path(so, sizeof so, "snapkv.so");
	if (build("policies/snapkv.lua", so) != 0)
		return 1;
	arguments(so);
	lasterror(so);
	kvcc_policy *p = NULL;
	if (kvcc_open(so, &p) == 0) {
		int nobs = 0;
		kvcc_policy_obs(p, NULL, &nobs);
		threads(p, nobs);
		kvcc_close(p);
	} else
		check("open", 0);
	artifacts(so);
	bare(so, self);
	weights();
	keepcounts();
	guard_decode();
	printf("api_misuse: %d of %d cases passed\n", ncase - nfail, ncase);
	return nfail ? 1 : 0;
}
