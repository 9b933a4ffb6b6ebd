/*
** Batched and paged caches (DESIGN §7 "Layouts", include/kvcc.h): the same cache content in a
** contiguous cache, a batch of contiguous caches and a paged pool gives the same result.
**
** The reference is the contiguous path, one kvcc_compress per sequence (itself checked against
** the interpreter by tests/diff). For every shipped policy and the chunked-selection test
** policies, f32 and bf16, batches of 1..8 sequences with different per-(layer, head) lengths go
** through kvcc_compress_batch on
**   - a batch plan of contiguous caches,
**   - paged plans with page sizes 1, 16, 64, 256, physical pages shuffled, shared tables (vLLM's
**     [page][row][head][chan] with per-layer pools) and per-head tables ([page][head][row][chan],
**     one pool with a layer stride), dense tables and FlashInfer's CSR form;
** and each must give the reference's lengths, compacted rows (bit for bit), positions, state and
** scores. Around and between: guard bytes around each pool and pages in no table filled with a
** sentinel must be untouched, freed pages are exactly the table entries past the new longest
** length (and keep their bytes), CSR last_page_len follows. Then one append and one decode step
** per layer on the compressed caches against kvcc_append / kvcc_decode_layer on the reference
** (outputs within 1e-5 relative: split-KV chunks follow the pages). Bad plans and tables give
** KVCC_EINVAL with a message and change nothing.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <glob.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "dsl/dsl.h"
#define CASEGEN_SEED 0x9a6edull
#include "tests/common/casegen.h"
#include "tests/common/manifest.h"

enum { L = 2, H = 2, G = 2, D = 64, CAP = 600, NS = 8, GUARD = 4096 };
#define SENT 0xA5

static int npass, nfail;
static char name[300];

#define CHECK(c, ...) do { if (c) npass++; else { printf("FAIL %s: ", name); printf(__VA_ARGS__); printf("\n"); nfail++; } } while (0)

/* one sequence: original content and the reference result */
typedef struct Seq {
	char *K, *V;                 /* [L][H][CAP][D] original */
	int32_t pos[L * H * CAP], len[L * H];
	float *st;                   /* [nst][L][H][CAP] */
	char *Q;                     /* [L][H][G][O][D] */
	float *lse;
	int O;
	/* reference after compress (+ append, decode) */
	char *rK, *rV;
	int32_t rpos[L * H * CAP], rlen[L * H];
	float *rst, *rsc;            /* state, scores [L][H][CAP] */
	float rout[L][H * G * D];
	int32_t clen[L * H], cpos[L * H * CAP];    /* after compress, before the append */
	float *cst;
} Seq;

typedef struct Pol {
	kvcc_policy *p;
	int dt, nst, hm, obsall, maxobs, dyn;
	size_t esz;
	double par[32];
	Seq s[NS];
	char *kv1;                   /* appended token [H][D] */
	float q[H * G * D];
	int nw;                      /* the policy's weights (casegen's values), given to every plan */
	KiWData wd[KI_MAXW];
	float *wf;
	double *wdv;
} Pol;

/* the policy's weights into a new plan (criticalkv's W_o, expected_attention's statistics) */
static int pweights(const Pol *P, kvcc_plan *pl)
{
	for (int i = 0, o = 0; i < P->nw; i++) {
		int64_t shp[KI_MAXWDIM];
		int cnt = 1;
		for (int j = 0; j < P->wd[i].ndim; j++)
			shp[j] = P->wd[i].shape[j], cnt *= (int)shp[j];
		if (kvcc_plan_set_weight(pl, P->wd[i].name, P->wf + o, P->wd[i].ndim, shp) != 0)
			return -1;
		o += cnt;
	}
	return 0;
}

static size_t nkv(void) { return (size_t)L * H * CAP * D; }

static void mkseqs(Pol *P)
{
	size_t esz = P->esz;
	for (int i = 0; i < NS; i++) {
		Seq *s = &P->s[i];
		s->K = malloc(nkv() * esz), s->V = malloc(nkv() * esz);
		s->rK = malloc(nkv() * esz), s->rV = malloc(nkv() * esz);
		for (size_t e = 0; e < nkv(); e++) {
			encode((float)(urand() * 2 - 1), P->dt, s->K + e * esz);
			encode((float)(urand() * 2 - 1), P->dt, s->V + e * esz);
		}
		int n = 40 + (int)(urand() * (CAP - 40));
		if (i == 0)      /* full; dynamic: its layers past the last round keep every token (the code's
		                 ** candidates), so one row is left for the append */
			n = CAP - P->dyn;
		for (int k = 0; k < L * H; k++) {
			s->len[k] = P->hm || P->obsall ? n : n - (int)(urand() * 37) * (k % H);
			for (int t = 0; t < CAP; t++)
				s->pos[k * CAP + t] = i == 2 ? (t * 7) % (s->len[k] ? s->len[k] : 1) : t;
		}
		/* per-sequence observation counts (issue 14): up to 2 fewer than max_obs */
		s->O = P->obsall ? n : P->maxobs > 2 ? P->maxobs - i % 3 : P->maxobs;
		size_t nq = (size_t)L * H * G * (s->O ? s->O : 1) * D;
		s->Q = malloc(nq * esz);
		for (size_t e = 0; e < nq; e++)
			encode((float)(urand() * 4 - 2), P->dt, s->Q + e * esz);
		s->lse = malloc((size_t)L * H * G * (s->O + 1) * sizeof(float));
		for (int e = 0; e < L * H * G * s->O; e++)
			s->lse[e] = (float)(3 + urand());
		size_t ns = (size_t)P->nst * L * H * CAP + 1;
		s->st = malloc(ns * 4), s->rst = malloc(ns * 4), s->cst = malloc(ns * 4), s->rsc = malloc((size_t)L * H * CAP * 4);
		for (size_t e = 0; e < ns; e++)
			s->st[e] = (float)urand();
	}
	P->kv1 = malloc((size_t)H * D * esz);
	for (int e = 0; e < H * D; e++)
		encode((float)(urand() * 2 - 1), P->dt, P->kv1 + e * esz);
	for (int e = 0; e < H * G * D; e++)
		P->q[e] = (float)(urand() * 2 - 1);
}

