/*
** Selection rules beyond per-head top-k, in the reference interpreter
** (DESIGN §3 "Selection rules (binding)", doc/dsl.md "Selection"):
**
**   counts   how many tokens each (layer, head) keeps: the policy's keep
**            expression, the prefix or dynamic schedule (data dependent,
**            over every instance), or ki_nkeep (ratio / budget, pyramid)
**   floor α  scope layer: each head first keeps its own top ⌊α·n_keep⌋, the
**            rest of the layer budget goes to one ranking of what is left
**
** topk, threshold (a filter on top-k's candidates) and mass p (the shortest
** prefix of a group's unprotected candidates, best first, whose normalized
** sums reach p; at every scope, over chunks too) stay in interp.c's
** selectkeep, which takes its counts from here.
**
** The order of tokens everywhere here is DESIGN's: sinks (lower position
** first), then the recent window (newest first), then score (higher first,
** NaN last), ties → lower head, then lower position (interp.c's candcmp: the
** order of a layer's ranking on every backend).
**
** The schedules follow the code of the methods (kv-policies.md, [C]):
**   prefix   PrefixKV (THU-MIG/PrefixKV prefixkv.py): every instance's
**            scores sorted descending, normalized, cumulated (c); bisection
**            of one p in [0, 1] (at most sb halvings, default 200) until the
**            evictions Σ max(n − (first index with c ≥ p) − 1 − protected, 0)
**            are within sa (default 5) of the target Σ n·ratio; then each
**            instance's count scaled to the target and truncated.
**   dynamic  DynamicKV (DreamMr/DynamicKV methods/dynamic_v11.py) at KV-head
**            granularity: candidates c = min(⌊sa·(B − w)⌋, n − w) per head;
**            after every sb-th layer a global top (B − w)·H·layers-so-far over
**            (layer, head, token) gives per-layer shares, rescaled (in f32, as
**            the code) to (B − w)·L; a layer keeps min over rounds, + window.
**            The oracle's selref.dynamickv documents each step.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/interp.h"
#include "compiler/select.h"

typedef struct Tok {
	double s;
	int t, h;
	int cls;                 /* 0 sink, 1 recent, 2 other */
	long age;                /* sinks: t; recent: n - 1 - t (newest first in its own head, as
	                         ** interp.c's candcmp when the heads' lengths differ) */
} Tok;

/* DESIGN's order (see the top). */
static int tokcmp(const void *pa, const void *pb)
{
	const Tok *a = pa, *b = pb;
	if (a->cls != b->cls)
		return a->cls - b->cls;
	if (a->cls < 2 && a->age != b->age)
		return a->age < b->age ? -1 : 1;
	if (a->cls == 2) {
		int na = isnan(a->s), nb = isnan(b->s);
		if (na != nb)
			return na - nb;
		if (!na && a->s != b->s)
			return a->s > b->s ? -1 : 1;
	}
	if (a->h != b->h)
		return a->h - b->h;
	return a->t - b->t;
}

static int clsof(long t, long n, long S, long R)
{
	return t < S ? 0 : t >= n - R ? 1 : 2;
}

static void fill(Tok *k, double s, int t, int h, long n, long S, long R)
{
	k->s = s, k->t = t, k->h = h;
	k->cls = clsof(t, n, S, R);
	k->age = k->cls == 1 ? n - 1 - t : t;
}

static long lenof(const KiCase *c, int l, int h)
{
	return c->len ? c->len[l * c->H + h] : c->n;
}

static const double *row(const KiCase *c, const double *scores, int l, int h)
{
	return &scores[((size_t)l * c->H + h) * c->n];
}

static char *keeprow(const KiCase *c, char *keep, int l, int h)
{
	return &keep[((size_t)l * c->H + h) * c->n];
}

static double val(const KiFn *f, const double *par, KiRef r, double def)
{
	switch (KI_RKIND(r)) {
	case RK_CON: return f->con[KI_RIDX(r)];
	case RK_PAR: return par ? par[KI_RIDX(r)] : f->par[KI_RIDX(r)].def;
	}
	return def;
}

static int oom(const KiFn *f, KiErr *e)
{
	ki_error(e, f->src, 0, 0, "interpreter: out of memory");
	return -1;
}

/* --- counts ------------------------------------------------------------------------ */

/* PrefixKV's evictions of one instance at mass p: n - (first c >= p) - 1 - prot. */
static long prefixcount(const double *cdf, long n, double p, long prot)
{
	long i = 0;
	while (i < n && !(cdf[i] >= p))
		i++;
	long k = n - (i + 1) - prot;
	return k > 0 ? k : 0;
}

