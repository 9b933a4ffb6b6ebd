/*
** KIR construction and the tables every stage shares: op names and rules
** (from ops.h), axis, input and info names, the axis rule that gives an
** instruction its result axes, and the policy hash used by the cache.
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>
#include "compiler/ir.h"

#define AR_ARG(name, nargs, rule, flags, sem, doc) \
	{ #name, nargs, AR_##rule, flags, doc },
static const struct {
	const char *name;
	int nargs, rule, flags;
	const char *doc;
} optab[KO_NUM] = { KI_OPS(AR_ARG) };
#undef AR_ARG

/* the sem column as KiSem rows */
#define KS_LEAF             { SEM_LEAF, 0, 0, 0, 0, NAN, NAN, NULL }
#define KS_SPECIAL          { SEM_SPECIAL, 0, 0, 0, 0, NAN, NAN, NULL }
#define KS_EW(v, c, l, r)   { SEM_EW, 0, 0, 0, 0, l, r, c }
#define KS_RED(i, m, k, f)  { SEM_RED, m, k, f, i, NAN, NAN, NULL }
#define SEM_ROW(name, nargs, rule, flags, sem, doc) [KO_##name] = sem,
static const KiSem semtab[KO_NUM] = { KI_OPS(SEM_ROW) };
#undef SEM_ROW
#undef KS_LEAF
#undef KS_SPECIAL
#undef KS_EW
#undef KS_RED

static const char *const axisnames[AX_NUM + 1] = { "group", "obs", "token", "chan", "out", "head" };
static const char *const inputnames[IN_NUM] = { "K", "V", "Q", "lse", "pos", "qpos" };
static const uint8_t inputaxes[IN_NUM] = {
	[IN_K] = AXM(AX_token) | AXM(AX_chan),
	[IN_V] = AXM(AX_token) | AXM(AX_chan),
	[IN_Q] = AXM(AX_group) | AXM(AX_obs) | AXM(AX_chan),
	[IN_lse] = AXM(AX_group) | AXM(AX_obs),
	[IN_pos] = AXM(AX_token),
	[IN_qpos] = AXM(AX_obs),
};
static const char *const infonames[INF_NUM] = { "scale", "layer", "head", "nlayers", "nheads", "step",
                                                  "ratio", "nkeep" };
static const char *const scopenames[] = { "head", "layer", "model" };
static const char *const mergenames[MG_NUM] = { "drop", "nearest", "next", "runs", "summary" };
static const char *const pinfonames[PI_NUM] = { "sim", "absorbed", "ntargets", "ecount", "kcount" };
static const char *const schednames[] = { "none", "pyramid", "prefix", "dynamic" };
static const char *const selnames[] = { "topk", "threshold", "mass" };
static const char *const waxisnames[WA_NUM] = { "layer", "head", "group", "chan", "out" };

const char *ki_opname(int op) { return op >= 0 && op < KO_NUM ? optab[op].name : "?"; }
int ki_nargs(int op) { return optab[op].nargs; }
int ki_rule(int op) { return optab[op].rule; }
int ki_flags(int op) { return optab[op].flags; }
const char *ki_opdoc(int op) { return optab[op].doc; }
const KiSem *ki_sem(int op) { return &semtab[op]; }
const char *ki_axisname(int ax) { return ax >= 0 && ax <= AX_NUM ? axisnames[ax] : "?"; }
const char *ki_inputname(int in) { return in >= 0 && in < IN_NUM ? inputnames[in] : "?"; }
uint8_t ki_inputaxes(int in) { return inputaxes[in]; }
const char *ki_infoname(int inf) { return inf >= 0 && inf < INF_NUM ? infonames[inf] : "?"; }
const char *ki_scopename(int sc) { return sc >= 0 && sc <= SC_model ? scopenames[sc] : "?"; }
const char *ki_schedname(int s) { return s >= 0 && s <= SCH_dynamic ? schednames[s] : "?"; }
const char *ki_selname(int k) { return k >= 0 && k <= SEL_mass ? selnames[k] : "?"; }
const char *ki_waxisname(int wa) { return wa >= 0 && wa < WA_NUM ? waxisnames[wa] : "?"; }