/* round r's arguments (the same for every sequence of its batch) */
static kvcc_args args(Pol *P, int r, float *sc)
{
	return (kvcc_args){ r & 1 ? 0.3 : 0.5, r % 4 == 2 ? 77 : -1, P->par, 2, sc };
}

static kvcc_obs obsof(Seq *s, int r) { return (kvcc_obs){ s->O, s->O ? s->Q : NULL, r & 1 ? s->lse : NULL, NULL }; }

/* the reference of round r for sequences 0..B-1: contiguous, one sequence at a time, then one
** append and decode step per layer */
static int reference(Pol *P, int r, int B)
{
	kvcc_layout lay = { P->dt, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	kvcc_plan *pl = NULL;
	if (kvcc_plan_create(P->p, &lay, P->maxobs, 2, &pl) != 0 || pweights(P, pl) != 0) {
		printf("FAIL %s: reference plan: %s\n", name, kvcc_last_error()), nfail++;
		kvcc_plan_destroy(pl);
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < B && !rc; i++) {
		Seq *s = &P->s[i];
		memcpy(s->rK, s->K, nkv() * P->esz), memcpy(s->rV, s->V, nkv() * P->esz);
		memcpy(s->rpos, s->pos, sizeof s->pos), memcpy(s->rlen, s->len, sizeof s->len);
		memcpy(s->rst, s->st, ((size_t)P->nst * L * H * CAP + 1) * 4);
		kvcc_cache c = { s->rK, s->rV, s->rpos, s->rlen, P->nst ? s->rst : NULL };
		kvcc_obs o = obsof(s, r);
		kvcc_args a = args(P, r, s->rsc);
		kvcc_plan_set_step(pl, 0);
		rc = kvcc_compress(pl, &c, o.nobs ? &o : NULL, &a);
		memcpy(s->clen, s->rlen, sizeof s->rlen), memcpy(s->cpos, s->rpos, sizeof s->rpos);
		memcpy(s->cst, s->rst, ((size_t)P->nst * L * H * CAP + 1) * 4);
		kvcc_plan_set_step(pl, 3 * i + 1);   /* the batch gives sequence i this x.step (kvcc_seq.step) */
		for (int l = 0; l < L && !rc; l++) {
			rc = kvcc_append(pl, &c, l, P->kv1, P->kv1, 5000 + i);
			if (!rc)
				rc = kvcc_decode_layer(pl, &c, l, P->q, s->rout[l]);
		}
		if (rc)
			printf("FAIL %s: reference sequence %d: %s\n", name, i, kvcc_last_error()), nfail++;
	}
	kvcc_plan_destroy(pl);
	return rc;
}

/* --- a paged pool -------------------------------------------------------------------------- */

typedef struct Pool {
	int P, per, csr, hnd;        /* page size, per-head tables, CSR form, [page][head][row] order */
	int np, mp, ntab;            /* pages in the pool, per table, tables */
	int64_t sp, st, sh, sl;      /* strides (elements) */
	size_t bytes;                /* one layer's pool (hnd: all layers) */
	char *Kmem, *Vmem;           /* with GUARD bytes before and after */
	char *Kb[L], *Vb[L];
	int32_t *table, *indptr, *indices, *lastp, *used;   /* used: entries in use per table */
	unsigned char *inuse;        /* [np] */
} Pool;

static int tabmax(const Seq *s, const Pool *q, int tb)
{
	int k0 = q->per ? tb % (L * H) : 0, k1 = q->per ? k0 + 1 : L * H, m = 0;
	for (int k = k0; k < k1; k++)
		m = s->len[k] > m ? s->len[k] : m;
	return m;
}

static char *rowp(Pool *q, char *const *base, int32_t page, int h, int t, size_t esz, int l)
{
	return base[l] + (size_t)((int64_t)page * q->sp + (int64_t)t * q->st + (int64_t)h * q->sh) * esz;
}

/* the table of (sequence b, layer l, head h) */
static const int32_t *tabof(Pool *q, int b, int l, int h)
{
	int tb = q->per ? (b * L + l) * H + h : b;
	return q->csr ? q->indices + q->indptr[tb] : q->table + (size_t)tb * q->mp;
}

static void mkpool(Pool *q, Pol *P, int B, int Psz, int per, int csr)
{
	memset(q, 0, sizeof *q);
	size_t esz = P->esz;
	q->P = Psz, q->per = per, q->csr = csr, q->hnd = per;
	q->mp = (CAP + Psz) / Psz;      /* room for the appended token */
	q->ntab = per ? B * L * H : B;
	q->used = calloc((size_t)q->ntab, 4);
	int need = 0;
	for (int tb = 0; tb < q->ntab; tb++) {
		int m = tabmax(&P->s[per ? tb / (L * H) : tb], q, tb) + 1;    /* + the appended token */
		q->used[tb] = (m + Psz - 1) / Psz;
		need += q->used[tb];
	}
	q->np = need + 5 + need / 4;          /* spare pages, never in a table */
	if (q->hnd)
		q->sh = (int64_t)Psz * D, q->st = D, q->sp = (int64_t)H * Psz * D;
	else
		q->sh = D, q->st = (int64_t)H * D, q->sp = (int64_t)Psz * H * D + (Psz % 3 == 1 ? 8 : 0);
	size_t layer = (size_t)q->sp * q->np * esz;
	q->sl = q->hnd ? q->sp * q->np : 0;
	q->bytes = q->hnd ? layer * L : layer;
	size_t tot = (q->hnd ? q->bytes : layer * L) + 2 * GUARD;
	q->Kmem = malloc(tot), q->Vmem = malloc(tot);
	memset(q->Kmem, SENT, tot), memset(q->Vmem, SENT, tot);
	for (int l = 0; l < L; l++) {
		q->Kb[l] = q->Kmem + GUARD + (q->hnd ? layer * l : layer * l);
		q->Vb[l] = q->Vmem + GUARD + (q->hnd ? layer * l : layer * l);
	}
	/* shuffled page ids */
	int32_t *perm = malloc((size_t)q->np * 4);
	for (int i = 0; i < q->np; i++)
		perm[i] = i;
	for (int i = q->np - 1; i > 0; i--) {
		int j = (int)(urand() * (i + 1));
		int32_t t = perm[i];
		perm[i] = perm[j], perm[j] = t;
	}
	q->inuse = calloc((size_t)q->np, 1);
	q->table = malloc((size_t)q->ntab * q->mp * 4);
	q->indptr = malloc(((size_t)q->ntab + 1) * 4), q->indices = malloc((size_t)need * 4 + 4);
	q->lastp = malloc((size_t)q->ntab * 4);
	int k = 0;
	q->indptr[0] = 0;
	for (int tb = 0; tb < q->ntab; tb++) {
		for (int j = 0; j < q->mp; j++)
			q->table[(size_t)tb * q->mp + j] = j < q->used[tb] ? perm[k + j] : (j % 2 ? -1 : 1 << 30);
		for (int j = 0; j < q->used[tb]; j++)
			q->indices[k + j] = perm[k + j], q->inuse[perm[k + j]] = 1;
		k += q->used[tb];
		q->indptr[tb + 1] = k;
		int m = tabmax(&P->s[per ? tb / (L * H) : tb], q, tb) + 1;
		q->lastp[tb] = q->used[tb] ? m - (q->used[tb] - 1) * Psz : 0;
	}
	free(perm);
	/* the content: every (sequence, layer, head) row t < len */
	for (int b = 0; b < B; b++)
		for (int l = 0; l < L; l++)
			for (int h = 0; h < H; h++) {
				Seq *s = &P->s[b];
				const int32_t *tab = tabof(q, b, l, h);
				for (int t = 0; t < s->len[l * H + h]; t++) {
					size_t src = ((size_t)(l * H + h) * CAP + t) * D * esz;
					memcpy(rowp(q, q->Kb, tab[t / Psz], h, t % Psz, esz, l), s->K + src, D * esz);
					memcpy(rowp(q, q->Vb, tab[t / Psz], h, t % Psz, esz, l), s->V + src, D * esz);
				}
			}
}

static void freepool(Pool *q)
{
	free(q->Kmem), free(q->Vmem), free(q->table), free(q->indptr), free(q->indices), free(q->lastp);
	free(q->used), free(q->inuse);
}

static void mkbatch(Pool *q, kvcc_batch *bt, kvcc_seq *sq, int B)
{
	memset(bt, 0, sizeof *bt);
	bt->nseq = B, bt->seq = sq;
	if (q->hnd)
		bt->K = q->Kb[0], bt->V = q->Vb[0];
	else
		bt->Kl = (void *const *)q->Kb, bt->Vl = (void *const *)q->Vb;
	if (q->csr)
		bt->indptr = q->indptr, bt->indices = q->indices, bt->last_page_len = q->lastp;
	else
		bt->table = q->table;
}

static kvcc_layout paylay(Pol *P, Pool *q, kvcc_paging *pg)
{
	*pg = (kvcc_paging){ q->P, q->np, q->mp, q->per ? KVCC_TABLE_PER_HEAD : KVCC_TABLE_SHARED, q->sp };
	return (kvcc_layout){ P->dt, L, H, D, CAP, q->sl, q->sh, q->st };
}

/* --- one configuration ---------------------------------------------------------------------- */

typedef struct Cfg {
	int B, Psz, per, csr;        /* Psz 0: batched contiguous */
} Cfg;

typedef struct Work {
	int32_t pos[NS][L * H * CAP], len[NS][L * H], apos[NS], step[NS][L];
	float *st[NS], *sc, *q, *out;
	int32_t freed[NS][L * H * (CAP + 1)];
	char *K[NS], *V[NS], *kv;    /* batched contiguous caches; the appended tokens [B][H][D] */
} Work;

static char *rowat(Pool *q, Work *w, int paged, int b, int l, int h, int t, int v, size_t esz)
{
	if (!paged)
		return (v ? w->V[b] : w->K[b]) + ((size_t)(l * H + h) * CAP + t) * D * esz;
	return rowp(q, v ? q->Vb : q->Kb, tabof(q, b, l, h)[t / q->P], h, t % q->P, esz, l);
}

/* a within 1e-5 of the largest |b| of b */
static int close5(const float *a, const float *b, int n)
{
	float m = 0;
	for (int i = 0; i < n; i++)
		m = fabsf(b[i]) > m ? fabsf(b[i]) : m;
	for (int i = 0; i < n; i++)       /* NaN on both sides: a state row unset (d2o's tau) */
		if (!(fabsf(a[i] - b[i]) <= 1e-5f * m + 1e-7f) && !(isnan(a[i]) && isnan(b[i])))
			return 0;
	return 1;
}

static int allsent(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] != SENT)
			return 0;
	return 1;
}