static int cmpdesc(const void *pa, const void *pb)
{
	double a = *(const double *)pa, b = *(const double *)pb;
	return a > b ? -1 : a < b ? 1 : 0;
}

/*
** PrefixKV's evictions for `rows` score rows (row k: n[k] scores at S + k * stride, each
** finite and >= 0; the row whose score is bad is returned in *bad): the bisection of the
** header comment with tolerance tol and at most iters halvings towards `target`
** evictions in all, `prot` protected tokens per row; forget[k] = the row's evictions
** after scaling to the target. Returns 0, -1 (a bad score) or -2 (out of memory).
** kvcc calibrate uses it for PrefixKV's offline fractions.
*/
int ki_prefix_forget(const double *S, int rows, const long *n, long stride, double target, long prot,
                     double tol, long iters, long *forget, long *bad)
{
	double *cdf = malloc(((size_t)rows * stride + 1) * sizeof *cdf);
	if (!cdf)
		return -2;
	for (int k = 0; k < rows; k++) {
		double *d = &cdf[(size_t)k * stride], tot = 0;
		const double *s = &S[(size_t)k * stride];
		for (long t = 0; t < n[k]; t++) {
			if (!(s[t] >= 0) || isinf(s[t])) {
				bad[0] = k, bad[1] = t;
				free(cdf);
				return -1;
			}
			d[t] = s[t];
		}
		qsort(d, (size_t)n[k], sizeof *d, cmpdesc);
		for (long t = 0; t < n[k]; t++)
			tot += d[t];
		double acc = 0;
		for (long t = 0; t < n[k]; t++)
			d[t] = acc += tot > 0 ? d[t] / tot : 0;
	}
	double lo = 0, hi = 1, mid = 0;
	for (long it = 0; it < iters && lo < hi; it++) {
		mid = (lo + hi) / 2;
		double count = 0;
		for (int k = 0; k < rows; k++)
			count += (double)prefixcount(&cdf[(size_t)k * stride], n[k], mid, prot);
		if (fabs(count - target) < tol)
			break;
		if (count < target)
			hi = mid;
		else
			lo = mid;
	}
	double sum = 0;
	for (int k = 0; k < rows; k++)
		sum += (double)(forget[k] = prefixcount(&cdf[(size_t)k * stride], n[k], mid, prot));
	for (int k = 0; k < rows; k++)
		if (sum != 0)
			forget[k] = (long)((double)forget[k] * target / sum);
	free(cdf);
	return 0;
}

static int prefixsched(const KiFn *f, const KiCase *c, const double *par, const double *scores, long S,
                       long R, long *nk, KiErr *e)
{
	const KiSelect *sel = &f->sel;
	double tol = val(f, par, sel->sa, 5), iters = val(f, par, sel->sb, 200);
	if (!(tol >= 0 && tol <= 1e9) || !(iters >= 0 && iters <= 1e4) || iters != floor(iters)) {
		ki_error(e, f->src, sel->line, sel->col, "select: the prefix schedule needs a tol in 0..1e9 "
		         "and iters an integer in 0..1e4 (got %g, %g)", tol, iters);
		return -1;
	}
	int ninst = c->L * c->H;
	long *len = malloc(((size_t)ninst + 1) * sizeof *len), bad[2];
	if (!len)
		return oom(f, e);
	double target = 0, ntot = 0;
	for (int k = 0; k < ninst; k++) {
		long n = len[k] = lenof(c, k / c->H, k % c->H);
		ntot += (double)n;
		target += (double)n - (double)(c->budget < n ? c->budget : n);
	}
	if (c->budget < 0)
		target = ntot * c->ratio;       /* the code's sum(n) * ratio */
	int rc = ki_prefix_forget(scores, ninst, len, c->n, target, S + R, tol, (long)iters, nk, bad);
	if (rc == -1) {
		ki_error(e, f->src, sel->line, sel->col, "select: the prefix schedule needs finite "
		         "scores >= 0, (layer %d, head %d) has %g at token %ld", (int)bad[0] / c->H,
		         (int)bad[0] % c->H, scores[bad[0] * c->n + bad[1]], bad[1]);
	} else if (rc == -2)
		oom(f, e);
	for (int k = 0; !rc && k < ninst; k++)
		nk[k] = nk[k] < len[k] ? len[k] - nk[k] : 0;
	free(len);
	return rc ? -1 : 0;
}

