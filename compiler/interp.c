/*
** Reference interpreter for KIR (see interp.h for the semantics it defines).
**
** Values: one dense double array per (instruction, instance), instance =
** (layer, head). A tensor's shape is the sizes of its axes in canonical order
** (group, obs, token, chan); absent axes have size 1, so every op is a loop
** over at most four indices with broadcasting by zero strides.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "compiler/interp.h"
#include "compiler/select.h"

typedef struct Ctx {
	const KiFn *f;
	const KiCase *c;
	KiErr *e;
	double *par;             /* runtime param values */
	double ***val;           /* [nins][L*H] arrays (NULL when not needed) */
	float *K, *V, *Q;        /* rounded copies */
	const double *attn;      /* decode: [L][H][G][n] probabilities, or NULL */
	int *body;               /* [nins] 1 + the scan state whose step instruction i is, or 0 */
	const KiWData **wd;      /* [nw] the case's array for each declared weight */
	int nout;                /* size of the out axis (the weights'), 1 without one */
	const long *cap;         /* merge summary: [L*H] the most rows each instance keeps, or NULL */
} Ctx;

/* --- numbers -------------------------------------------------------------------- */

static uint32_t fbits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float bitsf(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

static float round_bf16(float x)
{
	uint32_t u = fbits(x);
	if ((u & 0x7fffffff) > 0x7f800000)
		return bitsf(u | 0x00400000);               /* quiet NaN */
	u += 0x7fff + ((u >> 16) & 1);
	return bitsf(u & 0xffff0000u);
}

/* f32 → f16 → f32 with round to nearest even, subnormals and overflow to inf. */
static float round_f16(float x)
{
	if (isnan(x))
		return x;
	float a = fabsf(x);
	if (a >= 65520.0f)
		return copysignf(INFINITY, x);
	if (a < 6.103515625e-05f) {                      /* subnormal: step 2^-24 */
		float q = nearbyintf(a * 16777216.0f) / 16777216.0f;
		return copysignf(q, x);
	}
	int ex;
	frexpf(a, &ex);                                  /* a = m * 2^ex, m in [0.5, 1) */
	float step = ldexpf(1.0f, ex - 11);              /* 10 mantissa bits */
	float q = nearbyintf(a / step) * step;
	return copysignf(q, x);
}

float ki_round(float x, int dtype)
{
	return dtype == KVCC_F16 ? round_f16(x) : dtype == KVCC_BF16 ? round_bf16(x) : x;
}

int ki_dtypebyname(const char *s)
{
	if (!strcmp(s, "f32") || !strcmp(s, "float32"))
		return KVCC_F32;
	if (!strcmp(s, "f16") || !strcmp(s, "float16"))
		return KVCC_F16;
	if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16"))
		return KVCC_BF16;
	return -1;
}

const char *ki_dtypename(int dt) { return dt == KVCC_F16 ? "f16" : dt == KVCC_BF16 ? "bf16" : "f32"; }

/* kv.random's seed as an integer: truncated toward zero; 0 when it is NaN or |seed| >= 2^63,
** where a conversion would be undefined (the same rule in tmap.c, prelude.cuh, kvref.py) */
uint64_t ki_seed(double seed)
{
	return fabs(seed) < 0x1p63 ? (uint64_t)(int64_t)seed : 0;
}

double ki_rand(uint64_t seed, uint64_t layer, uint64_t head, uint64_t pos)
{
	uint64_t c = (layer << 40) ^ (head << 24) ^ pos;
	uint64_t z = seed + c * 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z = z ^ (z >> 31);
	return (double)(z >> 40) * (1.0 / 16777216.0);
}

/* Python's round(): half to even. */
static double round_half_even(double x)
{
	double r = nearbyint(x);    /* default rounding mode is to nearest even */
	return r;
}

/* --- shapes ---------------------------------------------------------------------- */

static int tokens(const KiCase *c, int l, int h)
{
	return c->len ? c->len[l * c->H + h] : c->n;
}

static void dims(const Ctx *x, int l, int h, int size[AX_NUM])
{
	const KiCase *c = x->c;
	size[AX_group] = c->G;
	size[AX_obs] = c->O;
	size[AX_token] = tokens(c, l, h);
	size[AX_chan] = c->d;
	size[AX_out] = x->nout;
}

/* Strides of a tensor with axes `m` (0 for absent axes) and its element count. */
static size_t strides(uint8_t m, const int size[AX_NUM], size_t st[AX_NUM])
{
	size_t n = 1;
	for (int ax = AX_NUM - 1; ax >= 0; ax--) {
		st[ax] = (m & AXM(ax)) ? n : 0;
		if (m & AXM(ax))
			n *= (size_t)size[ax];
	}
	return n;
}

/* The next multi-index below R (odometer, last axis fastest); 0 after the last. */
static int nextidx(int idx[AX_NUM], const int R[AX_NUM])
{
	for (int ax = AX_NUM - 1; ax >= 0; ax--) {
		if (++idx[ax] < R[ax])
			return 1;
		idx[ax] = 0;
	}
	return 0;
}

/* Whether the index space below R has an element (no axis of size 0: an empty head);
** the do-while loops over nextidx run only then. */
static int nonempty(const int R[AX_NUM])
{
	for (int ax = 0; ax < AX_NUM; ax++)
		if (R[ax] <= 0)
			return 0;
	return 1;
}

static size_t offset(const int idx[AX_NUM], const size_t st[AX_NUM])
{
	size_t k = 0;
	for (int ax = 0; ax < AX_NUM; ax++)
		k += (size_t)idx[ax] * st[ax];
	return k;
}

/* --- operand access ------------------------------------------------------------------ */

typedef struct Opnd {
	const double *p;         /* tensor data, or NULL for a scalar */
	double k;                /* scalar value */
	size_t st[AX_NUM];
} Opnd;

static void opnd(Ctx *x, KiRef r, int inst, const int size[AX_NUM], Opnd *o)
{
	memset(o, 0, sizeof *o);
	switch (KI_RKIND(r)) {
	case RK_CON: o->k = x->f->con[KI_RIDX(r)]; return;
	case RK_PAR: o->k = x->par[KI_RIDX(r)]; return;
	case RK_INS: {
		const KiIns *in = &x->f->ins[KI_RIDX(r)];
		strides(in->axes, size, o->st);
		o->p = x->val[KI_RIDX(r)] ? x->val[KI_RIDX(r)][inst] : NULL;
		if (!in->axes) {
			o->k = o->p ? o->p[0] : 0;
			o->p = NULL;
		}
		return;
	}
	}
}

static inline double at(const Opnd *o, const int idx[AX_NUM])
{
	return o->p ? o->p[offset(idx, o->st)] : o->k;
}

/* A scalar operand's value. */
static double scalar(const Opnd *o)
{
	return o->p ? o->p[0] : o->k;
}

/* --- one instruction on one instance ------------------------------------------------------- */

/* A reduction's combine and finish (ops.h CMB_*, FIN_*; interp.h) */
double ki_combine(int comb, double acc, double v)
{
	switch (comb) {
	case CMB_MAX: return isnan(v) || v > acc ? v : acc;
	case CMB_MIN: return isnan(v) || v < acc ? v : acc;
	}
	return acc + v;
}

double ki_finish(int fin, double acc, double count)
{
	switch (fin) {
	case FIN_MEAN: return count ? acc / count : NAN;
	case FIN_SQRT: return sqrt(acc);
	case FIN_RMS: return count ? sqrt(acc / count) : NAN;
	case FIN_DIVK: return acc / count;
	}
	return acc;
}

static int posof(const KiCase *c, int l, int h, int t)
{
	return c->pos ? c->pos[((size_t)l * c->H + h) * c->n + t] : t;
}

/* Observation query o's position: qpos, else the position of the o-th of the
** last O held tokens (their pos, never their index: a compacted cache has
** gaps). checkcase makes sure O tokens are held. */
static int qposof(const KiCase *c, int l, int h, int o)
{
	return c->qpos ? c->qpos[o] : posof(c, l, h, tokens(c, l, h) - c->O + o);
}

/* One instruction on one instance: the sizes, the result's loop ranges and strides,
** and the operands. */
typedef struct Frame {
	int l, h;
	int size[AX_NUM];        /* sizes of the axes on this instance */
	int R[AX_NUM];           /* loop ranges of the result (1 for its absent axes) */
	size_t rs[AX_NUM];       /* strides of the result */
	size_t count;            /* its element count */
	Opnd a, b, c;
} Frame;

/* The runtime ratio of an instance: the ratio, or 1 - min(B, n)/n for a budget. */
static double ratioof(const KiCase *c, long n)
{
	if (c->budget < 0)
		return c->ratio;
	return n > 0 ? 1.0 - (double)(c->budget < n ? c->budget : n) / (double)n : 0.0;
}

/* Weight w's value at this instance and tensor index idx (group, chan, out). */
static double weightat(const Ctx *x, int w, int l, int h, const int idx[AX_NUM])
{
	const KiWeight *d = &x->f->w[w];
	const KiWData *wd = x->wd[w];
	size_t k = 0;
	for (int j = 0; j < d->ndim; j++) {
		int i = 0;
		switch (d->ax[j]) {
		case WA_layer: i = l; break;
		case WA_head: i = h; break;
		case WA_group: i = idx[AX_group]; break;
		case WA_chan: i = idx[AX_chan]; break;
		case WA_out: i = idx[AX_out]; break;
		}
		k = k * (size_t)wd->shape[j] + (size_t)i;
	}
	return wd->data[k];
}

/* Leaves (and rand, [token] from its seed): read from the case. */
static int evalleaf(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	const KiCase *c = x->c;
	const size_t *rs = fr->rs;
	int l = fr->l, h = fr->h, n = fr->size[AX_token];
	int idx[AX_NUM] = { 0 };
	switch (in->op) {
	case KO_input: {
		size_t lh = (size_t)l * c->H + h;
		if (nonempty(fr->R)) do {
			int g = idx[AX_group], o = idx[AX_obs], t = idx[AX_token], ch = idx[AX_chan];
			double v = 0;
			switch (in->aux) {
			case IN_K: v = x->K[(lh * c->n + t) * c->d + ch]; break;
			case IN_V: v = x->V[(lh * c->n + t) * c->d + ch]; break;
			case IN_Q: v = x->Q[((lh * c->G + g) * c->O + o) * c->d + ch]; break;
			case IN_lse: v = c->lse[(lh * c->G + g) * c->O + o]; break;
			case IN_pos: v = posof(c, l, h, t); break;
			case IN_qpos: v = qposof(c, l, h, o); break;
			}
			out[offset(idx, rs)] = v;
		} while (nextidx(idx, fr->R));
		return 0;
	}
	case KO_weight:
		if (nonempty(fr->R)) do
			out[offset(idx, rs)] = weightat(x, in->aux, l, h, idx);
		while (nextidx(idx, fr->R));
		return 0;
	case KO_state: {
		const KiState *s = &x->f->st[in->aux];
		for (int t = 0; t < n; t++)
			out[t] = c->state ? c->state[(((size_t)in->aux * c->L + l) * c->H + h) * c->n + t] : s->init;
		return 0;
	}
	case KO_carry:
		return 0;            /* written by its scan, token by token */
	case KO_attn:
		for (int g = 0; g < c->G; g++)
			for (int t = 0; t < n; t++)
				out[g * rs[AX_group] + t * rs[AX_token]] = x->attn[(((size_t)l * c->H + h) * c->G + g) * c->n + t];
		return 0;
	case KO_index:
		for (size_t k = 0; k < fr->count; k++)
			out[k] = (double)k;
		return 0;
	case KO_size:
		out[0] = in->axis < AX_NUM ? fr->size[in->axis] : 0;
		return 0;
	case KO_info: {
		double v = 0;
		switch (in->aux) {
		case INF_scale: v = 1.0 / sqrt((double)c->d); break;
		case INF_layer: v = l; break;
		case INF_head: v = h; break;
		case INF_nlayers: v = c->L; break;
		case INF_nheads: v = c->H; break;
		case INF_step: v = c->step; break;
		case INF_ratio: v = ratioof(c, n); break;
		case INF_nkeep: v = (double)ki_nkeep(x->f, x->par, l, c->L, n, c->ratio, c->budget); break;
		}
		out[0] = v;
		return 0;
	}
	case KO_rand: {
		uint64_t seed = ki_seed(scalar(&fr->a));
		for (int t = 0; t < n; t++)
			out[t] = ki_rand(seed, (uint64_t)l, (uint64_t)h, (uint64_t)posof(c, l, h, t));
		return 0;
	}
	}
	return 0;
}

/* Reductions over `axis` (RED, DOT): the op's KS_RED row says how (ops.h). */
static int evalred(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	size_t count = fr->count;
	/* iterate the operand space (result axes + the reduced axis); std's map
	** needs the mean, a first pass */
	const KiSem *sem = ki_sem(in->op);
	int ax = in->axis, S[AX_NUM];
	memcpy(S, fr->R, sizeof S);
	S[ax] = fr->size[ax];
	int m = fr->size[ax];
	for (size_t k = 0; k < count; k++)
		out[k] = sem->init;
	double *mu = NULL;
	if (sem->map == MAP_DEV && !(mu = calloc(count, sizeof *mu))) {
		ki_error(x->e, x->f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	for (int pass = mu ? 0 : 1; pass < 2; pass++) {
		if (S[ax] == 0)
			break;
		int idx[AX_NUM] = { 0 };
		if (nonempty(S)) do {
			int ri[AX_NUM];
			memcpy(ri, idx, sizeof ri);
			ri[ax] = 0;
			size_t r = offset(ri, fr->rs);
			double v = at(&fr->a, idx);
			if (pass == 0) {
				mu[r] += v / m;
				continue;
			}
			switch (sem->map) {
			case MAP_SQ: v = v * v; break;
			case MAP_MUL: v = v * at(&fr->b, idx); break;
			case MAP_DEV: v = (v - mu[r]) * (v - mu[r]); break;
			}
			out[r] = ki_combine(sem->comb, out[r], v);
		} while (nextidx(idx, S));
	}
	for (size_t k = 0; k < count; k++)
		out[k] = ki_finish(sem->fin, out[k], m);
	free(mu);
	return 0;
}

/* An integer scalar operand of a token op (pool kernel, segment size, shift):
** its value in lo..hi (hi may be inf), else an error at the instruction. */
static int intarg(Ctx *x, const KiIns *in, const Opnd *o, double lo, double hi, const char *what, double *v)
{
	*v = scalar(o);
	if (!(*v >= lo && *v <= hi) || (isfinite(*v) && *v != floor(*v))) {
		ki_error(x->e, x->f->src, in->line, in->col, "%s must be an integer in %g..%g, got %g", what,
		         lo, hi, *v);
		return -1;
	}
	return 0;
}

/* Pools along `axis` (token) over a window of b tokens: the op's KS_RED row. */
static int evalpool(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	int m = fr->size[in->axis];
	const KiSem *sem = ki_sem(in->op);
	double kv;
	if (intarg(x, in, &fr->b, 1, 1e6, "the pooling kernel size", &kv) != 0)
		return -1;
	int k = (int)kv, p = k / 2;
	if (!fr->count)
		return 0;
	int idx[AX_NUM] = { 0 };
	if (nonempty(fr->R)) do {
		int t = idx[AX_token], j[AX_NUM];
		memcpy(j, idx, sizeof j);
		double acc = sem->init;
		for (j[AX_token] = t - p; j[AX_token] < t - p + k; j[AX_token]++)
			if (j[AX_token] >= 0 && j[AX_token] < m)   /* zero (avg) or -inf (max) padding */
				acc = ki_combine(sem->comb, acc, at(&fr->a, j));
		out[offset(idx, fr->rs)] = ki_finish(sem->fin, acc, k);
	} while (nextidx(idx, fr->R));
	return 0;
}

/* softmax over `axis`, in slices: max, sum of exp, then each probability. */
static void evalsoftmax(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	const KiCase *c = x->c;
	int l = fr->l, h = fr->h, ax = in->axis, m = fr->size[ax];
	/* causal over token when obs is present */
	int causal = in->op == KO_softmax && ax == AX_token && (in->axes & AXM(AX_obs));
	if (!fr->count)
		return;
	int idx[AX_NUM] = { 0 };
	if (nonempty(fr->R)) do {
		if (idx[ax] != 0)
			continue;   /* one slice per position of the other axes */
		int o = idx[AX_obs], j[AX_NUM];
		memcpy(j, idx, sizeof j);
		double mx = -INFINITY, sum = 0;
		for (j[ax] = 0; j[ax] < m; j[ax]++) {
			if (causal && posof(c, l, h, j[ax]) > qposof(c, l, h, o))
				continue;
			double v = at(&fr->a, j);
			mx = v > mx ? v : mx;
		}
		for (j[ax] = 0; j[ax] < m; j[ax]++) {
			if (causal && posof(c, l, h, j[ax]) > qposof(c, l, h, o))
				continue;
			sum += exp(at(&fr->a, j) - mx);
		}
		for (j[ax] = 0; j[ax] < m; j[ax]++) {
			double p = 0;
			if (!(causal && posof(c, l, h, j[ax]) > qposof(c, l, h, o)) && sum > 0)
				p = exp(at(&fr->a, j) - mx) / sum;
			out[offset(j, fr->rs)] = p;
		}
	} while (nextidx(idx, fr->R));
}

/* shift along `axis`: result[i] = a[i + b], c outside. */
static int evalshift(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	int ax = in->axis, m = fr->size[ax];
	double k;
	if (intarg(x, in, &fr->b, -1e9, 1e9, "the shift offset", &k) != 0)
		return -1;
	double fill = scalar(&fr->c);
	if (!fr->count)
		return 0;
	int idx[AX_NUM] = { 0 };
	if (nonempty(fr->R)) do {
		int j[AX_NUM];
		memcpy(j, idx, sizeof j);
		double s = (double)idx[ax] + k;
		j[ax] = (int)s;
		out[offset(idx, fr->rs)] = s >= 0 && s < m ? at(&fr->a, j) : fill;
	} while (nextidx(idx, fr->R));
	return 0;
}

/* The segment of token t: [0, start) first, then `size` tokens at a time. */
static void segment(long t, long n, double size, long start, long *s0, long *s1)
{
	if (t < start) {
		*s0 = 0, *s1 = start < n ? start : n;
		return;
	}
	if (size >= (double)(n - start)) {    /* one segment to the end (inf, or any size that reaches it) */
		*s0 = start, *s1 = n;
		return;
	}
	long sz = (long)size;
	*s0 = start + (t - start) / sz * sz;
	*s1 = *s0 + sz < n ? *s0 + sz : n;
}

/* a < b in ascending rank order: NaN above every number, ties by position. */
static int rankless(double a, long ta, double b, long tb)
{
	int na = isnan(a), nb = isnan(b);
	if (na != nb)
		return nb;
	if (!na && a != b)
		return a < b;
	return ta < tb;
}

/* Segment reductions (ssum smean smax smin: the op's KS_RED row) and srank. */
static int evalseg(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	long n = fr->size[AX_token];
	double size, start;
	if (intarg(x, in, &fr->b, 1, INFINITY, "the segment size", &size) != 0 ||
	    intarg(x, in, &fr->c, 0, INFINITY, "the segment start", &start) != 0)
		return -1;
	long st = isinf(start) ? n : (long)(start < (double)n ? start : (double)n);
	const KiSem *sem = ki_sem(in->op);
	if (!fr->count)
		return 0;
	int idx[AX_NUM] = { 0 };
	if (nonempty(fr->R)) do {
		long t = idx[AX_token], s0, s1;
		segment(t, n, size, st, &s0, &s1);
		int j[AX_NUM];
		memcpy(j, idx, sizeof j);
		double v = at(&fr->a, idx), acc = sem->init;
		for (long u = s0; u < s1; u++) {
			j[AX_token] = (int)u;
			double w = at(&fr->a, j);
			if (in->op == KO_srank)
				acc += rankless(w, u, v, t);
			else
				acc = ki_combine(sem->comb, acc, w);
		}
		out[offset(idx, fr->rs)] = in->op == KO_srank ? acc : ki_finish(sem->fin, acc, (double)(s1 - s0));
	} while (nextidx(idx, fr->R));
	return 0;
}

/* Instruction i on instance (l, h) into out (its axes, canonical strides). */
static int evalins(Ctx *x, int i, int l, int h, double *out)
{
	const KiIns *in = &x->f->ins[i];
	int inst = l * x->c->H + h;
	Frame fr = { .l = l, .h = h };
	dims(x, l, h, fr.size);
	fr.count = strides(in->axes, fr.size, fr.rs);
	opnd(x, in->arg[0], inst, fr.size, &fr.a);
	opnd(x, in->arg[1], inst, fr.size, &fr.b);
	opnd(x, in->arg[2], inst, fr.size, &fr.c);
	for (int ax = 0; ax < AX_NUM; ax++)
		fr.R[ax] = (in->axes & AXM(ax)) ? fr.size[ax] : 1;
	switch (ki_rule(in->op)) {
	case AR_LEAF:
	case AR_TOK:
		return evalleaf(x, in, &fr, out);
	case AR_EW:
		if (fr.count) {
			int idx[AX_NUM] = { 0 };
			if (nonempty(fr.R)) do
				out[offset(idx, fr.rs)] = ki_evalew(in->op, at(&fr.a, idx), at(&fr.b, idx), at(&fr.c, idx));
			while (nextidx(idx, fr.R));
		}
		return 0;
	case AR_RED:
	case AR_DOT:
		return evalred(x, in, &fr, out);
	case AR_KEEP:
		if (in->op == KO_shift)
			return evalshift(x, in, &fr, out);
		if (ki_sem(in->op)->kind == SEM_RED)
			return evalpool(x, in, &fr, out);
		evalsoftmax(x, in, &fr, out);
		return 0;
	case AR_SEG:
		return evalseg(x, in, &fr, out);
	case AR_SAME:
	case AR_SCAN:
		return 0;            /* hmean across heads (evalhmean), scan token by token (evalscan) */
	}
	ki_error(x->e, x->f->src, in->line, in->col, "interpreter: op %s not handled", ki_opname(in->op));
	return -1;
}

/* mean over the heads of a layer (all heads must hold the same tokens) */
static int evalhmean(Ctx *x, int i)
{
	const KiCase *c = x->c;
	const KiIns *in = &x->f->ins[i];
	for (int l = 0; l < c->L; l++) {
		int size[AX_NUM];
		dims(x, l, 0, size);
		size_t st[AX_NUM], cnt = strides(in->axes, size, st);
		for (int h = 1; h < c->H; h++)
			if (tokens(c, l, h) != tokens(c, l, 0)) {
				ki_error(x->e, x->f->src, in->line, in->col,
				         "mean over heads needs equal lengths across the heads of layer %d", l);
				return -1;
			}
		const KiSem *sem = ki_sem(in->op);
		for (size_t k = 0; k < cnt; k++) {
			double s = sem->init;
			for (int h = 0; h < c->H; h++) {
				Opnd a;
				opnd(x, in->arg[0], l * c->H + h, size, &a);
				s = ki_combine(sem->comb, s, a.p ? a.p[k] : a.k);
			}
			for (int h = 0; h < c->H; h++)
				x->val[i][l * c->H + h][k] = ki_finish(sem->fin, s, c->H);
		}
	}
	return 0;
}

/*
** scan i on every instance: tokens before the first unscanned one (the NaN
** suffix of the state the case brings) keep their value; from there on, in
** position order, the carry is the previous token's value (the start value
** before token 0) and the body instructions (x->body[j] == state + 1, each
** elementwise over [token]) are evaluated at that token only.
*/
static int evalscan(Ctx *x, int i)
{
	const KiCase *c = x->c;
	const KiFn *f = x->f;
	const KiIns *in = &f->ins[i];
	int s = in->aux;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			int inst = l * c->H + h, n = tokens(c, l, h), size[AX_NUM];
			dims(x, l, h, size);
			const double *prev = c->state ? &c->state[(((size_t)s * c->L + l) * c->H + h) * c->n] : NULL;
			int u0 = n;
			while (prev && u0 > 0 && isnan(prev[u0 - 1]))
				u0--;
			if (!prev)
				u0 = 0;
			Opnd init, body;
			opnd(x, in->arg[1], inst, size, &init);
			double carry = u0 > 0 ? prev[u0 - 1] : scalar(&init), *out = x->val[i][inst];
			for (int t = 0; t < u0; t++)
				out[t] = prev[t];
			for (int t = u0; t < n; t++) {
				int idx[AX_NUM] = { 0 };
				idx[AX_token] = t;
				for (int j = 0; j <= i; j++) {
					if (x->body[j] != s + 1)
						continue;
					const KiIns *bj = &f->ins[j];
					if (bj->op == KO_carry) {
						x->val[j][inst][t] = carry;
						continue;
					}
					Opnd a, b, cc;
					opnd(x, bj->arg[0], inst, size, &a);
					opnd(x, bj->arg[1], inst, size, &b);
					opnd(x, bj->arg[2], inst, size, &cc);
					x->val[j][inst][t] = ki_evalew(bj->op, at(&a, idx), at(&b, idx), at(&cc, idx));
				}
				opnd(x, in->arg[0], inst, size, &body);
				out[t] = carry = at(&body, idx);
			}
		}
	return 0;
}

/* Mark the instructions reachable from `root`. Operands point backwards, so
** one sweep down from the root finds them all: no recursion, whose depth a
** long chain of instructions would make the policy's length. */
static void mark(const KiFn *f, KiRef root, char *need)
{
	if (KI_RKIND(root) != RK_INS)
		return;
	need[KI_RIDX(root)] = 1;
	for (int i = KI_RIDX(root); i >= 0; i--)
		for (int k = 0; need[i] && k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS && KI_RIDX(f->ins[i].arg[k]) < i)
				need[KI_RIDX(f->ins[i].arg[k])] = 1;
}

/* x->body: 1 + the state of the scan whose carry instruction i reads, else 0. */
static int scanbodies(Ctx *x)
{
	const KiFn *f = x->f;
	x->body = calloc((size_t)f->nins + 1, sizeof *x->body);
	if (!x->body)
		return -1;
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (in->op == KO_carry) {
			x->body[i] = in->aux + 1;
			continue;
		}
		for (int k = 0; k < ki_nargs(in->op) && in->op != KO_scan; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && x->body[KI_RIDX(in->arg[k])])
				x->body[i] = x->body[KI_RIDX(in->arg[k])];
	}
	return 0;
}

/* Evaluate every needed instruction for every instance, in order. */
static int evaluate(Ctx *x, const char *need)
{
	const KiCase *c = x->c;
	int ninst = c->L * c->H;
	if (!x->body && scanbodies(x) != 0)
		goto oom;
	for (int i = 0; i < x->f->nins; i++) {
		if (!need[i])
			continue;
		x->val[i] = calloc((size_t)ninst, sizeof(double *));
		if (!x->val[i])
			goto oom;
		for (int l = 0; l < c->L; l++)
			for (int h = 0; h < c->H; h++) {
				int size[AX_NUM];
				size_t st[AX_NUM];
				dims(x, l, h, size);
				size_t cnt = strides(x->f->ins[i].axes, size, st);
				double *v = calloc(cnt ? cnt : 1, sizeof *v);
				if (!v)
					goto oom;
				x->val[i][l * c->H + h] = v;
				if (!x->body[i] && evalins(x, i, l, h, v) != 0)
					return -1;
			}
		if (x->f->ins[i].op == KO_hmean && evalhmean(x, i) != 0)
			return -1;
		if (x->f->ins[i].op == KO_scan && evalscan(x, i) != 0)
			return -1;
	}
	return 0;
oom:
	ki_error(x->e, x->f->src, 0, 0, "interpreter: out of memory");
	return -1;
}

static void freevals(Ctx *x)
{
	for (int i = 0; x->val && i < x->f->nins; i++)
		if (x->val[i]) {
			for (int k = 0; k < x->c->L * x->c->H; k++)
				free(x->val[i][k]);
			free(x->val[i]);
		}
	free(x->val);
	free(x->par);
	free(x->K);
	free(x->V);
	free(x->Q);
	free(x->body);
	free(x->wd);
}

/* --- selection ------------------------------------------------------------------------ */

static double refval(const KiFn *f, const double *par, KiRef r, double def)
{
	switch (KI_RKIND(r)) {
	case RK_CON: return f->con[KI_RIDX(r)];
	case RK_PAR: return par ? par[KI_RIDX(r)] : f->par[KI_RIDX(r)].def;
	}
	return def;
}

long ki_nkeep(const KiFn *f, const double *par, int layer, int nlayers, long n, double ratio, long budget)
{
	double keep = budget >= 0 ? (double)(budget < n ? budget : n) : (double)n * (1.0 - ratio);
	double nk = budget >= 0 ? keep : floor(keep);
	if (f->sel.sched == SCH_pyramid && (budget >= 0 || ratio > 0)) {
		/* PyramidKV as kvpress computes it (pyramidkv_press.py); kvpress
		** requires beta >= 1, smaller values fall back to uniform budgets */
		double w = refval(f, par, f->sel.keep_recent, 0);
		double beta = refval(f, par, f->sel.beta, 20);
		double T = w + keep;
		double mn = (T - w) / beta, mx = (T - w) * 2 - mn;
		if (mx >= n - w) {
			mx = n - w;
			mn = (T - w) * 2 - mx;
		}
		if (!(beta >= 1) || !(n >= mx && mx >= mn && mn >= w) || nlayers < 2)
			nk = round_half_even(keep);
		else
			nk = round_half_even(mx - layer * ((mx - mn) / (nlayers - 1)));
	}
	if (!(nk >= 0))          /* also NaN */
		return 0;
	return nk > (double)n ? n : (long)nk;
}

enum { PR_none, PR_recent, PR_sink };   /* protection classes, in rank order */

typedef struct Cand {
	double key;              /* mean score */
	int prot;                /* PR_*: sinks outrank the recent window, which outranks the rest */
	long age;                /* protected: sinks by position (t), recent tokens newest first
	                         ** (tokens after the candidate) */
	int l, h, t;             /* t: first token (chunk start) */
	int len;                 /* tokens in the candidate (chunk) */
	double sum;              /* its scores' sum (token order): mass */
} Cand;

/* Order: sinks (lower position first), then the recent window (newest
** first), then higher score, NaN last; ties: lower layer, lower head, lower
** position. The protected order matters only when the budget is below the
** protected count (DESIGN §3). */
static int candcmp(const void *pa, const void *pb)
{
	const Cand *a = pa, *b = pb;
	if (a->prot != b->prot)
		return b->prot - a->prot;
	if (a->prot != PR_none) {
		if (a->age != b->age)
			return a->age < b->age ? -1 : 1;
	} else {
		int na = isnan(a->key), nb = isnan(b->key);
		if (na != nb)
			return na - nb;
		if (!na && a->key != b->key)
			return a->key > b->key ? -1 : 1;
	}
	if (a->l != b->l)
		return a->l - b->l;
	if (a->h != b->h)
		return a->h - b->h;
	return a->t - b->t;
}

/* Select within a group of candidates (one head, one layer, or the model),
** marking kept tokens in keep[] ([L][H][n]). `want` counts tokens. */
static void pick(Cand *cs, int ncand, long want, const KiCase *c, const long *cap, long *hgot, char *keep)
{
	qsort(cs, (size_t)ncand, sizeof *cs, candcmp);
	long got = 0;
	for (int k = 0; k < ncand && got < want; k++) {
		size_t lh = (size_t)cs[k].l * c->H + cs[k].h;
		if (got + cs[k].len > want || (cap && hgot[lh] + cs[k].len > cap[lh]))
			continue;        /* a chunk that does not fit (in the group, or in its head's cap); a smaller one may */
		for (int j = 0; j < cs[k].len; j++)
			keep[lh * c->n + cs[k].t + j] = 1;
		got += cs[k].len;
		if (cap)
			hgot[lh] += cs[k].len;
	}
}

/* mass p over a group's candidates (DESIGN §3): the unprotected ones in candcmp order, the
** shortest prefix whose sums reach p of the group's total tot (each sum / tot added in that
** order; p <= 0 or a zero total: none; never reached: all); the protected ones all. Leaves the
** protected and the prefix at the front of cs; returns their number. */
static int massprefix(Cand *cs, int ncand, double tot, double p)
{
	qsort(cs, (size_t)ncand, sizeof *cs, candcmp);
	int k = 0;
	while (k < ncand && cs[k].prot != PR_none)
		k++;
	double acc = 0;
	if (!(tot > 0 && p > 0))
		return k;
	while (k < ncand)
		if ((acc += cs[k++].sum / tot) >= p)
			break;
	return k;
}

/* topk, threshold and mass: the candidates (tokens, or chunks) of each group
** (a head, a layer, the model) ranked by candcmp, kept while they fit in the
** group's count (nk summed); threshold drops unprotected candidates below tau
** first, mass the unprotected ones past its prefix (massprefix; the total:
** each instance's unprotected scores summed in token order, then the group's
** instances in order; a score that is not >= 0 is an error), and with cap=0
** the count does not bound it. */
static int selectkeep(Ctx *x, const double *scores, const long *nk, char *keep)
{
	const KiFn *f = x->f;
	const KiCase *c = x->c;
	long S, Rr, ch;
	if (ki_selfields(f, x->par, &S, &Rr, &ch, x->e) != 0)
		return -1;
	double tau = refval(f, x->par, f->sel.tau, 0), p = refval(f, x->par, f->sel.mass, 0), gtot = 0;
	int ms = f->sel.kind == SEL_mass;
	size_t maxc = (size_t)c->L * c->H * (size_t)c->n + 1;
	Cand *cs = malloc(maxc * sizeof *cs);
	long *hgot = x->cap ? calloc((size_t)c->L * c->H, sizeof *hgot) : NULL;
	if (!cs || (x->cap && !hgot)) {
		free(cs), free(hgot);
		ki_error(x->e, f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	int ncand = 0;
	long want = 0;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			long n = tokens(c, l, h);
			double itot = 0;
			want += f->sel.nocap ? n : nk[l * c->H + h];
			for (long t0 = 0; t0 < n; t0 += ch) {
				long len = t0 + ch <= n ? ch : n - t0;
				Cand *cd = &cs[ncand++];
				double s = 0;
				int sink = 0, recent = 0, nan = 0;
				for (long t = t0; t < t0 + len; t++) {
					double v = scores[((size_t)l * c->H + h) * c->n + t];
					nan |= isnan(v);
					s += v;
					sink |= t < S;
					recent |= t >= n - Rr;
				}
				cd->key = nan ? NAN : s / (double)len;
				cd->prot = sink ? PR_sink : recent ? PR_recent : PR_none;
				cd->age = sink ? t0 : n - (t0 + len);
				cd->l = l, cd->h = h, cd->t = (int)t0, cd->len = (int)len;
				cd->sum = s;
				if (f->sel.kind == SEL_threshold && cd->prot == PR_none && !(cd->key >= tau))
					ncand--;      /* below tau (or NaN): never kept */
				for (long t = t0; ms && cd->prot == PR_none && t < t0 + len; t++) {
					double v = scores[((size_t)l * c->H + h) * c->n + t];
					if (!(v >= 0)) {
						ki_error(x->e, f->src, f->sel.line, f->sel.col, "select: mass needs scores >= 0, "
						         "(layer %d, head %d) has %g at token %ld", l, h, v, t);
						free(cs);
						return -1;
					}
					itot += v;
				}
			}
			gtot += itot;
			int last = f->sel.scope == SC_head ||
			           (f->sel.scope == SC_layer && h == c->H - 1) ||
			           (l == c->L - 1 && h == c->H - 1);
			if (last) {
				if (ms)
					ncand = massprefix(cs, ncand, gtot, p);
				pick(cs, ncand, want, c, x->cap, hgot, keep);
				ncand = 0, want = 0, gtot = 0;
			}
		}
	free(cs), free(hgot);
	return 0;
}

/* Threshold under summary rows: whether an instance's ordinary rows (scores osc, n of them)
** hold an unprotected candidate (a token or a chunk; chunk mean, NaN never) below tau: then
** it evicts although under its budget, and keeps at most n - C ordinary rows so that the C
** summary rows take the place of evicted ones (they come out of what the head held). */
static int threvicts(Ctx *x, const double *osc, long n)
{
	long S, Rr, ch;
	if (ki_selfields(x->f, x->par, &S, &Rr, &ch, x->e) != 0)
		return 0;        /* selectkeep reports it */
	double tau = refval(x->f, x->par, x->f->sel.tau, 0);
	for (long t0 = 0; t0 < n; t0 += ch) {
		long len = t0 + ch <= n ? ch : n - t0;
		double s = 0;
		for (long t = t0; t < t0 + len; t++)
			s += osc[t];
		if (!(t0 < S || t0 + len > n - Rr) && !(s / (double)len >= tau))
			return 1;
	}
	return 0;
}

/* Mass under summary rows: whether the mass prefix of an instance's ordinary rows (scores osc,
** n of them; its own total: the rule is per head) leaves an unprotected candidate out: then it
** evicts although under its budget, and keeps at most n - C ordinary rows, as threvicts says.
** A score that is not >= 0: 0 here, selectkeep reports it. -1: out of memory. */
static int massevicts(Ctx *x, const double *osc, long n)
{
	long S, Rr, ch;
	if (ki_selfields(x->f, x->par, &S, &Rr, &ch, x->e) != 0)
		return 0;        /* selectkeep reports it */
	Cand *cs = malloc(((size_t)n + 1) * sizeof *cs);
	if (!cs) {
		ki_error(x->e, x->f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	int ncand = 0;
	double tot = 0;
	for (long t0 = 0; t0 < n; t0 += ch) {
		long len = t0 + ch <= n ? ch : n - t0;
		Cand *cd = &cs[ncand++];
		double sm = 0;
		int nan = 0, sink = t0 < S, recent = t0 + len > n - Rr;
		for (long t = t0; t < t0 + len; t++) {
			nan |= isnan(osc[t]);
			sm += osc[t];
			if (!sink && !recent && !(osc[t] >= 0)) {
				free(cs);
				return 0;
			}
			tot += sink || recent ? 0 : osc[t];
		}
		cd->key = nan ? NAN : sm / (double)len;
		cd->prot = sink ? PR_sink : recent ? PR_recent : PR_none;
		cd->age = sink ? t0 : n - (t0 + len);
		cd->l = 0, cd->h = 0, cd->t = (int)t0, cd->len = (int)len;
		cd->sum = sm;
	}
	int ev = massprefix(cs, ncand, tot, refval(x->f, x->par, x->f->sel.mass, 0)) < ncand;
	free(cs);
	return ev;
}

/* AdaKV's floor under summary rows (topk, scope layer, chunk 1; selectsummary's ordinary rows:
** oc, osc, its caps and counts want): a layer that evicts (gev) gives each non-empty head its
** floor fl = min(floor(alpha nk), nk, n) first, the C summary rows included (a floor at or below C
** is met by them): the head keeps its best max(fl - C, 0) ordinary rows, then the rest of the layer's count (sum of want
** less those) goes to one ranking over the layer, each head within its cap (M12); a layer that
** evicts nothing keeps everything. okeep gets the ordinary rows kept. */
static int floorsum(Ctx *x, const KiCase *oc, const double *osc, const long *nks, const long *want,
                    const long *cap, const char *gev, char *okeep)
{
	const KiFn *f = x->f;
	const KiCase *c = x->c;
	int C = ki_summaryrows(f);
	long S, Rr, ch;
	if (ki_selfields(f, x->par, &S, &Rr, &ch, x->e) != 0)
		return -1;
	double alpha = refval(f, x->par, f->sel.floor, 0);   /* in [0, 1]: selectsummary checked it */
	Cand *cs = malloc(((size_t)c->H * c->n + 1) * sizeof *cs);
	long *hgot = calloc((size_t)c->L * c->H + 1, sizeof *hgot);
	if (!cs || !hgot) {
		free(cs), free(hgot);
		ki_error(x->e, f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	for (int l = 0; l < c->L; l++) {
		long rest = 0;
		for (int pass = 0; pass < 2; pass++) {   /* 0: each head's floor; 1: the layer's ranking */
			int m = 0;
			for (int h = 0; h < c->H; h++) {
				size_t lh = (size_t)l * c->H + h;
				long no = tokens(oc, l, h), n = tokens(c, l, h), nk = nks[lh];
				if (pass == 0 && !gev[lh]) {      /* nothing evicted: every row stays */
					memset(&okeep[lh * c->n], 1, (size_t)no);
					continue;
				}
				if (pass == 0 && n == 0)
					continue;
				long fl = (long)floor(alpha * (double)nk);
				fl = fl < nk ? fl : nk;
				fl = fl < n ? fl : n;
				int m0 = pass ? m : 0;
				for (long t = 0; t < no && gev[lh]; t++) {
					if (pass && okeep[lh * c->n + t])
						continue;
					double v = osc[lh * c->n + t];
					Cand *cd = &cs[m0++];
					cd->key = v, cd->sum = v;
					cd->prot = t < S ? PR_sink : t >= no - Rr ? PR_recent : PR_none;
					cd->age = t < S ? t : no - (t + 1);
					cd->l = l, cd->h = h, cd->t = (int)t, cd->len = 1;
				}
				if (pass) {
					m = m0;
					continue;
				}
				long own = fl > C ? fl - C : 0;   /* a floor at or below C: its C summary rows meet it */
				qsort(cs, (size_t)m0, sizeof *cs, candcmp);
				for (long j = 0; j < own && j < m0; j++)
					okeep[lh * c->n + cs[j].t] = 1;
				hgot[lh] = own < m0 ? own : m0;
				rest += want[lh] - hgot[lh];
			}
			if (pass)
				pick(cs, m, rest, oc, cap, hgot, okeep);
		}
	}
	free(cs), free(hgot);
	return 0;
}

/* Selection under a merge rule with summary rows (merge.c): over the ordinary rows
** only (an existing summary block is always kept). A group (the select scope's: a head,
** a layer, the model) that evicts (one of its heads holds more rows than its count nk)
** keeps sum (nk - C) ordinary rows, and each of its heads at most n - C (without a block:
** the C rows it builds come out of what it held; with one: all its ordinary rows), so no
** head ends holding more than it held nor the group more than its budget (doc/dsl.md;
** topk, threshold or mass, the verifier refuses the other rules here); a group that evicts
** nothing keeps everything. Threshold and mass at scope head: one under its count without a
** block that evicts keeps at most n - C (threvicts, massevicts); keep[] gets the physical rows. */
static int selectsummary(Ctx *x, const double *scores, const long *nks, char *keep)
{
	const KiCase *c = x->c;
	const KiFn *f = x->f;
	int C = ki_summaryrows(f), rc = -1;
	size_t nlh = (size_t)c->L * c->H, ntok = nlh * c->n;
	int32_t *olen = calloc(nlh, sizeof *olen);
	long *want = calloc(nlh, sizeof *want), *cap = calloc(nlh, sizeof *cap);
	char *gev = calloc(nlh, 1);          /* whether the instance's group evicts */
	double *osc = calloc(ntok + 1, sizeof *osc);
	char *okeep = calloc(ntok + 1, 1);
	int *ord = calloc((size_t)c->n + 1, sizeof *ord);
	if (!olen || !want || !cap || !gev || !osc || !okeep || !ord) {
		ki_error(x->e, f->src, 0, 0, "interpreter: out of memory");
		goto out;
	}
	double alpha = f->sel.floor ? refval(f, x->par, f->sel.floor, 0) : 0;
	if (!(alpha >= 0 && alpha <= 1)) {       /* as compress.c, before the counts' errors */
		ki_error(x->e, f->src, f->sel.line, f->sel.col, "select: floor must be in [0, 1], got %g", alpha);
		goto out;
	}
	/* gev: any head of the group over its count; threshold at scope layer / model: or any head
	** with an unprotected ordinary row below tau (the group's selection drops it) */
	int thg = f->sel.kind == SEL_threshold && f->sel.scope != SC_head;
	for (int pass = 0; pass < 2; pass++)
		for (size_t lh = 0; lh < nlh; lh++) {
			size_t g = f->sel.scope == SC_head ? lh : f->sel.scope == SC_layer ? lh - lh % c->H : 0;
			int l = (int)(lh / c->H), h = (int)(lh % c->H);
			if (pass == 0 && thg) {
				int no = ki_ordrows(c, c->sumat && c->sumat[lh] >= 0 ? C : 0, l, h, ord);
				for (int j = 0; j < no; j++)
					osc[lh * c->n + j] = scores[lh * c->n + ord[j]];
				gev[g] |= threvicts(x, &osc[lh * c->n], no);
			}
			if (pass == 0)
				gev[g] |= tokens(c, l, h) > nks[lh];
			else
				gev[lh] = gev[g];
		}
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			size_t lh = (size_t)l * c->H + h;
			int cex = c->sumat && c->sumat[lh] >= 0 ? C : 0, n = tokens(c, l, h);
			int no = ki_ordrows(c, cex, l, h, ord);
			long nk = nks[lh];
			if (gev[lh] && n > 0 && nk < C) {        /* an empty head takes no part */
				ki_error(x->e, f->src, f->merge.line, f->merge.col, "merge summary: the budget keeps "
				         "%ld rows of (layer %d, head %d), fewer than its %d summary rows", nk, l, h, C);
				goto out;
			}
			want[lh] = gev[lh] && n > 0 ? (nk < n ? nk : n) - C : no;
			cap[lh] = gev[lh] && n > 0 && !cex ? no - C : no;
			olen[lh] = no;
			for (int j = 0; j < no; j++)
				osc[lh * c->n + j] = scores[lh * c->n + ord[j]];
			int uev = !thg && f->sel.kind == SEL_threshold && !cex && n <= nk ? threvicts(x, &osc[lh * c->n], no) :
			          f->sel.kind == SEL_mass && !cex && n <= nk ? massevicts(x, &osc[lh * c->n], no) : 0;
			if (uev < 0)
				goto out;
			if (uev) {
				if (no < C) {        /* the summary rows would not fit in what it held */
					ki_error(x->e, f->src, f->merge.line, f->merge.col, "merge summary: (layer %d, head %d) "
					         "evicts %s but holds %d rows, fewer than its %d summary rows", l, h,
					         f->sel.kind == SEL_mass ? "past its mass prefix" : "below tau", no, C);
					goto out;
				}
				want[lh] = no - C;
			}
		}
	KiCase oc = *c;
	oc.len = olen;
	Ctx y = *x;
	y.c = &oc;
	y.cap = cap;
	if (f->sel.floor ? floorsum(x, &oc, osc, nks, want, cap, gev, okeep) != 0 : selectkeep(&y, osc, want, okeep) != 0)
		goto out;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			size_t lh = (size_t)l * c->H + h;
			int cex = c->sumat && c->sumat[lh] >= 0 ? C : 0;
			int no = ki_ordrows(c, cex, l, h, ord);
			for (int j = 0; j < no; j++)
				keep[lh * c->n + ord[j]] = okeep[lh * c->n + j];
		}
	rc = 0;
out:
	free(olen), free(want), free(cap), free(gev), free(osc), free(okeep), free(ord);
	return rc;
}

/* Mark what the merge rule's expressions read: the ordinary values under its pair
** expressions (the pair instructions themselves are merge.c's). */
static int markmerge(const KiFn *f, char *need)
{
	const KiMerge *m = &f->merge;
	uint8_t *ctx = calloc((size_t)f->nins + 1, 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	if (!ctx || !reach) {
		free(ctx), free(reach);
		return -1;
	}
	ki_pairctx(f, ctx);
	KiRef roots[4] = { m->sim, m->threshold, m->weight, m->self };
	for (int k = 0; k < 4; k++)
		if (KI_RKIND(roots[k]) == RK_INS)
			reach[KI_RIDX(roots[k])] = 1;
	int top = -1;            /* the highest root of the ordinary values: one sweep marks them all */
	for (int i = f->nins - 1; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!reach[i])
			continue;
		if (!ctx[i] || in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean) {
			KiRef r = ctx[i] ? in->arg[0] : KI_REF(RK_INS, i);
			if (KI_RKIND(r) == RK_INS && KI_RIDX(r) <= i) {
				need[KI_RIDX(r)] = 1;
				top = KI_RIDX(r) > top ? KI_RIDX(r) : top;
			}
			continue;
		}
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
				reach[KI_RIDX(in->arg[k])] = 1;
	}
	if (top >= 0)
		mark(f, KI_REF(RK_INS, top), need);
	free(ctx), free(reach);
	return 0;
}

/* --- the entry point -------------------------------------------------------------------- */

static int checkcase(const KiFn *f, const KiCase *c, KiErr *e)
{
	if (c->L < 1 || c->H < 1 || c->G < 1 || c->d < 1 || c->n < 0 || c->O < 0)
		return ki_error(e, f->src, 0, 0, "bad case shape L=%d H=%d G=%d d=%d n=%d O=%d",
		                c->L, c->H, c->G, c->d, c->n, c->O), -1;
	if (!c->K || !c->V)
		return ki_error(e, f->src, 0, 0, "case has no K or V"), -1;
	if (c->O > 0 && !c->Q)
		return ki_error(e, f->src, 0, 0, "case has %d observation queries but no Q", c->O), -1;
	if (c->budget < 0 && !(c->ratio >= 0 && c->ratio < 1))
		return ki_error(e, f->src, 0, 0, "ratio must be in [0, 1), got %g", c->ratio), -1;
	for (int k = 0; c->len && k < c->L * c->H; k++)
		if (c->len[k] < 0 || c->len[k] > c->n)
			return ki_error(e, f->src, 0, 0, "length %d of (layer %d, head %d) outside 0..%d",
			                c->len[k], k / c->H, k % c->H, c->n), -1;
	int C = ki_summaryrows(f);
	for (int k = 0; c->sumat && k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n;
		if (c->sumat[k] >= 0 && (f->merge.kind != MG_summary || c->sumat[k] + C > n))
			return ki_error(e, f->src, f->merge.line, f->merge.col, f->merge.kind != MG_summary ?
			                "the case has summary rows but the policy's merge rule builds none" :
			                "summary rows %d .. %d of (layer %d, head %d) outside its %d rows",
			                c->sumat[k], c->sumat[k] + C - 1, k / c->H, k % c->H, n), -1;
	}
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (in->op == KO_input && (in->aux == IN_Q || in->aux == IN_qpos || in->aux == IN_lse) && c->O < 1)
			return ki_error(e, f->src, in->line, in->col,
			                "the policy reads %s but the case has no observation queries",
			                ki_inputname(in->aux)), -1;
		if (in->op == KO_input && in->aux == IN_lse && !c->lse)
			return ki_error(e, f->src, in->line, in->col, "the policy reads lse but the case has none"), -1;
		for (int k = 0; in->op == KO_input && (in->aux == IN_Q || in->aux == IN_qpos) && !c->qpos &&
		                k < c->L * c->H; k++)
			if (tokens(c, k / c->H, k % c->H) < c->O)
				return ki_error(e, f->src, in->line, in->col, "%d observation queries without qpos need "
				                "as many held tokens, but (layer %d, head %d) holds %d", c->O, k / c->H,
				                k % c->H, tokens(c, k / c->H, k % c->H)), -1;
	}
	return 0;
}

/* The case's weights for the policy's declarations: every declared weight given
** (by name), its shape what the declaration and the case say (layer L, head H,
** group G, chan d, out: the declared size, or one size for every out axis),
** every value finite. Errors point at the declaration. */
static int bindweights(Ctx *x)
{
	const KiFn *f = x->f;
	const KiCase *c = x->c;
	x->nout = 1;
	if (!f->nw)
		return 0;
	if (!(x->wd = calloc((size_t)f->nw, sizeof *x->wd))) {
		ki_error(x->e, f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	long out = 0;
	const char *outby = NULL;
	for (int i = 0; i < f->nw; i++) {
		const KiWeight *w = &f->w[i];
		const KiWData *d = NULL;
		for (int k = 0; k < c->nw && !d; k++)
			if (c->w[k].name && strcmp(c->w[k].name, w->name) == 0)
				d = &c->w[k];
		if (!d || !d->data)
			return ki_error(x->e, f->src, w->line, w->col, "weight '%s' is missing (the policy "
			                "declares it; give it by name, e.g. kvcc run --weights FILE.npz)", w->name), -1;
		long want[KI_MAXWDIM];
		int ok = d->ndim == w->ndim;
		char got[96] = "", exp[160] = "";
		for (int k = 0; k < w->ndim; k++) {
			switch (w->ax[k]) {
			case WA_layer: want[k] = c->L; break;
			case WA_head: want[k] = c->H; break;
			case WA_group: want[k] = c->G; break;
			case WA_chan: want[k] = c->d; break;
			default: want[k] = w->size ? w->size : out ? out : (k < d->ndim ? d->shape[k] : -1);
			}
			if (w->ax[k] == WA_out && k < d->ndim && !w->size && !out && d->shape[k] >= 1)
				out = d->shape[k], outby = w->name;
			ok = ok && want[k] == d->shape[k];
			snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%s %ld", k ? ", " : "",
			         ki_waxisname(w->ax[k]), want[k]);
		}
		for (int k = 0; k < d->ndim && k < KI_MAXWDIM; k++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%ld", k ? ", " : "", d->shape[k]);
		if (!ok)
			return ki_error(x->e, f->src, w->line, w->col, "weight '%s' has shape (%s), the policy "
			                "declares (%s)", w->name, got, exp), -1;
		for (int k = 0; k < w->ndim; k++)
			if (w->ax[k] == WA_out) {
				if (out && d->shape[k] != out)
					return ki_error(x->e, f->src, w->line, w->col, "weight '%s' has an out axis of "
					                "%ld, but weight '%s' gives out %ld", w->name, d->shape[k],
					                outby, out), -1;
				out = d->shape[k], outby = outby ? outby : w->name;
			}
		size_t cnt = 1;
		for (int k = 0; k < d->ndim; k++)
			cnt *= (size_t)d->shape[k];
		for (size_t k = 0; k < cnt; k++)
			if (!isfinite(d->data[k]))
				return ki_error(x->e, f->src, w->line, w->col, "weight '%s' holds %g at flat index %zu "
				                "(weights must be finite)", w->name, d->data[k], k), -1;
		x->wd[i] = d;
	}
	x->nout = out ? (int)out : 1;
	return 0;
}

int ki_run(const KiFn *f, const KiCase *c, KiResult *r, KiErr *e)
{
	memset(r, 0, sizeof *r);
	r->mgap = INFINITY;
	if (checkcase(f, c, e) != 0)
		return -1;
	Ctx x = { .f = f, .c = c, .e = e };
	size_t nkv = (size_t)c->L * c->H * c->n * c->d, nq = (size_t)c->L * c->H * c->G * c->O * c->d;
	size_t ntok = (size_t)c->L * c->H * c->n;
	x.par = malloc(((size_t)f->npar + 1) * sizeof *x.par);
	x.val = calloc((size_t)f->nins + 1, sizeof *x.val);
	x.K = malloc((nkv + 1) * sizeof(float));
	x.V = malloc((nkv + 1) * sizeof(float));
	x.Q = malloc((nq + 1) * sizeof(float));
	char *need = calloc((size_t)f->nins + 1, 1), *keep = calloc(ntok + 1, 1);
	long *nk = calloc((size_t)c->L * c->H, sizeof *nk);
	double *keepv = calloc((size_t)c->L * c->H, sizeof *keepv);
	r->L = c->L, r->H = c->H, r->n = c->n, r->d = c->d, r->nst = f->nst;
	r->scores = calloc(ntok + 1, sizeof *r->scores);
	r->len = calloc((size_t)c->L * c->H, sizeof *r->len);
	r->kept = calloc(ntok + 1, sizeof *r->kept);
	r->pos = calloc(ntok + 1, sizeof *r->pos);
	r->K = calloc(nkv + 1, sizeof *r->K);
	r->V = calloc(nkv + 1, sizeof *r->V);
	r->state = calloc(ntok * (size_t)f->nst + 1, sizeof *r->state);
	r->count = calloc(ntok + 1, sizeof *r->count);
	r->sumat = calloc((size_t)c->L * c->H, sizeof *r->sumat);
	r->tau = calloc((size_t)c->L * c->H, sizeof *r->tau);
	int rc = -1;
	if (!x.par || !x.val || !x.K || !x.V || !x.Q || !need || !keep || !nk || !keepv || !r->scores ||
	    !r->len || !r->kept || !r->pos || !r->K || !r->V || !r->state || !r->count || !r->sumat ||
	    !r->tau) {
		ki_error(e, f->src, 0, 0, "interpreter: out of memory");
		goto done;
	}
	for (int i = 0; i < f->npar; i++)
		x.par[i] = c->params ? c->params[i] : f->par[i].def;
	for (size_t k = 0; k < nkv; k++) {
		x.K[k] = ki_round(c->K[k], c->dtype);
		x.V[k] = ki_round(c->V[k], c->dtype);
	}
	for (size_t k = 0; k < nq; k++)
		x.Q[k] = ki_round(c->Q[k], c->dtype);

	if (bindweights(&x) != 0)
		goto done;
	mark(f, f->score, need);
	if (f->sel.keep)
		mark(f, f->sel.keep, need);
	for (int s = 0; s < f->nst; s++)
		if (ki_isscanstate(f, s))
			mark(f, f->st[s].update, need);
	if (f->merge.kind != MG_drop && markmerge(f, need) != 0) {
		ki_error(e, f->src, 0, 0, "interpreter: out of memory");
		goto done;
	}
	if (evaluate(&x, need) != 0)
		goto done;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			int n = tokens(c, l, h);
			int size[AX_NUM], idx[AX_NUM] = { 0 };
			dims(&x, l, h, size);
			Opnd s;         /* a scalar score (or a constant) broadcasts to every token */
			opnd(&x, f->score, l * c->H + h, size, &s);
			for (int t = 0; t < n; t++) {
				idx[AX_token] = t;
				r->scores[((size_t)l * c->H + h) * c->n + t] = at(&s, idx);
			}
			for (int t = n; t < c->n; t++)
				r->scores[((size_t)l * c->H + h) * c->n + t] = NAN;
			if (f->sel.keep) {
				opnd(&x, f->sel.keep, l * c->H + h, size, &s);
				keepv[l * c->H + h] = scalar(&s);
			}
		}
	if (ki_counts(f, c, x.par, r->scores, f->sel.keep ? keepv : NULL, nk, e) != 0)
		goto done;
	if (f->merge.kind == MG_summary ? selectsummary(&x, r->scores, nk, keep) :
	    f->sel.floor ? ki_selfloor(f, c, x.par, r->scores, nk, keep, e) :
	    selectkeep(&x, r->scores, nk, keep))
		goto done;
	if (f->merge.kind != MG_drop) {
		KiMergeIn mi = { f, c, e, x.par, x.val, x.K, x.V, r->scores, keep };
		if (ki_merge(&mi, r) != 0)
			goto done;
		rc = 0;
		goto done;
	}
	/* merge: drop — stable compaction of kept rows */
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			size_t lh = (size_t)l * c->H + h;
			int n = tokens(c, l, h), m = 0;
			for (int t = 0; t < n; t++) {
				if (!keep[lh * c->n + t])
					continue;
				r->kept[lh * c->n + m] = t;
				memcpy(&r->K[(lh * c->n + m) * c->d], &x.K[(lh * c->n + t) * c->d], (size_t)c->d * sizeof(float));
				memcpy(&r->V[(lh * c->n + m) * c->d], &x.V[(lh * c->n + t) * c->d], (size_t)c->d * sizeof(float));
				r->pos[lh * c->n + m] = posof(c, l, h, t);
				r->count[lh * c->n + m] = c->count ? c->count[lh * c->n + t] : 1;
				for (int s = 0; s < f->nst; s++)
					r->state[((size_t)s * c->L * c->H + lh) * c->n + m] =
						ki_isscanstate(f, s) ? x.val[KI_RIDX(f->st[s].update)][lh][t] :
						c->state ? c->state[((size_t)s * c->L * c->H + lh) * c->n + t] : f->st[s].init;
				m++;
			}
			r->len[lh] = m;
			r->sumat[lh] = -1;
			r->tau[lh] = c->tau ? c->tau[lh] : NAN;
		}
	rc = 0;
done:
	freevals(&x);
	free(need);
	free(keep);
	free(nk);
	free(keepv);
	if (rc != 0)
		ki_result_free(r);
	return rc;
}

int ki_observe(const KiFn *f, const KiCase *c0, const float *q, double *state, float *out, KiErr *e)
{
	KiCase c = *c0;
	c.state = state, c.O = 0, c.Q = NULL, c.lse = NULL;
	if (checkcase(f, &c, e) != 0)
		return -1;
	if (!q || !state)
		return ki_error(e, f->src, 0, 0, "observe needs queries and state"), -1;
	Ctx x = { .f = f, .c = &c, .e = e };
	size_t nkv = (size_t)c.L * c.H * c.n * c.d, ntok = (size_t)c.L * c.H * c.n;
	double *attn = calloc((size_t)c.G * ntok + 1, sizeof *attn);
	double *next = calloc((size_t)f->nst * ntok + 1, sizeof *next);
	char *need = calloc((size_t)f->nins + 1, 1);
	x.par = malloc(((size_t)f->npar + 1) * sizeof *x.par);
	x.val = calloc((size_t)f->nins + 1, sizeof *x.val);
	x.K = malloc((nkv + 1) * sizeof(float));
	x.V = malloc((nkv + 1) * sizeof(float));
	x.Q = NULL;
	int rc = -1;
	if (!attn || !next || !need || !x.par || !x.val || !x.K || !x.V) {
		ki_error(e, f->src, 0, 0, "interpreter: out of memory");
		goto done;
	}
	for (int i = 0; i < f->npar; i++)
		x.par[i] = c.params ? c.params[i] : f->par[i].def;
	for (size_t k = 0; k < nkv; k++)
		x.K[k] = ki_round(c.K[k], c.dtype), x.V[k] = ki_round(c.V[k], c.dtype);
	/* attention of this step's query: softmax over the held tokens */
	for (int l = 0; l < c.L; l++)
		for (int h = 0; h < c.H; h++)
			for (int g = 0; g < c.G; g++) {
				size_t lh = (size_t)l * c.H + h;
				const float *qq = &q[(lh * c.G + g) * c.d];
				double *p = &attn[(lh * c.G + g) * c.n], mx = -INFINITY, sum = 0;
				int n = tokens(&c, l, h);
				for (int t = 0; t < n; t++) {
					double dot = 0;
					for (int ch = 0; ch < c.d; ch++)
						dot += (double)ki_round(qq[ch], c.dtype) * x.K[(lh * c.n + t) * c.d + ch];
					p[t] = dot / sqrt((double)c.d);
					if (f->merge.bias)   /* count bias: log of the row's member count */
						p[t] += log(c.count ? c.count[lh * c.n + t] : 1);
					mx = p[t] > mx ? p[t] : mx;
				}
				for (int t = 0; t < n; t++)
					sum += (p[t] = exp(p[t] - mx));
				for (int t = 0; t < n; t++)
					p[t] /= sum;
				for (int ch = 0; out && ch < c.d; ch++) {
					double acc = 0;
					for (int t = 0; t < n; t++)
						acc += p[t] * x.V[(lh * c.n + t) * c.d + ch];
					out[(lh * c.G + g) * c.d + ch] = (float)acc;
				}
			}
	x.attn = attn;
	if (bindweights(&x) != 0)
		goto done;
	for (int s = 0; s < f->nst; s++)
		if (!ki_isscanstate(f, s))
			mark(f, f->st[s].update, need);
	if (evaluate(&x, need) != 0)
		goto done;
	/* all updates read the old state; write them after computing every one */
	for (int s = 0; s < f->nst; s++)
		for (int l = 0; l < c.L; l++)
			for (int h = 0; h < c.H; h++) {
				size_t lh = (size_t)l * c.H + h;
				int size[AX_NUM], idx[AX_NUM] = { 0 };
				dims(&x, l, h, size);
				Opnd o;
				opnd(&x, f->st[s].update, (int)lh, size, &o);
				for (int t = 0; t < tokens(&c, l, h); t++) {
					idx[AX_token] = t;
					next[((size_t)s * c.L * c.H + lh) * c.n + t] =
						ki_isscanstate(f, s) ? state[((size_t)s * c.L * c.H + lh) * c.n + t] : at(&o, idx);
				}
			}
	for (int s = 0; s < f->nst; s++)
		for (size_t lh = 0; lh < (size_t)c.L * c.H; lh++)
			for (int t = 0; t < tokens(&c, (int)(lh / c.H), (int)(lh % c.H)); t++)
				state[((size_t)s * c.L * c.H + lh) * c.n + t] = next[((size_t)s * c.L * c.H + lh) * c.n + t];
	rc = 0;
done:
	freevals(&x);
	free(attn);
	free(next);
	free(need);
	return rc;
}

void ki_result_free(KiResult *r)
{
	free(r->scores);
	free(r->len);
	free(r->kept);
	free(r->K);
	free(r->V);
	free(r->pos);
	free(r->state);
	free(r->count);
	free(r->sumat);
	free(r->tau);
	memset(r, 0, sizeof *r);
}
