/*
** select keep in CUDA (issue 13): kv_count(a, b, l, h, n), the tokens instance (b, l, h) with
** n tokens keeps before selection, for kv_select / kv_select_grp (kernels.c) and the summary
** rows (summary.c). Without a keep expression: kv_nkeep's count. With one: the expression in
** double as the reference interpreter evaluates it (compiler/keep.c says which instructions
** come here): elementwise ops from the op table's value column (the interpreter's own C
** expression of the double operands a, b, c), +, -, *, / as __dadd_rn & co. (no contraction
** into an FMA), reductions over out as loops over a.nout (1 when no weight has an out axis, as
** the interpreter's size), reductions over token of a [token] row as one block reduction over
** the instance's n values (f32; every thread of the block calls kv_count then: emitred): the
** score's in a.scores (as kv_select ranks them; session 10), another row in the instance's
** workspace where the score kernels materialized it (kp_keepbufs; session 12); then compiler/select.c
** ki_counts' clamp (floor, 0..n). A value that is not finite sets KVG_EKEEP (the host reports it; the kernels go on with 0).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/ptx/gen.h"
#include "compiler/keep.h"

/* the op table's value column, as text (ops.h KS_EW's first argument) */
#define KS_LEAF NULL
#define KS_SPECIAL NULL
#define KS_RED(i, m, k, f) NULL
#define KS_EW(v, cu, l, r) #v
#define KP_DVAL(name, nargs, rule, flags, sem, doc) [KO_##name] = sem,
static const char *const dval[KO_NUM] = { KI_OPS(KP_DVAL) };
#undef KP_DVAL
#undef KS_EW
#undef KS_RED
#undef KS_SPECIAL
#undef KS_LEAF

static void dlit(char *buf, size_t n, double v)
{
	if (isnan(v))
		snprintf(buf, n, "__longlong_as_double(0x7ff8000000000000LL)");
	else if (isinf(v))
		snprintf(buf, n, "__longlong_as_double(0x%s0000000000000LL)", v < 0 ? "fff" : "7ff");
	else
		snprintf(buf, n, "%.17g", v);
}

/* operand r: a constant, a param, x<i> (a scalar) or y<i> (an out-axis value in the loop) */
static void opnd(const Gen *g, KiRef r, char *buf, size_t n)
{
	switch (KI_RKIND(r)) {
	case RK_CON: dlit(buf, n, g->f->con[KI_RIDX(r)]); return;
	case RK_PAR: snprintf(buf, n, "a.par[%d]", KI_RIDX(r)); return;
	case RK_INS:
		snprintf(buf, n, "%c%d", g->f->ins[KI_RIDX(r)].axes & AXM(AX_out) ? 'y' : 'x', KI_RIDX(r));
		return;
	}
	snprintf(buf, n, "0.0");
}

/* weight in->aux at (l, h) and out index o_ (KaWeight: declaration order, row-major; as expr.c) */
static void wexpr(const Gen *g, const KiIns *in, char *e, size_t en)
{
	const KiFn *f = g->f;
	char off[600] = "0LL";
	for (int k = 0; k <= (int)in->aux; k++) {
		const KiWeight *w = &f->w[k];
		char ex[400] = "1LL";
		if (k == (int)in->aux)
			snprintf(ex, sizeof ex, "0LL");
		for (int j = 0; j < w->ndim; j++) {
			const char *sz = w->ax[j] == WA_layer ? "a.L" : w->ax[j] == WA_head ? "a.H" : w->ax[j] == WA_out ? "a.nout"
			               : w->ax[j] == WA_group ? "KV_G" : "KV_D";
			const char *iv = w->ax[j] == WA_layer ? "l" : w->ax[j] == WA_head ? "h" : w->ax[j] == WA_out ? "o_" : "0";
			char t[400];
			if (k < (int)in->aux)
				snprintf(t, sizeof t, "%s * %s", ex, sz);
			else
				snprintf(t, sizeof t, "(%s) * %s + %s", ex, sz, iv);
			snprintf(ex, sizeof ex, "%s", t);
		}
		char t[600];
		snprintf(t, sizeof t, "%s + %s", off, ex);
		snprintf(off, sizeof off, "%s", t);
	}
	snprintf(e, en, "(double)a.wts[%s]", off);
}

