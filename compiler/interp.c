/*
** Reference interpreter for KIR (see interp.h for the semantics it defines).
**
** Values: one dense double array per (instruction, instance), instance =
** (layer, head). A tensor's shape is the sizes of its axes in canonical order
** (group, obs, token, chan); absent axes have size 1, so every op is a loop
** over at most four indices with broadcasting by zero strides.
*/
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "compiler/interp.h"

typedef struct Ctx {
	const KiFn *f;
	const KiCase *c;
	KcErr *e;
	double *par;             /* runtime param values */
	double ***val;           /* [nins][L*H] arrays (NULL when not needed) */
	float *K, *V, *Q;        /* rounded copies */
	const double *attn;      /* decode: [L][H][G][n] probabilities, or NULL */
	const long *want;        /* [L][H] tokens to keep, or NULL: ki_nkeep (summary rows: selectsummary) */
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
	return dtype == KI_F16 ? round_f16(x) : dtype == KI_BF16 ? round_bf16(x) : x;
}

int ki_dtypebyname(const char *s)
{
	if (!strcmp(s, "f32") || !strcmp(s, "float32"))
		return KI_F32;
	if (!strcmp(s, "f16") || !strcmp(s, "float16"))
		return KI_F16;
	if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16"))
		return KI_BF16;
	return -1;
}

const char *ki_dtypename(int dt) { return dt == KI_F16 ? "f16" : dt == KI_BF16 ? "bf16" : "f32"; }

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

