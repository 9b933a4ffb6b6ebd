/*
** Decode differential tests: libkvcc's generated decode_attn kernel (split-KV,
** online softmax, observe hook) against the reference interpreter's ki_observe
** (double precision) and ki_run, across dtypes, head dims, groups and targets.
**
** Per case (L=2 layers, H=2 KV heads, lengths that differ per head, one of them
** long enough to be split into several chunks):
**   S decode steps: kvcc_append + kvcc_decode_layer per layer vs ki_observe;
**     outputs  |x86 - ref| <= 1e-4 · max(1, max |ref|)
**     state    |x86 - ref| <= 1e-4 · max(1, |ref|)
**   then kvcc_compress vs ki_run on the same state: identical kept positions,
**   compacted state (as above) and bit-identical compacted K/V rows;
**   then 2 more decode steps on the compacted cache (state moved with K/V); a policy with a
**   scan then compresses again (the scan continued over the appended tokens) vs ki_run.
** Inputs whose selection boundary has a relative margin < 1e-5 (50x the worst
** state error seen) skip only the
** kept-set comparison (counted separately), never the output/state checks.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include "kvcc.h"
#include "kvcc_compiler.h"
#include "compiler/ir.h"
#include "compiler/interp.h"
#include "compiler/mplan.h"
#include "codegen/x86/x86.h"
#include "dsl/dsl.h"
#define CASEGEN_SEED 0x9e3779b97f4a7c15ull
#include "tests/common/casegen.h"
#include "tests/common/manifest.h"

static int npass, nfail, nskip, ntie, nsround;   /* nsround: summary rounds compared */
static const char *only;     /* argv[1]: run only the cases whose name contains it (tests/tune) */
static double worst_out, worst_state;
typedef struct Case {
	const char *policy, *file;   /* name, .lua */
	int dtype, d, G, target, threads;
} Case;

enum { L = 2, H = 2 };

typedef struct Ref {
	int cap, d, G, dtype, nst;
	float *K, *V;            /* [L][H][cap][d] rounded values */
	int32_t len[L * H], *pos;
	double *state;           /* [nst][L][H][cap] */
	double *count;           /* [L][H][cap] member counts (a merge that keeps them: the compiled
	                            policy's state row nst), or NULL */
	int nw;                  /* the policy's weights (casegen.h cg_weights) */
	const KiWData *w;
	int32_t sumat[L * H];    /* merge summary: the interpreter's summary block (KiCase.sumat), -1: none */
} Ref;