/* pool bytes of page pg of layer l (its whole stride) */
static size_t pageoff(Pool *q, int l, int pg, size_t esz)
{
	return (size_t)(q->Kb[l] - q->Kmem) + (size_t)pg * q->sp * esz;
}

/* after compress: the freed lists, CSR last_page_len, untouched spare pages and guards, freed
** pages unchanged (snapshot Ks/Vs of the pools before the call) */
static void cmppages(Pol *P, Pool *q, Work *w, kvcc_seq *sq, int B, const char *Ks, const char *Vs, const char *cfg)
{
	size_t esz = P->esz, tot = (q->hnd ? q->bytes : q->bytes * L) + 2 * GUARD;
	CHECK(allsent(q->Kmem, GUARD) && allsent(q->Vmem, GUARD) && allsent(q->Kmem + tot - GUARD, GUARD) &&
	      allsent(q->Vmem + tot - GUARD, GUARD), "%s: a guard around the pool was written", cfg);
	int bad = 0;
	for (int pg = 0; pg < q->np; pg++)
		for (int l = 0; l < L && !q->inuse[pg]; l++) {
			size_t o = pageoff(q, l, pg, esz);
			bad |= !allsent(q->Kmem + o, (size_t)q->sp * esz) || !allsent(q->Vmem + o, (size_t)q->sp * esz);
		}
	CHECK(!bad, "%s: a page in no table was written", cfg);
	for (int b = 0; b < B; b++) {
		int32_t want[L * H * (CAP + 1)];
		int nw = 0, badlp = 0, badf = 0;
		for (int tb = q->per ? b * L * H : b; tb < (q->per ? (b + 1) * L * H : b + 1); tb++) {
			int k0 = q->per ? tb % (L * H) : 0, k1 = q->per ? k0 + 1 : L * H, maxn = 0, oldn = 0;
			for (int k = k0; k < k1; k++) {
				maxn = w->len[b][k] > maxn ? w->len[b][k] : maxn;
				oldn = P->s[b].len[k] > oldn ? P->s[b].len[k] : oldn;
			}
			int need = (maxn + q->P - 1) / q->P, used = q->csr ? q->used[tb] : (oldn + q->P - 1) / q->P;
			const int32_t *t = q->csr ? q->indices + q->indptr[tb] : q->table + (size_t)tb * q->mp;
			for (int j = need; j < used; j++) {
				want[nw++] = t[j];
				for (int l = 0; l < L; l++) {
					size_t o = pageoff(q, l, t[j], esz);
					badf |= memcmp(q->Kmem + o, Ks + o, (size_t)q->sp * esz) || memcmp(q->Vmem + o, Vs + o, (size_t)q->sp * esz);
				}
			}
			if (q->csr)
				badlp |= q->lastp[tb] != (need ? maxn - (need - 1) * q->P : 0);
		}
		CHECK(sq[b].nfreed == nw && !memcmp(sq[b].freed, want, (size_t)nw * 4),
		      "%s: sequence %d: freed %d pages, expected the %d past the new lengths", cfg, b, sq[b].nfreed, nw);
		CHECK(!badf, "%s: sequence %d: a freed page was written", cfg, b);
		CHECK(!badlp, "%s: sequence %d: CSR last_page_len not set for the new lengths", cfg, b);
	}
}

