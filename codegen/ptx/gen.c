/*
** KIR → CUDA C (DESIGN §5 skeletons, GPU side).
**
** Kernels per policy (one block per (layer, head) instance, KV_NT threads):
**   kv_score<P>  attn_stats + attn_score + token_map, fused; one kernel per
**                phase, phases split at hmean (a cross-head barrier)
**   kv_select    radix select over float bits (4 × 8-bit histograms in shared
**                memory), protections, chunks, per-head budgets (pyramid) —
**                fused with the stable in-place compaction of K, V, pos, state
**   kv_select_grp  select scopes layer / model: one block per scope group ranks the
**                group's chunks (weighted radix select, greedy shorter chunks) and
**                leaves each instance a record that kv_select compacts from
**   kv_decode    one decode step, split-KV: grid (instance, split), each warp an
**                online-softmax partial (m, s, sum p·V) of its token range
**   kv_decode_comb  merges the partials: attention output, x.attn, the observe hook
**
** Values. Every needed instruction has a home:
**   INL   recomputed where used, as an expression of the loop indices
**         (leaves, elementwise ops, and the Q·Kᵀ dot over chan — the tile)
**   BUF   materialized in the per-instance global workspace (reductions,
**         pools, hmean, and what pools/hmean read)
**   STAT  softmax: its (max, sum) per slice in the workspace; the
**         probability is recomputed inline from the logit
** A BUF step reducing over token runs warp-per-output (lanes stride the
** tokens, shuffle reduction); other steps run thread-per-output. The
** [obs × token] attention is never stored: stats then the obs reduction
** each recompute the logits (two passes, like attn_stats + attn_score).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include <time.h>
#include "codegen/ptx/ptx.h"
#include "compiler/interp.h"
#include "compiler/plan.h"

#define HAS(m, ax) (((m) & AXM(ax)) != 0)

enum { HM_NONE, HM_INL, HM_BUF, HM_STAT };

typedef struct Sb {
	char *p;
	size_t n, cap;
	int oom;
} Sb;

static void sbv(Sb *s, const char *fmt, va_list ap)
{
	va_list aq;
	va_copy(aq, ap);
	int k = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (k < 0)
		return;
	if (s->n + (size_t)k + 1 > s->cap) {
		size_t nc = (s->cap ? s->cap * 2 : 4096);
		while (nc < s->n + (size_t)k + 1)
			nc *= 2;
		char *q = realloc(s->p, nc);
		if (!q) {
			s->oom = 1;
			return;
		}
		s->p = q, s->cap = nc;
	}
	vsnprintf(s->p + s->n, (size_t)k + 1, fmt, ap);
	s->n += (size_t)k;
}

static void sb(Sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb(Sb *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sbv(s, fmt, ap);
	va_end(ap);
}

typedef struct Gen {
	const KiFn *f;
	KcErr *e;
	int dtype, D, G, NT;
	uint8_t *home;       /* [nins] HM_* */
	int *phase;          /* [nins] */
	long long (*off)[4]; /* [nins] workspace offset coefficients (1, N, O, N*O) */
	long long cur[4];    /* running allocation */
	long long wsmax[4];
	int decode;          /* emitting the decode program: attn available */
	int tctx;            /* emitting a tiled step body: Q·Kᵀ comes from the logit tile sS_ */
	int minblk;          /* prologue: __launch_bounds__ minimum blocks per SM (0: none) */
	int tmp;
	Sb s;
} Gen;

/* index variable names for g, o, t, c in the current body (NULL: unbound) */
typedef struct Idx {
	const char *v[AX_NUM];
} Idx;