/* one instruction: "const double x<i> = ...;" (y<i> for an out-axis value), at depth d */
static int emit(Gen *g, int i, int d)
{
	const KiIns *in = &g->f->ins[i];
	char v[900], A[64], B[64], C[64];
	char nm[16];
	snprintf(nm, sizeof nm, "%c%d", in->axes & AXM(AX_out) ? 'y' : 'x', i);
	opnd(g, in->arg[0], A, sizeof A), opnd(g, in->arg[1], B, sizeof B), opnd(g, in->arg[2], C, sizeof C);
	switch (ki_rule(in->op)) {
	case AR_EW: {
		const char *rn = in->op == KO_add ? "__dadd_rn" : in->op == KO_sub ? "__dsub_rn" : in->op == KO_mul ? "__dmul_rn"
		               : in->op == KO_div ? "__ddiv_rn" : NULL;
		if (rn)
			snprintf(v, sizeof v, "%s(%s, %s)", rn, A, B);
		else if (dval[in->op])
			snprintf(v, sizeof v, "kv_ew%d(%s, %s, %s)", in->op, A, B, C);
		else
			return kp_err(g, in, "select keep: op %s", ki_opname(in->op));
		break;
	}
	case AR_RED:
	case AR_DOT:
		return -2;            /* kv_countred */
	default:
		switch (in->op) {
		case KO_weight: wexpr(g, in, v, sizeof v); break;
		case KO_index: snprintf(v, sizeof v, "(double)o_"); break;
		case KO_size:
			snprintf(v, sizeof v, "(double)(%s)", in->axis == AX_token ? "n" : in->axis == AX_out ? "nout_" :
			         in->axis == AX_obs ? "a.O" : in->axis == AX_group ? "KV_G" : "KV_D");
			break;
		case KO_info:
			switch (in->aux) {
			case INF_scale: dlit(v, sizeof v, 1.0 / sqrt((double)g->D)); break;
			case INF_layer: snprintf(v, sizeof v, "(double)l"); break;
			case INF_head: snprintf(v, sizeof v, "(double)h"); break;
			case INF_nlayers: snprintf(v, sizeof v, "(double)a.L"); break;
			case INF_nheads: snprintf(v, sizeof v, "(double)a.H"); break;
			case INF_step: snprintf(v, sizeof v, "(double)(a.steps ? a.steps[b * a.L + l] : a.step)"); break;
			case INF_ratio:   /* the reference's ratioof */
				snprintf(v, sizeof v, "(a.budget < 0 ? a.ratio : n > 0 ? __dsub_rn(1.0, __ddiv_rn((double)(a.budget < n ? "
				         "a.budget : n), (double)n)) : 0.0)");
				break;
			case INF_nkeep: snprintf(v, sizeof v, "(double)kv_nkeep(a, l, n)"); break;
			default: return kp_err(g, in, "select keep: info %d", in->aux);
			}
			break;
		default:
			return kp_err(g, in, "select keep: op %s", ki_opname(in->op));
		}
	}
	sb(&g->s, "%.*sconst double %s = %s;\n", d, "\t\t\t\t\t\t", nm, v);
	return 0;
}

static int redfin(Gen *g, int i, const KiSem *sem, const char *cnt);
static void combine(Gen *g, const KiSem *sem, const char *acc, const char *ind);
static void finish(Gen *g, int i, const KiSem *sem, const char *cnt);