static void dims(const KiCase *c, int l, int h, int size[AX_NUM])
{
	size[AX_group] = c->G;
	size[AX_obs] = c->O;
	size[AX_token] = tokens(c, l, h);
	size[AX_chan] = c->d;
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

/* --- operand access ------------------------------------------------------------------ */

typedef struct Opnd {
	const double *p;         /* tensor data, or NULL for a scalar */
	double k;                /* scalar value */
	size_t st[AX_NUM];
} Opnd;

static void opnd(Ctx *x, KcRef r, int inst, const int size[AX_NUM], Opnd *o)
{
	memset(o, 0, sizeof *o);
	switch (KC_RKIND(r)) {
	case RK_CON: o->k = x->f->con[KC_RIDX(r)]; return;
	case RK_PAR: o->k = x->par[KC_RIDX(r)]; return;
	case RK_INS: {
		const KiIns *in = &x->f->ins[KC_RIDX(r)];
		strides(in->axes, size, o->st);
		o->p = x->val[KC_RIDX(r)] ? x->val[KC_RIDX(r)][inst] : NULL;
		if (!in->axes) {
			o->k = o->p ? o->p[0] : 0;
			o->p = NULL;
		}
		return;
	}
	}
}

static inline double at(const Opnd *o, int g, int ob, int t, int ch)
{
	if (!o->p)
		return o->k;
	return o->p[g * o->st[0] + ob * o->st[1] + t * o->st[2] + ch * o->st[3]];
}

/* --- one instruction on one instance ------------------------------------------------------- */

/* A reduction's combine and finish (ops.h CMB_*, FIN_*); count: the elements
** reduced (FIN_DIVK: the window size). */
static double combine(int comb, double acc, double v)
{
	switch (comb) {
	case CMB_MAX: return isnan(v) || v > acc ? v : acc;
	case CMB_MIN: return isnan(v) || v < acc ? v : acc;
	}
	return acc + v;
}

static double finish(int fin, double acc, double count)
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

/* Leaves (and rand, [token] from its seed): read from the case. */
static int evalleaf(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	const KiCase *c = x->c;
	const int *R = fr->R;
	const size_t *rs = fr->rs;
	int l = fr->l, h = fr->h, n = fr->size[AX_token];
	switch (in->op) {
	case KO_input: {
		size_t lh = (size_t)l * c->H + h;
		for (int g = 0; g < R[0]; g++)
			for (int o = 0; o < R[1]; o++)
				for (int t = 0; t < R[2]; t++)
					for (int ch = 0; ch < R[3]; ch++) {
						double v = 0;
						switch (in->aux) {
						case IN_K: v = x->K[(lh * c->n + t) * c->d + ch]; break;
						case IN_V: v = x->V[(lh * c->n + t) * c->d + ch]; break;
						case IN_Q: v = x->Q[((lh * c->G + g) * c->O + o) * c->d + ch]; break;
						case IN_lse: v = c->lse[(lh * c->G + g) * c->O + o]; break;
						case IN_pos: v = posof(c, l, h, t); break;
						case IN_qpos: v = qposof(c, l, h, o); break;
						}
						out[g * rs[0] + o * rs[1] + t * rs[2] + ch * rs[3]] = v;
					}
		return 0;
	}
	case KO_state: {
		const KiState *s = &x->f->st[in->aux];
		for (int t = 0; t < n; t++)
			out[t] = c->state ? c->state[(((size_t)in->aux * c->L + l) * c->H + h) * c->n + t] : s->init;
		return 0;
	}
	case KO_attn:
		for (int g = 0; g < c->G; g++)
			for (int t = 0; t < n; t++)
				out[g * rs[0] + t * rs[2]] = x->attn[(((size_t)l * c->H + h) * c->G + g) * c->n + t];
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
		}
		out[0] = v;
		return 0;
	}
	case KO_rand: {
		double s = fr->a.p ? fr->a.p[0] : fr->a.k;
		uint64_t seed = (uint64_t)(int64_t)s;
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
	const int *size = fr->size, *R = fr->R;
	const size_t *rs = fr->rs;
	size_t count = fr->count;
	/* iterate the operand space (result axes + the reduced axis); std's map
	** needs the mean, a first pass */
	const KiSem *sem = ki_sem(in->op);
	int ax = in->axis, S[AX_NUM];
	for (int k = 0; k < AX_NUM; k++)
		S[k] = R[k];
	S[ax] = size[ax];
	int m = size[ax];
	for (size_t k = 0; k < count; k++)
		out[k] = sem->init;
	double *mu = NULL;
	if (sem->map == MAP_DEV && !(mu = calloc(count, sizeof *mu))) {
		kc_error(x->e, x->f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	for (int pass = mu ? 0 : 1; pass < 2; pass++)
		for (int g = 0; g < S[0]; g++)
			for (int o = 0; o < S[1]; o++)
				for (int t = 0; t < S[2]; t++)
					for (int ch = 0; ch < S[3]; ch++) {
						int idx[AX_NUM] = { g, o, t, ch };
						idx[ax] = 0;
						size_t r = idx[0] * rs[0] + idx[1] * rs[1] + idx[2] * rs[2] + idx[3] * rs[3];
						double v = at(&fr->a, g, o, t, ch);
						if (pass == 0) {
							mu[r] += v / m;
							continue;
						}
						switch (sem->map) {
						case MAP_SQ: v = v * v; break;
						case MAP_MUL: v = v * at(&fr->b, g, o, t, ch); break;
						case MAP_DEV: v = (v - mu[r]) * (v - mu[r]); break;
						}
						out[r] = combine(sem->comb, out[r], v);
					}
	for (size_t k = 0; k < count; k++)
		out[k] = finish(sem->fin, out[k], m);
	free(mu);
	return 0;
}

/* Pools along `axis` (token) over a window of b tokens: the op's KS_RED row. */
static int evalpool(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	const int *R = fr->R;
	const size_t *rs = fr->rs;
	int m = fr->size[in->axis];
	const KiSem *sem = ki_sem(in->op);
	double kv = fr->b.p ? fr->b.p[0] : fr->b.k;
	if (!(kv >= 1 && kv <= 1e6) || kv != floor(kv)) {
		kc_error(x->e, x->f->src, in->line, in->col,
		         "pooling kernel size must be a positive integer, got %g", kv);
		return -1;
	}
	int k = (int)kv, p = k / 2;
	for (int g = 0; g < R[0]; g++)
		for (int o = 0; o < R[1]; o++)
			for (int ch = 0; ch < R[3]; ch++)
				for (int t = 0; t < m; t++) {
					double acc = sem->init;
					for (int j = t - p; j < t - p + k; j++)
						if (j >= 0 && j < m)   /* zero (avg) or -inf (max) padding */
							acc = combine(sem->comb, acc, at(&fr->a, g, o, j, ch));
					out[g * rs[0] + o * rs[1] + t * rs[2] + ch * rs[3]] = finish(sem->fin, acc, k);
				}
	return 0;
}

/* softmax over `axis`, in slices: max, sum of exp, then each probability. */
static void evalsoftmax(Ctx *x, const KiIns *in, const Frame *fr, double *out)
{
	const KiCase *c = x->c;
	const int *R = fr->R;
	const size_t *rs = fr->rs;
	int l = fr->l, h = fr->h, ax = in->axis, m = fr->size[ax];
	/* causal over token when obs is present */
	int causal = in->op == KO_softmax && ax == AX_token && (in->axes & AXM(AX_obs));
	for (int g = 0; g < R[0]; g++)
		for (int o = 0; o < R[1]; o++)
			for (int t = 0; t < R[2]; t++)
				for (int ch = 0; ch < R[3]; ch++) {
					int idx[AX_NUM] = { g, o, t, ch };
					if (idx[ax] != 0)
						continue;   /* one slice per position of the other axes */
					double mx = -INFINITY, sum = 0;
					for (int j = 0; j < m; j++) {
						idx[ax] = j;
						if (causal && posof(c, l, h, j) > qposof(c, l, h, o))
							continue;
						double v = at(&fr->a, idx[0], idx[1], idx[2], idx[3]);
						mx = v > mx ? v : mx;
					}
					for (int j = 0; j < m; j++) {
						idx[ax] = j;
						if (causal && posof(c, l, h, j) > qposof(c, l, h, o))
							continue;
						sum += exp(at(&fr->a, idx[0], idx[1], idx[2], idx[3]) - mx);
					}
					for (int j = 0; j < m; j++) {
						idx[ax] = j;
						double p = 0;
						if (!(causal && posof(c, l, h, j) > qposof(c, l, h, o)) && sum > 0)
							p = exp(at(&fr->a, idx[0], idx[1], idx[2], idx[3]) - mx) / sum;
						out[idx[0] * rs[0] + idx[1] * rs[1] + idx[2] * rs[2] + idx[3] * rs[3]] = p;
					}
				}
}

/* Instruction i on instance (l, h) into out (its axes, canonical strides). */
static int evalins(Ctx *x, int i, int l, int h, double *out)
{
	const KiCase *c = x->c;
	const KiIns *in = &x->f->ins[i];
	int inst = l * c->H + h;
	Frame fr = { .l = l, .h = h };
	dims(c, l, h, fr.size);
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
		for (int g = 0; g < fr.R[0]; g++)
			for (int o = 0; o < fr.R[1]; o++)
				for (int t = 0; t < fr.R[2]; t++)
					for (int ch = 0; ch < fr.R[3]; ch++)
						out[g * fr.rs[0] + o * fr.rs[1] + t * fr.rs[2] + ch * fr.rs[3]] =
							ki_evalew(in->op, at(&fr.a, g, o, t, ch), at(&fr.b, g, o, t, ch),
							          at(&fr.c, g, o, t, ch));
		return 0;
	case AR_RED:
	case AR_DOT:
		return evalred(x, in, &fr, out);
	case AR_KEEP:
		if (ki_sem(in->op)->kind == SEM_RED)
			return evalpool(x, in, &fr, out);
		evalsoftmax(x, in, &fr, out);
		return 0;
	case AR_SAME:
		return 0;            /* hmean: done across heads by evalhmean */
	}
	kc_error(x->e, x->f->src, in->line, in->col, "interpreter: op %s not handled", ki_opname(in->op));
	return -1;
}

/* mean over the heads of a layer (all heads must hold the same tokens) */
static int evalhmean(Ctx *x, int i)
{
	const KiCase *c = x->c;
	const KiIns *in = &x->f->ins[i];
	for (int l = 0; l < c->L; l++) {
		int size[AX_NUM];
		dims(c, l, 0, size);
		size_t st[AX_NUM], cnt = strides(in->axes, size, st);
		for (int h = 1; h < c->H; h++)
			if (tokens(c, l, h) != tokens(c, l, 0)) {
				kc_error(x->e, x->f->src, in->line, in->col,
				         "mean over heads needs equal lengths across the heads of layer %d", l);
				return -1;
			}
		const KiSem *sem = ki_sem(in->op);
		for (size_t k = 0; k < cnt; k++) {
			double s = sem->init;
			for (int h = 0; h < c->H; h++) {
				Opnd a;
				opnd(x, in->arg[0], l * c->H + h, size, &a);
				s = combine(sem->comb, s, a.p ? a.p[k] : a.k);
			}
			for (int h = 0; h < c->H; h++)
				x->val[i][l * c->H + h][k] = finish(sem->fin, s, c->H);
		}
	}
	return 0;
}

/* Mark the instructions reachable from `root`. */
static void mark(const KiFn *f, KcRef root, char *need)
{
	if (KC_RKIND(root) != RK_INS)
		return;
	int i = KC_RIDX(root);
	if (need[i])
		return;
	need[i] = 1;
	for (int k = 0; k < 3; k++)
		mark(f, f->ins[i].arg[k], need);
}

/* Evaluate every needed instruction for every instance, in order. */
static int evaluate(Ctx *x, const char *need)
{
	const KiCase *c = x->c;
	int ninst = c->L * c->H;
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
				dims(c, l, h, size);
				size_t cnt = strides(x->f->ins[i].axes, size, st);
				double *v = calloc(cnt ? cnt : 1, sizeof *v);
				if (!v)
					goto oom;
				x->val[i][l * c->H + h] = v;
				if (evalins(x, i, l, h, v) != 0)
					return -1;
			}
		if (x->f->ins[i].op == KO_hmean && evalhmean(x, i) != 0)
			return -1;
	}
	return 0;
oom:
	kc_error(x->e, x->f->src, 0, 0, "interpreter: out of memory");
	return -1;
}

