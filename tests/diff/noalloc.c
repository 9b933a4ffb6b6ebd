/*
** The run path allocates nothing (DESIGN §7, plan/run split): after kvcc_plan_create,
** kvcc_compress, kvcc_append and kvcc_decode_layer must not call malloc, calloc, realloc,
** free, aligned_alloc, posix_memalign or memalign, on any thread.
**
** This program defines those functions itself (forwarding to glibc's __libc_* entry points),
** so every call in the process, libkvcc's and its pool threads' included, is counted while a
** call under test runs (and kvcc_compress_batch, kvcc_append_batch, kvcc_decode_batch on a
** paged pool). Every policy of the manifest's noalloc matrix (tests/policies.tsv: the
** shipped ones and the chunked-selection tests) × f32/f16/bf16, several rounds of lengths, ratios and
** budgets, with and without a given lse, and with unsorted positions (which sends attention
** policies through the generic, non-fused attn epilogue); a policy that reads Q refuses more
** observation queries than the plan's max_obs. Merge rules (runtime/merge.c) run on contiguous
** and paged caches alike.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "dsl/dsl.h"
#define CASEGEN_SEED 0x5eed0a110cull
#include "tests/common/casegen.h"
#include "tests/common/manifest.h"
#include "tests/common/policycase.h"

/* --- counting allocator ------------------------------------------------------------------- */

extern void *__libc_malloc(size_t), *__libc_calloc(size_t, size_t), *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static int armed;
static long ncalls;

