/*
** kvcc run on a decode case (the case has dk): generation step by step through the
** reference interpreter, the protocol of tests/oracle/mergeref.DecodeCache (DESIGN §3
** "Merge semantics", M8):
**
**   prefill policy: compress the case's cache once (its ratio or budget), then each step
**   decode policy:  each step, and compress when a head holds more than the budget
**
**   step s: append token s (dk[s], dv[s] at position dpos[s], state at its init, count 1),
**   attend with the step's queries dq[s] (decode attention, the count bias when the merge
**   rule has one; the observe hook updates the state), then (decode policies, every N-th
**   step) compress every head that holds more than `budget` rows to `budget`.
**
** The result holds every step's attention outputs and held positions, and the final
** cache. Merged rows, counts, summary rows and the adaptive threshold carry from one
** compression to the next (KiCase count, sumat, tau).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/interp.h"
#include "tools/npz.h"
#include "tools/tools.h"

typedef struct Dec {
	int L, H, G, d, cap, nst;
	float *K, *V, *out;
	int32_t *pos, *len, *sumat, *steplen, *steppos;
	double *state, *count, *tau;
} Dec;

static void decfree(Dec *D)
{
	free(D->K), free(D->V), free(D->out), free(D->pos), free(D->len), free(D->sumat);
	free(D->steplen), free(D->steppos), free(D->state), free(D->count), free(D->tau);
}

/* The compressed cache r back into D. */
static void takeresult(Dec *D, const KiResult *r)
{
	size_t nlh = (size_t)D->L * D->H;
	for (size_t lh = 0; lh < nlh; lh++) {
		int m = r->len[lh];
		size_t base = lh * D->cap;
		memcpy(&D->K[base * D->d], &r->K[base * D->d], (size_t)m * D->d * sizeof(float));
		memcpy(&D->V[base * D->d], &r->V[base * D->d], (size_t)m * D->d * sizeof(float));
		memcpy(&D->pos[base], &r->pos[base], (size_t)m * sizeof(int32_t));
		memcpy(&D->count[base], &r->count[base], (size_t)m * sizeof(double));
		for (int s = 0; s < D->nst; s++)
			memcpy(&D->state[(size_t)s * nlh * D->cap + base], &r->state[(size_t)s * nlh * D->cap + base],
			       (size_t)m * sizeof(double));
		D->len[lh] = m, D->sumat[lh] = r->sumat[lh], D->tau[lh] = r->tau[lh];
	}
}

static int compress(const KiFn *f, KiCase *c, Dec *D, KiErr *e)
{
	KiResult r;
	if (ki_run(f, c, &r, e) != 0)
		return -1;
	takeresult(D, &r);
	ki_result_free(&r);
	return 0;
}

static int shaped(const KtArray *a, int ndim, const long *shape)
{
	if (!a || a->ndim != ndim)
		return 0;
	for (int i = 0; i < ndim; i++)
		if (shape[i] >= 0 && a->shape[i] != shape[i])
			return 0;
	return 1;
}

static int write(const Dec *D, const KiFn *f, int S, const char *out, KiErr *e)
{
	KtNpz w = { 0 };
	long so[5] = { S, D->L, D->H, D->G, D->d }, sl[3] = { S, D->L, D->H }, sp[4] = { S, D->L, D->H, D->cap };
	long lh2[2] = { D->L, D->H };
	int bad = kt_npz_add(&w, "out", "<f4", 5, so, D->out);
	bad |= kt_npz_add(&w, "steplen", "<i4", 3, sl, D->steplen);
	bad |= kt_npz_add(&w, "steppos", "<i4", 4, sp, D->steppos);
	bad |= kt_npz_add(&w, "sumat", "<i4", 2, lh2, D->sumat);
	bad |= kt_npz_add(&w, "tau", "<f8", 2, lh2, D->tau);
	for (int l = 0; l < D->L; l++)
		for (int h = 0; h < D->H; h++) {
			size_t lh = (size_t)l * D->H + h, base = lh * D->cap;
			long m[2] = { D->len[lh], D->d };
			char nm[64];
			snprintf(nm, sizeof nm, "K.%d.%d", l, h);
			bad |= kt_npz_add(&w, nm, "<f4", 2, m, &D->K[base * D->d]);
			snprintf(nm, sizeof nm, "V.%d.%d", l, h);
			bad |= kt_npz_add(&w, nm, "<f4", 2, m, &D->V[base * D->d]);
			snprintf(nm, sizeof nm, "pos.%d.%d", l, h);
			bad |= kt_npz_add(&w, nm, "<i4", 1, m, &D->pos[base]);
			snprintf(nm, sizeof nm, "count.%d.%d", l, h);
			bad |= kt_npz_add(&w, nm, "<f8", 1, m, &D->count[base]);
		}
	(void)f;
	int rc = bad ? (ki_error(e, out, 0, 0, "out of memory"), -1) : kt_npz_write(out, &w, e);
	kt_npz_free(&w);
	return rc;
}