static void freevals(Ctx *x)
{
	if (!x->val)
		return;
	for (int i = 0; i < x->f->nins; i++)
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
}

/* --- selection ------------------------------------------------------------------------ */

static double refval(const KiFn *f, const double *par, KcRef r, double def)
{
	switch (KC_RKIND(r)) {
	case RK_CON: return f->con[KC_RIDX(r)];
	case RK_PAR: return par ? par[KC_RIDX(r)] : f->par[KC_RIDX(r)].def;
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
static void pick(Cand *cs, int ncand, long want, const KiCase *c, char *keep)
{
	qsort(cs, (size_t)ncand, sizeof *cs, candcmp);
	long got = 0;
	for (int k = 0; k < ncand && got < want; k++) {
		if (got + cs[k].len > want)
			continue;        /* a chunk that does not fit; a smaller one may */
		for (int j = 0; j < cs[k].len; j++)
			keep[((size_t)cs[k].l * c->H + cs[k].h) * c->n + cs[k].t + j] = 1;
		got += cs[k].len;
	}
}

static int selectkeep(Ctx *x, const double *scores, char *keep)
{
	const KiFn *f = x->f;
	const KiCase *c = x->c;
	double vs = refval(f, x->par, f->sel.keep_first, 0), vr = refval(f, x->par, f->sel.keep_recent, 0);
	double vc = refval(f, x->par, f->sel.chunk, 1);
	if (!(vs >= 0 && vs <= 1e12) || !(vr >= 0 && vr <= 1e12) || !(vc >= 1 && vc <= 1e12)) {
		kc_error(x->e, f->src, f->sel.line, f->sel.col,
		         "select: keep_first and keep_recent must be in 0..1e12 and chunk in 1..1e12 "
		         "(got %g, %g, %g)", vs, vr, vc);
		return -1;
	}
	long S = (long)vs, Rr = (long)vr, ch = (long)vc;
	size_t maxc = (size_t)c->L * c->H * (size_t)c->n + 1;
	Cand *cs = malloc(maxc * sizeof *cs);
	if (!cs) {
		kc_error(x->e, f->src, 0, 0, "interpreter: out of memory");
		return -1;
	}
	int ncand = 0;
	long want = 0;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			long n = tokens(c, l, h);
			want += x->want ? x->want[(size_t)l * c->H + h] : ki_nkeep(f, x->par, l, c->L, n, c->ratio, c->budget);
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
			}
			int last = f->sel.scope == SC_head ||
			           (f->sel.scope == SC_layer && h == c->H - 1) ||
			           (l == c->L - 1 && h == c->H - 1);
			if (last) {
				pick(cs, ncand, want, c, keep);
				ncand = 0, want = 0;
			}
		}
	free(cs);
	return 0;
}