/* CSR after compress, as an engine does: each table keeps the pages of its new longest length
** + 1 (the token about to be appended) */
static void csr_rebuild(Pool *q, Work *w)
{
	int32_t *ni = malloc((size_t)q->indptr[q->ntab] * 4 + 4);
	int k = 0;
	for (int tb = 0; tb < q->ntab; tb++) {
		int b = q->per ? tb / (L * H) : tb, k0 = q->per ? tb % (L * H) : 0, k1 = q->per ? k0 + 1 : L * H, m = 0;
		for (int kk = k0; kk < k1; kk++)
			m = w->len[b][kk] > m ? w->len[b][kk] : m;
		int np = (m + 1 + q->P - 1) / q->P, a = q->indptr[tb];
		for (int j = 0; j < np; j++)
			ni[k + j] = q->indices[a + j];
		q->indptr[tb] = k, q->lastp[tb] = m + 1 - (np - 1) * q->P;
		k += np;
	}
	q->indptr[q->ntab] = k;
	memcpy(q->indices, ni, (size_t)k * 4);
	free(ni);
}

static void runcfg(Pol *P, int r, Cfg c)
{
	char cfg[160];
	if (c.Psz)
		snprintf(cfg, sizeof cfg, "round %d: paged, page %d, %s %s tables, %d sequences", r, c.Psz,
		         c.per ? "per-head" : "shared", c.csr ? "CSR" : "dense", c.B);
	else
		snprintf(cfg, sizeof cfg, "round %d: batched contiguous, %d sequences", r, c.B);
	if (reference(P, r, c.B))
		return;
	size_t esz = P->esz, LHC = (size_t)L * H * CAP;
	int B = c.B, paged = c.Psz > 0;
	Pool q;
	Work *w = calloc(1, sizeof *w);
	kvcc_plan *pl = NULL;
	kvcc_layout lay = { P->dt, L, H, D, CAP, (int64_t)H * CAP * D, (int64_t)CAP * D, D };
	kvcc_paging pg;
	char *Ks = NULL, *Vs = NULL;
	if (paged) {
		mkpool(&q, P, B, c.Psz, c.per, c.csr);
		lay = paylay(P, &q, &pg);
	}
	if (kvcc_plan_create_batch(P->p, &lay, paged ? &pg : NULL, NS, P->maxobs, 2, &pl) != 0 || pweights(P, pl) != 0) {
		CHECK(0, "%s: plan: %s", cfg, kvcc_last_error());
		goto out;
	}
	kvcc_seq sq[NS];
	kvcc_batch bt = { .nseq = B, .seq = sq };
	if (paged) {
		mkbatch(&q, &bt, sq, B);
		size_t tot = (q.hnd ? q.bytes : q.bytes * L) + 2 * GUARD;
		Ks = malloc(tot), Vs = malloc(tot);
		memcpy(Ks, q.Kmem, tot), memcpy(Vs, q.Vmem, tot);
	}
	w->sc = malloc((size_t)B * LHC * 4);
	w->kv = malloc((size_t)B * H * D * esz);
	w->q = malloc((size_t)B * H * G * D * 4), w->out = malloc((size_t)B * H * G * D * 4);
	for (int b = 0; b < B; b++) {
		Seq *s = &P->s[b];
		memcpy(w->pos[b], s->pos, sizeof s->pos), memcpy(w->len[b], s->len, sizeof s->len);
		w->st[b] = malloc(((size_t)P->nst * LHC + 1) * 4);
		memcpy(w->st[b], s->st, ((size_t)P->nst * LHC + 1) * 4);
		if (!paged) {
			w->K[b] = malloc(nkv() * esz), w->V[b] = malloc(nkv() * esz);
			memcpy(w->K[b], s->K, nkv() * esz), memcpy(w->V[b], s->V, nkv() * esz);
		}
		sq[b] = (kvcc_seq){ w->K[b], w->V[b], w->pos[b], w->len[b], P->nst ? w->st[b] : NULL, obsof(s, r),
		                    w->freed[b], -1, NULL };
		for (int l = 0; l < L; l++)
			w->step[b][l] = 3 * b + 1;
		sq[b].step = w->step[b];             /* per-sequence x.step, as the reference's plan step */
		memcpy(w->kv + (size_t)b * H * D * esz, P->kv1, (size_t)H * D * esz);
		memcpy(w->q + (size_t)b * H * G * D, P->q, sizeof P->q);
		w->apos[b] = 5000 + b;
	}
	kvcc_args a = args(P, r, w->sc);
	kvcc_plan_set_step(pl, 0);
	int rc = kvcc_compress_batch(pl, &bt, &a);
	CHECK(rc == 0, "%s: kvcc_compress_batch: %s", cfg, kvcc_last_error());
	if (rc)
		goto out;
	for (int b = 0; b < B; b++) {      /* the compress result: bit for bit the reference's */
		Seq *s = &P->s[b];
		int bad = 0, badrow = 0;
		for (int k = 0; k < L * H && !bad; k++) {
			bad |= w->len[b][k] != s->clen[k];
			for (int t = 0; t < s->clen[k] && !bad; t++) {
				bad |= w->pos[b][k * CAP + t] != s->cpos[k * CAP + t];
				for (int x = 0; x < P->nst; x++)
					bad |= memcmp(&w->st[b][(size_t)x * LHC + (size_t)k * CAP + t], &s->cst[(size_t)x * LHC + (size_t)k * CAP + t], 4) != 0;
			}
			for (int t = 0; t < s->clen[k] && !bad; t++)
				for (int v = 0; v < 2; v++)
					badrow |= memcmp(rowat(&q, w, paged, b, k / H, k % H, t, v, esz),
					                 (v ? s->rV : s->rK) + ((size_t)k * CAP + t) * D * esz, D * esz) != 0;
		}
		CHECK(!bad, "%s: sequence %d: lengths, positions or state differ from the contiguous reference", cfg, b);
		CHECK(!badrow, "%s: sequence %d: compacted K/V rows differ from the contiguous reference", cfg, b);
		CHECK(memcmp(w->sc + (size_t)b * LHC, s->rsc, LHC * 4) == 0, "%s: sequence %d: scores differ", cfg, b);
	}
	if (paged) {
		cmppages(P, &q, w, sq, B, Ks, Vs, cfg);
		if (c.csr)
			csr_rebuild(&q, w);
	}
	/* one append and decode step per layer */
	for (int l = 0; l < L && rc == 0; l++) {
		rc = kvcc_append_batch(pl, &bt, l, w->kv, w->kv, w->apos);
		CHECK(rc == 0, "%s: kvcc_append_batch: %s", cfg, kvcc_last_error());
		if (rc == 0) {
			rc = kvcc_decode_batch(pl, &bt, l, w->q, w->out);
			CHECK(rc == 0, "%s: kvcc_decode_batch: %s", cfg, kvcc_last_error());
		}
		for (int b = 0; b < B && rc == 0; b++)
			CHECK(close5(w->out + (size_t)b * H * G * D, P->s[b].rout[l], H * G * D),
			      "%s: sequence %d layer %d: decode output differs from the contiguous reference", cfg, b, l);
	}
	for (int b = 0; b < B && rc == 0; b++) {
		Seq *s = &P->s[b];
		int bad = 0, badrow = 0;
		for (int k = 0; k < L * H; k++) {
			bad |= w->len[b][k] != s->rlen[k] || w->pos[b][k * CAP + s->rlen[k] - 1] != s->rpos[k * CAP + s->rlen[k] - 1];
			for (int t = 0; t < s->rlen[k] && !bad; t++)
				for (int v = 0; v < 2; v++)
					badrow |= memcmp(rowat(&q, w, paged, b, k / H, k % H, t, v, esz),
					                 (v ? s->rV : s->rK) + ((size_t)k * CAP + t) * D * esz, D * esz) != 0;
		}
		CHECK(!bad && !badrow, "%s: sequence %d: after append, lengths, positions or rows differ", cfg, b);
		for (int l = 0; l < L; l++)
			CHECK(w->step[b][l] == 3 * b + 2, "%s: sequence %d layer %d: step %d after one decode, want %d", cfg, b, l,
			      w->step[b][l], 3 * b + 2);
		if (P->nst)
			CHECK(close5(w->st[b], s->rst, (int)((size_t)P->nst * LHC)), "%s: sequence %d: state after decode differs", cfg, b);
	}
out:
	for (int b = 0; b < B; b++)
		free(w->st[b]), free(w->K[b]), free(w->V[b]);
	free(w->sc), free(w->kv), free(w->q), free(w->out), free(w), free(Ks), free(Vs);
	if (paged)
		freepool(&q);
	kvcc_plan_destroy(pl);
}