static int fails(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fails(const char *name, const char *fmt, ...)
{
	va_list ap;
	printf("FAIL %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return -1;
}

/* one decode step on both sides: append a token to every head, attend, observe */
static int step(const char *name, const KiFn *f, kvcc_plan *pl, kvcc_cache *c, Ref *R, char *Ks, char *Vs,
                int64_t st, int stepno)
{
	int d = R->d, G = R->G, dt = R->dtype, cap = R->cap;
	size_t esz = dt == KVCC_F32 ? 4 : 2;
	(void)Ks, (void)Vs, (void)st;
	char *kb = malloc((size_t)H * d * esz), *vb = malloc((size_t)H * d * esz);
	float *q = malloc((size_t)L * H * G * d * sizeof(float)), *out = malloc((size_t)L * H * G * d * sizeof(float));
	float *ref = malloc((size_t)L * H * G * d * sizeof(float));
	int rc = 0;
	for (int l = 0; l < L && !rc; l++) {
		for (int h = 0; h < H; h++) {
			int k = l * H + h, n = R->len[k];
			int near = f->merge.kind == MG_runs && n > 0 && urand() < 0.6;   /* runs form (issue 12) */
			for (int ch = 0; ch < d; ch++) {
				float kv = ki_round((float)(urand() * 2 - 1), dt), vv = ki_round((float)(urand() * 2 - 1), dt);
				if (near)
					kv = ki_round(0.9f * R->K[((size_t)k * cap + n - 1) * d + ch] + 0.3f * kv, dt);
				R->K[((size_t)k * cap + n) * d + ch] = kv, R->V[((size_t)k * cap + n) * d + ch] = vv;
				encode(kv, dt, kb + ((size_t)h * d + ch) * esz);
				encode(vv, dt, vb + ((size_t)h * d + ch) * esz);
			}
			R->pos[(size_t)k * cap + n] = 100000 + stepno;
			for (int s = 0; s < R->nst; s++)
				R->state[((size_t)s * L * H + k) * cap + n] = f->st[s].init;
			if (R->count)
				R->count[(size_t)k * cap + n] = 1;
			R->len[k] = n + 1;
		}
		if (kvcc_append(pl, c, l, kb, vb, 100000 + stepno) != 0)
			rc = fails(name, "append: %s", kvcc_last_error());
	}
	for (size_t i = 0; i < (size_t)L * H * G * d; i++)
		q[i] = (float)(urand() * 6 - 3);
	for (int l = 0; l < L && !rc; l++)
		if (kvcc_decode_layer(pl, c, l, q + (size_t)l * H * G * d, out + (size_t)l * H * G * d) != 0)
			rc = fails(name, "decode: %s", kvcc_last_error());
	KiCase kc = { .L = L, .H = H, .G = G, .d = d, .n = cap, .len = R->len, .K = R->K, .V = R->V, .pos = R->pos,
	              .dtype = dt, .step = stepno, .nw = R->nw, .w = R->w, .count = R->count };
	KiErr e = { 0 };
	double *sref = R->nst ? R->state : malloc(8);
	if (!rc && ki_observe(f, &kc, q, sref, ref, &e) != 0)
		rc = fails(name, "ki_observe: %s", e.msg);
	if (!R->nst)
		free(sref);
	double mx = 1;
	for (size_t i = 0; !rc && i < (size_t)L * H * G * d; i++)
		mx = fmax(mx, fabs(ref[i]));
	for (size_t i = 0; !rc && i < (size_t)L * H * G * d; i++) {
		double err = fabs(out[i] - ref[i]) / mx;
		worst_out = fmax(worst_out, err);
		if (!(err <= 1e-4))
			rc = fails(name, "step %d: output [%zu] x86 %.9g ref %.9g", stepno, i, out[i], ref[i]);
	}
	for (int s = 0; !rc && s < R->nst; s++)
		for (int k = 0; !rc && k < L * H; k++)
			for (int t = 0; !rc && t < R->len[k]; t++) {
				double a = c->state[((size_t)s * L * H + k) * cap + t], b = R->state[((size_t)s * L * H + k) * cap + t];
				double err = isnan(a) && isnan(b) ? 0 : fabs(a - b) / fmax(1, fabs(b));   /* NaN: not scanned */
				worst_state = fmax(worst_state, err);
				if (!(err <= 1e-4))
					rc = fails(name, "step %d: state %d (l%d h%d t%d) x86 %.9g ref %.9g", stepno, s, k / H, k % H, t, a, b);
			}
	free(kb), free(vb), free(q), free(out), free(ref);
	return rc;
}

static double margin(const KiFn *f, const double *par, const Ref *R, const KiResult *r)
{
	long Rr = KI_RKIND(f->sel.keep_recent) == RK_PAR ? (long)par[KI_RIDX(f->sel.keep_recent)]
	          : KI_RKIND(f->sel.keep_recent) == RK_CON ? (long)f->con[KI_RIDX(f->sel.keep_recent)] : 0;
	double worst = INFINITY, *v = malloc((size_t)R->cap * sizeof *v + 8);
	for (int k = 0; k < L * H; k++) {
		int n = R->len[k], m = 0, np = 0;
		for (int t = 0; t < n; t++) {
			if (t >= n - Rr)
				np++;
			else
				v[m++] = r->scores[(size_t)k * R->cap + t];
		}
		qsort(v, (size_t)m, sizeof *v, cmpd);
		int kk = r->len[k] - (np < r->len[k] ? np : r->len[k]);
		if (kk > 0 && kk < m) {
			double a = v[kk - 1], b = v[kk], s = fmax(fabs(a), fabs(b));
			double rel = s > 0 ? (a - b) / s : 0;
			worst = rel < worst ? rel : worst;
		}
	}
	free(v);
	return worst;
}

/* the compiled compression (K / V rows, pos, len, state) vs the interpreter's result r */
static int cmpres(const char *name, const KiFn *f, const Ref *R, const KiResult *r, const char *Ks, const char *Vs,
                  int64_t st, const int32_t *pos, const int32_t *len, const float *state, int cn)
{
	int cap = R->cap, d = R->d, dt = R->dtype, nst = f->nst;
	size_t esz = dt == KVCC_F32 ? 4 : 2;
	for (int k = 0; k < L * H; k++) {
		if (len[k] != r->len[k]) {
			printf("FAIL %s: head %d keeps %d tokens, reference %d\n", name, k, len[k], r->len[k]);
			return -1;
		}
		for (int m = 0; m < len[k]; m++) {
			int kept = r->kept[(size_t)k * cap + m], srow = r->sumat[k] >= 0 && m >= r->sumat[k];
			int want = !srow ? R->pos[(size_t)k * cap + kept] : r->pos[(size_t)k * cap + m];   /* summary: its members' */
			if (pos[(size_t)k * cap + m] != want || r->pos[(size_t)k * cap + m] != want) {
				printf("FAIL %s: head %d kept[%d] at position %d, reference %d\n", name, k, m,
				       pos[(size_t)k * cap + m], want);
				return -1;
			}
			for (int s = 0; s < nst + cn; s++) {     /* the member counts: r->count */
				double a = state[((size_t)s * L * H + k) * cap + m];
				double b = s < nst ? r->state[((size_t)s * L * H + k) * cap + m] : s == nst ? r->count[(size_t)k * cap + m]
				           : r->sumat[k] >= 0 && m >= r->sumat[k];      /* the summary flag row (ki_msumrow) */
				if (!(fabs(a - b) <= 1e-4 * fmax(1, fabs(b)))) {
					printf("FAIL %s: compacted state of head %d row %d: %.9g vs %.9g\n", name, k, m, a, b);
					return -1;
				}
			}
			for (int ch = 0; ch < d && f->merge.kind != MG_drop; ch++) {   /* merged rows: the tolerance */
				size_t ri = ((size_t)k * cap + m) * d + ch, xi = ((size_t)k * cap + m) * st + ch;
				double xk = decode(Ks + xi * esz, dt), xv = decode(Vs + xi * esz, dt), rk = r->K[ri], rv = r->V[ri];
				double tol = merge_tol(dt);
				if (!(fabs(xk - rk) <= tol * fmax(1, fabs(rk))) || !(fabs(xv - rv) <= tol * fmax(1, fabs(rv)))) {
					printf("FAIL %s: merged row %d of head %d, chan %d: x86 K %.9g V %.9g, reference K %.9g V %.9g\n",
					       name, m, k, ch, xk, xv, rk, rv);
					return -1;
				}
			}
			for (int ch = 0; ch < d && f->merge.kind == MG_drop; ch++) {
				char bk[4], bv[4];
				encode(r->K[((size_t)k * cap + m) * d + ch], dt, bk);
				encode(r->V[((size_t)k * cap + m) * d + ch], dt, bv);
				if (memcmp(bk, Ks + (((size_t)k * cap + m) * st + ch) * esz, esz) ||
				    memcmp(bv, Vs + (((size_t)k * cap + m) * st + ch) * esz, esz)) {
					printf("FAIL %s: compacted K/V row %d of head %d differs\n", name, m, k);
					return -1;
				}
			}
		}
	}
	return 0;
}

/* D2O's carried tau (issue 12, ki_mtau): the smallest gap between an evicted row's best kept
** cosine (double, pre-merge keys) and the interpreter's tau of its head, and between its best and
** second best */
static double ema_margin(const KiCase *c, const KiResult *r)
{
	double worst = INFINITY;
	char *kept = malloc((size_t)c->n + 1);
	for (int k = 0; k < c->L * c->H; k++) {
		int n = c->len[k];
		memset(kept, 0, (size_t)n + 1);
		for (int j = 0; j < r->len[k]; j++)
			kept[r->kept[(size_t)k * c->n + j]] = 1;
		for (int e = 0; e < n; e++) {
			if (kept[e])
				continue;
			const float *ke = &c->K[((size_t)k * c->n + e) * c->d];
			double b1 = -INFINITY, b2 = -INFINITY;
			for (int t = 0; t < n; t++) {
				if (!kept[t])
					continue;
				const float *kt = &c->K[((size_t)k * c->n + t) * c->d];
				double dot = 0, ne = 0, nt = 0;
				for (int ch = 0; ch < c->d; ch++)
					dot += (double)ke[ch] * kt[ch], ne += (double)ke[ch] * ke[ch], nt += (double)kt[ch] * kt[ch];
				double sim = dot / fmax(sqrt(ne) * sqrt(nt), 1e-8);
				if (sim > b1)
					b2 = b1, b1 = sim;
				else if (sim > b2)
					b2 = sim;
			}
			worst = fmin(worst, b1 - b2);
			if (!isnan(r->tau[k]))
				worst = fmin(worst, fabs(b1 - r->tau[k]));
		}
	}
	free(kept);
	return worst;
}

/* the tau row (ki_mtau) of every kept row vs the interpreter's tau of the head */
static int taucheck(const char *name, const float *trow, const int32_t *len, const KiResult *r, int cap)
{
	for (int k = 0; k < L * H; k++)
		for (int m = 0; m < len[k]; m++) {
			double a = trow[(size_t)k * cap + m], b = r->tau[k];
			if (!(isnan(a) && isnan(b)) && !(fabs(a - b) <= 1e-5 * fmax(1, fabs(b))))
				return fails(name, "tau row of head %d row %d: x86 %.9g, reference %.9g", k, m, a, b);
		}
	return 0;
}

static void run_case(const Case *cf, const char *host)
{
	char name[200];
	snprintf(name, sizeof name, "decode %s %s d=%d G=%d %s threads=%d", cf->policy, ki_dtypename(cf->dtype), cf->d,
	         cf->G, kx_targetname(cf->target), cf->threads);
	kvcc_spec spec = { cf->dtype, cf->d, cf->G, cf->target };
	if (only && !strstr(name, only))
		return;
	if (!kx_vecwidth(&spec, host)) {
		printf("SKIP %s: this CPU lacks the features of target %s\n", name, kx_targetname(cf->target));
		nskip++;
		return;
	}
	const char *path = cf->file;
	KiErr e = { 0 };
	KiFn *f = kd_loadfile(path, NULL, &e);
	if (!f || ki_runpasses(f, KI_DEFAULT_PASSES, 0, &e, NULL, NULL) != 0) {
		printf("FAIL %s: load: %s\n", name, e.msg);
		nfail++;
		ki_free(f);
		return;
	}
	kvcc_policy *p = NULL;
	if (kvcc_compile_file(path, &spec, &p) != 0) {
		printf("FAIL %s: compile: %s\n", name, kvcc_last_error());
		nfail++;
		ki_free(f);
		return;
	}
	int d = cf->d, G = cf->G, dt = cf->dtype, S = 4, S2 = 2;
	int n0[L * H] = { 37, 0, 1500 + (int)(urand() * 300), 211 };
	if (f->merge.kind != MG_drop)      /* the interpreter's pair-by-pair merge: a shorter long head (still 2 chunks) */
		n0[2] = 300 + n0[2] % 40;
	if (f->merge.kind == MG_summary)   /* n_keep at ratio 0.5 must hold the summary rows */
		n0[1] = 16;
	int cap = 0;
	for (int k = 0; k < L * H; k++)
		cap = n0[k] + S + S2 > cap ? n0[k] + S + S2 : cap;
	int pad = (d / 8) % 2 ? 8 : 0;
	int64_t st = d + pad;
	size_t esz = dt == KVCC_F32 ? 4 : 2, ntok = (size_t)L * H * cap;
	/* the compiled policy's state rows: the declared ones, then the member counts (ki_mcounts) */
	int nst = f->nst, cn = ki_mcounts(f), tn = ki_mtau(f), nstx = kvcc_state_count(p);
	if (nstx != nst + cn + tn) {
		printf("FAIL %s: kvcc_state_count %d, want %d + %d + %d\n", name, nstx, nst, cn, tn);
		nfail++;
		kvcc_close(p);
		ki_free(f);
		return;
	}
	Ref R = { .cap = cap, .d = d, .G = G, .dtype = dt, .nst = nst };
	R.K = calloc(ntok * d, sizeof(float)), R.V = calloc(ntok * d, sizeof(float));
	R.pos = calloc(ntok, sizeof(int32_t));
	R.state = calloc(ntok * (nst ? nst : 1), sizeof(double));
	char *Ks = calloc(ntok * st, esz), *Vs = calloc(ntok * st, esz);
	int32_t *pos = calloc(ntok, sizeof(int32_t)), len[L * H];
	float *state = nstx ? calloc(ntok * nstx, sizeof(float)) : NULL;
	R.count = cn ? calloc(ntok, sizeof(double)) : NULL;
	double par[32];
	for (int i = 0; i < f->npar; i++)
		par[i] = f->par[i].def;
	int rec = ki_findparam(f, "recent");
	if (rec >= 0)
		par[rec] = 8;
	kvcc_plan *pl = NULL;
	KiResult r = { 0 };
	KiWData wd[KI_MAXW];
	float *wf = NULL;
	double *wdv = NULL;
	for (int k = 0; k < L * H; k++) {
		len[k] = R.len[k] = n0[k];
		for (int t = 0; t < n0[k]; t++) {
			R.pos[(size_t)k * cap + t] = pos[(size_t)k * cap + t] = t;
			/* merge runs (issue 12): about half the neighbouring keys close, so that runs form */
			int near = f->merge.kind == MG_runs && t > 0 && urand() < 0.6;
			for (int ch = 0; ch < d; ch++) {
				float kv = ki_round((float)(urand() * 2 - 1), dt), vv = ki_round((float)(urand() * 2 - 1), dt);
				if (near)
					kv = ki_round(0.9f * R.K[((size_t)k * cap + t - 1) * d + ch] + 0.3f * kv, dt);
				R.K[((size_t)k * cap + t) * d + ch] = kv, R.V[((size_t)k * cap + t) * d + ch] = vv;
				encode(kv, dt, Ks + (((size_t)k * cap + t) * st + ch) * esz);
				encode(vv, dt, Vs + (((size_t)k * cap + t) * st + ch) * esz);
			}
		}
	}
	for (int s = 0; s < nst; s++)
		for (size_t i = 0; i < ntok; i++)
			state[(size_t)s * ntok + i] = (float)f->st[s].init, R.state[(size_t)s * ntok + i] = f->st[s].init;
	for (size_t i = 0; cn && i < ntok; i++)   /* counts 1..3, as after earlier merges: the bias matters from step 0 */
		R.count[i] = state[(size_t)nst * ntok + i] = (float)(1 + (int)(urand() * 3));
	float *trow = tn ? state + (size_t)(nst + cn) * ntok : NULL;   /* D2O's tau: unset */
	for (size_t i = 0; tn && i < ntok; i++)
		trow[i] = NAN;
	kvcc_layout lay = { dt, L, H, d, cap, (int64_t)H * cap * st, (int64_t)cap * st, st };
	if (kvcc_plan_create(p, &lay, 0, cf->threads, &pl) != 0 || kvcc_plan_set_params(pl, par) != 0) {
		printf("FAIL %s: plan: %s\n", name, kvcc_last_error());
		goto out;
	}
	if (f->nw && cg_weights(f, L, H, G, d, wd, &wf, &wdv) != 0) {
		printf("FAIL %s: weights: out of memory or an out axis\n", name);
		goto out;
	}
	for (int i = 0, wo = 0; i < f->nw; i++) {       /* the plan's weights: the same values */
		int64_t shp[KI_MAXWDIM];
		size_t cnt = 1;
		for (int j = 0; j < wd[i].ndim; j++)
			shp[j] = wd[i].shape[j], cnt *= (size_t)shp[j];
		if (kvcc_plan_set_weight(pl, wd[i].name, wf + wo, wd[i].ndim, shp) != 0) {
			printf("FAIL %s: kvcc_plan_set_weight: %s\n", name, kvcc_last_error());
			goto out;
		}
		wo += (int)cnt;
	}
	R.nw = f->nw, R.w = wd;
	kvcc_cache c = { Ks, Vs, pos, len, state };
	for (int s = 0; s < S; s++)
		if (step(name, f, pl, &c, &R, Ks, Vs, st, s) != 0)
			goto out;
	/* compress on the accumulated state */
	double ratio = 0.5;
	KiCase kc = { .L = L, .H = H, .G = G, .d = d, .n = cap, .len = R.len, .K = R.K, .V = R.V, .pos = R.pos,
	              .state = nst ? R.state : NULL, .dtype = dt, .params = par, .ratio = ratio, .budget = -1, .step = S - 1,
	              .nw = f->nw, .w = wd, .count = R.count };
	if (ki_run(f, &kc, &r, &e) != 0) {
		printf("FAIL %s: ki_run: %s\n", name, e.msg);
		goto out;
	}
	int C = ki_summaryrows(f);
	for (int k = 0; k < L * H; k++)
		R.sumat[k] = -1;
	kc.sumat = R.sumat;
	int tied = (C ? summary_margin(f, par, &kc, &r) : margin(f, par, &R, &r)) < 1e-5 ||
	           merge_margin(f, par, &kc, &r) < 1e-5 ||   /* merge: target ties too (100x the f32 similarity error) */
	           (tn && ema_margin(&kc, &r) < 1e-5);
	kvcc_args args = { ratio, -1, par, 0, NULL };
	if (kvcc_compress(pl, &c, NULL, &args) != 0) {
		printf("FAIL %s: compress: %s\n", name, kvcc_last_error());
		goto out;
	}
	if (tied) {
		ntie++;
	} else {
		if (cmpres(name, f, &R, &r, Ks, Vs, st, pos, len, state, cn) != 0)
			goto out;
		if (tn && taucheck(name, trow, len, &r, cap) != 0)
			goto out;
		/* continue decoding on the compacted cache */
		memcpy(R.K, r.K, ntok * d * sizeof(float));
		memcpy(R.V, r.V, ntok * d * sizeof(float));
		/* merged rows (checked within merge_tol above) continue from the kernels' values on both
		** sides: a one-ulp f16 / bf16 rounding difference of a merged row is not a decode error */
		for (int k = 0; f->merge.kind != MG_drop && k < L * H; k++)
			for (int m = 0; m < len[k]; m++)
				for (int ch = 0; ch < d; ch++) {
					size_t ri = ((size_t)k * cap + m) * d + ch, xi = ((size_t)k * cap + m) * st + ch;
					R.K[ri] = (float)decode(Ks + xi * esz, dt), R.V[ri] = (float)decode(Vs + xi * esz, dt);
				}
		memcpy(R.pos, r.pos, ntok * sizeof(int32_t));
		memcpy(R.len, r.len, sizeof R.len);
		if (nst)
			memcpy(R.state, r.state, ntok * nst * sizeof(double));
		if (cn)
			memcpy(R.count, r.count, ntok * sizeof(double));
		memcpy(R.sumat, r.sumat, sizeof R.sumat);
		for (int s = 0; s < S2; s++)
			if (step(name, f, pl, &c, &R, Ks, Vs, st, S + s) != 0)
				goto out;
		/* D2O's EMA threshold: compress again, tau carried (the interpreter's KiCase.tau, the
		** kernels' tau row) */
		if (tn) {
			KiResult r2 = { 0 };
			KiCase k2 = kc;
			k2.step = S + S2 - 1, k2.tau = r.tau;
			int bad = ki_run(f, &k2, &r2, &e) != 0;
			if (bad)
				printf("FAIL %s: ki_run (second compression): %s\n", name, e.msg);
			int tied2 = !bad && (margin(f, par, &R, &r2) < 1e-5 || ema_margin(&k2, &r2) < 1e-5);
			if (!bad && kvcc_compress(pl, &c, NULL, &args) != 0) {
				printf("FAIL %s: second compress: %s\n", name, kvcc_last_error());
				bad = 1;
			}
			for (int k = 0; !bad && !tied2 && k < L * H; k++) {
				bad = len[k] != r2.len[k];
				for (int m = 0; !bad && m < len[k]; m++) {
					bad = pos[(size_t)k * cap + m] != r2.pos[(size_t)k * cap + m];
					for (int ch = 0; !bad && ch < d; ch++) {
						size_t ri = ((size_t)k * cap + m) * d + ch, xi = ((size_t)k * cap + m) * st + ch;
						double xk = decode(Ks + xi * esz, dt), xv = decode(Vs + xi * esz, dt);
						double tol = merge_tol(dt);
						bad = !(fabs(xk - r2.K[ri]) <= tol * fmax(1, fabs(r2.K[ri]))) ||
						      !(fabs(xv - r2.V[ri]) <= tol * fmax(1, fabs(r2.V[ri])));
					}
				}
				if (bad)
					printf("FAIL %s: second compression (tau carried): head %d differs (len %d vs %d)\n", name, k,
					       len[k], r2.len[k]);
			}
			if (!bad && !tied2 && taucheck(name, trow, len, &r2, cap) != 0)
				bad = 1;
			ntie += tied2;
			ki_result_free(&r2);
			if (bad)
				goto out;
		}
		/* merge summary: SR more rounds of a compression at budget 24 (new blocks where none was
		** built yet: Lloyd; the others: the online running means) and S2 decode steps, each
		** compression vs the interpreter's (its case carries the block: KiCase.sumat) */
		enum { SR = 24 };
		for (int rd = 0; C && rd < SR; rd++) {
			KiResult r2 = { 0 };
			KiCase k2 = kc;
			k2.step = S + S2 * (rd + 1) - 1, k2.budget = 24;
			int bad = ki_run(f, &k2, &r2, &e) != 0;
			if (bad)
				printf("FAIL %s: ki_run (round %d): %s\n", name, rd, e.msg);
			int tied2 = !bad && summary_margin(f, par, &k2, &r2) < 1e-5;
			kvcc_args a2 = { 0, 24, par, 0, NULL };
			if (!bad && kvcc_compress(pl, &c, NULL, &a2) != 0) {
				printf("FAIL %s: compress (round %d): %s\n", name, rd, kvcc_last_error());
				bad = 1;
			}
			if (!bad && !tied2) {
				char nm[240];
				snprintf(nm, sizeof nm, "%s round %d", name, rd);
				bad = cmpres(nm, f, &R, &r2, Ks, Vs, st, pos, len, state, cn) != 0;
			}
			if (!bad && !tied2) {
				memcpy(R.K, r2.K, ntok * d * sizeof(float));
				memcpy(R.V, r2.V, ntok * d * sizeof(float));
				memcpy(R.pos, r2.pos, ntok * sizeof(int32_t));
				memcpy(R.len, r2.len, sizeof R.len);
				memcpy(R.sumat, r2.sumat, sizeof R.sumat);
				if (nst)
					memcpy(R.state, r2.state, ntok * nst * sizeof(double));
				memcpy(R.count, r2.count, ntok * sizeof(double));
				nsround++;
			}
			ntie += tied2;
			ki_result_free(&r2);
			if (bad)
				goto out;
			if (tied2)
				break;
			for (int s = 0; s < S2; s++)
				if (step(name, f, pl, &c, &R, Ks, Vs, st, S + S2 * (rd + 1) + s) != 0)
					goto out;
		}
		/* a policy with a scan: compress again, the scan continued from the last scanned token's
		** state over the tokens appended since (their state NaN) vs the interpreter's */
		for (int s = 0; s < nst; s++) {
			if (!ki_isscanstate(f, s))
				continue;
			KiResult r2 = { 0 };
			KiCase k2 = kc;
			k2.step = S + S2 - 1;
			int bad = ki_run(f, &k2, &r2, &e) != 0;
			if (bad)
				printf("FAIL %s: ki_run (second compression): %s\n", name, e.msg);
			int tied2 = !bad && margin(f, par, &R, &r2) < 1e-5;
			if (!bad && kvcc_compress(pl, &c, NULL, &args) != 0) {
				printf("FAIL %s: second compress: %s\n", name, kvcc_last_error());
				bad = 1;
			}
			for (int k = 0; !bad && !tied2 && k < L * H; k++) {
				bad = len[k] != r2.len[k];
				for (int m = 0; !bad && m < len[k]; m++) {
					bad = pos[(size_t)k * cap + m] != r2.pos[(size_t)k * cap + m];
					double a = state[((size_t)s * L * H + k) * cap + m], b = r2.state[((size_t)s * L * H + k) * cap + m];
					bad = bad || !(fabs(a - b) <= 1e-4 * fmax(1, fabs(b)));
				}
				if (bad)
					printf("FAIL %s: second compression (the scan continued): head %d differs (len %d vs %d)\n",
					       name, k, len[k], r2.len[k]);
			}
			ntie += tied2;
			ki_result_free(&r2);
			if (bad)
				goto out;
			break;
		}
	}
	npass++;
	goto done;
out:
	nfail++;
done:
	ki_result_free(&r);
	kvcc_plan_destroy(pl);
	free(R.K), free(R.V), free(R.pos), free(R.state), free(R.count), free(Ks), free(Vs), free(pos), free(state);
	free(wf), free(wdv);
	kvcc_close(p);
	ki_free(f);
}

static void api(void)
{
	kvcc_spec s = { KVCC_F32, 64, 2, KVCC_TARGET_NATIVE };
	kvcc_policy *p = NULL, *q = NULL;
	int every = 0, ok = kvcc_compile_file("policies/h2o.lua", &s, &p) == 0;
	ok = ok && kvcc_compile_file("policies/snapkv.lua", &s, &q) == 0;
	ok = ok && kvcc_policy_when(p, &every) == 1 && every == 1 && kvcc_state_count(p) == 1;
	ok = ok && kvcc_policy_when(q, &every) == 0 && kvcc_state_count(q) == 0;
	/* observation counts as the policies declare them: h2o none, snapkv its window param
	** (default 64, or the value passed), observed_attention every position */
	kvcc_policy *oa = NULL;
	int obs = 7, wi = kvcc_param_index(q, "window");
	double par[8] = { 0 };
	ok = ok && kvcc_compile_file("policies/observed_attention.lua", &s, &oa) == 0;
	ok = ok && kvcc_policy_obs(p, NULL, &obs) == 0 && obs == 0;
	ok = ok && kvcc_policy_obs(q, NULL, &obs) == 0 && obs == 64;
	ok = ok && wi >= 0 && kvcc_param_count(q) <= 8;
	if (ok) {
		for (int i = 0; i < kvcc_param_count(q); i++)
			kvcc_param_info(q, i, NULL, &par[i]);
		par[wi] = 5;
	}
	ok = ok && kvcc_policy_obs(q, par, &obs) == 0 && obs == 5;
	ok = ok && kvcc_policy_obs(oa, NULL, &obs) == 0 && obs == -1;
	if (ok)
		par[wi] = 2.5;
	ok = ok && kvcc_policy_obs(q, par, &obs) == KVCC_EINVAL && strstr(kvcc_last_error(), "observation count");
	ok = ok && kvcc_policy_obs(NULL, NULL, &obs) == KVCC_EINVAL && kvcc_policy_obs(q, NULL, NULL) == KVCC_EINVAL;
	/* kvcc_policy_info as the sources say: h2o an observe hook, no queries; snapkv queries; pyramidkv
	** a budget schedule over the layers (layer-dependent); scope head for all three */
	kvcc_policy *py = NULL;
	unsigned fl = 0;
	int sc = -1;
	ok = ok && kvcc_compile_file("policies/pyramidkv.lua", &s, &py) == 0;
	ok = ok && kvcc_policy_info(p, &fl, &sc) == 0 && fl == KVCC_POLICY_OBSERVE && sc == KVCC_SCOPE_HEAD;
	ok = ok && kvcc_policy_info(q, &fl, &sc) == 0 && fl == KVCC_POLICY_QUERIES && sc == KVCC_SCOPE_HEAD;
	ok = ok && kvcc_policy_info(py, &fl, NULL) == 0 && fl == (KVCC_POLICY_QUERIES | KVCC_POLICY_LAYER);
	ok = ok && kvcc_policy_info(NULL, &fl, &sc) == KVCC_EINVAL && kvcc_policy_info(q, NULL, NULL) == 0;
	kvcc_close(py);
	kvcc_close(oa);
	kvcc_layout lay = { KVCC_F32, 1, 1, 64, 4, 256, 256, 64 };
	float K[256] = { 0 }, V[256] = { 0 }, row[64] = { 0 }, qv[128] = { 0 }, o[128];
	int32_t len = 4;
	kvcc_plan *pl = NULL;
	ok = ok && kvcc_plan_create(p, &lay, 0, 1, &pl) == 0;
	kvcc_cache c = { K, V, NULL, &len, NULL };
	ok = ok && kvcc_append(pl, &c, 0, row, row, 4) == KVCC_EINVAL;      /* at capacity */
	ok = ok && kvcc_decode_layer(pl, &c, 0, qv, o) == KVCC_EINVAL;      /* stateful policy, no state */
	ok = ok && kvcc_decode_layer(pl, &c, 1, qv, o) == KVCC_EINVAL;      /* bad layer */
	kvcc_plan_destroy(pl);
	kvcc_close(p), kvcc_close(q);
	if (ok)
		npass++;
	else
		printf("FAIL decode api: %s\n", kvcc_last_error()), nfail++;
}

int main(int argc, char **argv)
{
	/* decode_tests [--every K] [NAME]: K > 1 runs the policy x dtype x head_dim x group cases whose
	** index sum is a multiple of K (every value of each still runs; make check: 2), all otherwise */
	int every = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--every") && i + 1 < argc)
			every = atoi(argv[++i]) > 1 ? atoi(argv[i]) : 1;
		else
			only = argv[i];
	}
	static const int dims[] = { 8, 64, 96, 128, 256 }, groups[] = { 1, 2, 4, 8 };
	MfPolicy pols[MANIFEST_MAX];
	char why[256];
	int npol = mf_read("decode", pols, MANIFEST_MAX, why, sizeof why);
	if (npol < 0) {
		printf("FAIL manifest: %s\ndecode: 0 passed, 1 failed, 0 skipped\n", why);
		return 1;
	}
	char *host = kx_hostfeatures();
	/* keep counts (select keep: one generated function, the same on every spec) 3 times more
	** sparsely in make check, like diff_tests' merge rules */
	int sparse[MANIFEST_MAX];
	for (int pi = 0; pi < npol; pi++) {
		KiErr me = { 0 };
		KiFn *mf = every > 1 ? kd_loadfile(pols[pi].file, NULL, &me) : NULL;
		sparse[pi] = mf && mf->sel.keep;
		ki_free(mf);
	}
	for (int pi = 0; pi < npol; pi++)
		for (int dt = 0; dt < 3; dt++)
			for (int di = 0; di < 5; di++)
				for (int gi = 0; gi < 4; gi++) {
					if ((pi + dt + di + gi) % (sparse[pi] ? 3 * every : every))
						continue;
					Case c = { pols[pi].name, pols[pi].file, dt, dims[di], groups[gi], KVCC_TARGET_NATIVE,
					           gi % 2 ? 8 : 0 };
					run_case(&c, host);
				}
	for (int dt = 0; dt < 3; dt++) {
		/* a prefill policy's plan runs decode attention too (no observe hook) */
		Case a = { "knorm", "policies/knorm.lua", dt, 128, 4, KVCC_TARGET_NATIVE, 3 };
		run_case(&a, host);
		for (int pi = 0; pi < npol; pi++) {
			const char *pn = pols[pi].name, *pf = pols[pi].file;
			Case v3 = { pn, pf, dt, 96, 2, KVCC_TARGET_V3, 0 }, v4 = { pn, pf, dt, 128, 4, KVCC_TARGET_V4, 0 };
			Case sc = { pn, pf, dt, 64, 4, KVCC_TARGET_SCALAR, 0 };
			/* sampled (--every K > 1): each target once per policy, its dtype rotating */
			if (every == 1 || (pi + dt) % 3 == 0)
				run_case(&v3, host);
			if (every == 1 || (pi + dt + 1) % 3 == 0)
				run_case(&v4, host);
			if (every == 1 || (pi + dt + 2) % 3 == 0)
				run_case(&sc, host);
		}
	}
	api();
	free(host);
	if (nsround)     /* before the summary line: scripts read the last line (tests/tune/points.sh) */
		printf("decode: %d merge-summary compressions after the first compared (online running means)\n", nsround);
	printf("decode: %d passed, %d failed, %d skipped (%d with a near-tie selection boundary: outputs and state "
	       "checked, kept set not); worst output error %.2e, worst state error %.2e (relative)\n",
	       npass, nfail, nskip, ntie, worst_out, worst_state);
	return nfail ? 1 : 0;
}