/* Selection under a merge rule with summary rows (merge.c): over the ordinary rows
** only (an existing summary block is always kept), a (layer, head) holding more rows
** than n_keep keeps n_keep - C ordinary ones; keep[] gets the physical rows. */
static int selectsummary(Ctx *x, const double *scores, char *keep)
{
	const KiCase *c = x->c;
	const KiFn *f = x->f;
	int C = ki_summaryrows(f), rc = -1;
	size_t nlh = (size_t)c->L * c->H, ntok = nlh * c->n;
	int32_t *olen = calloc(nlh, sizeof *olen);
	long *want = calloc(nlh, sizeof *want);
	double *osc = calloc(ntok + 1, sizeof *osc);
	char *okeep = calloc(ntok + 1, 1);
	int *ord = calloc((size_t)c->n + 1, sizeof *ord);
	if (!olen || !want || !osc || !okeep || !ord) {
		kc_error(x->e, f->src, 0, 0, "interpreter: out of memory");
		goto out;
	}
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			size_t lh = (size_t)l * c->H + h;
			int cex = c->sumat && c->sumat[lh] >= 0 ? C : 0, n = tokens(c, l, h);
			int no = ki_ordrows(c, cex, l, h, ord);
			long nk = ki_nkeep(f, x->par, l, c->L, n, c->ratio, c->budget);
			if (n > nk && nk < C) {
				kc_error(x->e, f->src, f->merge.line, f->merge.col, "merge summary: the budget keeps "
				         "%ld rows of (layer %d, head %d), fewer than its %d summary rows", nk, l, h, C);
				goto out;
			}
			want[lh] = n > nk ? nk - C : no;
			olen[lh] = no;
			for (int j = 0; j < no; j++)
				osc[lh * c->n + j] = scores[lh * c->n + ord[j]];
		}
	KiCase oc = *c;
	oc.len = olen;
	Ctx y = *x;
	y.c = &oc, y.want = want;
	if (selectkeep(&y, osc, okeep) != 0)
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
	free(olen), free(want), free(osc), free(okeep), free(ord);
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
	KcRef roots[4] = { m->sim, m->threshold, m->weight, m->self };
	for (int k = 0; k < 4; k++)
		if (KC_RKIND(roots[k]) == RK_INS)
			reach[KC_RIDX(roots[k])] = 1;
	for (int i = f->nins - 1; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!reach[i])
			continue;
		if (!ctx[i] || in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean) {
			mark(f, ctx[i] ? in->arg[0] : KC_REF(RK_INS, i), need);
			continue;
		}
		for (int k = 0; k < 3; k++)
			if (KC_RKIND(in->arg[k]) == RK_INS)
				reach[KC_RIDX(in->arg[k])] = 1;
	}
	free(ctx), free(reach);
	return 0;
}