/* a reduction over out: the loop over o_ with the out-axis values it reads, in order; a reduction
** over token of a [token] row (compiler/keep.c ki_keeptok): a block reduction over the instance's
** t_ < n values of the row */
static int emitred(Gen *g, int i, const uint8_t *need)
{
	const KiFn *f = g->f;
	const KiIns *in = &f->ins[i];
	const KiSem *sem = ki_sem(in->op);
	char init[64];
	dlit(init, sizeof init, sem->init);
	if (ki_keeptok(f, in)) {       /* over token of a [token] row: the score's (f32) in a.scores, x.pos's in a.pos,
	                               ** another (f32) in the instance's workspace where the score kernels left it
	                               ** (kp_keepbufs) */
		char row[400], acc[16], mu[16];
		const KiIns *src = &f->ins[KI_RIDX(in->arg[0])];
		if (src->op == KO_input)
			snprintf(row, sizeof row, "const int *const r_ = a.pos + (((long long)b * a.L + l) * a.H + h) * a.N");
		else if (in->arg[0] == f->score)
			snprintf(row, sizeof row, "const float *const r_ = a.scores + (((long long)b * a.L + l) * a.H + h) * a.N");
		else {
			char o[200];
			kp_offexpr(g->off[KI_RIDX(in->arg[0])], o, sizeof o);
			snprintf(row, sizeof row, "const float *const r_ = a.ws + (((long long)b * a.L + l) * a.H + h) * a.ws_inst + (%s)", o);
		}
		snprintf(acc, sizeof acc, "x%d", i);
		snprintf(mu, sizeof mu, "m%d", i);
		/* a block reduction (every thread calls kv_count): thread j combines its contiguous run
		** of ceil(n / KV_NT) tokens in position order, then every thread combines the KV_NT
		** partials in thread order from kv_kr (shared). max / min are the interpreter's serial
		** result bit for bit (the first of equal values, the last NaN); a sum is its serial sum
		** when n <= KV_NT, else the runs' sums added in order (rounding within the f32-score
		** tolerance doc/dsl.md states). std: first its mean, the sum of v / n (interp.c's first
		** pass), the same way */
		for (int pass = sem->map == MAP_DEV ? 0 : 1; pass < 2; pass++) {
			KiSem add = *sem;
			add.comb = CMB_ADD;
			const KiSem *ps = pass ? sem : &add;
			sb(&g->s, "\tdouble %s = %s;\n\t{\n"
			          "\t\tconst long long c_ = (n + KV_NT - 1) / KV_NT, t0_ = (long long)threadIdx.x * c_, t1_ = t0_ + c_ < n ? t0_ + c_ : n;\n"
			          "\t\tconst int N = a.N, O = a.O; (void)N; (void)O;\n"
			          "\t\t%s;   /* %%%d */\n"
			          "\t\tdouble p_ = %s;\n"
			          "\t\tfor (long long t_ = t0_; t_ < t1_; t_++) {\n"
			          "\t\t\tconst double s_ = (double)r_[t_];\n", pass ? acc : mu, pass ? init : "0.0", row,
			   KI_RIDX(in->arg[0]), pass ? init : "0.0");
			if (!pass)
				sb(&g->s, "\t\t\tconst double v_ = __ddiv_rn(s_, (double)n);\n");
			else if (sem->map == MAP_SQ)
				sb(&g->s, "\t\t\tconst double v_ = __dmul_rn(s_, s_);\n");
			else if (sem->map == MAP_DEV)
				sb(&g->s, "\t\t\tconst double v_ = __dmul_rn(__dsub_rn(s_, %s), __dsub_rn(s_, %s));\n", mu, mu);
			else
				sb(&g->s, "\t\t\tconst double v_ = s_;\n");
			combine(g, ps, "p_", "\t\t\t");
			sb(&g->s, "\t\t}\n"
			          "\t\t__syncthreads();   /* the previous reduction's readers are done */\n"
			          "\t\tkv_kr[threadIdx.x] = p_;\n"
			          "\t\t__syncthreads();\n"
			          "\t\tfor (int j_ = 0; j_ < KV_NT; j_++) {\n"
			          "\t\t\tconst double v_ = kv_kr[j_];\n");
			combine(g, ps, pass ? acc : mu, "\t\t\t");
			sb(&g->s, "\t\t}\n\t}\n");
		}
		finish(g, i, sem, "n");
		return 0;
	}
	sb(&g->s, "\tdouble x%d = %s;\n\tfor (long long o_ = 0; o_ < nout_; o_++) {\n", i, init);
	uint8_t *reach = calloc((size_t)f->nins + 1, 1);
	if (!reach)
		return kp_err(g, NULL, "out of memory");
	for (int k = 0; k < ki_nargs(in->op); k++)
		if (KI_RKIND(in->arg[k]) == RK_INS)
			reach[KI_RIDX(in->arg[k])] = 1;
	for (int j = i - 1; j >= 0; j--)
		if (reach[j] && (f->ins[j].axes & AXM(AX_out)))
			for (int k = 0; k < 3; k++)
				if (KI_RKIND(f->ins[j].arg[k]) == RK_INS)
					reach[KI_RIDX(f->ins[j].arg[k])] = 1;
	int rc = 0;
	for (int j = 0; j < i && rc == 0; j++)
		if (reach[j] && need[j] && (f->ins[j].axes & AXM(AX_out)))
			rc = emit(g, j, 2);
	free(reach);
	if (rc)
		return rc;
	char A[64], B[64];
	opnd(g, in->arg[0], A, sizeof A), opnd(g, in->arg[1], B, sizeof B);
	if (sem->map == MAP_SQ)
		sb(&g->s, "\t\tconst double v_ = __dmul_rn(%s, %s);\n", A, A);
	else if (sem->map == MAP_MUL)
		sb(&g->s, "\t\tconst double v_ = __dmul_rn(%s, %s);\n", A, B);
	else
		sb(&g->s, "\t\tconst double v_ = %s;\n", A);
	return redfin(g, i, sem, "nout_");
}