const char *ki_mergename(int k) { return k >= 0 && k < MG_NUM ? mergenames[k] : "?"; }
const char *ki_pinfoname(int pi) { return pi >= 0 && pi < PI_NUM ? pinfonames[pi] : "?"; }
int ki_ispairop(int op) { return op == KO_erow || op == KO_krow || op == KO_tmean || op == KO_pinfo; }

static int lookup(const char *const *names, int n, const char *s, size_t len)
{
	for (int i = 0; i < n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return i;
	return -1;
}

int ki_opbyname(const char *s, size_t len)
{
	for (int i = 0; i < KO_NUM; i++)
		if (strlen(optab[i].name) == len && memcmp(optab[i].name, s, len) == 0)
			return i;
	return -1;
}
int ki_axisbyname(const char *s, size_t len) { return lookup(axisnames, AX_NUM + 1, s, len); }
int ki_inputbyname(const char *s, size_t len) { return lookup(inputnames, IN_NUM, s, len); }
int ki_infobyname(const char *s, size_t len) { return lookup(infonames, INF_NUM, s, len); }
int ki_mergebyname(const char *s, size_t len) { return lookup(mergenames, MG_NUM, s, len); }
int ki_pinfobyname(const char *s, size_t len) { return lookup(pinfonames, PI_NUM, s, len); }

/*
** Which pair values each instruction reads (KI_P* flags, through its
** operands): erow → KI_PE, krow → KI_PK, tmean → KI_PTGT, pinfo by name.
** The operand of erow, krow and tmean is an ordinary value (the verifier
** checks it), so those three start a pair value afresh.
*/
void ki_pairctx(const KiFn *f, uint8_t *ctx)
{
	static const uint8_t pinfoflag[PI_NUM] = {
		[PI_sim] = KI_PSIM, [PI_absorbed] = KI_PABS, [PI_ntargets] = KI_PTGT,
		[PI_ecount] = KI_PE, [PI_kcount] = KI_PK,
	};
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		uint8_t c = 0;
		switch (in->op) {
		case KO_erow: c = KI_PE; break;
		case KO_krow: c = KI_PK; break;
		case KO_tmean: c = KI_PTGT; break;
		case KO_pinfo: c = in->aux < PI_NUM ? pinfoflag[in->aux] : 0; break;
		default:
			for (int k = 0; k < 3; k++)
				if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
					c |= ctx[KI_RIDX(in->arg[k])];
		}
		ctx[i] = c;
	}
}
int ki_waxisbyname(const char *s, size_t len) { return lookup(waxisnames, WA_NUM, s, len); }

/* "[group, obs, token]" in canonical order; "[]" for a scalar. */
void ki_axesstr(uint8_t axes, char *buf, size_t len)
{
	size_t k = 0;
	k += (size_t)snprintf(buf + k, len - k, "[");
	for (int ax = 0, first = 1; ax < AX_NUM && k < len; ax++)
		if (axes & AXM(ax)) {
			k += (size_t)snprintf(buf + k, len - k, "%s%s", first ? "" : ", ", axisnames[ax]);
			first = 0;
		}
	if (k < len)
		snprintf(buf + k, len - k, "]");
}

KiFn *ki_new(const char *name, const char *src)
{
	KiFn *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	snprintf(f->name, sizeof f->name, "%s", name ? name : "policy");
	snprintf(f->src, sizeof f->src, "%s", src ? src : "policy");
	f->sel.chunk = KI_NIL;
	return f;
}

void ki_free(KiFn *f)
{
	if (!f)
		return;
	free(f->ins);
	free(f->con);
	free(f->par);
	free(f->st);
	free(f->w);
	free(f);
}

/* A copy of n bytes (NULL for none); *ok = 0 when memory runs out. */
static void *dup(const void *p, size_t n, int *ok)
{
	if (!n)
		return NULL;
	void *q = ki_realloc(NULL, n);
	if (!q)
		*ok = 0;
	else
		memcpy(q, p, n);
	return q;
}