/* --- the entry point -------------------------------------------------------------------- */

static int checkcase(const KiFn *f, const KiCase *c, KcErr *e)
{
	if (c->L < 1 || c->H < 1 || c->G < 1 || c->d < 1 || c->n < 0 || c->O < 0)
		return kc_error(e, f->src, 0, 0, "bad case shape L=%d H=%d G=%d d=%d n=%d O=%d",
		                c->L, c->H, c->G, c->d, c->n, c->O), -1;
	if (!c->K || !c->V)
		return kc_error(e, f->src, 0, 0, "case has no K or V"), -1;
	if (c->O > 0 && !c->Q)
		return kc_error(e, f->src, 0, 0, "case has %d observation queries but no Q", c->O), -1;
	if (c->budget < 0 && !(c->ratio >= 0 && c->ratio < 1))
		return kc_error(e, f->src, 0, 0, "ratio must be in [0, 1), got %g", c->ratio), -1;
	for (int k = 0; c->len && k < c->L * c->H; k++)
		if (c->len[k] < 0 || c->len[k] > c->n)
			return kc_error(e, f->src, 0, 0, "length %d of (layer %d, head %d) outside 0..%d",
			                c->len[k], k / c->H, k % c->H, c->n), -1;
	int C = ki_summaryrows(f);
	for (int k = 0; c->sumat && k < c->L * c->H; k++) {
		int n = c->len ? c->len[k] : c->n;
		if (c->sumat[k] >= 0 && (f->merge.kind != MG_summary || c->sumat[k] + C > n))
			return kc_error(e, f->src, f->merge.line, f->merge.col, f->merge.kind != MG_summary ?
			                "the case has summary rows but the policy's merge rule builds none" :
			                "summary rows %d .. %d of (layer %d, head %d) outside its %d rows",
			                c->sumat[k], c->sumat[k] + C - 1, k / c->H, k % c->H, n), -1;
	}
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (in->op == KO_input && (in->aux == IN_Q || in->aux == IN_qpos || in->aux == IN_lse) && c->O < 1)
			return kc_error(e, f->src, in->line, in->col,
			                "the policy reads %s but the case has no observation queries",
			                ki_inputname(in->aux)), -1;
		if (in->op == KO_input && in->aux == IN_lse && !c->lse)
			return kc_error(e, f->src, in->line, in->col, "the policy reads lse but the case has none"), -1;
		for (int k = 0; in->op == KO_input && (in->aux == IN_Q || in->aux == IN_qpos) && !c->qpos &&
		                k < c->L * c->H; k++)
			if (tokens(c, k / c->H, k % c->H) < c->O)
				return kc_error(e, f->src, in->line, in->col, "%d observation queries without qpos need "
				                "as many held tokens, but (layer %d, head %d) holds %d", c->O, k / c->H,
				                k % c->H, tokens(c, k / c->H, k % c->H)), -1;
	}
	return 0;
}