/* acc = ki_combine(acc, v_) */
static void combine(Gen *g, const KiSem *sem, const char *acc, const char *ind)
{
	if (sem->comb == CMB_ADD)
		sb(&g->s, "%s%s = __dadd_rn(%s, v_);\n", ind, acc, acc);
	else
		sb(&g->s, "%sif (isnan(v_) || v_ %s %s) %s = v_;\n", ind, sem->comb == CMB_MAX ? ">" : "<", acc, acc);
}

/* ki_finish of x<i> over cnt elements */
static void finish(Gen *g, int i, const KiSem *sem, const char *cnt)
{
	switch (sem->fin) {
	case FIN_MEAN: sb(&g->s, "\tx%d = %s ? __ddiv_rn(x%d, (double)%s) : __longlong_as_double(0x7ff8000000000000LL);\n", i, cnt, i, cnt); break;
	case FIN_SQRT: sb(&g->s, "\tx%d = sqrt(x%d);\n", i, i); break;
	case FIN_RMS: sb(&g->s, "\tx%d = %s ? sqrt(__ddiv_rn(x%d, (double)%s)) : __longlong_as_double(0x7ff8000000000000LL);\n", i, cnt, i, cnt); break;
	case FIN_DIVK: sb(&g->s, "\tx%d = __ddiv_rn(x%d, (double)%s);\n", i, i, cnt); break;
	}
}

/* the end of a reduction's loop (its value v_ in x<i>) and its finish over cnt elements */
static int redfin(Gen *g, int i, const KiSem *sem, const char *cnt)
{
	char acc[16];
	snprintf(acc, sizeof acc, "x%d", i);
	combine(g, sem, acc, "\t\t");
	sb(&g->s, "\t}\n");
	finish(g, i, sem, cnt);
	return 0;
}

