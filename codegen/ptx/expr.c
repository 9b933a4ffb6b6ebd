/*
** The values inside the generated kernels (DESIGN §5 skeletons, GPU side):
** for each needed KIR instruction, where it lives and the CUDA C that computes
** it. kernels.c puts the results into kernels.
**
** Every needed instruction has a home (kp_analyse):
**   INL   recomputed where used, as an expression of the loop indices
**         (leaves, elementwise ops, and the Q·Kᵀ dot over chan — the tile)
**   BUF   materialized in the per-instance global workspace (reductions,
**         pools, hmean, and what pools/hmean read)
**   STAT  softmax: its (max, sum) per slice in the workspace; the
**         probability is recomputed inline from the logit
** kp_val gives an instruction's expression at given indices (the op table's
** CUDA text for elementwise ops, ops.h); kp_step emits the loop that
** materializes a BUF or STAT value, the reductions from their KS_RED kinds.
** A BUF step reducing over token runs warp-per-output (lanes stride the
** tokens, shuffle reduction); other steps run thread-per-output. The
** [obs × token] attention is never stored: stats then the obs reduction
** each recompute the logits (two passes, like attn_stats + attn_score); on
** score tiles (Q·Kᵀ in shared memory) when the logit is reached inline.
*/
#include <string.h>
#include <math.h>
#include "codegen/ptx/gen.h"