typedef struct Flat {
	double s;
	long i;                  /* flat index over (layer, head, token) */
} Flat;

static int flatcmp(const void *pa, const void *pb)
{
	const Flat *a = pa, *b = pb;
	int na = isnan(a->s), nb = isnan(b->s);
	if (na != nb)
		return na - nb;
	if (!na && a->s != b->s)
		return a->s > b->s ? -1 : 1;
	return a->i < b->i ? -1 : a->i > b->i;
}

/* Python's float floor division a // b (b > 0), which the DynamicKV code uses:
** not always floor(a / b) when a / b rounds up to an integer. */
static double pyfloordiv(double a, double b)
{
	double mod = fmod(a, b), div = (a - mod) / b;
	if (mod && ((b < 0) != (mod < 0)))
		div -= 1.0;
	if (!div)
		return copysign(0.0, a / b);
	double fd = floor(div);
	return div - fd > 0.5 ? fd + 1.0 : fd;
}

static int dynsched(const KiFn *f, const KiCase *c, const double *par, const double *scores, long R,
                    long *nk, KiErr *e)
{
	const KiSelect *sel = &f->sel;
	int L = c->L, H = c->H;
	long n = lenof(c, 0, 0);
	for (int k = 1; k < L * H; k++)
		if (lenof(c, k / H, k % H) != n) {
			ki_error(e, f->src, sel->line, sel->col, "select: the dynamic schedule needs the same "
			         "length in every (layer, head)");
			return -1;
		}
	double rmax = val(f, par, sel->sa, 10), every = val(f, par, sel->sb, 4);
	if (!(rmax >= 0 && rmax <= 1e6) || !(every >= 1 && every <= 1e6) || every != floor(every)) {
		ki_error(e, f->src, sel->line, sel->col, "select: the dynamic schedule needs a ratio_max "
		         ">= 0 and every >= 1 (got %g, %g)", rmax, every);
		return -1;
	}
	long B = c->budget >= 0 ? (c->budget < n ? c->budget : n) : (long)floor((double)n * (1.0 - c->ratio));
	long w = R < n ? R : n, m = n - w, base = B - w;
	if (base <= 0 || m <= 0) {          /* nothing to share: the window (or the budget) alone */
		for (int k = 0; k < L * H; k++)
			nk[k] = B;
		return 0;
	}
	long cand = (long)floor(rmax * (double)base);
	cand = cand < m ? cand : m;
	long *cur = malloc((size_t)L * sizeof *cur), *counts = calloc((size_t)L, sizeof *counts);
	long *fix = malloc((size_t)L * sizeof *fix);
	Flat *fl = malloc(((size_t)L * H * m + 1) * sizeof *fl);
	if (!cur || !counts || !fix || !fl) {
		free(cur), free(counts), free(fix), free(fl);
		return oom(f, e);
	}
	for (int l = 0; l < L; l++)
		cur[l] = cand;
	long ev = (long)every;
	for (int l = 0; l < L; l++) {
		if (l % ev != ev - 1)
			continue;
		long seen = l + 1, nf = 0;
		for (int j = 0; j < seen; j++)
			for (int h = 0; h < H; h++)
				for (long t = 0; t < m; t++, nf++)
					fl[nf].s = row(c, scores, j, h)[t], fl[nf].i = nf;
		long tk = base * H * seen < nf ? base * H * seen : nf;
		qsort(fl, (size_t)nf, sizeof *fl, flatcmp);
		memset(counts, 0, (size_t)L * sizeof *counts);
		for (long k = 0; k < tk; k++)
			counts[fl[k].i / (H * m)]++;
		long tot = 0;
		for (int j = 0; j < seen; j++)
			tot += counts[j] /= seen;
		if (l == L - 1 && tot != H * m) {
			counts[seen - 1] += (base * H * seen) / L - tot;
			tot = (base * H * seen) / L;
		}
		long sfix = 0, need = base * L;
		for (int j = 0; j < seen; j++) {
			float norm = (float)counts[j] / (float)tot;
			sfix += fix[j] = (long)((float)cand * norm);
		}
		double ss = (double)sfix / (double)need;
		sfix = 0;
		for (int j = 0; j < seen; j++)
			sfix += fix[j] = ss > 0 ? (long)pyfloordiv((double)fix[j], ss) : 0;
		if (sfix != need)
			fix[seen - 1] += need - sfix;
		for (int j = 0; j < seen; j++) {
			long b = fix[j] < m ? fix[j] : m;
			cur[j] = cur[j] < b ? cur[j] : b;
		}
	}
	for (int k = 0; k < L * H; k++)
		nk[k] = (cur[k / H] > 0 ? cur[k / H] : 0) + w;
	free(cur), free(counts), free(fix), free(fl);
	return 0;
}