/* --- bad plans and tables ------------------------------------------------------------------- */

static void badplan(Pol *P, const char *what, kvcc_layout lay, kvcc_paging pg, const char *msg)
{
	kvcc_plan *pl = (kvcc_plan *)&lay;
	int rc = kvcc_plan_create_batch(P->p, &lay, &pg, NS, P->maxobs, 2, &pl);
	CHECK(rc == KVCC_EINVAL && !pl && strstr(kvcc_last_error(), msg), "bad plan (%s): rc %d, \"%s\", expected \"%s\"", what,
	      rc, kvcc_last_error(), msg);
	if (rc == 0)
		kvcc_plan_destroy(pl);
}

/* a bad call changes nothing: the pools, lengths, positions and state are as before */
static void badcall(Pol *P, kvcc_plan *pl, kvcc_batch *bt, Pool *q, Work *w, const char *what, const char *msg, int B)
{
	size_t tot = (q->hnd ? q->bytes : q->bytes * L) + 2 * GUARD;
	char *Ks = malloc(tot), *Vs = malloc(tot);
	memcpy(Ks, q->Kmem, tot), memcpy(Vs, q->Vmem, tot);
	int32_t len0[NS][L * H], pos0 = w->pos[0][0];
	memcpy(len0, w->len, sizeof len0);
	kvcc_args a = args(P, 0, NULL);
	int rc = kvcc_compress_batch(pl, bt, &a);
	CHECK(rc == KVCC_EINVAL && strstr(kvcc_last_error(), msg), "bad table (%s): compress rc %d, \"%s\", expected \"%s\"",
	      what, rc, kvcc_last_error(), msg);
	int32_t k1[H * D];
	memset(k1, 0, sizeof k1);
	int32_t ap[NS] = { 0 };
	rc = kvcc_append_batch(pl, bt, 0, k1, k1, ap);
	CHECK(rc == KVCC_EINVAL, "bad table (%s): append rc %d", what, rc);
	CHECK(!memcmp(Ks, q->Kmem, tot) && !memcmp(Vs, q->Vmem, tot) && !memcmp(len0, w->len, sizeof len0) &&
	      pos0 == w->pos[0][0], "bad table (%s): memory changed", what);
	(void)B;
	free(Ks), free(Vs);
}