int kp_err(Gen *g, const KiIns *in, const char *fmt, ...)
{
	if (g->e->set)
		return -1;
	char buf[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	ki_error(g->e, g->f->src, in ? in->line : g->f->line, in ? in->col : g->f->col, "GPU backend: %s", buf);
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
int kp_dscalar(const Gen *g, KiRef r, char *buf, size_t n, double def)
{
	switch (KI_RKIND(r)) {
	case RK_CON: snprintf(buf, n, "%.17g", g->f->con[KI_RIDX(r)]); return 0;
	case RK_PAR: snprintf(buf, n, "a.par[%d]", KI_RIDX(r)); return 0;
	case RK_NIL: snprintf(buf, n, "%.17g", def); return 0;
	}
	return -1;
}

static const char *axsize(int ax)
{
	static const char *s[AX_NUM] = { "KV_G", "O", "n", "KV_D", "a.nout" };
	return s[ax];
}

/* snprintf that says whether the text fit: 0, or -1 when it was truncated */
static int fits(int r, size_t n)
{
	return r >= 0 && (size_t)r < n ? 0 : -1;
}

/* buffer index of a value with axes m (token stride N). An index that does not fit the buffers
** becomes text NVRTC rejects, so a truncated index can never compile into a wrong address. */
static void bufidx(uint8_t m, const Idx *ix, char *buf, size_t n)
{
	static const char *st[AX_NUM] = { "KV_G", "O", "N", "KV_D", "a.nout" };
	char t[512] = "0";
	int bad = 0;
	for (int ax = 0; ax < AX_NUM; ax++)
		if (HAS(m, ax)) {
			char u[512];
			if (!strcmp(t, "0"))
				bad |= fits(snprintf(u, sizeof u, "(%s)", ix->v[ax]), sizeof u);
			else
				bad |= fits(snprintf(u, sizeof u, "(%s)*%s+(%s)", t, st[ax], ix->v[ax]), sizeof u);
			snprintf(t, sizeof t, "%s", u);
		}
	bad |= fits(snprintf(buf, n, "%s", t), n);
	if (bad)
		snprintf(buf, n, "#error kvcc: a buffer index longer than the generator's text buffers#");
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
		KiRef r = in->arg[a];
		if (KI_RKIND(r) != RK_INS || f->ins[KI_RIDX(r)].op != KO_input)
			return 0;
		q += f->ins[KI_RIDX(r)].aux == IN_Q, k += f->ins[KI_RIDX(r)].aux == IN_K;
	}
	return q == 1 && k == 1;
}

/* Expression for ref r at indices ix; statements go to g->s at depth d.
** memo[i] >= 0: instruction i is already in variable x<memo[i]>. */

/* Weight in->aux at this instance and index ix (group, chan) in the packed buffer a.wts
** (runtime/artifact.h KaWeight: declaration order, each row-major over its declared axes,
** layer = a.L, head = a.H, group = KV_G, chan = KV_D; int arithmetic: kvcc_plan_set_weight's
** buffers are far below 2^31 elements, and 64-bit index math spills score kernels); the out axis:
** a.nout, indexed by the reduction over out that reads it */
static int wexpr(Gen *g, const KiIns *in, const Idx *ix, char *e, size_t en)
{
	const KiFn *f = g->f;
	char off[1200] = "0";
	int bad = 0;
	for (int k = 0; k <= (int)in->aux; k++) {
		const KiWeight *w = &f->w[k];
		char ex[600] = "";
		for (int j = 0; j < w->ndim; j++) {
			const char *sz = w->ax[j] == WA_layer ? "a.L" : w->ax[j] == WA_head ? "a.H"
			               : w->ax[j] == WA_group ? "KV_G" : w->ax[j] == WA_chan ? "KV_D"
			               : w->ax[j] == WA_out ? "a.nout" : NULL;
			if (!sz)
				return -1;
			if (k < (int)in->aux) {      /* the weights before it: their element counts */
				size_t used = strlen(ex);
				bad |= fits(snprintf(ex + used, sizeof ex - used, "*%s", sz), sizeof ex - used);
			} else {                       /* its own: row-major index */
				const char *iv = w->ax[j] == WA_layer ? "l" : w->ax[j] == WA_head ? "h"
				               : w->ax[j] == WA_group ? ix->v[AX_group] : w->ax[j] == WA_out ? ix->v[AX_out]
				               : ix->v[AX_chan];
				char t[600];
				bad |= fits(snprintf(t, sizeof t, "(%s)*%s+(int)(%s)", ex[0] ? ex : "0", sz, iv ? iv : "0"), sizeof t);
				bad |= fits(snprintf(ex, sizeof ex, "%s", t), sizeof ex);
			}
		}
		char t[1200];
		if (k < (int)in->aux)
			bad |= fits(snprintf(t, sizeof t, "%s+1%s", off, ex), sizeof t);
		else
			bad |= fits(snprintf(t, sizeof t, "%s+%s", off, ex), sizeof t);
		bad |= fits(snprintf(off, sizeof off, "%s", t), sizeof off);
	}
	bad |= fits(snprintf(e, en, "a.wts[%s]", off), en);
	return bad ? -1 : 0;
}

/* The memo for a loop over `axis`: the variables of values that do not vary along it stay
** usable inside, the others are recomputed per iteration. NULL when out of memory. */
static int *memo_outside(const KiFn *f, const int *memo, int axis)
{
	int *m2 = malloc((size_t)f->nins * sizeof *m2);
	if (m2)
		for (int k = 0; k < f->nins; k++)
			m2[k] = (memo[k] >= 0 && !HAS(f->ins[k].axes, axis)) ? memo[k] : -1;
	return m2;
}

static const char *red_init(const KiSem *s, char *buf, size_t n);

/* Instruction i alone: its operands are in variables already when valins ordered them
** first (operands evaluated here through kp_val are then found in memo). */
static int valone(Gen *g, int i, const Idx *ix, int *memo, int d, char *out, size_t outn)
{
	const KiFn *f = g->f;
	const KiIns *in = &f->ins[i];
	for (int ax = 0; ax < AX_NUM; ax++)
		if (HAS(in->axes, ax) && !ix->v[ax])
			return kp_err(g, in, "internal: %%%d needs axis %s unbound here", i, ki_axisname(ax));
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
		int *m2 = memo_outside(f, memo, in->axis);
		if (!m2)
			return kp_err(g, in, "out of memory");
		Idx j = *ix;
		j.v[in->axis] = cv;
		int rc = kp_val(g, in->arg[0], &j, m2, d + 1, A, sizeof A);
		rc |= kp_val(g, in->arg[1], &j, m2, d + 1, B, sizeof B);
		free(m2);
		if (rc)
			return -1;
		indent(g, d + 1), sb(&g->s, "x%d += (%s) * (%s);\n", v, A, B);
		indent(g, d), sb(&g->s, "}\n");
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	if ((ki_rule(in->op) == AR_RED || ki_rule(in->op) == AR_DOT) && g->home[i] == HM_INL) {
		/* a reduction over group / chan of out-axis values (never stored: kp_analyse), inline:
		** a loop over the axis, its operands evaluated inside */
		const KiSem *sem = ki_sem(in->op);
		if (sem->map == MAP_DEV)
			return kp_err(g, in, "std of a value with the out axis");
		int v = g->tmp++;
		char cv[16], ib[64];
		snprintf(cv, sizeof cv, "r%d", v);
		indent(g, d), sb(&g->s, "float x%d = %s; /* %%%d %s over %s, inline */\n", v, red_init(sem, ib, sizeof ib), i,
		                 ki_opname(in->op), ki_axisname(in->axis));
		indent(g, d), sb(&g->s, "for (int %s = 0; %s < %s; %s++) {\n", cv, cv, axsize(in->axis), cv);
		int *m2 = memo_outside(f, memo, in->axis);
		if (!m2)
			return kp_err(g, in, "out of memory");
		Idx j = *ix;
		j.v[in->axis] = cv;
		int rc = kp_val(g, in->arg[0], &j, m2, d + 1, A, sizeof A);
		if (!rc && sem->map == MAP_MUL)
			rc = kp_val(g, in->arg[1], &j, m2, d + 1, B, sizeof B);
		free(m2);
		if (rc)
			return -1;
		char y[900];
		if (sem->map == MAP_SQ)
			snprintf(y, sizeof y, "(%s) * (%s)", A, A);
		else if (sem->map == MAP_MUL)
			snprintf(y, sizeof y, "(%s) * (%s)", A, B);
		else
			snprintf(y, sizeof y, "%s", A);
		indent(g, d + 1);
		if (sem->comb == CMB_ADD)
			sb(&g->s, "x%d += %s;\n", v, y);
		else
			sb(&g->s, "x%d = %s(x%d, %s);\n", v, sem->comb == CMB_MAX ? "kv_rmax" : "kv_rmin", v, y);
		indent(g, d), sb(&g->s, "}\n");
		if (sem->fin == FIN_MEAN || sem->fin == FIN_DIVK)
			indent(g, d), sb(&g->s, "x%d = x%d / (float)%s;\n", v, v, axsize(in->axis));
		else if (sem->fin == FIN_SQRT)
			indent(g, d), sb(&g->s, "x%d = sqrtf(x%d);\n", v, v);
		else if (sem->fin == FIN_RMS)
			indent(g, d), sb(&g->s, "x%d = sqrtf(x%d / (float)%s);\n", v, v, axsize(in->axis));
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	if (in->op == KO_shift && in->axis == AX_chan) {
		/* along chan: the operand at chan + offset, the fill outside [0, d) */
		Idx none = { { NULL, NULL, NULL, NULL, NULL } };
		if (kp_val(g, in->arg[1], &none, memo, d, B, sizeof B) || kp_val(g, in->arg[2], &none, memo, d, C, sizeof C))
			return -1;
		int v = g->tmp++;
		indent(g, d), sb(&g->s, "float x%d = %s; /* %%%d shift along chan */\n", v, C, i);
		indent(g, d), sb(&g->s, "{ const float k_ = %s; const int s%d = (int)(%s) + (fabsf(k_) < 1e9f ? (int)k_ : 0x40000000);\n",
		                 B, v, ix->v[AX_chan]);
		indent(g, d), sb(&g->s, "if (s%d >= 0 && s%d < KV_D) {\n", v, v);
		int *m2 = malloc((size_t)f->nins * sizeof *m2);
		if (!m2)
			return kp_err(g, in, "out of memory");
		for (int k = 0; k < f->nins; k++)
			m2[k] = (memo[k] >= 0 && !HAS(f->ins[k].axes, AX_chan)) ? memo[k] : -1;
		Idx j = *ix;
		char sv[16];
		snprintf(sv, sizeof sv, "s%d", v);
		j.v[AX_chan] = sv;
		int rc = kp_val(g, in->arg[0], &j, m2, d + 1, A, sizeof A);
		free(m2);
		if (rc)
			return -1;
		indent(g, d + 1), sb(&g->s, "x%d = %s;\n", v, A);
		indent(g, d), sb(&g->s, "} }\n");
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	if (g->home[i] == HM_STAT) {
		/* probability from the logit and the slice's (max, sum) */
		if (kp_val(g, in->arg[0], ix, memo, d, A, sizeof A))
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
			sb(&g->s, "if (Pb[%s] > kv_qpos(a, Pb, n, O, %s)) x%d = 0.f;\n", ix->v[AX_token], ix->v[AX_obs], v);
		}
		memo[i] = v;
		snprintf(out, outn, "x%d", v);
		return 0;
	}
	for (int k = 0; k < na && k < 3; k++) {
		char *dst = k == 0 ? A : k == 1 ? B : C;
		if (in->op == KO_rand)
			break;
		if (kp_val(g, in->arg[k], ix, memo, d, dst, 400))
			return -1;
	}
	switch (in->op) {
	case KO_input:
		switch (in->aux) {
		case IN_K: snprintf(e, sizeof e, "kv_f(Kb[kv_roff(a,Tb,%s)+(%s)])", ix->v[AX_token], ix->v[AX_chan]); break;
		case IN_V: snprintf(e, sizeof e, "kv_f(Vb[kv_roff(a,Tb,%s)+(%s)])", ix->v[AX_token], ix->v[AX_chan]); break;
		case IN_Q:
			snprintf(e, sizeof e, "kv_f(Qb[((long long)(%s)*O+(%s))*KV_D+(%s)])", ix->v[AX_group], ix->v[AX_obs],
			         ix->v[AX_chan]);
			break;
		case IN_lse:
			snprintf(e, sizeof e, "a.lse[((long long)inst*KV_G+(%s))*O+(%s)]", ix->v[AX_group], ix->v[AX_obs]);
			break;
		case IN_pos: snprintf(e, sizeof e, "(float)Pb[%s]", ix->v[AX_token]); break;
		case IN_qpos: snprintf(e, sizeof e, "(float)kv_qpos(a, Pb, n, O, %s)", ix->v[AX_obs]); break;
		default: return kp_err(g, in, "input %s not supported", ki_inputname(in->aux));
		}
		break;
	case KO_state:
		snprintf(e, sizeof e, "a.state[(((long long)b*KV_NST+%d)*a.L*a.H+li)*N+(%s)]", in->aux, ix->v[AX_token]);
		break;
	case KO_carry:           /* inside step_scan's loop: the previous token's value */
		snprintf(e, sizeof e, "carry_");
		break;
	case KO_weight:
		if (wexpr(g, in, ix, e, sizeof e))
			return kp_err(g, in, "a weight whose index does not fit the generator's text buffers "
			              "(or an axis the GPU backend does not index)");
		break;
	case KO_attn:
		if (!g->decode)
			return kp_err(g, in, "x.attn outside the observe hook");
		snprintf(e, sizeof e, "Pr[(%s)*N+(%s)]", ix->v[AX_group], ix->v[AX_token]);
		break;
	case KO_index: snprintf(e, sizeof e, "(float)(%s)", ix->v[in->axis]); break;
	case KO_size:
		if (in->axis >= AX_NUM)
			return kp_err(g, in, "size of axis %d", in->axis);
		snprintf(e, sizeof e, "(float)(%s)", axsize(in->axis));
		break;
	case KO_info:
		switch (in->aux) {
		case INF_scale: flit(e, sizeof e, 1.0 / sqrt((double)g->D)); break;
		case INF_layer: snprintf(e, sizeof e, "(float)l"); break;
		case INF_head: snprintf(e, sizeof e, "(float)h"); break;
		case INF_nlayers: snprintf(e, sizeof e, "(float)a.L"); break;
		case INF_nheads: snprintf(e, sizeof e, "(float)a.H"); break;
		case INF_step: snprintf(e, sizeof e, "(float)(a.steps ? a.steps[b * a.L + l] : a.step)"); break;
		/* the reference's ratioof and ki_nkeep (interp.c), in double, for this instance's n */
		case INF_ratio:
			snprintf(e, sizeof e, "(float)(a.budget < 0 ? a.ratio : n > 0 ? 1.0 - (double)(a.budget < n ? "
			         "a.budget : n) / (double)n : 0.0)");
			break;
		case INF_nkeep: snprintf(e, sizeof e, "(float)kv_nkeep(a, l, n)"); break;
		default: return kp_err(g, in, "info %d", in->aux);
		}
		break;
	case KO_rand: {
		char sd[400];
		if (kp_dscalar(g, in->arg[0], sd, sizeof sd, 0) != 0) {
			Idx none = { { NULL, NULL, NULL, NULL } };
			if (kp_val(g, in->arg[0], &none, memo, d, A, sizeof A))
				return -1;
			snprintf(sd, sizeof sd, "(double)(%s)", A);
		}
		snprintf(e, sizeof e, "kv_rand(%s, l, h, Pb[%s])", sd, ix->v[AX_token]);
		break;
	}
	default:
		/* elementwise: the op table's CUDA text (ops.h KS_EW), operands a, b, c */
		if (ki_sem(in->op)->kind != SEM_EW)
			return kp_err(g, in, "internal: %s has no inline form", ki_opname(in->op));
		snprintf(e, sizeof e, ki_sem(in->op)->cuda, A, B, C);
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
	if (((ki_rule(in->op) == AR_RED || ki_rule(in->op) == AR_DOT) && g->home[i] == HM_INL) ||
	    (in->op == KO_shift && in->axis == AX_chan))
		return 0;           /* operands inside their loop / at another chan */
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
		return kp_err(g, &f->ins[i], "out of memory");
	st[n].i = i, st[n++].k = 0;
	while (n > 0) {
		int j = st[n - 1].i, k = st[n - 1].k++;
		if (k < 3) {
			KiRef r = f->ins[j].arg[k];
			if (KI_RKIND(r) != RK_INS || !samectx(g, j, k, memo) || memo[KI_RIDX(r)] >= 0 ||
			    g->home[KI_RIDX(r)] == HM_BUF)
				continue;
			if (n == cap) {
				void *q = realloc(st, (size_t)(cap *= 2) * sizeof *st);
				if (!q) {
					rc = kp_err(g, &f->ins[i], "out of memory");
					break;
				}
				st = q;
			}
			st[n].i = KI_RIDX(r), st[n++].k = 0;
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

int kp_val(Gen *g, KiRef r, const Idx *ix, int *memo, int d, char *out, size_t outn)
{
	switch (KI_RKIND(r)) {
	case RK_CON: flit(out, outn, g->f->con[KI_RIDX(r)]); return 0;
	case RK_PAR: snprintf(out, outn, "(float)a.par[%d]", KI_RIDX(r)); return 0;
	case RK_INS: return valins(g, KI_RIDX(r), ix, memo, d, out, outn);
	}
	snprintf(out, outn, "0.f");
	return 0;
}

/* NULL with the error set when memory runs out */
int *kp_newmemo(Gen *g)
{
	int *m = malloc(((size_t)g->f->nins + 1) * sizeof *m);
	if (m)
		for (int i = 0; i <= g->f->nins; i++)
			m[i] = -1;
	else
		g->s.oom = 1, kp_err(g, NULL, "out of memory");
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
	static const char *nm[AX_NUM] = { "ig", "io", "it", "ic", "iu" };
	for (int ax = AX_NUM - 1; ax >= 0; ax--) {
		ix->v[ax] = NULL;
		if (!HAS(m, ax))
			continue;
		snprintf(names[ax], 16, "%s", nm[ax]);
		ix->v[ax] = names[ax];
		indent(g, d + 1), sb(&g->s, "const int %s = r_ %% %s; r_ /= %s;\n", nm[ax], axsize(ax), axsize(ax));
	}
}

/* pieces of a reduction, from its KS_RED kinds (ops.h): the accumulator's start,
** one accumulation (pass p: std's map needs the mean, a first pass that sums),
** the warp combine, and the final value from acc_ over axis X */
static const char *red_init(const KiSem *s, char *buf, size_t n)
{
	if (isinf(s->init))
		return s->init < 0 ? "-kv_inf()" : "kv_inf()";
	flit(buf, n, s->init);
	return buf;
}

static void red_acc(Gen *g, const KiSem *s, int p, const char *A, const char *B)
{
	static const char *const comb[] = {
		[CMB_ADD] = "acc_ += %s;", [CMB_MAX] = "acc_ = kv_rmax(acc_, %s);",
		[CMB_MIN] = "acc_ = kv_rmin(acc_, %s);",
	};
	char v[900];
	const char *y = NULL;         /* a squared term: computed once into y_ */
	switch (p == 0 && s->map == MAP_DEV ? MAP_ID : s->map) {
	case MAP_SQ: y = A; break;
	case MAP_DEV: snprintf(v, sizeof v, "(%s) - mu_", A), y = v; break;
	case MAP_MUL: snprintf(v, sizeof v, "(%s) * (%s)", A, B); break;
	default: snprintf(v, sizeof v, "%s", A); break;
	}
	if (y)
		sb(&g->s, "{ const float y_ = %s; ", y);
	sb(&g->s, comb[s->comb], y ? "y_ * y_" : v);
	sb(&g->s, y ? " }\n" : "\n");
}

static const char *red_warp(const KiSem *s)
{
	return s->comb == CMB_MAX ? "kv_wmax" : s->comb == CMB_MIN ? "kv_wmin" : "kv_wsum";
}

static const char *red_fin(const KiSem *s, int X, char *fb, size_t n)
{
	if (s->fin == FIN_MEAN || s->fin == FIN_RMS) {
		int rms = s->fin == FIN_RMS;
		snprintf(fb, n, "%s > 0 ? %sacc_ / (float)%s%s : kv_nan()", axsize(X), rms ? "sqrtf(" : "", axsize(X),
		         rms ? ")" : "");
		return fb;
	}
	return s->fin == FIN_SQRT ? "sqrtf(acc_)" : "acc_";
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
	const KiSem *sem = ki_sem(op);
	char ib[64];
	int passes = sem->map == MAP_DEV ? 2 : 1;
	indent(g, d + 1), sb(&g->s, "float acc_ = %s;%s\n", red_init(sem, ib, sizeof ib), passes == 2 ? " float mu_;" : "");
	for (int p = 0; p < passes; p++) {
		if (p == 1)
			indent(g, d + 1), sb(&g->s, "mu_ = acc_ / (float)%s; acc_ = 0.f;\n", axsize(X));
		char xv[16];
		snprintf(xv, sizeof xv, "x%s", X == AX_token ? "t" : X == AX_chan ? "c" : X == AX_obs ? "o" : X == AX_out ? "u" : "g");
		indent(g, d + 1);
		sb(&g->s, "for (int %s = %s; %s < %s; %s += %s) {\n", xv, warp ? "lane" : "0", xv, axsize(X), xv,
		   warp ? "32" : "1");
		Idx j = ix;
		j.v[X] = xv;
		int *memo = kp_newmemo(g);
		char A[400], B[400];
		if (!memo || kp_val(g, in->arg[0], &j, memo, d + 2, A, sizeof A)) {
			free(memo);
			return -1;
		}
		if (sem->map == MAP_MUL && kp_val(g, in->arg[1], &j, memo, d + 2, B, sizeof B)) {
			free(memo);
			return -1;
		}
		free(memo);
		indent(g, d + 2), red_acc(g, sem, p, A, B);
		indent(g, d + 1), sb(&g->s, "}\n");
		if (warp)
			indent(g, d + 1), sb(&g->s, "acc_ = %s(acc_);\n", red_warp(sem));
	}
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	char fb[200];
	const char *fin = red_fin(sem, X, fb, sizeof fb);
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
		indent(g, d + 1), sb(&g->s, "const int qp_ = kv_qpos(a, Pb, n, O, %s);\n", ix.v[AX_obs]);
	char xv[8] = "xs";
	indent(g, d + 1);
	sb(&g->s, "for (int %s = %s; %s < %s; %s += %s) {\n", xv, warp ? "lane" : "0", xv, axsize(X), xv, warp ? "32" : "1");
	if (causal)
		indent(g, d + 2), sb(&g->s, "if (Pb[%s] > qp_) continue;\n", xv);
	Idx j = ix;
	j.v[X] = xv;
	int *memo = kp_newmemo(g);
	char A[400];
	if (!memo || kp_val(g, in->arg[0], &j, memo, d + 2, A, sizeof A)) {
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
	int *memo = kp_newmemo(g);
	if (!memo)
		return kp_err(g, in, "out of memory");
	sb(&g->s, "\t/* %%%d = %s along %s */\n\t{\n", i, ki_opname(in->op), ki_axisname(X));
	if (kp_val(g, in->arg[1], &none, memo, d + 1, kb, sizeof kb)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 1), sb(&g->s, "const float kf_ = %s;\n", kb);
	indent(g, d + 1), sb(&g->s, "if (!(kf_ >= 1.f && kf_ <= 1e6f) || kf_ != floorf(kf_)) { if (tid == 0) kv_seterr(a.err, KVG_EPOOL); return; }\n");
	indent(g, d + 1), sb(&g->s, "const int k_ = (int)kf_, p_ = k_ / 2;\n");
	domloop(g, in->axes, "tid", "KV_NT", &ix, nm, d + 1);
	const KiSem *sem = ki_sem(in->op);
	char ib[64];
	indent(g, d + 2), sb(&g->s, "float acc_ = %s;\n", red_init(sem, ib, sizeof ib));
	indent(g, d + 2);
	sb(&g->s, "for (int xj = %s - p_; xj < %s - p_ + k_; xj++) {\n", ix.v[X], ix.v[X]);
	indent(g, d + 3), sb(&g->s, "if (xj < 0 || xj >= %s) continue;\n", axsize(X));
	Idx j = ix;
	j.v[X] = "xj";
	memo = kp_newmemo(g);
	char A[400];
	if (!memo || kp_val(g, in->arg[0], &j, memo, d + 3, A, sizeof A)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 3), red_acc(g, sem, 0, A, NULL);
	indent(g, d + 2), sb(&g->s, "}\n");
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	indent(g, d + 2), sb(&g->s, "B%d[%s] = %s;\n", i, b, sem->fin == FIN_DIVK ? "acc_ / (float)k_" : "acc_");
	indent(g, d + 1), sb(&g->s, "}\n");
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

static int isstencilop(const KiIns *in);

/* BUF step for the segment ops (ssum smean smax smin srank) and shift along token: thread per
** output, the operand read at other tokens (interp.c evalseg / evalshift: segments [0, start),
** then size tokens at a time, the last one to n; one segment when size reaches n - start) */
static int step_stencil(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	Idx ix, none = { { NULL, NULL, NULL, NULL } };
	char nm[AX_NUM][16], zb[400], sb_[400], A[400], b[300], ib[64];
	int shift = in->op == KO_shift, rank = in->op == KO_srank;
	int *memo = kp_newmemo(g);
	if (!memo)
		return kp_err(g, in, "out of memory");
	sb(&g->s, "\t/* %%%d = %s along token */\n\t{\n", i, ki_opname(in->op));
	if (kp_val(g, in->arg[1], &none, memo, d + 1, zb, sizeof zb) || kp_val(g, in->arg[2], &none, memo, d + 1, sb_, sizeof sb_)) {
		free(memo);
		return -1;
	}
	free(memo);
	if (shift) {
		indent(g, d + 1), sb(&g->s, "const float kf_ = %s, fill_ = %s;\n", zb, sb_);
		indent(g, d + 1), sb(&g->s, "if (!(kf_ >= -1e9f && kf_ <= 1e9f) || kf_ != floorf(kf_)) { if (tid == 0) kv_seterr(a.err, KVG_ESEG); return; }\n");
		indent(g, d + 1), sb(&g->s, "const int k_ = (int)kf_;\n");
	} else {
		indent(g, d + 1), sb(&g->s, "const float zf_ = %s, sf_ = %s;\n", zb, sb_);
		indent(g, d + 1), sb(&g->s, "if (!((zf_ >= 1.f && zf_ == floorf(zf_)) || zf_ == kv_inf()) || "
		                            "!((sf_ >= 0.f && sf_ == floorf(sf_)) || sf_ == kv_inf())) "
		                            "{ if (tid == 0) kv_seterr(a.err, KVG_ESEG); return; }\n");
		indent(g, d + 1), sb(&g->s, "const int st_ = sf_ >= (float)n ? n : (int)sf_;\n");
		indent(g, d + 1), sb(&g->s, "const int one_ = zf_ >= (float)(n - st_), sz_ = one_ ? 1 : (int)zf_;\n");
	}
	domloop(g, in->axes, "tid", "KV_NT", &ix, nm, d + 1);
	bufidx(in->axes, &ix, b, sizeof b);
	Idx j = ix;
	j.v[AX_token] = "xj";
	if (shift) {
		indent(g, d + 2), sb(&g->s, "const int xj = it + k_;\n");
		indent(g, d + 2), sb(&g->s, "float sv_ = fill_;\n");
		indent(g, d + 2), sb(&g->s, "if (xj >= 0 && xj < n) {\n");
		memo = kp_newmemo(g);
		if (!memo || kp_val(g, in->arg[0], &j, memo, d + 3, A, sizeof A)) {
			free(memo);
			return -1;
		}
		free(memo);
		indent(g, d + 3), sb(&g->s, "sv_ = %s;\n", A);
		indent(g, d + 2), sb(&g->s, "}\n");
		indent(g, d + 2), sb(&g->s, "B%d[%s] = sv_;\n", i, b);
	} else {
		const KiSem *sem = ki_sem(in->op);
		indent(g, d + 2), sb(&g->s, "int s0_, s1_;\n");
		indent(g, d + 2), sb(&g->s, "if (it < st_) s0_ = 0, s1_ = st_;\n");
		indent(g, d + 2), sb(&g->s, "else if (one_) s0_ = st_, s1_ = n;\n");
		indent(g, d + 2), sb(&g->s, "else s0_ = st_ + (it - st_) / sz_ * sz_, s1_ = s0_ + sz_ < n ? s0_ + sz_ : n;\n");
		if (rank) {
			memo = kp_newmemo(g);
			if (!memo || kp_val(g, in->arg[0], &ix, memo, d + 2, A, sizeof A)) {
				free(memo);
				return -1;
			}
			free(memo);
			indent(g, d + 2), sb(&g->s, "const float v_ = %s;\n", A);
			indent(g, d + 2), sb(&g->s, "float acc_ = 0.f;\n");
		} else
			indent(g, d + 2), sb(&g->s, "float acc_ = %s;\n", red_init(sem, ib, sizeof ib));
		indent(g, d + 2), sb(&g->s, "for (int xj = s0_; xj < s1_; xj++) {\n");
		memo = kp_newmemo(g);
		if (!memo || kp_val(g, in->arg[0], &j, memo, d + 3, A, sizeof A)) {
			free(memo);
			return -1;
		}
		free(memo);
		if (rank)
			indent(g, d + 3), sb(&g->s, "acc_ += (float)kv_rankless(%s, xj, v_, it);\n", A);
		else
			indent(g, d + 3), red_acc(g, sem, 0, A, NULL);
		indent(g, d + 2), sb(&g->s, "}\n");
		indent(g, d + 2), sb(&g->s, "B%d[%s] = %s;\n", i, b, !rank && sem->fin == FIN_MEAN ? "acc_ / (float)(s1_ - s0_)" : "acc_");
	}
	indent(g, d + 1), sb(&g->s, "}\n");
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* BUF step for scan i (interp.c evalscan): one thread per instance walks the tokens in order;
** held tokens up to the last one whose state is not NaN keep their state, the others get the
** step at that token with carry_ = the previous value (the start value before token 0); the
** value is also the scan's state (the compaction then moves it with its token) */
static int step_scan(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	Idx none = { { NULL, NULL, NULL, NULL } }, ix = { { NULL, NULL, "it", NULL } };
	char A[400], h0[400];
	int *memo = kp_newmemo(g);
	if (!memo)
		return kp_err(g, in, "out of memory");
	sb(&g->s, "\t/* %%%d = scan of state %d, token by token */\n\tif (tid == 0) {\n", i, in->aux);
	if (kp_val(g, in->arg[1], &none, memo, d + 1, h0, sizeof h0)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 1), sb(&g->s, "float *const sp_ = a.state ? a.state + (((long long)b * KV_NST + %d) * a.L * a.H + li) * N : 0;\n", in->aux);
	indent(g, d + 1), sb(&g->s, "int u0_ = 0;\n");
	indent(g, d + 1), sb(&g->s, "for (int t_ = 0; sp_ && t_ < n; t_++) if (sp_[t_] == sp_[t_]) u0_ = t_ + 1;\n");
	indent(g, d + 1), sb(&g->s, "float carry_ = %s;\n", h0);
	indent(g, d + 1), sb(&g->s, "for (int it = 0; it < n; it++) {\n");
	indent(g, d + 2), sb(&g->s, "float v_;\n");
	indent(g, d + 2), sb(&g->s, "if (it < u0_) v_ = sp_[it];\n");
	indent(g, d + 2), sb(&g->s, "else {\n");
	memo = kp_newmemo(g);
	if (!memo || kp_val(g, in->arg[0], &ix, memo, d + 3, A, sizeof A)) {
		free(memo);
		return -1;
	}
	free(memo);
	indent(g, d + 3), sb(&g->s, "v_ = %s;\n", A);
	indent(g, d + 2), sb(&g->s, "}\n");
	indent(g, d + 2), sb(&g->s, "B%d[it] = v_;\n", i);
	indent(g, d + 2), sb(&g->s, "if (sp_) sp_[it] = v_;\n");
	indent(g, d + 2), sb(&g->s, "carry_ = v_;\n");
	indent(g, d + 1), sb(&g->s, "}\n");
	indent(g, d), sb(&g->s, "}\n");
	return 0;
}

/* BUF step: mean over the heads of the layer (reads other instances' workspace) */
static int step_hmean(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	KiRef r = in->arg[0];
	Idx ix;
	char nm[AX_NUM][16];
	sb(&g->s, "\t/* %%%d = hmean: mean over the heads of layer l */\n", i);
	if (HAS(in->axes, AX_token)) {
		indent(g, d), sb(&g->s, "for (int hh = 0; hh < a.H; hh++)\n");
		indent(g, d + 1), sb(&g->s, "if (a.len[inst - h + hh] != n) { if (tid == 0) kv_seterr(a.err, KVG_EHMEAN); return; }\n");
	}
	domloop(g, in->axes, "tid", "KV_NT", &ix, nm, d);
	char b[300];
	bufidx(in->axes, &ix, b, sizeof b);
	indent(g, d + 1), sb(&g->s, "float acc_ = 0.f;\n");
	if (KI_RKIND(r) == RK_INS) {
		int k = KI_RIDX(r);
		char bk[300];
		bufidx(g->f->ins[k].axes, &ix, bk, sizeof bk);
		indent(g, d + 1), sb(&g->s, "for (int hh = 0; hh < a.H; hh++)\n");
		indent(g, d + 2), sb(&g->s, "acc_ += (a.ws + (long long)(inst - h + hh) * a.ws_inst + (B%d - W))[%s];\n", k, bk);
		indent(g, d + 1), sb(&g->s, "B%d[%s] = acc_ / (float)a.H;\n", i, b);
	} else {
		char A[400];
		int *memo = kp_newmemo(g);
		if (!memo || kp_val(g, r, &ix, memo, d + 1, A, sizeof A)) {
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
	int *memo = kp_newmemo(g);
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
static int reachqk(const Gen *g, KiRef r, char *seen)
{
	if (KI_RKIND(r) != RK_INS)
		return 0;
	seen[KI_RIDX(r)] = 1;
	for (int i = KI_RIDX(r); i >= 0; i--) {
		if (!seen[i])
			continue;
		if (isqk(g->f, &g->f->ins[i]))
			return 1;
		for (int k = 0; g->home[i] != HM_BUF && k < 3; k++)
			if (KI_RKIND(g->f->ins[i].arg[k]) == RK_INS && KI_RIDX(g->f->ins[i].arg[k]) < i)
				seen[KI_RIDX(g->f->ins[i].arg[k])] = 1;
	}
	return 0;
}

/* Steps that run on the tiles: softmax stats over token of [group, obs] slices, and
** sum / mean / rmax / rmin over obs into [group, token]; both reading a logit. */
int kp_tiledstep(Gen *g, int i)
{
	const KiIns *in = &g->f->ins[i];
	const uint8_t go = AXM(AX_group) | AXM(AX_obs), gt = AXM(AX_group) | AXM(AX_token);
	int kind = TS_NONE;
	if (g->decode)
		return TS_NONE;
	if (g->home[i] == HM_STAT && in->axis == AX_token && (in->axes & (uint8_t)~AXM(AX_token)) == go)
		kind = TS_STAT;
	else if (g->home[i] == HM_BUF && in->axis == AX_obs && in->axes == gt && ki_rule(in->op) == AR_RED &&
	         ki_sem(in->op)->map == MAP_ID && (ki_sem(in->op)->fin == FIN_NONE || ki_sem(in->op)->fin == FIN_MEAN))
		kind = TS_OBS;   /* sum, mean, rmax, rmin */
	if (kind == TS_NONE)
		return TS_NONE;
	char *seen = calloc((size_t)g->f->nins + 1, 1);
	int r = seen && reachqk(g, in->arg[0], seen);
	g->s.oom |= !seen;          /* generate fails with "out of memory" */
	free(seen);
	return r ? kind : TS_NONE;
}

/* token tiles of K (outer), chunks of KV_SQ query rows (inner), the logit tile of both.
** K tiles: KV_ST buffers (tile.cuh kv_stagek_async): the first KV_ST-1 tiles are copied before
** the loop; iteration ti_ copies tile ti_+KV_ST-1 into the buffer tile ti_-1 used (every read of
** it ended at the barrier after kv_logits), waits for its own copies of tile ti_ and reads
** buffer ti_ % KV_ST after the barrier of the query chunk; KV_ST 1: one buffer, synchronous */
static void tile_open(Gen *g, const char *pre)
{
	sb(&g->s,
	   "\tfor (int s_ = 0; s_ < KV_ST - 1; s_++) {   /* the pipeline's first tiles */\n"
	   "\t\tif (s_ * KV_SK < n)\n"
	   "\t\t\tkv_stagek_async(sK_ + s_ * KV_SK * KV_DP, KV_SK, a, Kb, Tb, s_ * KV_SK, n - s_ * KV_SK < KV_SK ? n - s_ * KV_SK : KV_SK);\n"
	   "\t\tkv_cpcommit();\n"
	   "\t}\n"
	   "\tfor (int t0_ = 0, ti_ = 0; t0_ < n; t0_ += KV_SK, ti_++) {\n"
	   "\t\tconst int nt_ = n - t0_ < KV_SK ? n - t0_ : KV_SK;\n"
	   "\t\tconst int tn_ = t0_ + (KV_ST - 1) * KV_SK;   /* the tile KV_ST - 1 ahead */\n"
	   "\t\tif (tn_ < n)\n"
	   "\t\t\tkv_stagek_async(sK_ + (ti_ + KV_ST - 1) %% KV_ST * KV_SK * KV_DP, KV_SK, a, Kb, Tb, tn_, n - tn_ < KV_SK ? n - tn_ : KV_SK);\n"
	   "\t\tkv_cpcommit();\n"
	   "\t\tkv_cpwait();\n"
	   "\t\tconst kv_qk *const sKt_ = sK_ + ti_ %% KV_ST * KV_SK * KV_DP;\n"
	   "%s"
	   "\t\tfor (int q0_ = 0; q0_ < KV_G * O; q0_ += KV_SQ) {\n"
	   "\t\t\tconst int nq_ = KV_G * O - q0_ < KV_SQ ? KV_G * O - q0_ : KV_SQ;\n"
	   "\t\t\tif (t0_ == 0 || KV_G * O > KV_SQ)   /* one chunk: staged once */\n"
	   "\t\t\t\tkv_stage(sQ_, KV_SQ, Qb + (long long)q0_ * KV_D, KV_D, nq_);\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tkv_logits(sS_, sQ_, sKt_, nq_, nt_);\n"
	   "\t\t\t__syncthreads();\n", pre);
}

static int tile_body(Gen *g, const KiIns *in, const Idx *ix, int d, char *A, size_t n)
{
	int *memo = kp_newmemo(g);
	g->tctx = 1;
	int rc = !memo || kp_val(g, in->arg[0], ix, memo, d, A, n);
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
		sb(&g->s, "\t\t\t\tconst int qp_ = kv_qpos(a, Pb, n, O, io);\n");
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
	const KiSem *sem = ki_sem(in->op);
	Idx ix = { { "ig", "xo", "it", NULL } };
	char b[300], A[400], pre[200], fb[200], ib[64];
	bufidx(in->axes, &ix, b, sizeof b);
	sb(&g->s, "\t/* %%%d = %s over obs on Q·Kᵀ tiles (thread per group and token) */\n", i, ki_opname(in->op));
	snprintf(pre, sizeof pre, "\t\tfor (int e_ = tid; e_ < KV_G * KV_SK; e_ += KV_NT) sA_[e_] = %s;\n",
	         red_init(sem, ib, sizeof ib));
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
	indent(g, 5), red_acc(g, sem, 0, A, NULL);
	sb(&g->s, "\t\t\t\t}\n\t\t\t\tsA_[e_] = acc_;\n\t\t\t}\n\t\t\t__syncthreads();\n\t\t}\n");
	sb(&g->s, "\t\tfor (int e_ = tid; e_ < KV_G * KV_SK; e_ += KV_NT) {\n"
	          "\t\t\tconst int ig = e_ / KV_SK, it = t0_ + e_ - ig * KV_SK;\n"
	          "\t\t\tconst float acc_ = sA_[e_];\n"
	          "\t\t\tif (it < t0_ + nt_) B%d[%s] = %s;\n\t\t}\n\t}\n", i, b, red_fin(sem, AX_obs, fb, sizeof fb));
	return 0;
}

int kp_step(Gen *g, int i)
{
	const KiIns *in = &g->f->ins[i];
	int rc, ts = kp_tiledstep(g, i);
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
	else if (isstencilop(in))
		rc = step_stencil(g, i, 1);
	else if (in->op == KO_scan)
		rc = step_scan(g, i, 1);
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
void kp_mark(const KiFn *f, KiRef r, char *need)
{
	if (KI_RKIND(r) != RK_INS)
		return;
	need[KI_RIDX(r)] = 1;
	for (int i = KI_RIDX(r); i >= 0; i--)
		for (int k = 0; need[i] && k < 3; k++)
			if (KI_RKIND(f->ins[i].arg[k]) == RK_INS && KI_RIDX(f->ins[i].arg[k]) < i)
				need[KI_RIDX(f->ins[i].arg[k])] = 1;
}

/* segment ops and shift along token (step_stencil) */
static int isstencilop(const KiIns *in)
{
	return ki_rule(in->op) == AR_SEG || (in->op == KO_shift && in->axis == AX_token);
}

static int isleaf(int op)
{
	return ki_rule(op) == AR_LEAF || ki_rule(op) == AR_TOK;   /* rand: [token] from the seed */
}

/* homes and phases of the needed instructions; allocation of workspace */
int kp_analyse(Gen *g, const char *need, int decode)
{
	const KiFn *f = g->f;
	for (int i = 0; i < f->nins; i++) {
		if (!need[i])
			continue;
		const KiIns *in = &f->ins[i];
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) >= i)
				return kp_err(g, in, "internal: operand %%%d after its use", KI_RIDX(in->arg[k]));
		int op = in->op, h = HM_INL;
		if (isleaf(op) || ki_rule(op) == AR_EW)
			h = HM_INL;
		else if (op == KO_dot && HAS(in->axes, AX_obs) && HAS(in->axes, AX_token))
			h = HM_INL;
		else if ((ki_rule(op) == AR_RED || ki_rule(op) == AR_DOT) && HAS(in->axes, AX_out))
			h = HM_INL;      /* over group / chan of out values: inline in the reduction over out */
		else if (ki_rule(op) == AR_RED || ki_rule(op) == AR_DOT)
			h = HM_BUF;
		else if (op == KO_shift && in->axis == AX_chan)
			h = HM_INL;
		else if (op == KO_softmax || op == KO_softmaxnc)
			h = HM_STAT;
		else if (op == KO_avgpool || op == KO_maxpool || op == KO_hmean || isstencilop(in) || op == KO_scan)
			h = HM_BUF;
		else
			return kp_err(g, in, "op %s is not supported", ki_opname(op));
		if (op == KO_attn && !decode)
			return kp_err(g, in, "x.attn is only available in the observe hook");
		if (decode && op == KO_hmean)
			return kp_err(g, in, "a mean over heads inside the observe hook is not supported");
		if (decode && op == KO_input && (in->aux == IN_Q || in->aux == IN_lse || in->aux == IN_qpos))
			return kp_err(g, in, "the observe hook cannot read %s", ki_inputname(in->aux));
		if ((op == KO_avgpool || op == KO_maxpool) && ki_refaxes(f, in->arg[1]))
			return kp_err(g, in, "the pooling kernel size must be a scalar");
		if (h != HM_INL && HAS(in->axes, AX_out))
			return kp_err(g, in, "a value with the out axis must be computed inside its reduction over out");
		if (op == KO_shift && in->axis == AX_chan && (ki_refaxes(f, in->arg[1]) || ki_refaxes(f, in->arg[2])))
			return kp_err(g, in, "shift along chan: the offset and the fill must be scalars");
				if (isstencilop(in) && (ki_refaxes(f, in->arg[1]) || ki_refaxes(f, in->arg[2])))
			return kp_err(g, in, "%s: the sizes must be scalars", ki_opname(op));
		if ((op == KO_avgpool || op == KO_maxpool || op == KO_hmean || isstencilop(in)) && KI_RKIND(in->arg[0]) == RK_INS) {
			int k = KI_RIDX(in->arg[0]);
			if (g->home[k] != HM_BUF && f->ins[k].op != KO_input && f->ins[k].op != KO_index)
				g->home[k] = HM_BUF;
			if (op == KO_hmean)
				g->home[k] = HM_BUF;
		}
		g->home[i] = (uint8_t)h;
		int ph = 0;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && g->phase[KI_RIDX(in->arg[k])] > ph)
				ph = g->phase[KI_RIDX(in->arg[k])];
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

void kp_wsreserve(Gen *g, int term, long long k, long long out[4])
{
	memcpy(out, g->cur, sizeof g->cur);
	g->cur[term] += k;
}

void kp_wsmax(Gen *g)
{
	for (int k = 0; k < 4; k++)
		if (g->cur[k] > g->wsmax[k])
			g->wsmax[k] = g->cur[k];
}

void kp_offexpr(const long long o[4], char *buf, size_t n)
{
	snprintf(buf, n, "%lldLL + %lldLL*(long long)N + %lldLL*(long long)O + %lldLL*(long long)N*O", o[0], o[1], o[2], o[3]);
}