/* keep_first, keep_recent and chunk with this run's params: integers in 0..1e9 (chunk
** 1..1e9), or an error at the select rule. chunk may be NULL. */
int ki_selfields(const KiFn *f, const double *par, long *S, long *R, long *chunk, KiErr *e)
{
	const KiSelect *sel = &f->sel;
	double vs = val(f, par, sel->keep_first, 0), vr = val(f, par, sel->keep_recent, 0);
	double vc = val(f, par, sel->chunk, 1);
	if (!(vs >= 0 && vs <= 1e9) || !(vr >= 0 && vr <= 1e9) || !(vc >= 1 && vc <= 1e9) || vs != floor(vs) ||
	    vr != floor(vr) || vc != floor(vc)) {
		ki_error(e, f->src, sel->line, sel->col, "select: keep_first and keep_recent must be integers in "
		         "0..1e9 and chunk in 1..1e9 (got %g, %g, %g)", vs, vr, vc);
		return -1;
	}
	*S = (long)vs, *R = (long)vr;
	if (chunk)
		*chunk = (long)vc;
	return 0;
}

int ki_counts(const KiFn *f, const KiCase *c, const double *par, const double *scores,
              const double *keepv, long *nk, KiErr *e)
{
	const KiSelect *sel = &f->sel;
	long S, R;
	if (ki_selfields(f, par, &S, &R, NULL, e) != 0)
		return -1;
	if (sel->sched == SCH_prefix)
		return prefixsched(f, c, par, scores, S, R, nk, e);
	if (sel->sched == SCH_dynamic)
		return dynsched(f, c, par, scores, R, nk, e);
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			long n = lenof(c, l, h), *k = &nk[l * c->H + h];
			if (!keepv) {
				*k = ki_nkeep(f, par, l, c->L, n, c->ratio, c->budget);
				continue;
			}
			double v = keepv[l * c->H + h];
			if (!isfinite(v)) {
				ki_error(e, f->src, sel->line, sel->col, "select: the keep count of (layer %d, head %d) "
				         "is %s", l, h, isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
				return -1;
			}
			v = floor(v);
			*k = v < 0 ? 0 : v > (double)n ? n : (long)v;
		}
	return 0;
}

/* --- floor ------------------------------------------------------------------------- */

int ki_selfloor(const KiFn *f, const KiCase *c, const double *par, const double *scores, const long *nk,
                char *keep, KiErr *e)
{
	const KiSelect *sel = &f->sel;
	long S, R;
	if (ki_selfields(f, par, &S, &R, NULL, e) != 0)
		return -1;
	double alpha = val(f, par, sel->floor, 0);
	if (!(alpha >= 0 && alpha <= 1)) {
		ki_error(e, f->src, sel->line, sel->col, "select: floor must be in [0, 1], got %g", alpha);
		return -1;
	}
	Tok *tk = malloc(((size_t)c->H * c->n + 1) * sizeof *tk);
	if (!tk)
		return oom(f, e);
	for (int l = 0; l < c->L; l++) {
		long rest = 0, m = 0;
		for (int h = 0; h < c->H; h++) {
			long n = lenof(c, l, h), k = nk[l * c->H + h];
			long fl = (long)floor(alpha * (double)k);
			fl = fl < k ? fl : k;
			fl = fl < n ? fl : n;
			const double *s = row(c, scores, l, h);
			char *kp = keeprow(c, keep, l, h);
			for (long t = 0; t < n; t++)
				fill(&tk[t], s[t], (int)t, h, n, S, R);
			qsort(tk, (size_t)n, sizeof *tk, tokcmp);
			for (long j = 0; j < fl; j++)
				kp[tk[j].t] = 1;
			rest += k - fl;
		}
		for (int h = 0; h < c->H; h++) {
			long n = lenof(c, l, h);
			const double *s = row(c, scores, l, h);
			char *kp = keeprow(c, keep, l, h);
			for (long t = 0; t < n; t++)
				if (!kp[t])
					fill(&tk[m++], s[t], (int)t, h, n, S, R);
		}
		qsort(tk, (size_t)m, sizeof *tk, tokcmp);
		for (long j = 0; j < m && j < rest; j++)
			keeprow(c, keep, l, tk[j].h)[tk[j].t] = 1;
	}
	free(tk);
	return 0;
}