static void count(void)
{
	if (__atomic_load_n(&armed, __ATOMIC_RELAXED))
		__atomic_add_fetch(&ncalls, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void free(void *p) { count(); __libc_free(p); }
void *aligned_alloc(size_t al, size_t n) { count(); return __libc_memalign(al, n); }
void *memalign(size_t al, size_t n) { count(); return __libc_memalign(al, n); }
int posix_memalign(void **p, size_t al, size_t n)
{
	count();
	*p = __libc_memalign(al, n);
	return *p ? 0 : 12;   /* ENOMEM */
}

static void arm(void) { __atomic_store_n(&ncalls, 0, __ATOMIC_SEQ_CST), __atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST); }
static long disarm(void) { __atomic_store_n(&armed, 0, __ATOMIC_SEQ_CST); return __atomic_load_n(&ncalls, __ATOMIC_SEQ_CST); }

/* --- cases ----------------------------------------------------------------------------------- */

static int npass, nfail;

static void check(const char *name, const char *what, int rc, long calls)
{
	if (rc != 0)
		printf("FAIL %s: %s: %s\n", name, what, kvcc_last_error()), nfail++;
	else if (calls)
		printf("FAIL %s: %s made %ld allocation calls\n", name, what, calls), nfail++;
	else
		npass++;
}

static void run_policy(const char *path, int dt)
{
	enum { L = 2, H = 2, G = 2, D = 64, CAP = 97 };
	char name[300];
	snprintf(name, sizeof name, "%s %s", path, ki_dtypename(dt));
	kvcc_spec spec = { dt, D, G, KVCC_TARGET_NATIVE };
	KiFn *f;
	kvcc_policy *p;
	if (cg_open(path, name, &spec, &f, &p) != 0) {
		nfail++;
		return;
	}
	int hm = 0, readsq = 0, dyn = f && f->sel.sched == SCH_dynamic;   /* one length per sequence */
	for (int i = 0; i < f->nins; i++) {
		hm |= f->ins[i].op == KO_hmean;
		readsq |= f->ins[i].op == KO_input && f->ins[i].aux == IN_Q;
	}
	int nst = kvcc_state_count(p);
	double par[32];
	int maxobs = cg_params(f, p, par, CAP);
	size_t esz = dt == KVCC_F32 ? 4 : 2, nkv = (size_t)L * H * CAP * D;
	char *K = malloc(nkv * esz), *V = malloc(nkv * esz), *Q = malloc((size_t)L * H * G * CAP * D * esz + 4);
	float *lse = malloc((size_t)L * H * G * CAP * sizeof(float) + 4), *st = malloc(((size_t)nst * L * H * CAP + 1) * 4);
	float *q = malloc((size_t)H * G * D * 4), *out = malloc((size_t)H * G * D * 4), *sc = malloc((size_t)L * H * CAP * 4);
	char *kv1 = malloc((size_t)H * D * esz);
	int32_t *pos = malloc((size_t)L * H * CAP * 4), len[L * H];
	for (size_t i = 0; i < (size_t)L * H * G * CAP * D; i++)
		encode((float)(urand() * 4 - 2), dt, Q + i * esz);
	for (size_t i = 0; i < (size_t)L * H * G * CAP; i++)
		lse[i] = (float)(3 + urand());
	for (size_t i = 0; i < (size_t)H * G * D; i++)
		q[i] = (float)(urand() * 2 - 1);
	for (size_t i = 0; i < (size_t)H * D; i++)
		encode((float)(urand() * 2 - 1), dt, kv1 + i * esz);
	kvcc_layout lay = { dt, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	kvcc_plan *pl = NULL;
	if (kvcc_plan_create(p, &lay, maxobs, 2, &pl) != 0 || cg_setweights(f, pl, L, H, G, D) != 0) {
		printf("FAIL %s: plan: %s\n", name, kvcc_last_error()), nfail++;
		goto out;
	}
	for (int round = 0; round < 6; round++) {
		/* dynamic: with fewer layers than its rounds need a layer keeps every token (the code's
		** candidates), so a full cache would leave no room for the append below */
		int n = round % 3 == 0 ? CAP - dyn : round % 3 == 1 ? CAP - 8 : 41;
		int O = f->obs_all ? n : maxobs;
		for (size_t i = 0; i < nkv; i++) {
			encode((float)(urand() * 2 - 1), dt, K + i * esz);
			encode((float)(urand() * 2 - 1), dt, V + i * esz);
		}
		for (int k = 0; k < L * H; k++) {
			len[k] = hm || f->obs_all || dyn ? n : n - 3 * (k % H);
			for (int t = 0; t < CAP; t++)      /* round 2, 5: unsorted positions */
				pos[(size_t)k * CAP + t] = round % 3 == 2 ? (t * 7) % len[k] : t;
		}
		for (int s = 0; s < nst; s++) {
			double init;
			const char *snm = NULL;
			kvcc_state_info(p, s, &snm, &init);
			if (round % 3 == 1 && snm && !strcmp(snm, "summary"))
				continue;    /* merge summary: the block of round 0 / 3 stays (the online update) */
			for (size_t i = 0; i < (size_t)L * H * CAP; i++)
				st[(size_t)s * L * H * CAP + i] = (float)init;
		}
		kvcc_cache c = { K, V, pos, len, nst ? st : NULL };
		kvcc_obs obs = { O, Q, round & 1 ? lse : NULL, NULL };
		kvcc_args a = { round & 1 ? 0.3 : 0.5, round == 4 ? n / 3 : -1, par, 2, round & 2 ? sc : NULL };
		char what[96];
		snprintf(what, sizeof what, "kvcc_compress (n %d, nobs %d, %s, %s)", n, O, round & 1 ? "lse" : "no lse",
		         round % 3 == 2 ? "unsorted pos" : "sorted pos");
		arm();
		int rc = kvcc_compress(pl, &c, O ? &obs : NULL, &a);
		check(name, what, rc, disarm());
		for (int l = 0; l < L; l++) {
			arm();
			rc = kvcc_append(pl, &c, l, kv1, kv1, 1000 + round);
			check(name, "kvcc_append", rc, disarm());
			arm();
			rc = kvcc_decode_layer(pl, &c, l, q, out);
			check(name, "kvcc_decode_layer", rc, disarm());
		}
	}
	/* batched and paged (include/kvcc.h): two sequences in one pool of pages of 3 and of 16 tokens
	** (vLLM's [page][row][head][chan], pages in reverse order) */
	for (int ps = 3; ps <= 16; ps += 13) {
		int npg = (CAP + ps) / ps, np = 2 * npg, n2 = CAP - 8;
		kvcc_paging pg = { ps, np, npg, KVCC_TABLE_SHARED, (int64_t)ps * H * D };
		kvcc_layout lp = { dt, L, H, D, CAP, (int64_t)ps * H * D * np, D, (int64_t)H * D };
		size_t pool = (size_t)L * np * ps * H * D;
		char *PK = malloc(pool * esz), *PV = malloc(pool * esz), *kv2 = malloc(2 * (size_t)H * D * esz);
		int32_t *tab = malloc((size_t)np * 4), *pos2 = malloc(2 * (size_t)L * H * CAP * 4), len2[2][L * H], ap[2] = { 7, 8 };
		int32_t *fr = malloc(2 * (size_t)L * H * (CAP + 1) * 4);
		float *st2 = malloc(2 * ((size_t)nst * L * H * CAP + 1) * 4), *q2 = malloc(2 * (size_t)H * G * D * 4);
		float *out2 = malloc(2 * (size_t)H * G * D * 4);
		for (size_t i = 0; i < pool; i++) {
			encode((float)(urand() * 2 - 1), dt, PK + i * esz);
			encode((float)(urand() * 2 - 1), dt, PV + i * esz);
		}
		for (int i = 0; i < np; i++)
			tab[i] = np - 1 - i;
		for (size_t i = 0; i < 2 * (size_t)H * D; i++)
			memcpy(kv2 + i * esz, kv1 + (i % ((size_t)H * D)) * esz, esz);
		for (size_t i = 0; i < 2 * (size_t)H * G * D; i++)
			q2[i] = q[i % ((size_t)H * G * D)];
		for (size_t i = 0; i < 2 * ((size_t)nst * L * H * CAP + 1); i++)
			st2[i] = 0;
		for (int b = 0; b < 2; b++)
			for (int k = 0; k < L * H; k++) {
				len2[b][k] = hm || f->obs_all ? n2 : dyn ? n2 - b : n2 - 3 * (k % H) - b;
				for (int t = 0; t < CAP; t++)
					pos2[((size_t)b * L * H + k) * CAP + t] = t;
			}
		kvcc_plan *pp = NULL;
		int prc = kvcc_plan_create_batch(p, &lp, &pg, 2, maxobs, 2, &pp);
		if (prc == 0 && cg_setweights(f, pp, L, H, G, D) != 0)
			prc = -1, kvcc_plan_destroy(pp), pp = NULL;
		if (prc != 0) {
			printf("FAIL %s: paged plan: %s\n", name, kvcc_last_error()), nfail++;
		} else {
			kvcc_seq sq[2];
			for (int b = 0; b < 2; b++)
				sq[b] = (kvcc_seq){ NULL, NULL, pos2 + (size_t)b * L * H * CAP, len2[b],
				                    nst ? st2 + (size_t)b * ((size_t)nst * L * H * CAP + 1) : NULL,
				                    { f->obs_all ? n2 : maxobs, Q, NULL, NULL }, fr + (size_t)b * L * H * (CAP + 1), 0, NULL };
			kvcc_batch bt = { .nseq = 2, .seq = sq, .K = PK, .V = PV, .table = tab };
			kvcc_args a = { 0.5, -1, par, 2, NULL };
			char what[96];
			snprintf(what, sizeof what, "kvcc_compress_batch (paged, page %d)", ps);
			arm();
			int rc = kvcc_compress_batch(pp, &bt, &a);
			check(name, what, rc, disarm());
			for (int l = 0; l < L; l++) {
				arm();
				rc = kvcc_append_batch(pp, &bt, l, kv2, kv2, ap);
				check(name, "kvcc_append_batch (paged)", rc, disarm());
				arm();
				rc = kvcc_decode_batch(pp, &bt, l, q2, out2);
				check(name, "kvcc_decode_batch (paged)", rc, disarm());
			}
			kvcc_plan_destroy(pp);
		}
		free(PK), free(PV), free(kv2), free(tab), free(pos2), free(fr), free(st2), free(q2), free(out2);
	}
	if (readsq && !f->obs_all) {     /* more queries than the plan was sized for: refused */
		kvcc_cache c = { K, V, pos, len, nst ? st : NULL };
		kvcc_obs obs = { maxobs + 1, Q, NULL, NULL };
		kvcc_args a = { 0.5, -1, par, 2, NULL };
		if (kvcc_compress(pl, &c, &obs, &a) != KVCC_EINVAL || !strstr(kvcc_last_error(), "max_obs"))
			printf("FAIL %s: nobs > max_obs not refused (%s)\n", name, kvcc_last_error()), nfail++;
		else
			npass++;
	}
	arm();
	kvcc_plan_destroy(pl);
	if (!disarm())
		printf("FAIL %s: kvcc_plan_destroy freed nothing (is the allocator interposed?)\n", name), nfail++;
out:
	free(K), free(V), free(Q), free(lse), free(st), free(q), free(out), free(sc), free(kv1), free(pos);
	kvcc_close(p);
	ki_free(f);
}

int main(void)
{
	MfPolicy pols[MANIFEST_MAX];
	char why[256];
	int npol = mf_read("noalloc", pols, MANIFEST_MAX, why, sizeof why);
	if (npol <= 0) {
		printf("FAIL manifest: %s\n0 passed, 1 failed\n", npol < 0 ? why : "no noalloc policy");
		return 1;
	}
	for (int i = 0; i < npol; i++)
		for (int dt = 0; dt < 3; dt++)
			run_policy(pols[i].file, dt);
	printf("allocation-free run path: %d policies (the manifest's noalloc matrix) x 3 dtypes\n", npol);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