static int err(Gen *g, const KiIns *in, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int err(Gen *g, const KiIns *in, const char *fmt, ...)
{
	if (g->e->set)
		return -1;
	char buf[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	kc_error(g->e, g->f->src, in ? in->line : g->f->line, in ? in->col : g->f->col, "GPU backend: %s", buf);
	return -1;
}

static void flit(char *buf, size_t n, double v)
{
	if (isnan(v))
		snprintf(buf, n, "kv_nan()");
	else if (isinf(v))
		snprintf(buf, n, v > 0 ? "kv_inf()" : "(-kv_inf())");
	else
		snprintf(buf, n, "%.9g", (double)(float)v), strncat(buf, strchr(buf, '.') || strchr(buf, 'e') ? "f" : ".f", n - strlen(buf) - 1);
}

/* a ref that is a runtime scalar known without instructions (const, param) as a double expression */
static int dscalar(const Gen *g, KcRef r, char *buf, size_t n, double def)
{
	switch (KC_RKIND(r)) {
	case RK_CON: snprintf(buf, n, "%.17g", g->f->con[KC_RIDX(r)]); return 0;
	case RK_PAR: snprintf(buf, n, "a.par[%d]", KC_RIDX(r)); return 0;
	case RK_NIL: snprintf(buf, n, "%.17g", def); return 0;
	}
	return -1;
}

static const char *axsize(int ax)
{
	static const char *s[AX_NUM] = { "KV_G", "O", "n", "KV_D" };
	return s[ax];
}

/* buffer index of a value with axes m (token stride N) */
static void bufidx(uint8_t m, const Idx *ix, char *buf, size_t n)
{
	static const char *st[AX_NUM] = { "KV_G", "O", "N", "KV_D" };
	char t[256] = "0";
	for (int ax = 0; ax < AX_NUM; ax++)
		if (HAS(m, ax)) {
			char u[256];
			if (!strcmp(t, "0"))
				snprintf(u, sizeof u, "(%s)", ix->v[ax]);
			else
				snprintf(u, sizeof u, "(%s)*%s+(%s)", t, st[ax], ix->v[ax]);
			snprintf(t, sizeof t, "%s", u);
		}
	snprintf(buf, n, "%s", t);
}

static void indent(Gen *g, int d)
{
	for (int i = 0; i < d; i++)
		sb(&g->s, "\t");
}

/* the Q·Kᵀ logit: dot over chan of the inputs Q and K, axes [group, obs, token] */
static int isqk(const KiFn *f, const KiIns *in)
{
	if (in->op != KO_dot || in->axis != AX_chan || in->axes != (AXM(AX_group) | AXM(AX_obs) | AXM(AX_token)))
		return 0;
	int q = 0, k = 0;
	for (int a = 0; a < 2; a++) {
		KcRef r = in->arg[a];
		if (KC_RKIND(r) != RK_INS || f->ins[KC_RIDX(r)].op != KO_input)
			return 0;
		q += f->ins[KC_RIDX(r)].aux == IN_Q, k += f->ins[KC_RIDX(r)].aux == IN_K;
	}
	return q == 1 && k == 1;
}

/* Expression for ref r at indices ix; statements go to g->s at depth d.
** memo[i] >= 0: instruction i is already in variable x<memo[i]>. */
static int val(Gen *g, KcRef r, const Idx *ix, int *memo, int d, char *out, size_t outn);

/* Instruction i alone: its operands are in variables already when valins ordered them
** first (operands evaluated here through val are then found in memo). */
static int valone(Gen *g, int i, const Idx *ix, int *memo, int d, char *out, size_t outn)
{
	const KiFn *f = g->f;
	const KiIns *in = &f->ins[i];
	for (int ax = 0; ax < AX_NUM; ax++)
		if (HAS(in->axes, ax) && !ix->v[ax])
			return err(g, in, "internal: %%%d needs axis %s unbound here", i, ki_axisname(ax));
	if (g->home[i] == HM_BUF) {
		char b[300];
		bufidx(in->axes, ix, b, sizeof b);
		snprintf(out, outn, "B%d[%s]", i, b);
		return 0;
	}
	if (memo[i] >= 0) {
		snprintf(out, outn, "x%d", memo[i]);
		return 0;
	}
	char A[400] = "", B[400] = "", C[400] = "", e[1200];
	int na = ki_nargs(in->op);
	if (g->tctx && isqk(f, in)) {
		/* the logit tile of a tiled step (rows: flattened [G][O] of the chunk at q0_, columns: tokens from t0_) */
		int v = g->tmp++;
		indent(g, d);
		sb(&g->s, "const float x%d = sS_[((%s) * O + (%s) - q0_) * KV_SK + (%s) - t0_]; /* %%%d Q·K, tile */\n", v,
		   ix->v[AX_group], ix->v[AX_obs], ix->v[AX_token], i);
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	if (in->op == KO_dot && HAS(in->axes, AX_obs) && HAS(in->axes, AX_token)) {
		/* Q·Kᵀ outside a tiled step: inline loop over chan */
		int v = g->tmp++;
		char cv[16];
		snprintf(cv, sizeof cv, "c%d", v);
		indent(g, d), sb(&g->s, "float x%d = 0.f;\n", v);
		indent(g, d), sb(&g->s, "for (int %s = 0; %s < KV_D; %s++) {\n", cv, cv, cv);
		int *m2 = malloc((size_t)f->nins * sizeof *m2);
		if (!m2)
			return err(g, in, "out of memory");
		for (int k = 0; k < f->nins; k++)
			m2[k] = (memo[k] >= 0 && !HAS(f->ins[k].axes, in->axis)) ? memo[k] : -1;
		Idx j = *ix;
		j.v[in->axis] = cv;
		int rc = val(g, in->arg[0], &j, m2, d + 1, A, sizeof A);
		rc |= val(g, in->arg[1], &j, m2, d + 1, B, sizeof B);
		free(m2);
		if (rc)
			return -1;
		indent(g, d + 1), sb(&g->s, "x%d += (%s) * (%s);\n", v, A, B);
		indent(g, d), sb(&g->s, "}\n");
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	if (g->home[i] == HM_STAT) {
		/* probability from the logit and the slice's (max, sum) */
		if (val(g, in->arg[0], ix, memo, d, A, sizeof A))
			return -1;
		Idx sx = *ix;
		sx.v[in->axis] = NULL;
		uint8_t sm = in->axes & (uint8_t)~AXM(in->axis);
		char b[300];
		bufidx(sm, &sx, b, sizeof b);
		int causal = in->op == KO_softmax && in->axis == AX_token && HAS(in->axes, AX_obs);
		int v = g->tmp++;
		indent(g, d), sb(&g->s, "float x%d;\n", v);
		indent(g, d), sb(&g->s, "{ const float m_ = B%d[2*(%s)], s_ = B%d[2*(%s)+1];\n", i, b, i, b);
		indent(g, d), sb(&g->s, "  x%d = (s_ > 0.f%s) ? expf((%s) - m_) / s_ : 0.f; }\n", v,
		                 causal ? "" : "", A);
		if (causal) {
			indent(g, d);
			sb(&g->s, "if (Pb[%s] > kv_qpos(a, n, O, %s)) x%d = 0.f;\n", ix->v[AX_token], ix->v[AX_obs], v);
		}
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	for (int k = 0; k < na && k < 3; k++) {
		char *dst = k == 0 ? A : k == 1 ? B : C;
		if (in->op == KO_rand)
			break;
		if (val(g, in->arg[k], ix, memo, d, dst, 400))
			return -1;
	}
	switch (in->op) {
	case KO_input:
		switch (in->aux) {
		case IN_K: snprintf(e, sizeof e, "kv_f(Kb[(long long)(%s)*a.sT+(%s)])", ix->v[AX_token], ix->v[AX_chan]); break;
		case IN_V: snprintf(e, sizeof e, "kv_f(Vb[(long long)(%s)*a.sT+(%s)])", ix->v[AX_token], ix->v[AX_chan]); break;
		case IN_Q:
			snprintf(e, sizeof e, "kv_f(Qb[((long long)(%s)*O+(%s))*KV_D+(%s)])", ix->v[AX_group], ix->v[AX_obs],
			         ix->v[AX_chan]);
			break;
		case IN_lse:
			snprintf(e, sizeof e, "a.lse[((long long)inst*KV_G+(%s))*O+(%s)]", ix->v[AX_group], ix->v[AX_obs]);
			break;
		case IN_pos: snprintf(e, sizeof e, "(float)Pb[%s]", ix->v[AX_token]); break;
		case IN_qpos: snprintf(e, sizeof e, "(float)kv_qpos(a, n, O, %s)", ix->v[AX_obs]); break;
		default: return err(g, in, "input %s not supported", ki_inputname(in->aux));
		}
		break;
	case KO_state:
		snprintf(e, sizeof e, "a.state[((long long)%d*a.L*a.H+inst)*N+(%s)]", in->aux, ix->v[AX_token]);
		break;
	case KO_attn:
		if (!g->decode)
			return err(g, in, "x.attn outside the observe hook");
		snprintf(e, sizeof e, "Pr[(%s)*N+(%s)]", ix->v[AX_group], ix->v[AX_token]);
		break;
	case KO_index: snprintf(e, sizeof e, "(float)(%s)", ix->v[in->axis]); break;
	case KO_size:
		if (in->axis >= AX_NUM)
			return err(g, in, "size of axis %d", in->axis);
		snprintf(e, sizeof e, "(float)(%s)", axsize(in->axis));
		break;
	case KO_info:
		switch (in->aux) {
		case INF_scale: flit(e, sizeof e, 1.0 / sqrt((double)g->D)); break;
		case INF_layer: snprintf(e, sizeof e, "(float)l"); break;
		case INF_head: snprintf(e, sizeof e, "(float)h"); break;
		case INF_nlayers: snprintf(e, sizeof e, "(float)a.L"); break;
		case INF_nheads: snprintf(e, sizeof e, "(float)a.H"); break;
		case INF_step: snprintf(e, sizeof e, "(float)a.step"); break;
		default: return err(g, in, "info %d", in->aux);
		}
		break;
	case KO_rand: {
		char sd[400];
		if (dscalar(g, in->arg[0], sd, sizeof sd, 0) != 0) {
			Idx none = { { NULL, NULL, NULL, NULL } };
			if (val(g, in->arg[0], &none, memo, d, A, sizeof A))
				return -1;
			snprintf(sd, sizeof sd, "(double)(%s)", A);
		}
		snprintf(e, sizeof e, "kv_rand(%s, l, h, Pb[%s])", sd, ix->v[AX_token]);
		break;
	}
	case KO_neg: snprintf(e, sizeof e, "-(%s)", A); break;
	case KO_exp: snprintf(e, sizeof e, "expf(%s)", A); break;
	case KO_log: snprintf(e, sizeof e, "logf(%s)", A); break;
	case KO_sqrt: snprintf(e, sizeof e, "sqrtf(%s)", A); break;
	case KO_abs: snprintf(e, sizeof e, "fabsf(%s)", A); break;
	case KO_add: snprintf(e, sizeof e, "(%s) + (%s)", A, B); break;
	case KO_sub: snprintf(e, sizeof e, "(%s) - (%s)", A, B); break;
	case KO_mul: snprintf(e, sizeof e, "(%s) * (%s)", A, B); break;
	case KO_div: snprintf(e, sizeof e, "(%s) / (%s)", A, B); break;
	case KO_pow: snprintf(e, sizeof e, "powf(%s, %s)", A, B); break;
	case KO_max: snprintf(e, sizeof e, "kv_max(%s, %s)", A, B); break;
	case KO_min: snprintf(e, sizeof e, "kv_min(%s, %s)", A, B); break;
	case KO_lt: snprintf(e, sizeof e, "((%s) < (%s) ? 1.f : 0.f)", A, B); break;
	case KO_le: snprintf(e, sizeof e, "((%s) <= (%s) ? 1.f : 0.f)", A, B); break;
	case KO_eq: snprintf(e, sizeof e, "((%s) == (%s) ? 1.f : 0.f)", A, B); break;
	case KO_ne: snprintf(e, sizeof e, "((%s) != (%s) ? 1.f : 0.f)", A, B); break;
	case KO_where: snprintf(e, sizeof e, "((%s) != 0.f ? (%s) : (%s))", A, B, C); break;
	default: return err(g, in, "internal: %s has no inline form", ki_opname(in->op));
	}
	int v = g->tmp++;
	indent(g, d), sb(&g->s, "const float x%d = %s; /* %%%d %s */\n", v, e, i, ki_opname(in->op));
	memo[i] = v;
	snprintf(out, outn, "x%d", v);
	return 0;
}

/* Does valone(i) evaluate operand k in its own context (ix, memo, depth d), so that it can be
** evaluated before i? Not the Q·Kᵀ tile, the inline dot (its loop binds chan), the seed of rand,
** stored values or what is in a variable already. */
static int samectx(const Gen *g, int i, int k, const int *memo)
{
	const KiIns *in = &g->f->ins[i];
	if (g->home[i] == HM_BUF || memo[i] >= 0 || k >= ki_nargs(in->op) || in->op == KO_rand)
		return 0;
	if ((g->tctx && isqk(g->f, in)) || (in->op == KO_dot && HAS(in->axes, AX_obs) && HAS(in->axes, AX_token)))
		return 0;
	return g->home[i] != HM_STAT || k == 0;
}

/* valone over i and the operands it needs first, deepest first, in the order a recursion
** over the operands would take (depth first, operand 0 first): the same code, with an
** explicit stack instead, since a chain of operands is as long as the policy. */
static int valins(Gen *g, int i, const Idx *ix, int *memo, int d, char *out, size_t outn)
{
	const KiFn *f = g->f;
	struct { int i, k; } *st = malloc(64 * sizeof *st);   /* instruction, next operand */
	int n = 0, cap = 64, rc = 0;
	if (!st)
		return err(g, &f->ins[i], "out of memory");
	st[n].i = i, st[n++].k = 0;
	while (n > 0) {
		int j = st[n - 1].i, k = st[n - 1].k++;
		if (k < 3) {
			KcRef r = f->ins[j].arg[k];
			if (KC_RKIND(r) != RK_INS || !samectx(g, j, k, memo) || memo[KC_RIDX(r)] >= 0 ||
			    g->home[KC_RIDX(r)] == HM_BUF)
				continue;
			if (n == cap) {
				void *q = realloc(st, (size_t)(cap *= 2) * sizeof *st);
				if (!q) {
					rc = err(g, &f->ins[i], "out of memory");
					break;
				}
				st = q;
			}
			st[n].i = KC_RIDX(r), st[n++].k = 0;
			continue;
		}
		if (--n == 0)
			break;                  /* i itself: below, into out */
		char tmp[400];
		if ((rc = valone(g, j, ix, memo, d, tmp, sizeof tmp)) != 0)
			break;
	}
	free(st);
	return rc ? rc : valone(g, i, ix, memo, d, out, outn);
}

static int val(Gen *g, KcRef r, const Idx *ix, int *memo, int d, char *out, size_t outn)
{
	switch (KC_RKIND(r)) {
	case RK_CON: flit(out, outn, g->f->con[KC_RIDX(r)]); return 0;
	case RK_PAR: snprintf(out, outn, "(float)a.par[%d]", KC_RIDX(r)); return 0;
	case RK_INS: return valins(g, KC_RIDX(r), ix, memo, d, out, outn);
	}
	snprintf(out, outn, "0.f");
	return 0;
}

/* NULL with the error set when memory runs out */
static int *newmemo(Gen *g)
{
	int *m = malloc(((size_t)g->f->nins + 1) * sizeof *m);
	if (m)
		for (int i = 0; i <= g->f->nins; i++)
			m[i] = -1;
	else
		g->s.oom = 1, err(g, NULL, "out of memory");
	return m;
}

/* "for (int e = start; e < dom; e += stride)" over axes m, decoding into
** variables named after `pre` (pre##g, pre##o, ...). Sets ix. */
static void domloop(Gen *g, uint8_t m, const char *start, const char *stride, Idx *ix, char names[AX_NUM][16],
                    int d)
{
	char dom[200] = "1";
	for (int ax = 0; ax < AX_NUM; ax++)
		if (HAS(m, ax)) {
			char t[200];
			snprintf(t, sizeof t, "%s*%s", dom, axsize(ax));
			snprintf(dom, sizeof dom, "%s", t);
		}
	indent(g, d), sb(&g->s, "for (int e_ = %s; e_ < %s; e_ += %s) {\n", start, dom, stride);
	indent(g, d + 1), sb(&g->s, "int r_ = e_; (void)r_;\n");
	static const char *nm[AX_NUM] = { "ig", "io", "it", "ic" };
	for (int ax = AX_NUM - 1; ax >= 0; ax--) {
		ix->v[ax] = NULL;
		if (!HAS(m, ax))
			continue;
		snprintf(names[ax], 16, "%s", nm[ax]);
		ix->v[ax] = names[ax];
		indent(g, d + 1), sb(&g->s, "const int %s = r_ %% %s; r_ /= %s;\n", nm[ax], axsize(ax), axsize(ax));
	}
}

/* pieces of a reduction: the accumulator's start, one accumulation (pass p of std),
** and the final value from acc_ */
static const char *red_init(int op)
{
	return op == KO_rmax ? "-kv_inf()" : op == KO_rmin ? "kv_inf()" : "0.f";
}

static void red_acc(Gen *g, int op, int p, const char *A, const char *B)
{
	switch (op) {
	case KO_sum: case KO_mean: sb(&g->s, "acc_ += %s;\n", A); break;
	case KO_rmax: sb(&g->s, "acc_ = kv_rmax(acc_, %s);\n", A); break;
	case KO_rmin: sb(&g->s, "acc_ = kv_rmin(acc_, %s);\n", A); break;
	case KO_norm: sb(&g->s, "{ const float y_ = %s; acc_ += y_ * y_; }\n", A); break;
	case KO_std:
		if (p == 0)
			sb(&g->s, "acc_ += %s;\n", A);
		else
			sb(&g->s, "{ const float y_ = (%s) - mu_; acc_ += y_ * y_; }\n", A);
		break;
	case KO_dot: sb(&g->s, "acc_ += (%s) * (%s);\n", A, B); break;
	}
}

static const char *red_fin(int op, int X, char *fb, size_t n)
{
	if (op == KO_mean || op == KO_std) {
		snprintf(fb, n, "%s > 0 ? %sacc_ / (float)%s%s : kv_nan()", axsize(X), op == KO_std ? "sqrtf(" : "",
		         axsize(X), op == KO_std ? ")" : "");
		return fb;
	}
	return op == KO_norm ? "sqrtf(acc_)" : "acc_";
}

/* BUF step for a reduction over axis X (sum mean rmax rmin norm std dot) */
static int step_reduce(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	int X = in->axis, warp = X == AX_token, op = in->op;
	Idx ix;
	char nm[AX_NUM][16];
	sb(&g->s, "\t/* %%%d = %s over %s (%s) */\n", i, ki_opname(op), ki_axisname(X),
	   warp ? "warp per output" : "thread per output");
	domloop(g, in->axes, warp ? "warp" : "tid", warp ? "KV_NW" : "KV_NT", &ix, nm, d);
	const char *init = red_init(op);
	int passes = op == KO_std ? 2 : 1;
	indent(g, d + 1), sb(&g->s, "float acc_ = %s;%s\n", init, op == KO_std ? " float mu_;" : "");
	for (int p = 0; p < passes; p++) {
		if (p == 1)
			indent(g, d + 1), sb(&g->s, "mu_ = acc_ / (float)%s; acc_ = 0.f;\n", axsize(X));
		char xv[16];
		snprintf(xv, sizeof xv, "x%s", X == AX_token ? "t" : X == AX_chan ? "c" : X == AX_obs ? "o" : "g");
		indent(g, d + 1);
		sb(&g->s, "for (int %s = %s; %s < %s; %s += %s) {\n", xv, warp ? "lane" : "0", xv, axsize(X), xv,
		   warp ? "32" : "1");
		Idx j = ix;
		j.v[X] = xv;
		int *memo = newmemo(g);
		char A[400], B[400];
		if (!memo || val(g, in->arg[0], &j, memo, d + 2, A, sizeof A)) {
			free(memo);
			return -1;
		}
		if (op == KO_dot && val(g, in->arg[1], &j, memo, d + 2, B, sizeof B)) {
			free(memo);
			return -1;
		}
		free(memo);
		indent(g, d + 2), red_acc(g, op, p, A, B);
		indent(g, d + 1), sb(&g->s, "}\n");
		if (warp) {
			indent(g, d + 1);
			sb(&g->s, "acc_ = %s(acc_);\n", op == KO_rmax ? "kv_wmax" : op == KO_rmin ? "kv_wmin" : "kv_wsum");
		}
	}
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	char fb[200];
	const char *fin = red_fin(op, X, fb, sizeof fb);
	indent(g, d + 1), sb(&g->s, "%sB%d[%s] = %s;\n", warp ? "if (lane == 0) " : "", i, b, fin);
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* STAT step: online (max, sum) of softmax slices */
static int step_stat(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	int X = in->axis, warp = X == AX_token;
	int causal = in->op == KO_softmax && X == AX_token && HAS(in->axes, AX_obs);
	uint8_t sm = in->axes & (uint8_t)~AXM(X);
	Idx ix;
	char nm[AX_NUM][16];
	sb(&g->s, "\t/* %%%d = %s over %s: attn_stats (%s%s) */\n", i, ki_opname(in->op), ki_axisname(X),
	   warp ? "warp per slice" : "thread per slice", causal ? ", causal" : "");
	domloop(g, sm, warp ? "warp" : "tid", warp ? "KV_NW" : "KV_NT", &ix, nm, d);
	indent(g, d + 1), sb(&g->s, "float m_ = -kv_inf(), s_ = 0.f;\n");
	if (causal)
		indent(g, d + 1), sb(&g->s, "const int qp_ = kv_qpos(a, n, O, %s);\n", ix.v[AX_obs]);
	char xv[8] = "xs";
	indent(g, d + 1);
	sb(&g->s, "for (int %s = %s; %s < %s; %s += %s) {\n", xv, warp ? "lane" : "0", xv, axsize(X), xv, warp ? "32" : "1");
	if (causal)
		indent(g, d + 2), sb(&g->s, "if (Pb[%s] > qp_) continue;\n", xv);
	Idx j = ix;
	j.v[X] = xv;
	int *memo = newmemo(g);
	char A[400];
	if (!memo || val(g, in->arg[0], &j, memo, d + 2, A, sizeof A)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 2), sb(&g->s, "kv_smx_add(m_, s_, %s);\n", A);
	indent(g, d + 1), sb(&g->s, "}\n");
	if (warp)
		indent(g, d + 1), sb(&g->s, "kv_wsmx(m_, s_);\n");
	char b[300];
	bufidx(sm, &ix, b, sizeof b);
	indent(g, d + 1), sb(&g->s, "%s{ B%d[2*(%s)] = m_; B%d[2*(%s)+1] = s_; }\n", warp ? "if (lane == 0) " : "", i, b, i, b);
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* BUF step for pools along X */
static int step_pool(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	int X = in->axis;
	Idx ix, none = { { NULL, NULL, NULL, NULL } };
	char nm[AX_NUM][16], kb[400];
	int *memo = newmemo(g);
	if (!memo)
		return err(g, in, "out of memory");
	sb(&g->s, "\t/* %%%d = %s along %s */\n\t{\n", i, ki_opname(in->op), ki_axisname(X));
	if (val(g, in->arg[1], &none, memo, d + 1, kb, sizeof kb)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 1), sb(&g->s, "const float kf_ = %s;\n", kb);
	indent(g, d + 1), sb(&g->s, "if (!(kf_ >= 1.f && kf_ <= 1e6f) || kf_ != floorf(kf_)) { if (tid == 0) kv_seterr(a.err, KVG_EPOOL); return; }\n");
	indent(g, d + 1), sb(&g->s, "const int k_ = (int)kf_, p_ = k_ / 2;\n");
	domloop(g, in->axes, "tid", "KV_NT", &ix, nm, d + 1);
	int avg = in->op == KO_avgpool;
	indent(g, d + 2), sb(&g->s, "float acc_ = %s;\n", avg ? "0.f" : "-kv_inf()");
	indent(g, d + 2);
	sb(&g->s, "for (int xj = %s - p_; xj < %s - p_ + k_; xj++) {\n", ix.v[X], ix.v[X]);
	indent(g, d + 3), sb(&g->s, "if (xj < 0 || xj >= %s) continue;\n", axsize(X));
	Idx j = ix;
	j.v[X] = "xj";
	memo = newmemo(g);
	char A[400];
	if (!memo || val(g, in->arg[0], &j, memo, d + 3, A, sizeof A)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 3), sb(&g->s, avg ? "acc_ += %s;\n" : "acc_ = kv_rmax(acc_, %s);\n", A);
	indent(g, d + 2), sb(&g->s, "}\n");
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	indent(g, d + 2), sb(&g->s, "B%d[%s] = %s;\n", i, b, avg ? "acc_ / (float)k_" : "acc_");
	indent(g, d + 1), sb(&g->s, "}\n");
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* BUF step: mean over the heads of the layer (reads other instances' workspace) */
static int step_hmean(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	KcRef r = in->arg[0];
	Idx ix;
	char nm[AX_NUM][16];
	sb(&g->s, "\t/* %%%d = hmean: mean over the heads of layer l */\n", i);
	if (HAS(in->axes, AX_token)) {
		indent(g, d), sb(&g->s, "for (int hh = 0; hh < a.H; hh++)\n");
		indent(g, d + 1), sb(&g->s, "if (a.len[l * a.H + hh] != n) { if (tid == 0) kv_seterr(a.err, KVG_EHMEAN); return; }\n");
	}
	domloop(g, in->axes, "tid", "KV_NT", &ix, nm, d);
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	indent(g, d + 1), sb(&g->s, "float acc_ = 0.f;\n");
	if (KC_RKIND(r) == RK_INS) {
		int k = KC_RIDX(r);
		char bk[300];
		bufidx(g->f->ins[k].axes, &ix, bk, sizeof bk);
		indent(g, d + 1), sb(&g->s, "for (int hh = 0; hh < a.H; hh++)\n");
		indent(g, d + 2), sb(&g->s, "acc_ += (a.ws + (long long)(l * a.H + hh) * a.ws_inst + (B%d - W))[%s];\n", k, bk);
		indent(g, d + 1), sb(&g->s, "B%d[%s] = acc_ / (float)a.H;\n", i, b);
	} else {
		char A[400];
		int *memo = newmemo(g);
		if (!memo || val(g, r, &ix, memo, d + 1, A, sizeof A)) {
			free(memo);
			return -1;
		}
		free(memo);
		indent(g, d + 1), sb(&g->s, "B%d[%s] = %s;\n", i, b, A);
	}
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* BUF step for a value that is materialized but computed inline (pool and hmean operands) */
static int step_mat(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	Idx ix;
	char nm[AX_NUM][16];
	sb(&g->s, "\t/* %%%d = %s, materialized */\n", i, ki_opname(in->op));
	domloop(g, in->axes, "tid", "KV_NT", &ix, nm, d);
	g->home[i] = HM_INL;
	int *memo = newmemo(g);
	char A[400];
	int rc = !memo || valins(g, i, &ix, memo, d + 1, A, sizeof A);
	free(memo);
	g->home[i] = HM_BUF;
	if (rc)
		return -1;
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	indent(g, d + 1), sb(&g->s, "B%d[%s] = %s;\n", i, b, A);
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* --- tiled steps: Q·Kᵀ from shared-memory tiles ------------------------------------- */

/* does r reach a Q·Kᵀ logit through values computed inline (INL, and STAT's operand)?
** One sweep down from r (operands point backwards; no recursion as deep as a chain). */
static int reachqk(const Gen *g, KcRef r, char *seen)
{
	if (KC_RKIND(r) != RK_INS)
		return 0;
	seen[KC_RIDX(r)] = 1;
	for (int i = KC_RIDX(r); i >= 0; i--) {
		if (!seen[i])
			continue;
		if (isqk(g->f, &g->f->ins[i]))
			return 1;
		for (int k = 0; g->home[i] != HM_BUF && k < 3; k++)
			if (KC_RKIND(g->f->ins[i].arg[k]) == RK_INS && KC_RIDX(g->f->ins[i].arg[k]) < i)
				seen[KC_RIDX(g->f->ins[i].arg[k])] = 1;
	}
	return 0;
}

enum { TS_NONE, TS_STAT, TS_OBS };

/* Steps that run on the tiles: softmax stats over token of [group, obs] slices, and
** sum / mean / rmax / rmin over obs into [group, token]; both reading a logit. */
static int tiledstep(Gen *g, int i)
{
	const KiIns *in = &g->f->ins[i];
	const uint8_t go = AXM(AX_group) | AXM(AX_obs), gt = AXM(AX_group) | AXM(AX_token);
	int kind = TS_NONE;
	if (g->decode)
		return TS_NONE;
	if (g->home[i] == HM_STAT && in->axis == AX_token && (in->axes & (uint8_t)~AXM(AX_token)) == go)
		kind = TS_STAT;
	else if (g->home[i] == HM_BUF && in->axis == AX_obs && in->axes == gt &&
	         (in->op == KO_sum || in->op == KO_mean || in->op == KO_rmax || in->op == KO_rmin))
		kind = TS_OBS;
	if (kind == TS_NONE)
		return TS_NONE;
	char *seen = calloc((size_t)g->f->nins + 1, 1);
	int r = seen && reachqk(g, in->arg[0], seen);
	g->s.oom |= !seen;          /* generate fails with "out of memory" */
	free(seen);
	return r ? kind : TS_NONE;
}

/* token tiles of K (outer), chunks of KV_SQ query rows (inner), the logit tile of both */
static void tile_open(Gen *g, const char *pre)
{
	sb(&g->s,
	   "\tfor (int t0_ = 0; t0_ < n; t0_ += KV_SK) {\n"
	   "\t\tconst int nt_ = n - t0_ < KV_SK ? n - t0_ : KV_SK;\n"
	   "\t\tkv_stage(sK_, KV_SK, Kb + (long long)t0_ * a.sT, a.sT, nt_);\n"
	   "%s"
	   "\t\tfor (int q0_ = 0; q0_ < KV_G * O; q0_ += KV_SQ) {\n"
	   "\t\t\tconst int nq_ = KV_G * O - q0_ < KV_SQ ? KV_G * O - q0_ : KV_SQ;\n"
	   "\t\t\tif (t0_ == 0 || KV_G * O > KV_SQ)   /* one chunk: staged once */\n"
	   "\t\t\t\tkv_stage(sQ_, KV_SQ, Qb + (long long)q0_ * KV_D, KV_D, nq_);\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tkv_logits(sS_, sQ_, sK_, nq_, nt_);\n"
	   "\t\t\t__syncthreads();\n", pre);
}

static int tile_body(Gen *g, const KiIns *in, const Idx *ix, int d, char *A, size_t n)
{
	int *memo = newmemo(g);
	g->tctx = 1;
	int rc = !memo || val(g, in->arg[0], ix, memo, d, A, n);
	g->tctx = 0;
	free(memo);
	return rc ? -1 : 0;
}

/* softmax stats: warp per query row of the chunk, lanes over the tile's tokens; the
** row's (max, sum) is combined into the workspace after each tile */
static int step_stat_tiled(Gen *g, int i)
{
	const KiIns *in = &g->f->ins[i];
	int causal = in->op == KO_softmax;
	Idx ix = { { "ig", "io", "xs", NULL } };
	char b[300], A[400];
	bufidx(in->axes & (uint8_t)~AXM(AX_token), &ix, b, sizeof b);
	sb(&g->s, "\t/* %%%d = %s over token: attn_stats on Q·Kᵀ tiles (warp per query row%s) */\n", i,
	   ki_opname(in->op), causal ? ", causal" : "");
	sb(&g->s, "\tfor (int e_ = tid; e_ < KV_G * O; e_ += KV_NT) {\n"
	          "\t\tconst int ig = e_ / O, io = e_ - ig * O;\n"
	          "\t\tB%d[2*(%s)] = -kv_inf(); B%d[2*(%s)+1] = 0.f;\n\t}\n\t__syncthreads();\n", i, b, i, b);
	tile_open(g, "");
	sb(&g->s, "\t\t\tfor (int r_ = warp; r_ < nq_; r_ += KV_NW) {\n"
	          "\t\t\t\tconst int ig = (q0_ + r_) / O, io = q0_ + r_ - ig * O;\n"
	          "\t\t\t\tfloat m_ = -kv_inf(), s_ = 0.f;\n");
	if (causal)
		sb(&g->s, "\t\t\t\tconst int qp_ = kv_qpos(a, n, O, io);\n");
	sb(&g->s, "\t\t\t\tfor (int j_ = lane; j_ < nt_; j_ += 32) {\n\t\t\t\t\tconst int xs = t0_ + j_;\n");
	if (causal)
		sb(&g->s, "\t\t\t\t\tif (Pb[xs] > qp_) continue;\n");
	if (tile_body(g, in, &ix, 5, A, sizeof A))
		return -1;
	sb(&g->s, "\t\t\t\t\tkv_smx_add(m_, s_, %s);\n\t\t\t\t}\n", A);
	sb(&g->s, "\t\t\t\tkv_wsmx(m_, s_);\n"
	          "\t\t\t\tif (lane == 0) {\n"
	          "\t\t\t\t\tfloat M_ = B%d[2*(%s)], S_ = B%d[2*(%s)+1];\n"
	          "\t\t\t\t\tkv_smx_comb(M_, S_, m_, s_);\n"
	          "\t\t\t\t\tB%d[2*(%s)] = M_; B%d[2*(%s)+1] = S_;\n"
	          "\t\t\t\t}\n\t\t\t}\n\t\t\t__syncthreads();\n\t\t}\n\t}\n", i, b, i, b, i, b, i, b);
	return 0;
}

/* reduction over obs: thread per (group, token) of the tile, its accumulator in sA_
** across the query chunks (always the same thread per entry: no barrier needed) */
static int step_obs_tiled(Gen *g, int i)
{
	const KiIns *in = &g->f->ins[i];
	Idx ix = { { "ig", "xo", "it", NULL } };
	char b[300], A[400], pre[200], fb[200];
	bufidx(in->axes, &ix, b, sizeof b);
	sb(&g->s, "\t/* %%%d = %s over obs on Q·Kᵀ tiles (thread per group and token) */\n", i, ki_opname(in->op));
	snprintf(pre, sizeof pre, "\t\tfor (int e_ = tid; e_ < KV_G * KV_SK; e_ += KV_NT) sA_[e_] = %s;\n",
	         red_init(in->op));
	tile_open(g, pre);
	sb(&g->s, "\t\t\tfor (int e_ = tid; e_ < KV_G * KV_SK; e_ += KV_NT) {\n"
	          "\t\t\t\tconst int ig = e_ / KV_SK, j_ = e_ - ig * KV_SK, it = t0_ + j_;\n"
	          "\t\t\t\tconst int lo_ = q0_ - ig * O > 0 ? q0_ - ig * O : 0;\n"
	          "\t\t\t\tconst int hi_ = q0_ + nq_ - ig * O < O ? q0_ + nq_ - ig * O : O;\n"
	          "\t\t\t\tif (j_ >= nt_ || lo_ >= hi_) continue;\n"
	          "\t\t\t\tfloat acc_ = sA_[e_];\n"
	          "\t\t\t\tfor (int xo = lo_; xo < hi_; xo++) {\n");
	if (tile_body(g, in, &ix, 5, A, sizeof A))
		return -1;
	indent(g, 5), red_acc(g, in->op, 0, A, NULL);
	sb(&g->s, "\t\t\t\t}\n\t\t\t\tsA_[e_] = acc_;\n\t\t\t}\n\t\t\t__syncthreads();\n\t\t}\n");
	sb(&g->s, "\t\tfor (int e_ = tid; e_ < KV_G * KV_SK; e_ += KV_NT) {\n"
	          "\t\t\tconst int ig = e_ / KV_SK, it = t0_ + e_ - ig * KV_SK;\n"
	          "\t\t\tconst float acc_ = sA_[e_];\n"
	          "\t\t\tif (it < t0_ + nt_) B%d[%s] = %s;\n\t\t}\n\t}\n", i, b, red_fin(in->op, AX_obs, fb, sizeof fb));
	return 0;
}

static int step(Gen *g, int i)
{
	const KiIns *in = &g->f->ins[i];
	int rc, ts = tiledstep(g, i);
	if (ts == TS_STAT)
		rc = step_stat_tiled(g, i);
	else if (ts == TS_OBS)
		rc = step_obs_tiled(g, i);
	else if (g->home[i] == HM_STAT)
		rc = step_stat(g, i, 1);
	else if (in->op == KO_avgpool || in->op == KO_maxpool)
		rc = step_pool(g, i, 1);
	else if (in->op == KO_hmean)
		rc = step_hmean(g, i, 1);
	else if (ki_rule(in->op) == AR_RED || ki_rule(in->op) == AR_DOT)
		rc = step_reduce(g, i, 1);
	else
		rc = step_mat(g, i, 1);
	if (rc == 0)
		sb(&g->s, "\t__syncthreads();\n");
	return rc;
}

/* --- analysis ------------------------------------------------------------------------ */

/* what r reaches: one sweep down (operands point backwards; no recursion) */
static void mark(const KiFn *f, KcRef r, char *need)
{
	if (KC_RKIND(r) != RK_INS)
		return;
	need[KC_RIDX(r)] = 1;
	for (int i = KC_RIDX(r); i >= 0; i--)
		for (int k = 0; need[i] && k < 3; k++)
			if (KC_RKIND(f->ins[i].arg[k]) == RK_INS && KC_RIDX(f->ins[i].arg[k]) < i)
				need[KC_RIDX(f->ins[i].arg[k])] = 1;
}

static int isleaf(int op)
{
	return op == KO_input || op == KO_state || op == KO_attn || op == KO_index || op == KO_size || op == KO_info ||
	       op == KO_rand;
}

/* homes and phases of the needed instructions; allocation of workspace */
static int analyse(Gen *g, const char *need, int decode)
{
	const KiFn *f = g->f;
	for (int i = 0; i < f->nins; i++) {
		if (!need[i])
			continue;
		const KiIns *in = &f->ins[i];
		for (int k = 0; k < 3; k++)
			if (KC_RKIND(in->arg[k]) == RK_INS && KC_RIDX(in->arg[k]) >= i)
				return err(g, in, "internal: operand %%%d after its use", KC_RIDX(in->arg[k]));
		int op = in->op, h = HM_INL;
		if (isleaf(op) || ki_rule(op) == AR_EW)
			h = HM_INL;
		else if (op == KO_dot && HAS(in->axes, AX_obs) && HAS(in->axes, AX_token))
			h = HM_INL;
		else if (ki_rule(op) == AR_RED || ki_rule(op) == AR_DOT)
			h = HM_BUF;
		else if (op == KO_softmax || op == KO_softmaxnc)
			h = HM_STAT;
		else if (op == KO_avgpool || op == KO_maxpool || op == KO_hmean)
			h = HM_BUF;
		else
			return err(g, in, "op %s is not supported", ki_opname(op));
		if (op == KO_attn && !decode)
			return err(g, in, "x.attn is only available in the observe hook");
		if (decode && op == KO_hmean)
			return err(g, in, "a mean over heads inside the observe hook is not supported");
		if (decode && op == KO_input && (in->aux == IN_Q || in->aux == IN_lse || in->aux == IN_qpos))
			return err(g, in, "the observe hook cannot read %s", ki_inputname(in->aux));
		if ((op == KO_avgpool || op == KO_maxpool) && ki_refaxes(f, in->arg[1]))
			return err(g, in, "the pooling kernel size must be a scalar");
		if ((op == KO_avgpool || op == KO_maxpool || op == KO_hmean) && KC_RKIND(in->arg[0]) == RK_INS) {
			int k = KC_RIDX(in->arg[0]);
			if (g->home[k] != HM_BUF && f->ins[k].op != KO_input && f->ins[k].op != KO_index)
				g->home[k] = HM_BUF;
			if (op == KO_hmean)
				g->home[k] = HM_BUF;
		}
		g->home[i] = (uint8_t)h;
		int ph = 0;
		for (int k = 0; k < 3; k++)
			if (KC_RKIND(in->arg[k]) == RK_INS && g->phase[KC_RIDX(in->arg[k])] > ph)
				ph = g->phase[KC_RIDX(in->arg[k])];
		g->phase[i] = ph + (op == KO_hmean);
	}
	memset(g->cur, 0, sizeof g->cur);
	for (int i = 0; i < f->nins; i++) {
		if (!need[i] || (g->home[i] != HM_BUF && g->home[i] != HM_STAT))
			continue;
		const KiIns *in = &f->ins[i];
		uint8_t m = g->home[i] == HM_STAT ? (uint8_t)(in->axes & ~AXM(in->axis)) : in->axes;
		long long k = (g->home[i] == HM_STAT ? 2 : 1) * (HAS(m, AX_group) ? g->G : 1) * (HAS(m, AX_chan) ? g->D : 1);
		int term = (HAS(m, AX_token) ? 1 : 0) + (HAS(m, AX_obs) ? 2 : 0);
		memcpy(g->off[i], g->cur, sizeof g->cur);
		g->cur[term] += k;
		g->cur[0] += 1;                       /* one float of slack: keeps buffers distinct */
	}
	return 0;
}

static void wsreserve(Gen *g, int term, long long k, long long out[4])
{
	memcpy(out, g->cur, sizeof g->cur);
	g->cur[term] += k;
}

static void wsmax(Gen *g)
{
	for (int k = 0; k < 4; k++)
		if (g->cur[k] > g->wsmax[k])
			g->wsmax[k] = g->cur[k];
}

static void offexpr(const long long o[4], char *buf, size_t n)
{
	snprintf(buf, n, "%lldLL + %lldLL*(long long)N + %lldLL*(long long)O + %lldLL*(long long)N*O", o[0], o[1], o[2], o[3]);
}

/* --- kernels ------------------------------------------------------------------------- */

static const char prelude[] =
	"/* kvcc generated CUDA C — do not edit. Compiles with NVRTC (no headers) and,\n"
	"** for tests, with a host C++ compiler against tests/gpu/cuda_emu.h. */\n"
	"#ifndef KV_NT\n#define KV_NT 256\n#endif\n"
	"#ifndef KV_TT\n#define KV_TT 16\n#endif\n"
	"#ifndef KV_SQ\n#define KV_SQ 64\n#endif\n"
	"#ifndef KV_SK\n#define KV_SK 64\n#endif\n"
	"#define KV_NW (KV_NT / 32)\n"
	"#ifndef KV_DYNSMEM\n#define KV_DYNSMEM(nm) extern __shared__ __align__(16) unsigned char nm[]\n#endif\n"
	"#define KVG_EPOOL 1\n#define KVG_ESELECT 2\n#define KVG_EHMEAN 3\n"
	"__device__ __forceinline__ float kv_nan() { return __int_as_float(0x7fffffff); }\n"
	"__device__ __forceinline__ float kv_inf() { return __int_as_float(0x7f800000); }\n"
	"__device__ __forceinline__ float kv_max(float a, float b) { return (a != a || b != b) ? kv_nan() : a > b ? a : b; }\n"
	"__device__ __forceinline__ float kv_min(float a, float b) { return (a != a || b != b) ? kv_nan() : a < b ? a : b; }\n"
	"__device__ __forceinline__ float kv_rmax(float acc, float v) { return (v != v || v > acc) ? v : acc; }\n"
	"__device__ __forceinline__ float kv_rmin(float acc, float v) { return (v != v || v < acc) ? v : acc; }\n"
	"__device__ __forceinline__ float kv_wsum(float v) {\n"
	"\tfor (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n\treturn v;\n}\n"
	"__device__ __forceinline__ float kv_wmax(float v) {\n"
	"\tfor (int o = 16; o > 0; o >>= 1) v = kv_max(v, __shfl_xor_sync(0xffffffffu, v, o));\n\treturn v;\n}\n"
	"__device__ __forceinline__ float kv_wmin(float v) {\n"
	"\tfor (int o = 16; o > 0; o >>= 1) v = kv_min(v, __shfl_xor_sync(0xffffffffu, v, o));\n\treturn v;\n}\n"
	"/* online softmax: add one logit to (m, s); combine two partial states */\n"
	"__device__ __forceinline__ void kv_smx_add(float &m, float &s, float v) {\n"
	"\tif (v > m) { s = s * expf(m - v) + 1.f; m = v; } else s += expf(v - m);\n}\n"
	"__device__ __forceinline__ void kv_smx_comb(float &m, float &s, float m2, float s2) {\n"
	"\tconst float M = m > m2 ? m : m2;\n"
	"\tconst float a = s > 0.f ? s * expf(m - M) : s, b = s2 > 0.f ? s2 * expf(m2 - M) : s2;\n"
	"\tm = M; s = a + b;\n}\n"
	"__device__ __forceinline__ void kv_wsmx(float &m, float &s) {\n"
	"\tfor (int o = 16; o > 0; o >>= 1) {\n"
	"\t\tconst float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);\n"
	"\t\tkv_smx_comb(m, s, m2, s2);\n\t}\n}\n"
	"__device__ __forceinline__ void kv_seterr(int *err, int code) { if (err) atomicCAS(err, 0, code); }\n"
	"/* ki_rand (compiler/interp.c): counter-based, identical on every backend */\n"
	"__device__ __forceinline__ float kv_rand(double seed, int l, int h, int pos) {\n"
	"\tconst unsigned long long c = ((unsigned long long)l << 40) ^ ((unsigned long long)h << 24) ^ (unsigned long long)(long long)pos;\n"
	"\tunsigned long long z = (unsigned long long)(long long)seed + c * 0x9E3779B97F4A7C15ull;\n"
	"\tz = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;\n"
	"\tz = (z ^ (z >> 27)) * 0x94D049BB133111EBull;\n"
	"\tz = z ^ (z >> 31);\n"
	"\treturn (float)(z >> 40) * (1.f / 16777216.f);\n}\n";

static const char prelude_f16[] =
	"typedef unsigned short kv_st;\n"
	"__device__ __forceinline__ float kv_f(kv_st x) {\n"
	"\tconst unsigned s = ((unsigned)x & 0x8000u) << 16, e = ((unsigned)x >> 10) & 0x1fu, m = (unsigned)x & 0x3ffu;\n"
	"\tif (e == 0) { const float f = (float)m * 5.9604644775390625e-8f; return s ? -f : f; }\n"
	"\tif (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));\n"
	"\treturn __uint_as_float(s | ((e + 112u) << 23) | (m << 13));\n}\n";
static const char prelude_bf16[] =
	"typedef unsigned short kv_st;\n"
	"__device__ __forceinline__ float kv_f(kv_st x) { return __uint_as_float((unsigned)x << 16); }\n";
static const char prelude_f32[] =
	"typedef float kv_st;\n"
	"__device__ __forceinline__ float kv_f(kv_st x) { return x; }\n";

/* Score tiles in dynamic shared memory: a chunk of KV_SQ query rows (the flattened
** [G][O] rows of Q) and a tile of KV_SK tokens of K, both [rows][KV_DP] in kv_qk, the
** logits S [KV_SQ][KV_SK] and per-(group, token) accumulators [KV_G][KV_SK] in f32. */
static const char tile_common[] =
	"/* rows [0, cnt) of src (row stride ld) into dst[rows][KV_DP]; rows past cnt are zero */\n"
	"__device__ __forceinline__ void kv_stage(kv_qk *dst, int rows, const kv_st *src, long long ld, int cnt) {\n"
	"\tfor (int r = threadIdx.x >> 5; r < rows; r += KV_NW) {   /* a warp per row */\n"
	"\t\tconst kv_st *const s = src + r * ld;\n"
	"\t\tkv_qk *const d = dst + r * KV_DP;\n"
	"\t\tfor (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = r < cnt ? kv_qkcvt(s[c]) : (kv_qk)0;\n"
	"\t}\n}\n";

/* f16/bf16, head_dim % 16 == 0: tensor cores. %s: the PTX type (f16 or bf16), twice;
** %d: 1 for bf16 (the emulator's operand format) */
static const char tile_mma[] =
	"/* Q·Kᵀ on tensor cores: mma.m16n8k16, storage-precision operands, f32 accumulation */\n"
	"enum { KV_DP = KV_D + 8 };   /* row pad: 4 banks per row, conflict-free fragment loads */\n"
	"typedef kv_st kv_qk;\n"
	"__device__ __forceinline__ kv_qk kv_qkcvt(kv_st x) { return x; }\n"
	"#ifdef KV_EMU\n"
	"__device__ __forceinline__ unsigned kv_u32(const kv_st *p) { return (unsigned)p[0] | (unsigned)p[1] << 16; }\n"
	"__device__ __forceinline__ void kv_mma(float d[4], const unsigned a[4], const unsigned b[2]) { kv_emu_mma(%d, d, a, b); }\n"
	"#define KV_UNROLL2\n"
	"#else\n"
	"/* two k-steps per iteration: a full unroll makes ptxas spill (NVRTC 13.0, sm_90) */\n"
	"#define KV_UNROLL2 _Pragma(\"unroll 2\")\n"
	"__device__ __forceinline__ unsigned kv_u32(const kv_st *p) { return *(const unsigned *)p; }\n"
	"/* d = a·b + d for one 16x8 block, the whole warp */\n"
	"__device__ __forceinline__ void kv_mma(float d[4], const unsigned a[4], const unsigned b[2]) {\n"
	"\tasm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.%s.%s.f32 {%%0,%%1,%%2,%%3}, {%%4,%%5,%%6,%%7}, {%%8,%%9}, {%%0,%%1,%%2,%%3};\"\n"
	"\t             : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n"
	"\t             : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b[0]), \"r\"(b[1]));\n}\n"
	"#endif\n"
	"/* fragments (PTX ISA, \"Matrix Fragments for mma.m16n8k16 with floating point type\"):\n"
	"** g = lane >> 2, t = lane & 3, two elements per register, lower column/k first.\n"
	"**   A 16x16 (rows: queries): a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8), a3 (g+8, 2t+8)\n"
	"**   B 16x8 (k x token; a K row is a column, k contiguous): b0 (2t, g), b1 (2t+8, g)\n"
	"**   C/D 16x8 f32: c0, c1 (g, 2t and 2t+1), c2, c3 (g+8, 2t and 2t+1) */\n"
	"__device__ __forceinline__ void kv_frag_a(const kv_qk *s, unsigned a[4]) {\n"
	"\tconst int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;\n"
	"\ta[0] = kv_u32(s + g * KV_DP + 2 * t);\n"
	"\ta[1] = kv_u32(s + (g + 8) * KV_DP + 2 * t);\n"
	"\ta[2] = kv_u32(s + g * KV_DP + 2 * t + 8);\n"
	"\ta[3] = kv_u32(s + (g + 8) * KV_DP + 2 * t + 8);\n}\n"
	"__device__ __forceinline__ void kv_frag_b(const kv_qk *s, unsigned b[2]) {\n"
	"\tconst int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;\n"
	"\tb[0] = kv_u32(s + g * KV_DP + 2 * t);\n"
	"\tb[1] = kv_u32(s + g * KV_DP + 2 * t + 8);\n}\n"
	"__device__ __forceinline__ void kv_frag_c(float *S, int ld, const float c[4]) {\n"
	"\tconst int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;\n"
	"\tS[g * ld + 2 * t] = c[0];\n"
	"\tS[g * ld + 2 * t + 1] = c[1];\n"
	"\tS[(g + 8) * ld + 2 * t] = c[2];\n"
	"\tS[(g + 8) * ld + 2 * t + 1] = c[3];\n}\n"
	"/* S[r][j] = Q[r]·K[j], r < rows, j < cols: a warp per 16x8 block of S, KV_D / 16 mma each */\n"
	"__device__ __forceinline__ void kv_logits(float *S, const kv_qk *sq, const kv_qk *sk, int rows, int cols) {\n"
	"\tconst int nb = (cols + 7) >> 3, nblk = ((rows + 15) >> 4) * nb;\n"
	"\tfor (int b = threadIdx.x >> 5; b < nblk; b += KV_NW) {\n"
	"\t\tconst int m0 = b / nb * 16, n0 = (b - b / nb * nb) * 8;\n"
	"\t\tfloat c[4] = { 0.f, 0.f, 0.f, 0.f };\n"
	"\t\tKV_UNROLL2\n"
	"\t\tfor (int k0 = 0; k0 < KV_D; k0 += 16) {\n"
	"\t\t\tunsigned A[4], B[2];\n"
	"\t\t\tkv_frag_a(sq + m0 * KV_DP + k0, A);\n"
	"\t\t\tkv_frag_b(sk + n0 * KV_DP + k0, B);\n"
	"\t\t\tkv_mma(c, A, B);\n\t\t}\n"
	"\t\tkv_frag_c(S + m0 * KV_SK + n0, KV_SK, c);\n\t}\n}\n";

/* f32 storage (tf32 tensor cores would round the operands to 10 mantissa bits) and
** head_dims that are not a multiple of 16: f32 FMA from the same shared tiles */
static const char tile_fma[] =
	"/* Q·Kᵀ with f32 FMA: operands converted once when staged */\n"
	"enum { KV_DP = KV_D + 1 };   /* odd row stride: lanes on consecutive tokens hit distinct banks */\n"
	"typedef float kv_qk;\n"
	"__device__ __forceinline__ kv_qk kv_qkcvt(kv_st x) { return kv_f(x); }\n"
	"/* S[r][j] = Q[r]·K[j], r < rows, j < cols: a thread per logit */\n"
	"__device__ __forceinline__ void kv_logits(float *S, const kv_qk *sq, const kv_qk *sk, int rows, int cols) {\n"
	"\tfor (int e = threadIdx.x; e < rows * KV_SK; e += KV_NT) {\n"
	"\t\tconst int r = e / KV_SK, j = e - r * KV_SK;\n"
	"\t\tif (j >= cols) continue;\n"
	"\t\tfloat acc = 0.f;\n"
	"\t\tfor (int c = 0; c < KV_D; c++) acc += sq[r * KV_DP + c] * sk[j * KV_DP + c];\n"
	"\t\tS[e] = acc;\n\t}\n}\n";

static const char helpers[] =
	"__device__ __forceinline__ int kv_qpos(const KvgArgs &a, int n, int O, int o) { return a.qpos ? a.qpos[o] : n - O + o; }\n"
	"/* block-wide exclusive scan of a 0/1 flag (warp ballots); *tot = block total */\n"
	"__device__ __forceinline__ int kv_bscan(int flag, int *wsum, int *tot) {\n"
	"\tconst int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;\n"
	"\tconst unsigned b = __ballot_sync(0xffffffffu, flag);\n"
	"\tconst int pre = __popc(b & ((1u << lane) - 1u));\n"
	"\tif (lane == 0) wsum[warp] = __popc(b);\n"
	"\t__syncthreads();\n"
	"\tint off = 0, t = 0;\n"
	"\tfor (int w = 0; w < KV_NW; w++) { const int c = wsum[w]; if (w < warp) off += c; t += c; }\n"
	"\t__syncthreads();\n"
	"\t*tot = t;\n\treturn off + pre;\n}\n"
	"/* order key of a chunk's mean score: numbers by value > NaN; -0 == +0 */\n"
	"__device__ __forceinline__ unsigned kv_key(const float *sc, long long ci, long long ch, long long n) {\n"
	"\tconst long long t0 = ci * ch, t1 = t0 + ch < n ? t0 + ch : n;\n"
	"\tfloat s = 0.f; int nan = 0;\n"
	"\tfor (long long t = t0; t < t1; t++) { const float v = sc[t]; nan |= v != v; s += v; }\n"
	"\tif (nan) return 0u;\n"
	"\tfloat m = ch == 1 ? s : s / (float)(t1 - t0);\n"
	"\tif (m == 0.f) m = 0.f;\n"
	"\tconst unsigned u = __float_as_uint(m);\n"
	"\treturn (u & 0x80000000u) ? ~u : (u | 0x80000000u);\n}\n"
	"__device__ __forceinline__ int kv_prot(long long ci, long long ch, long long n, long long S, long long R) {\n"
	"\tconst long long t0 = ci * ch, t1 = t0 + ch < n ? t0 + ch : n;\n"
	"\treturn t0 < S || t1 - 1 >= n - R;\n}\n"
	"/* Top-k of one group of chunks (grp 1: protected, 0: the others) under a budget of\n"
	"** `want` tokens, as the interpreter's greedy pass over the sorted candidates: full\n"
	"** chunks by radix select over the key bits (4 x 8-bit histograms; the kfull-th\n"
	"** largest key T, ties → lower position up to chunk E); the shorter last chunk is\n"
	"** taken when it fits at its rank. Block-uniform result. */\n"
	"struct KvSel { long long kfull, used, E, nf; unsigned T; int takep, allf, nonef; };\n"
	"__device__ void kv_topk(const float *sc, long long n, long long ch, long long S, long long R, int grp,\n"
	"                        long long want, KvSel &o, unsigned *hist, unsigned *sv, long long *sE, int *wsum) {\n"
	"\tconst int tid = threadIdx.x;\n"
	"\tconst long long nfull = n / ch, rem = n - nfull * ch;\n"
	"\tconst int pin = rem > 0 && kv_prot(nfull, ch, n, S, R) == grp;\n"
	"\tconst unsigned kp = pin ? kv_key(sc, nfull, ch, n) : 0u;\n"
	"\tif (tid == 0) { sv[0] = 0; sv[1] = 0; }\n"
	"\t__syncthreads();\n"
	"\tunsigned c0_ = 0, c1_ = 0;\n"
	"\tfor (long long ci = tid; ci < nfull; ci += KV_NT)\n"
	"\t\tif (kv_prot(ci, ch, n, S, R) == grp) { c0_++; c1_ += pin && kv_key(sc, ci, ch, n) >= kp; }\n"
	"\tatomicAdd(&sv[0], c0_);\n"
	"\tatomicAdd(&sv[1], c1_);\n"
	"\t__syncthreads();\n"
	"\tconst long long nf = sv[0], above = sv[1];\n"
	"\t__syncthreads();\n"
	"\tif (want < 0) want = 0;\n"
	"\tlong long kfull = want / ch < nf ? want / ch : nf;\n"
	"\tint takep = 0;\n"
	"\tif (pin) {\n"
	"\t\tconst long long mb = above < want / ch ? above : want / ch;\n"
	"\t\ttakep = mb * ch + rem <= want;\n"
	"\t\tif (takep) kfull = (want - rem) / ch < nf ? (want - rem) / ch : nf;\n"
	"\t}\n"
	"\to.nf = nf; o.kfull = kfull; o.takep = takep; o.used = kfull * ch + (takep ? rem : 0);\n"
	"\to.allf = kfull >= nf; o.nonef = kfull <= 0; o.T = 0; o.E = -1;\n"
	"\tif (o.allf || o.nonef) return;\n"
	"\tif (tid == 0) { sv[0] = 0; sv[1] = 0; sv[2] = (unsigned)kfull; }\n"
	"\tfor (int sh = 24; sh >= 0; sh -= 8) {\n"
	"\t\tfor (int b = tid; b < 256; b += KV_NT) hist[b] = 0;\n"
	"\t\t__syncthreads();\n"
	"\t\tconst unsigned pref = sv[0], mask = sv[1];\n"
	"\t\tfor (long long ci = tid; ci < nfull; ci += KV_NT) {\n"
	"\t\t\tif (kv_prot(ci, ch, n, S, R) != grp) continue;\n"
	"\t\t\tconst unsigned k_ = kv_key(sc, ci, ch, n);\n"
	"\t\t\tif ((k_ & mask) == pref) atomicAdd(&hist[(k_ >> sh) & 255u], 1u);\n"
	"\t\t}\n"
	"\t\t__syncthreads();\n"
	"\t\tif (tid == 0) {\n"
	"\t\t\tunsigned cum = 0;\n"
	"\t\t\tfor (int b = 255; b >= 0; b--) {\n"
	"\t\t\t\tif (cum + hist[b] >= sv[2]) { sv[0] = pref | ((unsigned)b << sh); sv[1] = mask | (255u << sh); sv[2] -= cum; break; }\n"
	"\t\t\t\tcum += hist[b];\n"
	"\t\t\t}\n"
	"\t\t}\n"
	"\t\t__syncthreads();\n"
	"\t}\n"
	"\tconst unsigned T = sv[0];\n"
	"\tconst long long need = sv[2];\n"
	"\tif (tid == 0) *sE = -1;\n"
	"\tlong long run = 0;\n"
	"\tfor (long long c0 = 0; c0 < nfull; c0 += KV_NT) {\n"
	"\t\tconst long long ci = c0 + tid;\n"
	"\t\tconst int eq = ci < nfull && kv_prot(ci, ch, n, S, R) == grp && kv_key(sc, ci, ch, n) == T;\n"
	"\t\tint tot;\n"
	"\t\tconst int ex = kv_bscan(eq, wsum, &tot);\n"
	"\t\tif (eq && run + ex + 1 == need) *sE = ci;\n"
	"\t\trun += tot;\n"
	"\t\tif (run >= need) break;\n"
	"\t}\n"
	"\t__syncthreads();\n"
	"\to.T = T; o.E = *sE;\n"
	"\t__syncthreads();\n}\n"
	"__device__ __forceinline__ int kv_kept(const KvSel &o, const float *sc, long long ci, long long ch, long long n) {\n"
	"\tif (ci >= n / ch) return o.takep;\n"
	"\tif (o.allf) return 1;\n"
	"\tif (o.nonef) return 0;\n"
	"\tconst unsigned k_ = kv_key(sc, ci, ch, n);\n"
	"\treturn k_ > o.T || (k_ == o.T && ci <= o.E);\n}\n";

static void prologue(Gen *g, const char *name, int need_ws)
{
	sb(&g->s, "\nextern \"C\" __global__ void __launch_bounds__(KV_NT%s) %s(const KvgArgs a)\n{\n",
	   g->minblk ? ", 1" : "", name);
	sb(&g->s, "\tconst int inst = blockIdx.x, l = inst / a.H, h = inst - l * a.H;\n");
	sb(&g->s, "\tconst int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;\n");
	sb(&g->s, "\tconst int n = a.len[inst], N = a.N, O = a.O;\n");
	sb(&g->s, "\tkv_st *const Kb = (kv_st *)a.K + l * a.sL + h * a.sH;\n");
	sb(&g->s, "\tkv_st *const Vb = (kv_st *)a.V + l * a.sL + h * a.sH;\n");
	sb(&g->s, "\tconst kv_st *const Qb = a.Q ? (const kv_st *)a.Q + (long long)inst * KV_G * O * KV_D : 0;\n");
	sb(&g->s, "\tint *const Pb = a.pos + (long long)inst * N;\n");
	sb(&g->s, "\tfloat *const W = %s;\n", need_ws ? "a.ws + (long long)inst * a.ws_inst" : "0");
	sb(&g->s, "\t(void)l; (void)h; (void)tid; (void)lane; (void)warp; (void)n; (void)N; (void)O;\n"
	          "\t(void)Kb; (void)Vb; (void)Qb; (void)Pb; (void)W;\n");
}

static void bufdecls(Gen *g, const char *need)
{
	for (int i = 0; i < g->f->nins; i++)
		if (need[i] && (g->home[i] == HM_BUF || g->home[i] == HM_STAT)) {
			char o[200];
			offexpr(g->off[i], o, sizeof o);
			sb(&g->s, "\tfloat *const B%d = W + (%s); (void)B%d;\n", i, o, i);
		}
}

static int gen_score(Gen *g, KpCudaOut *out)
{
	const KiFn *f = g->f;
	char *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return err(g, NULL, "out of memory");
	mark(f, f->score, need);
	g->decode = 0;
	int rc = analyse(g, need, 0);
	if (rc == 0)
		wsmax(g);
	int last = KC_RKIND(f->score) == RK_INS ? g->phase[KC_RIDX(f->score)] : 0;
	for (int p = 0; rc == 0 && p <= last; p++) {
		char name[32];
		snprintf(name, sizeof name, "kv_score%d", p);
		if (out->nkern >= KVG_MAXKERN - 2)
			return free(need), err(g, NULL, "too many cross-head phases (at most %d)", KVG_MAXKERN - 2);
		KpCudaKernel *k = &out->kern[out->nkern++];
		snprintf(k->name, sizeof k->name, "%s", name);
		k->role = KVG_SCORE, k->phase = p;
		for (int i = 0; i < f->nins; i++)
			k->tiled |= need[i] && g->phase[i] == p && tiledstep(g, i) != TS_NONE;
		/* one block per SM: the tiles' shared memory allows no more; without it ptxas
		** aims at several blocks and spills (NVRTC 13.0) */
		g->minblk = k->tiled;
		prologue(g, name, 1);
		g->minblk = 0;
		bufdecls(g, need);
		if (k->tiled)
			sb(&g->s, "\tKV_DYNSMEM(kv_dsm);   /* score tiles: kp_cuda_score_dsmem */\n"
			          "\tkv_qk *const sQ_ = (kv_qk *)kv_dsm, *const sK_ = sQ_ + KV_SQ * KV_DP;\n"
			          "\tfloat *const sS_ = (float *)(sK_ + KV_SK * KV_DP), *const sA_ = sS_ + KV_SQ * KV_SK;\n"
			          "\t(void)sA_;\n");
		for (int i = 0; rc == 0 && i < f->nins; i++)
			if (need[i] && g->phase[i] == p && (g->home[i] == HM_BUF || g->home[i] == HM_STAT))
				rc = step(g, i);
		if (p == last && rc == 0) {
			sb(&g->s, "\t/* scores (NaN past the held tokens) */\n");
			sb(&g->s, "\tfor (int it = tid; it < N; it += KV_NT) {\n");
			sb(&g->s, "\t\tif (it >= n) { a.scores[(long long)inst * N + it] = kv_nan(); continue; }\n");
			Idx ix = { { NULL, NULL, "it", NULL } };
			int *memo = newmemo(g);
			char A[400];
			if (!memo || val(g, f->score, &ix, memo, 2, A, sizeof A))
				rc = -1;
			free(memo);
			sb(&g->s, "\t\ta.scores[(long long)inst * N + it] = %s;\n\t}\n", A);
		}
		sb(&g->s, "}\n");
	}
	free(need);
	return rc;
}

static int gen_decode(Gen *g, KpCudaOut *out)
{
	const KiFn *f = g->f;
	char *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return err(g, NULL, "out of memory");
	for (int s = 0; s < f->nst; s++)
		mark(f, f->st[s].update, need);
	memset(g->home, 0, (size_t)f->nins);
	memset(g->phase, 0, (size_t)f->nins * sizeof *g->phase);
	g->decode = 1;
	int rc = analyse(g, need, 1);
	/* every update is materialized before the write-back: all of them read the old state */
	for (int s = 0; rc == 0 && s < f->nst; s++)
		if (KC_RKIND(f->st[s].update) == RK_INS)
			g->home[KC_RIDX(f->st[s].update)] = HM_BUF;
	if (rc) {
		free(need);
		return -1;
	}
	/* recompute offsets with the forced homes kept */
	memset(g->cur, 0, sizeof g->cur);
	for (int i = 0; i < f->nins; i++)
		if (need[i] && (g->home[i] == HM_BUF || g->home[i] == HM_STAT)) {
			const KiIns *in = &f->ins[i];
			uint8_t m = g->home[i] == HM_STAT ? (uint8_t)(in->axes & ~AXM(in->axis)) : in->axes;
			long long k = (g->home[i] == HM_STAT ? 2 : 1) * (HAS(m, AX_group) ? g->G : 1) * (HAS(m, AX_chan) ? g->D : 1);
			memcpy(g->off[i], g->cur, sizeof g->cur);
			g->cur[(HAS(m, AX_token) ? 1 : 0) + (HAS(m, AX_obs) ? 2 : 0)] += k;
			g->cur[0] += 1;
		}
	long long poff[4];
	wsreserve(g, 1, g->G, poff);
	wsmax(g);
	char o[200];
	offexpr(poff, o, sizeof o);
	/* split-KV partials: lanes over channels, kv_lpt lanes per token (about 4
	** channels each, coalesced), query heads kv_gb at a time in registers */
	int lpt = 1;
	while (lpt < 32 && lpt * 4 < g->D)
		lpt *= 2;
	int cpl = (g->D + lpt - 1) / lpt, gb = 32 / cpl;   /* q and acc: at most 64 registers */
	gb = gb > g->G ? g->G : gb > 8 ? 8 : gb < 1 ? 1 : gb;
	sb(&g->s, "\nenum { kv_lpt = %d, kv_tpw = 32 / kv_lpt, kv_cpl = (KV_D + kv_lpt - 1) / kv_lpt, kv_gb = %d,\n"
	          "       kv_rec = KV_G * (KV_D + 2), kv_part = KV_NW * kv_rec };\n", lpt, gb);
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_decode");
	k->role = KVG_DECODE;
	prologue(g, "kv_decode", 1);
	sb(&g->s, "\tfloat *const Pr = W + (%s);\n", o);
	sb(&g->s,
	   "\tconst kv_st *const qb = (const kv_st *)a.q + (long long)inst * KV_G * KV_D;\n"
	   "\t/* block (inst, split) takes an even share of the n tokens (maybe none), each warp a\n"
	   "\t   contiguous part of it; per warp an online softmax (m, s) and the sum of p·V per query */\n"
	   "\tconst int nsp = gridDim.y, per = (n + nsp - 1) / nsp;\n"
	   "\tconst int s0 = (int)blockIdx.y * per < n ? (int)blockIdx.y * per : n, s1 = n - s0 < per ? n : s0 + per;\n"
	   "\tconst int wper = (s1 - s0 + KV_NW - 1) / KV_NW;\n"
	   "\tconst int w0 = warp * wper < s1 - s0 ? s0 + warp * wper : s1, w1 = s1 - w0 < wper ? s1 : w0 + wper;\n"
	   "\tconst int sub = lane %% kv_lpt, tg = lane / kv_lpt;\n"
	   "\tfloat *const part = W + a.ws_inst - (long long)nsp * kv_part + ((long long)blockIdx.y * KV_NW + warp) * kv_rec;\n"
	   "\tfor (int g0 = 0; g0 < KV_G; g0 += kv_gb) {\n"
	   "\t\tfloat qr[kv_gb][kv_cpl], acc[kv_gb][kv_cpl], m[kv_gb], s[kv_gb];\n"
	   "\t\tfor (int i = 0; i < kv_gb; i++) {\n"
	   "\t\t\tm[i] = -kv_inf(), s[i] = 0.f;\n"
	   "\t\t\tfor (int j = 0; j < kv_cpl; j++) {\n"
	   "\t\t\t\tconst int c = sub + j * kv_lpt;\n"
	   "\t\t\t\tqr[i][j] = g0 + i < KV_G && c < KV_D ? kv_f(qb[(g0 + i) * KV_D + c]) : 0.f;\n"
	   "\t\t\t\tacc[i][j] = 0.f;\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\tfor (int tb = w0; tb < w1; tb += kv_tpw) {\n"
	   "\t\t\tconst int t = tb + tg, ok = t < w1;\n"
	   "\t\t\tfloat kr[kv_cpl], vr[kv_cpl];\n"
	   "\t\t\tfor (int j = 0; j < kv_cpl; j++) {\n"
	   "\t\t\t\tconst int c = sub + j * kv_lpt, in = ok && c < KV_D;\n"
	   "\t\t\t\tkr[j] = in ? kv_f(Kb[(long long)t * a.sT + c]) : 0.f;\n"
	   "\t\t\t\tvr[j] = in ? kv_f(Vb[(long long)t * a.sT + c]) : 0.f;\n"
	   "\t\t\t}\n"
	   "\t\t\tfor (int i = 0; i < kv_gb; i++) {\n"
	   "\t\t\t\tfloat d = 0.f;\n"
	   "\t\t\t\tfor (int j = 0; j < kv_cpl; j++) d += qr[i][j] * kr[j];\n"
	   "\t\t\t\tfor (int o = kv_lpt / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);\n"
	   "\t\t\t\tif (!ok || g0 + i >= KV_G) continue;\n"
	   "\t\t\t\tconst float x = d / sqrtf((float)KV_D), M = x > m[i] ? x : m[i];\n"
	   "\t\t\t\tconst float sc = expf(m[i] - M), p = expf(x - M);\n"
	   "\t\t\t\tif (sub == 0) Pr[(g0 + i) * N + t] = x;\n"
	   "\t\t\t\ts[i] = s[i] * sc + p, m[i] = M;\n"
	   "\t\t\t\tfor (int j = 0; j < kv_cpl; j++) acc[i][j] = acc[i][j] * sc + p * vr[j];\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\t/* merge the warp's token groups (lanes holding the same channels) */\n"
	   "\t\tfor (int o = 16; o >= kv_lpt; o >>= 1)\n"
	   "\t\t\tfor (int i = 0; i < kv_gb; i++) {\n"
	   "\t\t\t\tconst float m2 = __shfl_xor_sync(0xffffffffu, m[i], o), s2 = __shfl_xor_sync(0xffffffffu, s[i], o);\n"
	   "\t\t\t\tconst float M = m[i] > m2 ? m[i] : m2;\n"
	   "\t\t\t\tconst float f1 = s[i] > 0.f ? expf(m[i] - M) : 0.f, f2 = s2 > 0.f ? expf(m2 - M) : 0.f;\n"
	   "\t\t\t\tfor (int j = 0; j < kv_cpl; j++)\n"
	   "\t\t\t\t\tacc[i][j] = acc[i][j] * f1 + __shfl_xor_sync(0xffffffffu, acc[i][j], o) * f2;\n"
	   "\t\t\t\ts[i] = s[i] * f1 + s2 * f2, m[i] = M;\n"
	   "\t\t\t}\n"
	   "\t\tif (tg == 0)\n"
	   "\t\t\tfor (int i = 0; i < kv_gb && g0 + i < KV_G; i++) {\n"
	   "\t\t\t\tif (sub == 0) part[g0 + i] = m[i], part[KV_G + g0 + i] = s[i];\n"
	   "\t\t\t\tfor (int j = 0; j < kv_cpl; j++)\n"
	   "\t\t\t\t\tif (sub + j * kv_lpt < KV_D) part[2 * KV_G + (g0 + i) * KV_D + sub + j * kv_lpt] = acc[i][j];\n"
	   "\t\t\t}\n"
	   "\t}\n"
	   "}\n");
	k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_decode_comb");
	k->role = KVG_COMBINE;
	prologue(g, "kv_decode_comb", 1);
	sb(&g->s, "\tfloat *const Pr = W + (%s);\n", o);
	sb(&g->s, "\t__shared__ float s_m[KV_G], s_s[KV_G];\n");
	bufdecls(g, need);
	sb(&g->s,
	   "\t/* merge the a.splits * KV_NW partials of kv_decode */\n"
	   "\tconst int np = a.splits * KV_NW;\n"
	   "\tconst float *const part = W + a.ws_inst - (long long)a.splits * kv_part;\n"
	   "\tfor (int ig = warp; ig < KV_G; ig += KV_NW) {\n"
	   "\t\tfloat m_ = -kv_inf(), s_ = 0.f;\n"
	   "\t\tfor (int p = lane; p < np; p += 32) kv_smx_comb(m_, s_, part[p * kv_rec + ig], part[p * kv_rec + KV_G + ig]);\n"
	   "\t\tkv_wsmx(m_, s_);\n"
	   "\t\tif (lane == 0) { s_m[ig] = m_; s_s[ig] = s_; }\n\t}\n"
	   "\t__syncthreads();\n"
	   "\tif (a.out)\n"
	   "\t\tfor (int e_ = tid; e_ < KV_G * KV_D; e_ += KV_NT) {\n"
	   "\t\t\tconst int ig = e_ / KV_D, c = e_ - ig * KV_D;\n"
	   "\t\t\tfloat acc_ = 0.f;\n"
	   "\t\t\tfor (int p = 0; p < np; p++) {\n"
	   "\t\t\t\tconst float *const r = part + (long long)p * kv_rec;\n"
	   "\t\t\t\tif (r[KV_G + ig] > 0.f) acc_ += r[2 * KV_G + ig * KV_D + c] * expf(r[ig] - s_m[ig]);\n"
	   "\t\t\t}\n"
	   "\t\t\ta.out[((long long)inst * KV_G + ig) * KV_D + c] = s_s[ig] > 0.f ? acc_ / s_s[ig] : 0.f;\n\t\t}\n"
	   "\t/* the logits become the probabilities x.attn */\n"
	   "\tfor (int e_ = tid; e_ < KV_G * n; e_ += KV_NT) {\n"
	   "\t\tconst int ig = e_ / n, it = e_ - ig * n;\n"
	   "\t\tPr[ig * N + it] = expf(Pr[ig * N + it] - s_m[ig]) / s_s[ig];\n\t}\n"
	   "\t__syncthreads();\n"
	   "\t/* observe hook */\n");
	for (int i = 0; rc == 0 && i < f->nins; i++)
		if (need[i] && (g->home[i] == HM_BUF || g->home[i] == HM_STAT))
			rc = step(g, i);
	sb(&g->s, "\tfor (int it = tid; it < n; it += KV_NT) {\n");
	for (int s = 0; rc == 0 && s < f->nst; s++) {
		Idx ix = { { NULL, NULL, "it", NULL } };
		int *memo = newmemo(g);
		char A[400];
		if (!memo || val(g, f->st[s].update, &ix, memo, 2, A, sizeof A))
			rc = -1;
		free(memo);
		sb(&g->s, "\t\ta.state[((long long)%d * a.L * a.H + inst) * N + it] = %s;\n", s, A);
	}
	sb(&g->s, "\t}\n}\n");
	free(need);
	return rc;
}

/* select scopes layer and model: one block per scope group (kv_select_grp) decides the
** kept chunks of the group's instances and leaves each instance a record, 4 ints at the
** start of its workspace per class (protected, others): the threshold key T, the last
** tie chunk kept E, whether its shorter last chunk is kept, whether the class is kept
** whole; kv_select then compacts every instance from its record */
static const char grp_src[] =
	"__device__ __forceinline__ long long kv_clen(long long ci, long long ch, long long n) {\n"
	"\treturn (ci + 1) * ch <= n ? ch : n - ci * ch;\n}\n"
	"__device__ __forceinline__ int *kv_grec(const KvgArgs &a, int k, int grp) {\n"
	"\treturn (int *)(a.ws + (long long)k * a.ws_inst) + 4 * grp;\n}\n"
	"__device__ __forceinline__ KvSel kv_ldrec(const int *r) {\n"
	"\tKvSel o = {};\n"
	"\to.T = (unsigned)r[0]; o.E = r[1]; o.takep = r[2]; o.allf = r[3]; o.nonef = 0;\n"
	"\treturn o;\n}\n"
	"/* The interpreter's greedy pass (compiler/interp.c pick) over the chunks of class grp of\n"
	"** instances i0 .. i0+ni-1 under w tokens, candidates ordered by key, then instance, then\n"
	"** position: the prefix that fits is found by a radix select weighted by chunk length\n"
	"** (threshold key T; ties in order up to the first candidate P that does not fit); after\n"
	"** P only shorter last chunks can fit, and the greedy pass takes, one at a time, the best\n"
	"** of those that still fit. Writes the records; returns the tokens taken. */\n"
	"__device__ long long kv_gpick(const KvgArgs &a, int i0, int ni, long long ch, long long S, long long R, int grp,\n"
	"                              long long w, unsigned long long *hist, unsigned long long *sv, int *wsum) {\n"
	"\tconst int tid = threadIdx.x;\n"
	"\tif (w < 0) w = 0;\n"
	"\tif (tid == 0) sv[0] = 0;\n"
	"\t__syncthreads();\n"
	"\tunsigned long long tot = 0;\n"
	"\tfor (int k = i0; k < i0 + ni; k++) {\n"
	"\t\tconst long long n = a.len[k], nch = (n + ch - 1) / ch;\n"
	"\t\tfor (long long ci = tid; ci < nch; ci += KV_NT)\n"
	"\t\t\tif (kv_prot(ci, ch, n, S, R) == grp) tot += (unsigned long long)kv_clen(ci, ch, n);\n"
	"\t}\n"
	"\tatomicAdd(&sv[0], tot);\n"
	"\t__syncthreads();\n"
	"\tconst int allf = sv[0] <= (unsigned long long)w;\n"
	"\tconst unsigned long long total = sv[0];\n"
	"\t__syncthreads();\n"
	"\tunsigned T = 0;\n"
	"\tlong long rem = w, Pk = -1, Pc = -1;\n"
	"\tif (!allf) {\n"
	"\t\tif (tid == 0) { sv[0] = 0; sv[1] = 0; sv[2] = (unsigned long long)w; }\n"
	"\t\tfor (int sh = 24; sh >= 0; sh -= 8) {\n"
	"\t\t\tfor (int b = tid; b < 256; b += KV_NT) hist[b] = 0;\n"
	"\t\t\t__syncthreads();\n"
	"\t\t\tconst unsigned pref = (unsigned)sv[0], mask = (unsigned)sv[1];\n"
	"\t\t\tfor (int k = i0; k < i0 + ni; k++) {\n"
	"\t\t\t\tconst long long n = a.len[k], nch = (n + ch - 1) / ch;\n"
	"\t\t\t\tconst float *const sc = a.scores + (long long)k * a.N;\n"
	"\t\t\t\tfor (long long ci = tid; ci < nch; ci += KV_NT) {\n"
	"\t\t\t\t\tif (kv_prot(ci, ch, n, S, R) != grp) continue;\n"
	"\t\t\t\t\tconst unsigned k_ = kv_key(sc, ci, ch, n);\n"
	"\t\t\t\t\tif ((k_ & mask) == pref) atomicAdd(&hist[(k_ >> sh) & 255u], (unsigned long long)kv_clen(ci, ch, n));\n"
	"\t\t\t\t}\n"
	"\t\t\t}\n"
	"\t\t\t__syncthreads();\n"
	"\t\t\tif (tid == 0) {\n"
	"\t\t\t\tunsigned long long cum = 0;\n"
	"\t\t\t\tfor (int b = 255; b >= 0; b--) {\n"
	"\t\t\t\t\tif (cum + hist[b] > sv[2]) { sv[0] = pref | ((unsigned)b << sh); sv[1] = mask | (255u << sh); sv[2] -= cum; break; }\n"
	"\t\t\t\t\tcum += hist[b];\n"
	"\t\t\t\t}\n"
	"\t\t\t}\n"
	"\t\t\t__syncthreads();\n"
	"\t\t}\n"
	"\t\tT = (unsigned)sv[0];\n"
	"\t\tconst long long remT = (long long)sv[2];\n"
	"\t\t__syncthreads();\n"
	"\t\t/* ties at T in order: P is the one whose weight crosses remT */\n"
	"\t\tlong long run = 0;\n"
	"\t\tfor (int k = i0; k < i0 + ni && Pk < 0; k++) {\n"
	"\t\t\tconst long long n = a.len[k], nch = (n + ch - 1) / ch, nf = n / ch;\n"
	"\t\t\tconst float *const sc = a.scores + (long long)k * a.N;\n"
	"\t\t\tfor (long long c0 = 0; c0 < nch; c0 += KV_NT) {\n"
	"\t\t\t\tconst long long ci = c0 + tid;\n"
	"\t\t\t\tconst int eq = ci < nch && kv_prot(ci, ch, n, S, R) == grp && kv_key(sc, ci, ch, n) == T;\n"
	"\t\t\t\tint cnt;\n"
	"\t\t\t\tconst int ex = kv_bscan(eq, wsum, &cnt);\n"
	"\t\t\t\t/* the shorter chunk is the instance's last: only full chunks precede a tie here */\n"
	"\t\t\t\tconst long long before = run + ch * ex;\n"
	"\t\t\t\tif (eq && before <= remT && before + kv_clen(ci, ch, n) > remT) { sv[3] = (unsigned long long)k; sv[4] = (unsigned long long)ci; sv[5] = (unsigned long long)before; }\n"
	"\t\t\t\tconst int seq = nf < nch && nf >= c0 && nf < c0 + KV_NT && kv_prot(nf, ch, n, S, R) == grp && kv_key(sc, nf, ch, n) == T;\n"
	"\t\t\t\trun += ch * cnt - (seq ? ch - (n - nf * ch) : 0);\n"
	"\t\t\t\t__syncthreads();\n"
	"\t\t\t\tif (run > remT) { Pk = (long long)sv[3]; Pc = (long long)sv[4]; rem = remT - (long long)sv[5]; break; }\n"
	"\t\t\t}\n"
	"\t\t}\n"
	"\t}\n"
	"\t/* records; a shorter last chunk in the prefix is kept */\n"
	"\tfor (int k = i0 + tid; k < i0 + ni; k += KV_NT) {\n"
	"\t\tconst long long n = a.len[k], nf = n / ch;\n"
	"\t\tint *const r = kv_grec(a, k, grp);\n"
	"\t\tconst int hasp = nf * ch < n && kv_prot(nf, ch, n, S, R) == grp;\n"
	"\t\tconst unsigned kp = hasp ? kv_key(a.scores + (long long)k * a.N, nf, ch, n) : 0u;\n"
	"\t\tr[0] = (int)T; r[1] = k < Pk ? 0x7fffffff : k == Pk ? (int)(Pc - 1) : -1; r[3] = allf;\n"
	"\t\tr[2] = hasp && (allf || kp > T || (kp == T && (k < Pk || (k == Pk && nf < Pc))));\n"
	"\t}\n"
	"\t__syncthreads();\n"
	"\tif (allf) return (long long)total;\n"
	"\t/* after P: the best shorter chunk that still fits, until none does */\n"
	"\tfor (int round = 0; round < ni; round++) {\n"
	"\t\tif (tid == 0) sv[6] = 0;\n"
	"\t\t__syncthreads();\n"
	"\t\tunsigned long long best = 0;\n"
	"\t\tfor (int k = i0 + tid; k < i0 + ni; k += KV_NT) {\n"
	"\t\t\tconst long long n = a.len[k], nf = n / ch;\n"
	"\t\t\tif (nf * ch == n || n - nf * ch > rem || kv_prot(nf, ch, n, S, R) != grp || kv_grec(a, k, grp)[2]) continue;\n"
	"\t\t\tconst unsigned long long v = (unsigned long long)kv_key(a.scores + (long long)k * a.N, nf, ch, n) << 32 | (0xffffffffu - (unsigned)(k - i0));\n"
	"\t\t\tbest = v > best ? v : best;\n"
	"\t\t}\n"
	"\t\tatomicMax(&sv[6], best);\n"
	"\t\t__syncthreads();\n"
	"\t\tconst unsigned long long b = sv[6];\n"
	"\t\tif (b == 0) break;\n"
	"\t\tconst int k = i0 + (int)(0xffffffffu - (unsigned)(b & 0xffffffffu));\n"
	"\t\trem -= a.len[k] - a.len[k] / ch * ch;\n"
	"\t\tif (tid == 0) kv_grec(a, k, grp)[2] = 1;\n"
	"\t\t__syncthreads();\n"
	"\t}\n"
	"\treturn w - rem;\n}\n";

static void gen_selgrp(Gen *g, KpCudaOut *out, const char *S, const char *R, const char *C)
{
	const KiSelect *s = &g->f->sel;
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_select_grp");
	k->role = KVG_SELGRP;
	k->phase = s->scope == SC_layer;
	/* the records: 8 floats at the start of each instance's workspace */
	long long ro[4];
	memset(g->cur, 0, sizeof g->cur);
	wsreserve(g, 0, 8, ro);
	wsmax(g);
	sb(&g->s, "%s", grp_src);
	sb(&g->s, "\nextern \"C\" __global__ void __launch_bounds__(KV_NT) kv_select_grp(const KvgArgs a)\n{\n");
	sb(&g->s, "\tconst int i0 = %s, ni = %s;\n", s->scope == SC_layer ? "(int)blockIdx.x * a.H" : "0",
	   s->scope == SC_layer ? "a.H" : "a.L * a.H");
	sb(&g->s, "\t__shared__ unsigned long long hist[256], sv[8];\n\t__shared__ int wsum[KV_NW];\n");
	sb(&g->s, "\tconst long long S = (long long)(%s), R = (long long)(%s), ch = (long long)(%s);\n", S, R, C);
	sb(&g->s,
	   "\tif (S < 0 || R < 0 || ch < 1) { if (threadIdx.x == 0) kv_seterr(a.err, KVG_ESELECT); return; }\n"
	   "\t/* the group's budget: the sum of its instances' n_keep */\n"
	   "\tlong long want = 0;\n"
	   "\tfor (int k = i0; k < i0 + ni; k++) want += kv_nkeep(a, k / a.H, a.len[k]);\n"
	   "\t/* protected chunks first (by score among themselves), then the others */\n"
	   "\tconst long long u1 = kv_gpick(a, i0, ni, ch, S, R, 1, want, hist, sv, wsum);\n"
	   "\tkv_gpick(a, i0, ni, ch, S, R, 0, want - u1, hist, sv, wsum);\n"
	   "}\n");
}

static int gen_select(Gen *g, KpCudaOut *out)
{
	const KiFn *f = g->f;
	const KiSelect *s = &f->sel;
	if (s->kind != SEL_topk)
		return err(g, NULL, "only top-k selection is supported");
	if (f->merge.kind != MG_drop)
		return err(g, NULL, "only merge drop is supported");
	char S[200], R[200], C[200], B[200];
	if (dscalar(g, s->keep_first, S, sizeof S, 0) || dscalar(g, s->keep_recent, R, sizeof R, 0) ||
	    dscalar(g, s->chunk, C, sizeof C, 1) || dscalar(g, s->beta, B, sizeof B, 20))
		return err(g, NULL, "select arguments must be constants or params");
	/* ki_nkeep, in double with explicit rounding (no contraction) */
	sb(&g->s, "\n/* ki_nkeep (compiler/interp.c) */\n"
	          "__device__ long long kv_nkeep(const KvgArgs &a, int l, long long n) {\n"
	          "\tconst long long budget = a.budget; const double ratio = a.ratio; (void)l;\n"
	          "\tconst double keep = budget >= 0 ? (double)(budget < n ? budget : n) : __dmul_rn((double)n, __dsub_rn(1.0, ratio));\n"
	          "\tlong long nk = budget >= 0 ? (budget < n ? budget : n) : (long long)floor(keep);\n");
	if (s->sched == SCH_pyramid) {
		sb(&g->s, "\tif (budget >= 0 || ratio > 0) {\n"
		          "\t\tconst double w = %s, beta = %s, T = __dadd_rn(w, keep);\n"
		          "\t\tdouble mn = __ddiv_rn(__dsub_rn(T, w), beta), mx = __dsub_rn(__dmul_rn(__dsub_rn(T, w), 2.0), mn);\n"
		          "\t\tif (mx >= __dsub_rn((double)n, w)) { mx = __dsub_rn((double)n, w); mn = __dsub_rn(__dmul_rn(__dsub_rn(T, w), 2.0), mx); }\n"
		          "\t\tif (!((double)n >= mx && mx >= mn && mn >= w) || a.L < 2) nk = (long long)rint(keep);\n"
		          "\t\telse nk = (long long)rint(__dsub_rn(mx, __dmul_rn((double)l, __ddiv_rn(__dsub_rn(mx, mn), (double)(a.L - 1)))));\n"
		          "\t}\n", R, B);
	}
	sb(&g->s, "\tif (nk < 0) nk = 0;\n\tif (nk > n) nk = n;\n\treturn nk;\n}\n");
	if (s->scope != SC_head)
		gen_selgrp(g, out, S, R, C);
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_select");
	k->role = KVG_SELECT;
	prologue(g, "kv_select", 0);
	sb(&g->s,
	   "\t__shared__ unsigned hist[256], sv[4];\n"
	   "\t__shared__ long long s_E;\n"
	   "\t__shared__ int wsum[KV_NW];\n"
	   "\t__shared__ int sdst[KV_NT];\n"
	   "\tKV_DYNSMEM(kv_dsm);\n"
	   "\tkv_st *const stK = (kv_st *)kv_dsm, *const stV = stK + KV_TT * KV_D;\n"
	   "\tconst float *const sc = a.scores + (long long)inst * N;\n");
	sb(&g->s, "\tconst long long S = (long long)(%s), R = (long long)(%s), ch = (long long)(%s);\n", S, R, C);
	sb(&g->s,
	   "\tif (S < 0 || R < 0 || ch < 1) { if (tid == 0) kv_seterr(a.err, KVG_ESELECT); return; }\n");
	if (s->scope == SC_head)
		sb(&g->s,
		   "\tconst long long want = kv_nkeep(a, l, n);\n"
		   "\t/* protected chunks first (by score among themselves), then the others */\n"
		   "\tKvSel s1, s0;\n"
		   "\tkv_topk(sc, n, ch, S, R, 1, want, s1, hist, sv, &s_E, wsum);\n"
		   "\tkv_topk(sc, n, ch, S, R, 0, want - s1.used, s0, hist, sv, &s_E, wsum);\n");
	else
		sb(&g->s,
		   "\t/* decided by kv_select_grp for the whole %s */\n"
		   "\tconst KvSel s1 = kv_ldrec(kv_grec(a, inst, 1)), s0 = kv_ldrec(kv_grec(a, inst, 0));\n"
		   "\t(void)hist; (void)sv; (void)s_E;\n", ki_scopename(s->scope));
	sb(&g->s,
	   "\t/* stable in-place compaction, one tile of KV_NT tokens at a time; rows are\n"
	   "\t   staged in shared memory KV_TT at a time (destinations never pass sources) */\n"
	   "\tlong long run = 0;\n"
	   "\tfor (long long t0 = 0; t0 < n; t0 += KV_NT) {\n"
	   "\t\tconst long long t = t0 + tid;\n"
	   "\t\tint keep = 0;\n"
	   "\t\tif (t < n) {\n"
	   "\t\t\tconst long long ci = t / ch;\n"
	   "\t\t\tkeep = kv_kept(kv_prot(ci, ch, n, S, R) ? s1 : s0, sc, ci, ch, n);\n"
	   "\t\t}\n"
	   "\t\tint tot;\n"
	   "\t\tconst int ex = kv_bscan(keep, wsum, &tot);\n"
	   "\t\tsdst[tid] = keep ? (int)(run + ex) : -1;\n"
	   "\t\tconst int pv = keep ? Pb[t] : 0;\n");
	for (int st = 0; st < f->nst; st++)
		sb(&g->s, "\t\tconst float stv%d = keep ? a.state[((long long)%d * a.L * a.H + inst) * N + t] : 0.f;\n", st, st);
	sb(&g->s,
	   "\t\t__syncthreads();\n"
	   "\t\tconst int cnt = n - t0 < KV_NT ? (int)(n - t0) : KV_NT;\n"
	   "\t\tif (!(run == t0 && tot == cnt))\n"
	   "\t\t\tfor (int r0 = 0; r0 < cnt; r0 += KV_TT) {\n"
	   "\t\t\t\tconst int rows = cnt - r0 < KV_TT ? cnt - r0 : KV_TT;\n"
	   "\t\t\t\tfor (int e_ = tid; e_ < rows * KV_D; e_ += KV_NT) {\n"
	   "\t\t\t\t\tconst int rr = e_ / KV_D, c = e_ - rr * KV_D;\n"
	   "\t\t\t\t\tif (sdst[r0 + rr] >= 0) {\n"
	   "\t\t\t\t\t\tstK[e_] = Kb[(t0 + r0 + rr) * a.sT + c];\n"
	   "\t\t\t\t\t\tstV[e_] = Vb[(t0 + r0 + rr) * a.sT + c];\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tfor (int e_ = tid; e_ < rows * KV_D; e_ += KV_NT) {\n"
	   "\t\t\t\t\tconst int rr = e_ / KV_D, c = e_ - rr * KV_D, dd = sdst[r0 + rr];\n"
	   "\t\t\t\t\tif (dd >= 0) {\n"
	   "\t\t\t\t\t\tKb[(long long)dd * a.sT + c] = stK[e_];\n"
	   "\t\t\t\t\t\tVb[(long long)dd * a.sT + c] = stV[e_];\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t}\n"
	   "\t\tif (keep) {\n"
	   "\t\t\tPb[run + ex] = pv;\n");
	for (int st = 0; st < f->nst; st++)
		sb(&g->s, "\t\t\ta.state[((long long)%d * a.L * a.H + inst) * N + run + ex] = stv%d;\n", st, st);
	sb(&g->s,
	   "\t\t}\n"
	   "\t\trun += tot;\n"
	   "\t\t__syncthreads();\n"
	   "\t}\n"
	   "\tif (tid == 0) a.len[inst] = (int)run;\n"
	   "}\n");
	return 0;
}

static void argsdecl(Sb *s)
{
	sb(s, "#define KVG_MAXPAR %d\ntypedef struct KvgArgs {\n", KVG_MAXPAR);
#define KVG_PRINT(t, nm) sb(s, "\t%s %s;\n", #t, #nm);
	KVG_ARGS_FIELDS(KVG_PRINT)
#undef KVG_PRINT
	sb(s, "} KvgArgs;\n");
}

unsigned kp_cuda_dsmem(int dtype, int head_dim, int tile)
{
	return (unsigned)(2 * tile * head_dim * (dtype == KI_F32 ? 4 : 2));
}

int kp_cuda_tile(int sm, int dtype, int head_dim, int nthreads)
{
	/* staging budget per target: stays within the default 48 KB on unknown and
	** older parts, uses the opt-in shared memory of A100 (163 KB) and H100 (227 KB) */
	unsigned budget = sm >= 90 ? 128u << 10 : sm == 80 ? 96u << 10 : sm >= 86 ? 64u << 10 : 32u << 10;
	unsigned row = kp_cuda_dsmem(dtype, head_dim, 1);
	int tt = (int)(budget / row);
	if (tt > nthreads)
		tt = nthreads;
	if (tt < 1)
		tt = 1;
	return tt;
}

int kp_cuda_mma(int dtype, int head_dim)
{
	return dtype != KI_F32 && head_dim % 16 == 0;
}

unsigned kp_cuda_score_dsmem(int dtype, int head_dim, int group, int sq, int sk)
{
	int mma = kp_cuda_mma(dtype, head_dim);
	unsigned dp = (unsigned)head_dim + (mma ? 8u : 1u), esz = mma ? 2u : 4u;
	return (unsigned)(sq + sk) * dp * esz + (unsigned)(sq * sk + group * sk) * 4u;
}

void kp_cuda_score_tile(int sm, int dtype, int head_dim, int group, int *sq, int *sk)
{
	/* below the opt-in maximum of each part: A100/A30 (sm_80/87) 163 KB, H100/B200
	** (sm_90, sm_100) 227 KB, the others (sm_86, sm_89, sm_120) 99 KB. Tokens per tile:
	** 64; query rows per chunk: as many as fit up to 64·G, at most 256 (G·O of a 64-query
	** window: Q staged once), in steps of 16 (the mma row block) */
	unsigned budget = sm == 80 || sm == 87 ? 160u << 10 : sm >= 90 && sm < 120 ? 220u << 10 : 96u << 10;
	int k = 64, q = group < 4 ? 64 * group : 256;
	while (q > 16 && kp_cuda_score_dsmem(dtype, head_dim, group, q, k) > budget)
		q -= 16;
	while (k > 8 && kp_cuda_score_dsmem(dtype, head_dim, group, q, k) > budget)
		k -= 8;
	*sq = q, *sk = k;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* does root reach an instruction with this op? (-1: out of memory) */
static int uses(const KiFn *f, KcRef root, int op)
{
	char *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return -1;
	mark(f, root, need);
	int u = 0;
	for (int i = 0; i < f->nins; i++)
		u |= need[i] && f->ins[i].op == op;
	free(need);
	return u;
}

static int generate(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KcErr *e)
{
	Gen g = { .f = f, .e = e, .dtype = o->dtype, .D = o->head_dim, .G = o->group, .NT = out->nthreads };
	if (g.D < 1 || g.D > 1024 || g.G < 1 || g.G > 64)
		return kc_error(e, f->src, f->line, f->col, "GPU backend: head_dim %d / group %d out of range", g.D, g.G), -1;
	if (f->npar > KVG_MAXPAR)
		return kc_error(e, f->src, f->line, f->col, "GPU backend: %d params, at most %d", f->npar, KVG_MAXPAR), -1;
	/* the same mapping rules as the x86 plan where it applies (state and x.attn are ours) */
	int ustate = uses(f, f->score, KO_state), uattn = uses(f, f->score, KO_attn);
	if (ustate < 0 || uattn < 0)
		return kc_error(e, f->src, 0, 0, "GPU backend: out of memory"), -1;
	if (!ustate && !uattn) {
		KpPlan p;
		if (kp_build(f, &p, e) != 0)
			return -1;
		kp_free(&p);
	}
	g.home = calloc((size_t)f->nins + 1, 1);
	g.phase = calloc((size_t)f->nins + 1, sizeof *g.phase);
	g.off = calloc((size_t)f->nins + 1, sizeof *g.off);
	if (!g.home || !g.phase || !g.off) {
		free(g.home), free(g.phase), free(g.off);
		return kc_error(e, f->src, 0, 0, "GPU backend: out of memory"), -1;
	}
	sb(&g.s, "%s", prelude);
	sb(&g.s, "/* policy %s: dtype %s, head_dim %d, group %d */\n", f->name, ki_dtypename(o->dtype), g.D, g.G);
	sb(&g.s, "#define KV_G %d\n#define KV_D %d\n", g.G, g.D);
	sb(&g.s, "%s", o->dtype == KI_F16 ? prelude_f16 : o->dtype == KI_BF16 ? prelude_bf16 : prelude_f32);
	argsdecl(&g.s);
	sb(&g.s, "%s", helpers);
	if (kp_cuda_mma(o->dtype, g.D))
		sb(&g.s, tile_mma, o->dtype == KI_BF16, ki_dtypename(o->dtype), ki_dtypename(o->dtype));
	else
		sb(&g.s, "%s", tile_fma);
	sb(&g.s, "%s", tile_common);
	int rc = 0;
	if (f->when.kind == WH_decode || f->nst > 0) {
		rc = gen_decode(&g, out);
		out->has_decode = rc == 0;
		out->dec_part = kvg_dec_part(g.G, g.D, g.NT);
		memset(g.home, 0, (size_t)f->nins);
		memset(g.phase, 0, (size_t)f->nins * sizeof *g.phase);
	}
	if (rc == 0)
		rc = gen_score(&g, out);
	if (rc == 0)
		rc = gen_select(&g, out);
	out->has_compress = rc == 0;
	memcpy(out->ws_coef, g.wsmax, sizeof g.wsmax);
	free(g.home), free(g.phase), free(g.off);
	if (g.s.oom) {
		free(g.s.p);
		return kc_error(e, f->src, 0, 0, "GPU backend: out of memory"), -1;
	}
	if (rc) {
		free(g.s.p);
		return -1;
	}
	out->src = g.s.p;
	out->nsrc = g.s.n;
	return 0;
}

/* "ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem" per entry function */
static void parselog(const char *log, KpCudaOut *out, KpCudaImage *im)
{
	int k = -1;
	for (const char *p = log; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		char line[512];
		snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), p);
		const char *q;
		if ((q = strstr(line, "Compiling entry function '")) != NULL) {
			q += strlen("Compiling entry function '");
			k = -1;
			for (int i = 0; i < out->nkern; i++)
				if (!strncmp(q, out->kern[i].name, strlen(out->kern[i].name)) && q[strlen(out->kern[i].name)] == '\'')
					k = i;
		} else if (k >= 0 && (q = strstr(line, "Used ")) != NULL) {
			im->regs[k] = atoi(q + 5);
			const char *sm = strstr(line, "bytes smem");
			if (sm) {
				const char *b = sm;
				while (b > line && b[-1] == ' ')
					b--;
				while (b > line && b[-1] >= '0' && b[-1] <= '9')
					b--;
				im->smem[k] = atoi(b);
			}
		} else if (k >= 0 && (q = strstr(line, "bytes spill stores")) != NULL) {
			const char *b = q;
			while (b > line && b[-1] == ' ')
				b--;
			while (b > line && b[-1] >= '0' && b[-1] <= '9')
				b--;
			im->spill[k] = atoi(b);
		}
		p = eol ? eol + 1 : NULL;
	}
}

static int parsearchs(const char *s, int *sm, int max, const int *have, int nhave, KcErr *e, const KiFn *f)
{
	int n = 0;
	if (!s)
		s = "sm_80,sm_90";
	if (!strcmp(s, "all")) {
		for (int i = 0; i < nhave && n < max; i++)
			sm[n++] = have[i];
		return n;
	}
	while (*s) {
		const char *c = strchr(s, ',');
		size_t len = c ? (size_t)(c - s) : strlen(s);
		char one[32];
		snprintf(one, sizeof one, "%.*s", (int)(len < 31 ? len : 31), s);
		int v = 0;
		if (sscanf(one, "sm_%d", &v) != 1 && sscanf(one, "compute_%d", &v) != 1 && sscanf(one, "%d", &v) != 1)
			return kc_error(e, f->src, 0, 0, "--gpu-arch: '%s' is not an sm_XY name", one), -1;
		int ok = 0;
		for (int i = 0; i < nhave; i++)
			ok |= have[i] == v;
		if (!ok) {
			char list[256] = "";
			for (int i = 0; i < nhave; i++) {
				char t[16];
				snprintf(t, sizeof t, "%ssm_%d", i ? " " : "", have[i]);
				strncat(list, t, sizeof list - strlen(list) - 1);
			}
			return kc_error(e, f->src, 0, 0, "--gpu-arch: NVRTC cannot target sm_%d (supported: %s)", v, list), -1;
		}
		if (n < max)
			sm[n++] = v;
		s += len;
		if (*s == ',')
			s++;
	}
	return n;
}

int kp_compile_cuda(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KcErr *e)
{
	memset(out, 0, sizeof *out);
	out->nthreads = o->nthreads > 0 ? o->nthreads : 256;
	if (out->nthreads % 32 || out->nthreads > 1024)
		return kc_error(e, f->src, 0, 0, "GPU backend: threads per block must be a multiple of 32 up to 1024"), -1;
	double t0 = now_ms();
	if (generate(f, o, out, e) != 0)
		return -1;
	out->gen_ms = now_ms() - t0;
	if (o->gen_only)
		return 0;
	char why[512];
	if (kp_nvrtc_available(&out->nvrtc_major, &out->nvrtc_minor, why, sizeof why) != 0) {
		kc_error(e, f->src, 0, 0, "GPU backend: %s", why);
		kp_cuda_free(out);
		return -1;
	}
	int have[64], nhave = kp_nvrtc_archs(have, 64), sm[KVG_MAXARCH];
	int narch = parsearchs(o->archs, sm, KVG_MAXARCH, have, nhave, e, f);
	if (narch < 0) {
		kp_cuda_free(out);
		return -1;
	}
	for (int a = 0; a < narch; a++) {
		KpCudaImage *im = &out->img[out->nimg++];
		snprintf(im->arch, sizeof im->arch, "sm_%d", sm[a]);
		im->sm = sm[a];
		im->tile = kp_cuda_tile(sm[a], o->dtype, o->head_dim, out->nthreads);
		kp_cuda_score_tile(sm[a], o->dtype, o->head_dim, o->group, &im->sq, &im->sk);
		char dnt[32], dtt[32], dsq[32], dsk[32];
		snprintf(dnt, sizeof dnt, "-DKV_NT=%d", out->nthreads);
		snprintf(dtt, sizeof dtt, "-DKV_TT=%d", im->tile);
		snprintf(dsq, sizeof dsq, "-DKV_SQ=%d", im->sq);
		snprintf(dsk, sizeof dsk, "-DKV_SK=%d", im->sk);
		const char *extra[] = { dnt, dtt, dsq, dsk };
		KpNvrtcRes r;
		double t1 = now_ms();
		char name[96];
		snprintf(name, sizeof name, "%s.cu", f->name);
		if (kp_nvrtc_compile(out->src, name, sm[a], extra, 4, &r, why, sizeof why) != 0) {
			kc_error(e, f->src, 0, 0, "GPU backend: %s", why);
			kp_nvrtc_free(&r);
			kp_cuda_free(out);
			return -1;
		}
		im->ms = now_ms() - t1;
		im->ptx = r.ptx, im->nptx = r.nptx, im->cubin = r.cubin, im->ncubin = r.ncubin;
		parselog(r.log, out, im);
		free(r.log);
		for (int k = 0; k < out->nkern; k++)
			im->dsmem[k] = out->kern[k].role == KVG_SELECT ? kp_cuda_dsmem(o->dtype, o->head_dim, im->tile)
			               : out->kern[k].tiled ? kp_cuda_score_dsmem(o->dtype, o->head_dim, o->group, im->sq, im->sk)
			                                    : 0;
	}
	return 0;
}

void kp_cuda_free(KpCudaOut *out)
{
	free(out->src);
	for (int i = 0; i < out->nimg; i++) {
		free(out->img[i].ptx);
		free(out->img[i].cubin);
	}
	memset(out, 0, sizeof *out);
}