KiFn *ki_clone(const KiFn *f)
{
	KiFn *g = ki_realloc(NULL, sizeof *g);
	if (!g)
		return NULL;
	int ok = 1;
	*g = *f;
	g->ins = dup(f->ins, (size_t)f->nins * sizeof *f->ins, &ok);
	g->con = dup(f->con, (size_t)f->ncon * sizeof *f->con, &ok);
	g->par = dup(f->par, (size_t)f->npar * sizeof *f->par, &ok);
	g->st = dup(f->st, (size_t)f->nst * sizeof *f->st, &ok);
	g->w = dup(f->w, (size_t)f->nw * sizeof *f->w, &ok);
	g->capins = f->nins, g->capcon = f->ncon, g->cappar = f->npar, g->capst = f->nst;
	g->capw = f->nw;
	if (!ok) {
		ki_free(g);
		return NULL;
	}
	return g;
}

/* Room for element n of a side table of *cap elements: the table (moved when it
** grew), or NULL when memory runs out (the table is then unchanged). */
static void *room(void *p, int n, int *cap, size_t elem)
{
	if (n < *cap)
		return p;
	int nc = *cap ? 2 * *cap : 16;
	void *q = nc > *cap ? ki_realloc(p, (size_t)nc * elem) : NULL;
	if (q)
		*cap = nc;
	return q;
}

KiRef ki_emit(KiFn *f, const KiIns *ins)
{
	KiIns *t = room(f->ins, f->nins, &f->capins, sizeof *t);
	if (!t)
		return KI_NIL;
	f->ins = t;
	f->ins[f->nins] = *ins;
	return KI_REF(RK_INS, f->nins++);
}

/* Constants are interned: equal values share one slot (bitwise, so -0 != 0). */
KiRef ki_const(KiFn *f, double v)
{
	for (int i = 0; i < f->ncon; i++)
		if (memcmp(&f->con[i], &v, sizeof v) == 0)
			return KI_REF(RK_CON, i);
	double *t = room(f->con, f->ncon, &f->capcon, sizeof *t);
	if (!t)
		return KI_NIL;
	f->con = t;
	f->con[f->ncon] = v;
	return KI_REF(RK_CON, f->ncon++);
}

int ki_findparam(const KiFn *f, const char *name)
{
	for (int i = 0; i < f->npar; i++)
		if (strcmp(f->par[i].name, name) == 0)
			return i;
	return -1;
}

int ki_addparam(KiFn *f, const char *name, double def, uint32_t line, uint32_t col)
{
	int i = ki_findparam(f, name);
	if (i >= 0)
		return i;
	KiParam *t = room(f->par, f->npar, &f->cappar, sizeof *t);
	if (!t)
		return -1;
	f->par = t;
	KiParam *p = &f->par[f->npar];
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "%s", name);
	p->def = def, p->line = line, p->col = col;
	return f->npar++;
}

int ki_findstate(const KiFn *f, const char *name)
{
	for (int i = 0; i < f->nst; i++)
		if (strcmp(f->st[i].name, name) == 0)
			return i;
	return -1;
}

int ki_addstate(KiFn *f, const char *name, double init)
{
	int i = ki_findstate(f, name);
	if (i >= 0)
		return i;
	KiState *t = room(f->st, f->nst, &f->capst, sizeof *t);
	if (!t)
		return -1;
	f->st = t;
	KiState *s = &f->st[f->nst];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", name);
	s->init = init;
	return f->nst++;
}

int ki_findweight(const KiFn *f, const char *name)
{
	for (int i = 0; i < f->nw; i++)
		if (strcmp(f->w[i].name, name) == 0)
			return i;
	return -1;
}

/* Add a weight declaration (a copy of *w); returns its number, -1 when the
** name is taken, or -2 when memory runs out. */
int ki_addweight(KiFn *f, const KiWeight *w)
{
	if (ki_findweight(f, w->name) >= 0)
		return -1;
	KiWeight *t = room(f->w, f->nw, &f->capw, sizeof *t);
	if (!t)
		return -2;
	f->w = t;
	f->w[f->nw] = *w;
	return f->nw++;
}