int ki_run(const KiFn *f, const KiCase *c, KiResult *r, KcErr *e)
{
	memset(r, 0, sizeof *r);
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
	if (!x.par || !x.val || !x.K || !x.V || !x.Q || !need || !keep || !r->scores || !r->len ||
	    !r->kept || !r->pos || !r->K || !r->V || !r->state || !r->count || !r->sumat || !r->tau) {
		kc_error(e, f->src, 0, 0, "interpreter: out of memory");
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

	mark(f, f->score, need);
	if (f->merge.kind != MG_drop && markmerge(f, need) != 0) {
		kc_error(e, f->src, 0, 0, "interpreter: out of memory");
		goto done;
	}
	if (evaluate(&x, need) != 0)
		goto done;
	for (int l = 0; l < c->L; l++)
		for (int h = 0; h < c->H; h++) {
			int n = tokens(c, l, h);
			int size[AX_NUM];
			dims(c, l, h, size);
			Opnd s;         /* a scalar score (or a constant) broadcasts to every token */
			opnd(&x, f->score, l * c->H + h, size, &s);
			for (int t = 0; t < n; t++)
				r->scores[((size_t)l * c->H + h) * c->n + t] = at(&s, 0, 0, t, 0);
			for (int t = n; t < c->n; t++)
				r->scores[((size_t)l * c->H + h) * c->n + t] = NAN;
		}
	if ((f->merge.kind == MG_summary ? selectsummary(&x, r->scores, keep) :
	     selectkeep(&x, r->scores, keep)) != 0)
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
	if (rc != 0)
		ki_result_free(r);
	return rc;
}

int ki_observe(const KiFn *f, const KiCase *c0, const float *q, double *state, float *out, KcErr *e)
{
	KiCase c = *c0;
	c.state = state, c.O = 0, c.Q = NULL, c.lse = NULL;
	if (checkcase(f, &c, e) != 0)
		return -1;
	if (!q || !state)
		return kc_error(e, f->src, 0, 0, "observe needs queries and state"), -1;
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
		kc_error(e, f->src, 0, 0, "interpreter: out of memory");
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
	for (int s = 0; s < f->nst; s++)
		mark(f, f->st[s].update, need);
	if (evaluate(&x, need) != 0)
		goto done;
	/* all updates read the old state; write them after computing every one */
	for (int s = 0; s < f->nst; s++)
		for (int l = 0; l < c.L; l++)
			for (int h = 0; h < c.H; h++) {
				size_t lh = (size_t)l * c.H + h;
				int size[AX_NUM];
				dims(&c, l, h, size);
				Opnd o;
				opnd(&x, f->st[s].update, (int)lh, size, &o);
				for (int t = 0; t < tokens(&c, l, h); t++)
					next[((size_t)s * c.L * c.H + lh) * c.n + t] = at(&o, 0, 0, t, 0);
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