/*
** c0: the case as kvcc run read it (K, V [L][H][n][d], pos, params, ratio / budget,
** dtype); z: the case file (dk, dv [S, L, H, d], dq [S, L, H, G, d], optional dpos [S]).
*/
int kt_rundecode(const KiFn *f, const KiCase *c0, const KtNpz *z, const char *inputs, const char *out,
                 KiErr *e)
{
	const KtArray *adk = kt_npz_get(z, "dk"), *adv = kt_npz_get(z, "dv"), *adq = kt_npz_get(z, "dq");
	const KtArray *adp = kt_npz_get(z, "dpos");
	int L = c0->L, H = c0->H, d = c0->d, n0 = c0->n;
	if (!shaped(adk, 4, (long[]){ -1, L, H, d }) || !shaped(adv, 4, adk->shape) || !adq || adq->ndim != 5 ||
	    adq->shape[0] != adk->shape[0] || adq->shape[1] != L || adq->shape[2] != H || adq->shape[4] != d) {
		ki_error(e, inputs, 0, 0, "a decode case needs dk, dv [S, L, H, d] and dq [S, L, H, G, d]");
		return -1;
	}
	int S = (int)adk->shape[0], G = (int)adq->shape[3];
	if (S < 1 || S > 100000 || G < 1 || G > 64 || (adp && !shaped(adp, 1, (long[]){ S }))) {
		ki_error(e, inputs, 0, 0, "a decode case needs 1..100000 steps, a group of 1..64 and dpos [S]");
		return -1;
	}
	if (f->when.kind == WH_decode && c0->budget < 0) {
		ki_error(e, inputs, 0, 0, "decode steps of a decode policy need a budget");
		return -1;
	}
	Dec D = { .L = L, .H = H, .G = G, .d = d, .cap = n0 + S, .nst = f->nst };
	size_t nlh = (size_t)L * H, rows = nlh * D.cap;
	D.K = calloc(rows * d + 1, sizeof(float)), D.V = calloc(rows * d + 1, sizeof(float));
	D.out = calloc((size_t)S * nlh * G * d + 1, sizeof(float));
	D.pos = calloc(rows + 1, sizeof(int32_t)), D.len = calloc(nlh, sizeof(int32_t));
	D.sumat = calloc(nlh, sizeof(int32_t)), D.steplen = calloc((size_t)S * nlh, sizeof(int32_t));
	D.steppos = calloc((size_t)S * rows + 1, sizeof(int32_t));
	D.state = calloc(rows * (f->nst ? f->nst : 1) + 1, sizeof(double));
	D.count = calloc(rows + 1, sizeof(double)), D.tau = calloc(nlh, sizeof(double));
	float *q = calloc(nlh * G * d + 1, sizeof(float));
	int rc = -1;
	if (!D.K || !D.V || !D.out || !D.pos || !D.len || !D.sumat || !D.steplen || !D.steppos || !D.state ||
	    !D.count || !D.tau || !q) {
		ki_error(e, inputs, 0, 0, "out of memory");
		goto out;
	}
	for (size_t lh = 0; lh < nlh; lh++) {
		D.len[lh] = c0->len ? c0->len[lh] : n0, D.sumat[lh] = -1, D.tau[lh] = NAN;
		for (int t = 0; t < n0; t++) {
			size_t src = lh * n0 + t, dst = lh * D.cap + t;
			memcpy(&D.K[dst * d], &c0->K[src * d], (size_t)d * sizeof(float));
			memcpy(&D.V[dst * d], &c0->V[src * d], (size_t)d * sizeof(float));
			D.pos[dst] = c0->pos ? c0->pos[src] : t;
			D.count[dst] = 1;
			for (int s = 0; s < f->nst; s++)
				D.state[(size_t)s * rows + dst] = f->st[s].init;
		}
	}
	KiCase c = *c0;
	c.n = D.cap, c.len = D.len, c.K = D.K, c.V = D.V, c.pos = D.pos, c.state = D.state;
	c.count = D.count, c.sumat = D.sumat, c.tau = D.tau, c.O = 0, c.Q = NULL, c.lse = NULL, c.qpos = NULL;
	c.G = G;
	if (f->when.kind == WH_prefill) {
		KiResult r;       /* the case's own cache, compressed once, then moved into D */
		if (ki_run(f, c0, &r, e) != 0)
			goto out;
		for (size_t lh = 0; lh < nlh; lh++) {
			int m = r.len[lh];
			for (int t = 0; t < m; t++) {
				size_t src = lh * n0 + t, dst = lh * D.cap + t;
				memcpy(&D.K[dst * d], &r.K[src * d], (size_t)d * sizeof(float));
				memcpy(&D.V[dst * d], &r.V[src * d], (size_t)d * sizeof(float));
				D.pos[dst] = r.pos[src], D.count[dst] = r.count[src];
			}
			D.len[lh] = m, D.sumat[lh] = r.sumat[lh], D.tau[lh] = r.tau[lh];
		}
		ki_result_free(&r);
	}
	double every = KI_RKIND(f->when.every) == RK_PAR ? c0->params[KI_RIDX(f->when.every)] :
	               KI_RKIND(f->when.every) == RK_CON ? f->con[KI_RIDX(f->when.every)] : 1;
	if (!(every >= 1 && every <= 1e9))
		every = 1;
	for (int s = 0; s < S; s++) {
		for (size_t lh = 0; lh < nlh; lh++) {
			int t = D.len[lh];
			size_t dst = lh * D.cap + t;
			for (int ch = 0; ch < d; ch++) {
				D.K[dst * d + ch] = (float)kt_array_get(adk, (((size_t)s * nlh + lh) * d) + ch);
				D.V[dst * d + ch] = (float)kt_array_get(adv, (((size_t)s * nlh + lh) * d) + ch);
			}
			D.pos[dst] = adp ? (int32_t)kt_array_get(adp, (size_t)s) : n0 + s;
			D.count[dst] = 1;
			for (int k = 0; k < f->nst; k++)
				D.state[(size_t)k * rows + dst] = f->st[k].init;
			D.len[lh] = t + 1;
		}
		for (size_t k = 0; k < nlh * G * d; k++)
			q[k] = (float)kt_array_get(adq, (size_t)s * nlh * G * d + k);
		c.step = s;
		if (ki_observe(f, &c, q, D.state, &D.out[(size_t)s * nlh * G * d], e) != 0)
			goto out;
		if (f->when.kind == WH_decode && (s + 1) % (long)every == 0) {
			int over = 0;
			for (size_t lh = 0; lh < nlh; lh++)
				over |= D.len[lh] > c0->budget;
			if (over && compress(f, &c, &D, e) != 0)
				goto out;
		}
		for (size_t lh = 0; lh < nlh; lh++) {
			D.steplen[(size_t)s * nlh + lh] = D.len[lh];
			for (int t = 0; t < D.cap; t++)
				D.steppos[((size_t)s * nlh + lh) * D.cap + t] = t < D.len[lh] ? D.pos[lh * D.cap + t] : -1;
		}
	}
	rc = out ? write(&D, f, S, out, e) : 0;
	if (!out)
		for (size_t lh = 0; lh < nlh; lh++)
			printf("layer %zu head %zu: %d rows after %d steps\n", lh / H, lh % H, D.len[lh], S);
out:
	free(q);
	decfree(&D);
	return rc;
}