static void badtables(Pol *P)
{
	int B = 3;
	Pool q;
	mkpool(&q, P, B, 16, 0, 0);
	kvcc_paging pg;
	kvcc_layout lay = paylay(P, &q, &pg);
	/* plans */
	kvcc_paging bp = pg;
	bp.page_size = 0, badplan(P, "page size 0", lay, bp, "page size");
	bp = pg, bp.page_size = 257, badplan(P, "page size 257", lay, bp, "page size");
	bp = pg, bp.stride_page = 16 * H * D - 1, badplan(P, "overlapping pages", lay, bp, "bad paged strides");
	bp = pg, bp.stride_page = INT64_MAX / 8, badplan(P, "overflowing pool", lay, bp, "bad paged strides");
	bp = pg, bp.tables = 7, badplan(P, "table kind", lay, bp, "bad paging");
	kvcc_layout bl = lay;
	bl.stride_head = 1, badplan(P, "overlapping heads", bl, pg, "bad paged strides");
	kvcc_plan *pl;
	if (kvcc_plan_create_batch(P->p, &lay, &pg, NS, P->maxobs, 2, &pl) != 0) {
		CHECK(0, "bad tables: plan: %s", kvcc_last_error());
		freepool(&q);
		return;
	}
	Work *w = calloc(1, sizeof *w);
	kvcc_seq sq[NS];
	kvcc_batch bt;
	mkbatch(&q, &bt, sq, B);
	for (int b = 0; b < B; b++) {
		memcpy(w->pos[b], P->s[b].pos, sizeof w->pos[b]), memcpy(w->len[b], P->s[b].len, sizeof w->len[b]);
		w->st[b] = malloc(((size_t)P->nst * L * H * CAP + 1) * 4);
		sq[b] = (kvcc_seq){ NULL, NULL, w->pos[b], w->len[b], P->nst ? w->st[b] : NULL, obsof(&P->s[b], 0), w->freed[b], 0, NULL };
	}
	int32_t *t = q.table, keep;
	keep = t[1], t[1] = q.np, badcall(P, pl, &bt, &q, w, "id past the pool", "outside the pool", B), t[1] = keep;
	keep = t[0], t[0] = -1, badcall(P, pl, &bt, &q, w, "negative id", "outside the pool", B), t[0] = keep;
	keep = t[2], t[2] = t[0], badcall(P, pl, &bt, &q, w, "id twice in a table", "used twice", B), t[2] = keep;
	keep = t[q.mp + 1], t[q.mp + 1] = t[3], badcall(P, pl, &bt, &q, w, "id in two tables", "used twice", B), t[q.mp + 1] = keep;
	keep = w->len[1][1], w->len[1][1] = CAP + 1, badcall(P, pl, &bt, &q, w, "length past capacity", "outside 0..", B), w->len[1][1] = keep;
	bt.nseq = 0, badcall(P, pl, &bt, &q, w, "no sequences", "sequences", B), bt.nseq = B;
	bt.nseq = NS + 1, badcall(P, pl, &bt, &q, w, "too many sequences", "sequences", B), bt.nseq = B;
	bt.table = NULL, badcall(P, pl, &bt, &q, w, "no table", "page tables", B), bt.table = q.table;
	void *const *kl = bt.Kl;
	bt.Kl = NULL, badcall(P, pl, &bt, &q, w, "no pools", "page pools", B), bt.Kl = kl;
	int32_t *ln = sq[2].len;
	sq[2].len = NULL, badcall(P, pl, &bt, &q, w, "null len", "null len", B), sq[2].len = ln;
	/* CSR */
	bt.table = NULL, bt.indptr = q.indptr, bt.indices = q.indices, bt.last_page_len = q.lastp;
	for (int i = 0; i <= q.ntab; i++)       /* CSR over the dense table's used entries */
		q.indptr[i] = i ? q.indptr[i - 1] + q.used[i - 1] : 0;
	for (int i = 0; i < q.ntab; i++)
		memcpy(q.indices + q.indptr[i], q.table + (size_t)i * q.mp, (size_t)q.used[i] * 4);
	kvcc_args a = args(P, 0, NULL);
	int32_t len0[NS][L * H];
	memcpy(len0, w->len, sizeof len0);
	int32_t lp0 = q.lastp[0];
	q.lastp[0] = 1;
	if (q.used[0] > 1 && (q.used[0] - 1) * 16 + 1 < len0[0][0])
		badcall(P, pl, &bt, &q, w, "CSR length past last_page_len", "its page table holds", B);
	q.lastp[0] = 17, badcall(P, pl, &bt, &q, w, "CSR last_page_len 17", "last_page_len", B);
	q.lastp[0] = lp0;
	keep = q.indptr[1], q.indptr[1] = q.indptr[2] + 1, badcall(P, pl, &bt, &q, w, "CSR indptr decreasing", "indptr", B);
	q.indptr[1] = keep;
	keep = q.indptr[1], q.indptr[1] = q.indptr[0] + 1;
	if (len0[0][0] > 16)
		badcall(P, pl, &bt, &q, w, "CSR table too short", "its page table holds", B);
	q.indptr[1] = keep;
	/* the unchanged CSR batch still compresses */
	CHECK(kvcc_compress_batch(pl, &bt, &a) == 0, "CSR batch after the bad calls: %s", kvcc_last_error());
	/* a dense table shorter than the lengths */
	kvcc_paging sp = pg;
	sp.max_pages = 2;
	kvcc_plan *p2;
	if (kvcc_plan_create_batch(P->p, &lay, &sp, NS, P->maxobs, 2, &p2) == 0) {
		memcpy(w->len, len0, sizeof len0);
		kvcc_batch b2 = bt;
		b2.table = q.table, b2.indptr = NULL, b2.indices = NULL;
		badcall(P, p2, &b2, &q, w, "dense table of 2 pages", "its page table holds", B);
		kvcc_plan_destroy(p2);
	}
	for (int b = 0; b < B; b++)
		free(w->st[b]);
	free(w);
	kvcc_plan_destroy(pl);
	freepool(&q);
}