uint8_t ki_weightaxes(const KiWeight *w)
{
	uint8_t m = 0;
	for (int k = 0; k < w->ndim && k < KI_MAXWDIM; k++)
		switch (w->ax[k]) {
		case WA_group: m |= AXM(AX_group); break;
		case WA_chan: m |= AXM(AX_chan); break;
		case WA_out: m |= AXM(AX_out); break;
		}
	return m;
}

/* A scan state: its update is the scan instruction that names it. */
int ki_isscanstate(const KiFn *f, int s)
{
	KiRef u = f->st[s].update;
	return KI_RKIND(u) == RK_INS && KI_RIDX(u) < f->nins && f->ins[KI_RIDX(u)].op == KO_scan &&
	       f->ins[KI_RIDX(u)].aux == s;
}

/* Axes of an operand: constants and parameters are scalars. */
uint8_t ki_refaxes(const KiFn *f, KiRef r)
{
	if (KI_RKIND(r) == RK_INS && KI_RIDX(r) < f->nins)
		return f->ins[KI_RIDX(r)].axes;
	return 0;
}

/*
** The axis rule of ops.h: compute the result axes of `op` applied to `arg`
** (and `axis`). Returns 0, or -1 with a reason in `why` (used by the builder
** and the verifier, which add the position).
*/
int ki_resultaxes(const KiFn *f, int op, const KiRef *arg, int axis, uint8_t *axes,
                  char *why, size_t whylen)
{
	uint8_t a = 0, u = 0;
	char buf[64];
	int n = ki_nargs(op);
	for (int i = 0; i < n; i++)
		u |= ki_refaxes(f, arg[i]);
	if (n > 0)
		a = ki_refaxes(f, arg[0]);
	switch (ki_rule(op)) {
	case AR_LEAF:
		return 0;        /* the instruction carries its axes */
	case AR_EW:
		*axes = u;
		return 0;
	case AR_TOK:
		if (u) {
			ki_axesstr(u, buf, sizeof buf);
			snprintf(why, whylen, "%s expects a scalar operand but it has axes %s",
			         ki_opname(op), buf);
			return -1;
		}
		*axes = AXM(AX_token);
		return 0;
	case AR_SAME:
		*axes = a;
		return 0;
	case AR_ROW:
		if (!(a & AXM(AX_token))) {
			ki_axesstr(a, buf, sizeof buf);
			snprintf(why, whylen, "%s reads a value at a token, but its operand has axes %s "
			         "(no token axis)", ki_opname(op), buf);
			return -1;
		}
		*axes = (uint8_t)(a & ~AXM(AX_token));
		return 0;
	case AR_SCAN:
		if (a & ~AXM(AX_token) || ki_refaxes(f, arg[1])) {
			snprintf(why, whylen, "a scan's step must have axes within [token] and its start "
			         "value must be a scalar");
			return -1;
		}
		*axes = AXM(AX_token);
		return 0;
	case AR_SEG:
		if (axis != AX_token || !(a & AXM(AX_token))) {
			ki_axesstr(a, buf, sizeof buf);
			snprintf(why, whylen, "%s runs over segments of 'token', but the operand has axes %s",
			         ki_opname(op), buf);
			return -1;
		}
		if (ki_refaxes(f, arg[1]) || ki_refaxes(f, arg[2])) {
			snprintf(why, whylen, "%s: the segment size and start must be scalars", ki_opname(op));
			return -1;
		}
		*axes = a;
		return 0;
	case AR_RED:
	case AR_KEEP:
	case AR_DOT:
		if (axis < 0 || axis >= AX_NUM) {
			snprintf(why, whylen, "%s needs an axis", ki_opname(op));
			return -1;
		}
		if (ki_rule(op) == AR_DOT) {
			for (int i = 0; i < 2; i++) {
				uint8_t x = ki_refaxes(f, arg[i]);
				if (!(x & AXM(axis))) {
					ki_axesstr(x, buf, sizeof buf);
					snprintf(why, whylen, "dot over axis '%s' but the %s operand has axes %s",
					         ki_axisname(axis), i ? "second" : "first", buf);
					return -1;
				}
			}
			*axes = (uint8_t)(u & ~AXM(axis));
			return 0;
		}
		if (!(a & AXM(axis))) {
			ki_axesstr(a, buf, sizeof buf);
			snprintf(why, whylen, "%s over axis '%s' but the operand has axes %s",
			         ki_rule(op) == AR_RED ? "reduce" : ki_opname(op), ki_axisname(axis), buf);
			return -1;
		}
		if ((op == KO_avgpool || op == KO_maxpool) && axis != AX_token) {
			snprintf(why, whylen, "pooling runs along 'token', not '%s'", ki_axisname(axis));
			return -1;
		}
		if ((op == KO_avgpool || op == KO_maxpool) && ki_refaxes(f, arg[1])) {
			snprintf(why, whylen, "the pooling kernel size must be a scalar");
			return -1;
		}
		if (op == KO_shift && axis != AX_token && axis != AX_chan) {
			snprintf(why, whylen, "shift runs along 'token' or 'chan', not '%s'", ki_axisname(axis));
			return -1;
		}
		if (op == KO_shift && (ki_refaxes(f, arg[1]) || ki_refaxes(f, arg[2]))) {
			snprintf(why, whylen, "shift: the offset and the fill value must be scalars");
			return -1;
		}
		*axes = ki_rule(op) == AR_RED ? (uint8_t)(a & ~AXM(axis)) : a;
		return 0;
	}
	snprintf(why, whylen, "unknown axis rule");
	return -1;
}