int kp_keepbufs(Gen *g, const uint8_t *kv)
{
	const KiFn *f = g->f;
	long long at[4];
	memcpy(at, g->cur, sizeof at);
	/* past every other use before kv_count reads them: the score kernels' buffers (g->cur) and
	** the records kv_select_grp / kv_sched write at the start of each instance's workspace (at most
	** 16 floats, 24 with a floor and merge summary, with merge summary 2 more and the N ordinary
	** scores): 32 + N floats on */
	at[0] += 32, at[1] += 1;
	for (int i = 0; i < f->nins; i++) {
		if (!kv[i] || KI_REF(RK_INS, i) == f->score)
			continue;
		if (g->home[i] == HM_STAT)
			return kp_err(g, &f->ins[i], "select keep: a reduction over token of %s over token is not compiled to "
			              "CUDA (the kernels keep its statistics, never its row; the reference interpreter and "
			              "x86 run it)", ki_opname(f->ins[i].op));
		g->home[i] = HM_BUF;
		memcpy(g->off[i], at, sizeof at);
		at[1] += 1, at[0] += 1;   /* n <= N floats, one of slack */
	}
	memcpy(g->cur, at, sizeof at);
	return 0;
}

int kp_gen_count(Gen *g)
{
	const KiFn *f = g->f;
	sb(&g->s, "\n/* select keep (codegen/ptx/keep.c): the count of instance (b, l, h) before selection */\n");
	if (KI_RKIND(f->sel.keep) == RK_NIL) {
		sb(&g->s, "__device__ __forceinline__ long long kv_count(const KvgArgs &a, int b, int l, int h, long long n) {\n"
		          "\t(void)b; (void)h;\n\treturn kv_nkeep(a, l, n);\n}\n");
		return 0;
	}
	uint8_t *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return kp_err(g, NULL, "out of memory");
	ki_keepneed(f, need);
	/* the elementwise ops the expression uses, each a function of its double operands */
	sb(&g->s, "__device__ __forceinline__ double ki_fmax(double a, double b) {\n"
	          "\treturn isnan(a) || isnan(b) ? __longlong_as_double(0x7ff8000000000000LL) : a > b ? a : b > a ? b : signbit(a) ? b : a;\n}\n"
	          "__device__ __forceinline__ double ki_fmin(double a, double b) {\n"
	          "\treturn isnan(a) || isnan(b) ? __longlong_as_double(0x7ff8000000000000LL) : a < b ? a : b < a ? b : signbit(a) ? a : b;\n}\n");
	char done[KO_NUM] = { 0 };
	for (int i = 0; i < f->nins; i++) {
		int op = f->ins[i].op;
		if (!need[i] || ki_rule(op) != AR_EW || done[op] || !dval[op])
			continue;
		done[op] = 1;
		sb(&g->s, "__device__ __forceinline__ double kv_ew%d(double a, double b, double c) {   /* %s */\n"
		          "\t(void)a; (void)b; (void)c;\n\treturn (double)(%s);\n}\n", op, ki_opname(op), dval[op]);
	}
	sb(&g->s, "__device__ long long kv_count(const KvgArgs &a, int b, int l, int h, long long n) {\n"
	          "\tconst long long nout_ = a.nout > 0 ? a.nout : 1;\n"
	          "\t(void)b; (void)l; (void)h; (void)nout_;\n");
	for (int i = 0; i < f->nins; i++)
		if (need[i] && ki_rule(f->ins[i].op) == AR_RED && ki_keeptok(f, &f->ins[i])) {
			sb(&g->s, "\t__shared__ double kv_kr[KV_NT];   /* the score reductions' partials: every thread calls kv_count */\n");
			break;
		}
	int rc = 0;
	for (int i = 0; i < f->nins && rc == 0; i++) {
		if (!need[i] || (f->ins[i].axes & AXM(AX_out)))
			continue;
		int ar = ki_rule(f->ins[i].op);
		rc = ar == AR_RED || ar == AR_DOT ? emitred(g, i, need) : emit(g, i, 1);
	}
	free(need);
	if (rc)
		return -1;
	char V[64];
	opnd(g, f->sel.keep, V, sizeof V);
	sb(&g->s, "\tconst double v_ = %s;\n"
	          "\tif (!isfinite(v_)) { kv_seterr(a.err, KVG_EKEEP); return 0; }\n"
	          "\tconst double f_ = floor(v_);\n"
	          "\treturn f_ < 0.0 ? 0 : f_ > (double)n ? n : (long long)f_;\n}\n", V);
	return 0;
}