/* --- policies -------------------------------------------------------------------------------- */

static void run_policy(const MfPolicy *mp, int dt)
{
	static const int psz[4] = { 1, 16, 64, 256 }, bs[8] = { 1, 3, 5, 8, 2, 4, 6, 7 };
	snprintf(name, sizeof name, "%s %s", mp->name, ki_dtypename(dt));
	KiErr e = { 0 };
	KiFn *f = kd_loadfile(mp->file, NULL, &e);
	kvcc_spec spec = { dt, D, G, KVCC_TARGET_NATIVE };
	Pol *P = calloc(1, sizeof *P);
	if (!f || kvcc_compile_file(mp->file, &spec, &P->p) != 0) {
		printf("FAIL %s: load/compile: %s %s\n", name, e.msg, kvcc_last_error()), nfail++;
		ki_free(f), free(P);
		return;
	}
	P->dt = dt, P->esz = dt == KVCC_F32 ? 4 : 2, P->nst = kvcc_state_count(P->p);
	if (f->nw && cg_weights(f, L, H, G, D, P->wd, &P->wf, &P->wdv) != 0) {
		printf("FAIL %s: weights: out of memory\n", name), nfail++;
		kvcc_close(P->p), ki_free(f), free(P);
		return;
	}
	P->nw = f->nw;
	for (int i = 0; i < f->nins; i++)
		P->hm |= f->ins[i].op == KO_hmean;
	P->dyn = f->sel.sched == SCH_dynamic;
	P->hm |= P->dyn;                           /* one length per sequence, as head_mean */
	int npar = kvcc_param_count(P->p);
	for (int i = 0; i < npar && i < 32; i++)
		kvcc_param_info(P->p, i, NULL, &P->par[i]);
	int wi = kvcc_param_index(P->p, "window");
	if (wi >= 0 && P->par[wi] > 8)
		P->par[wi] = 8;
	int ob = 0;
	kvcc_policy_obs(P->p, P->par, &ob);
	P->obsall = ob < 0, P->maxobs = ob < 0 ? CAP : ob;
	mkseqs(P);
	runcfg(P, 0, (Cfg){ NS, 0, 0, 0 });
	for (int k = 0; k < 8; k++)
		runcfg(P, k + 1, (Cfg){ bs[k], psz[k / 2], k % 2, k % 3 == 1 });
	if (!strcmp(mp->name, "snapkv") || !strcmp(mp->name, "knorm"))
		badtables(P);
	for (int i = 0; i < NS; i++) {
		Seq *s = &P->s[i];
		free(s->K), free(s->V), free(s->rK), free(s->rV), free(s->Q), free(s->lse), free(s->st), free(s->rst);
		free(s->cst), free(s->rsc);
	}
	free(P->kv1), free(P->wf), free(P->wdv);
	kvcc_close(P->p);
	free(P);
	ki_free(f);
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;    /* run only the policies whose name contains it */
	MfPolicy pols[MANIFEST_MAX];
	char why[256];
	int npol = mf_read("noalloc", pols, MANIFEST_MAX, why, sizeof why);
	if (npol <= 0) {
		printf("FAIL manifest: %s\n0 passed, 1 failed\n", npol < 0 ? why : "no noalloc policy");
		return 1;
	}
	for (int i = 0; i < npol; i++) {
		if (only && !strstr(pols[i].name, only))
			continue;
		run_policy(&pols[i], KVCC_F32);
		run_policy(&pols[i], KVCC_BF16);
	}
	/* per-sequence x.step (kvcc_seq.step): a hook that reads it */
	MfPolicy sh = { .name = "step_hook", .file = "tests/paged/step_hook.lua" };
	run_policy(&sh, KVCC_F32);
	run_policy(&sh, KVCC_BF16);
	printf("paged: %d policies (the manifest's noalloc matrix, and tests/paged/step_hook.lua) x f32, bf16; batched contiguous and paged (pages "
	       "1/16/64/256, shared/per-head, dense/CSR) vs the contiguous path\n", npol);
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