/* max and min of the KS_EW value column: NaN if either is NaN; max(-0, 0) =
** max(0, -0) = 0 and min of them = -0, so swapping the operands of these
** commutative ops (canon does) never changes a result. */
static double ki_fmax(double a, double b)
{
	return isnan(a) || isnan(b) ? NAN : a > b ? a : b > a ? b : signbit(a) ? b : a;
}

static double ki_fmin(double a, double b)
{
	return isnan(a) || isnan(b) ? NAN : a < b ? a : b < a ? b : signbit(a) ? a : b;
}

/*
** The meaning of the elementwise ops in double precision: the value column of
** their KS_EW row. The reference interpreter evaluates them with this, and
** constant folding too, so a folded policy computes exactly what the unfolded
** one does. Comparisons give 1 or 0. NaN for an op that is not elementwise.
*/
double ki_evalew(int op, double a, double b, double c)
{
	(void)b, (void)c;
#define KS_LEAF             break;
#define KS_SPECIAL          break;
#define KS_EW(v, cu, l, r)  return (v);
#define KS_RED(i, m, k, f)  break;
#define EV_CASE(name, nargs, rule, flags, sem, doc) case KO_##name: sem
	switch (op) {
	KI_OPS(EV_CASE)
	}
#undef EV_CASE
#undef KS_LEAF
#undef KS_SPECIAL
#undef KS_EW
#undef KS_RED
	return NAN;
}

/* FNV-1a, 64 bit. */
uint64_t ki_fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *s = p;
	if (!h)
		h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

/* Hash of the canonical text form without source positions: equal policies
** written differently (after passes) hash equal; positions never matter.
** 0 when memory runs out. */
uint64_t ki_hash(const KiFn *f)
{
	KiFn *g = ki_clone(f);
	if (!g)
		return 0;
	for (int i = 0; i < g->nins; i++)
		g->ins[i].line = g->ins[i].col = 0;
	for (int i = 0; i < g->npar; i++)
		g->par[i].line = g->par[i].col = 0;
	for (int i = 0; i < g->nw; i++)
		g->w[i].line = g->w[i].col = 0;
	g->line = g->col = g->sel.line = g->sel.col = 0;
	g->merge.line = g->merge.col = g->when.line = g->when.col = 0;
	g->src[0] = 0;
	char *s = ki_print(g);
	uint64_t h = s ? ki_fnv(s, strlen(s), 0) : 0;
	free(s);
	ki_free(g);
	return h;
}
