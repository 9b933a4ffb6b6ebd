/*
** compact_merge with merge runs (KVMerger) in CUDA C (DESIGN §3 "Merge semantics", issue 12):
** the GPU twin of codegen/x86/mpos.c + runtime/mpos.c, generated into the kv_select kernel.
** One block per (layer, head):
**
**   breaks   before the compaction, a thread per held row t >= 1: the rule's similarity of the
**            neighbours t-1 (the e side) and t (the k side) on the pre-compaction rows, against
**            the threshold (a value; none: one run); mRID_[t] = 1 where a new run starts
**   compact  the select kernel's stable compaction; every evicted row is copied aside (the
**            nearest merge's copy, kp_merge_copy), mKJ_[t] = t's kept index or -1
**   runs     run ids by block scans of the break flags (tile by tile); each run's
**            pivot = its kept row first in the selection order (sinks, lower position first;
**            the recent window, newest first; higher score, NaN last; ties: lower position);
**            a thread per evicted row: its target (its run's pivot's kept index, -1: dropped);
**            the segments by a block-scan compaction of the targeted rows (a run is a
**            contiguous held range, so each pivot's rows are contiguous in evicted order and
**            the targets nondecreasing), each kept row's offset by binary search (session 8:
**            was one thread for all of it); the pivots by a segmented scan per tile of held
**            rows (session 9: was a thread per run, one long run on one thread)
**   weights  a thread per member: the similarity to its pivot, then w_e (sim, absorbed,
**            ntargets 1); a thread per pivot: w_k; every value from the pre-merge rows (the
**            evicted rows' copies, the kept rows before any update)
**   update   every (pivot, channel): (w_k X_k + sum w_e X_e) / total (mean) or the sum,
**            rounded to the storage dtype; member counts grow by the absorbed rows' counts
**   next     (CaM) a warp per kept row over its contiguous range of absorbed evicted rows: the
**            lanes' weights 32 rows at a time, broadcast by shuffles, each lane's channels
**            accumulated in registers in member order (session 9: was a thread per kept row,
**            its accumulators [N][D] in the workspace)
**
** Every pair value is evaluated at its pair of rows from pointers (psite: any [chan] value of
** one row or both, reductions over chan, params, pinfo), f32 as the x86 pair evaluator.
** Ordinary [token] values in the rule (CaM's attention, a KVMerger variant's weights) are read
** by held index from the score kernels' buffers (kept alive: gen_select reserves the merge's
** workspace after them), kv.random inline at the row's pre-compaction position (runs: Pb before
** the compaction, mPS_ after it; next: mPIV_). Workspace: kp_wsreserve, sized per instance from N.
*/
#include <math.h>
#include <string.h>
#include "codegen/ptx/gen.h"
#include "compiler/mplan.h"

typedef struct Mp {
	Gen *g;
	const KiFn *f;
	char *need;
	int next;                /* ordinary [token] values allowed (et_, kt_ in scope; next: j0_, ntgi_) */
	const char *pos;         /* the pre-compaction positions by held index: Pb, mPS_ (runs), mPIV_ (next) */
} Mp;

static void lit(char *buf, size_t n, double v)
{
	if (isnan(v))
		snprintf(buf, n, "kv_nan()");
	else if (isinf(v))
		snprintf(buf, n, "%skv_inf()", v < 0 ? "-" : "");
	else
		snprintf(buf, n, "((float)%.17g)", v);
}

static int fits(Mp *M, int k, size_t n)
{
	if (k < 0 || (size_t)k >= n)
		return kp_err(M->g, NULL, "merge expression too long for the CUDA generator");
	return 0;
}

/* a scalar operand: constant, param, or the scalar q<i> made before */
static void sref(Mp *M, KiRef r, char *buf, size_t n)
{
	if (KI_RKIND(r) == RK_CON)
		lit(buf, n, M->f->con[KI_RIDX(r)]);
	else if (KI_RKIND(r) == RK_PAR)
		snprintf(buf, n, "(float)a.par[%d]", KI_RIDX(r));
	else if (KI_RKIND(r) == RK_INS)
		snprintf(buf, n, "q%d", KI_RIDX(r));
	else
		snprintf(buf, n, "kv_nan()");
}

/* a [chan] value (or a scalar, broadcast) at channel c_: erow reads eK_ / eV_, krow kK_ / kV_ */
static int chanx(Mp *M, KiRef r, char *out, size_t n)
{
	const KiFn *f = M->f;
	if (KI_RKIND(r) != RK_INS || !(f->ins[KI_RIDX(r)].axes & AXM(AX_chan)))
		return sref(M, r, out, n), 0;
	const KiIns *in = &f->ins[KI_RIDX(r)];
	if (in->op == KO_erow || in->op == KO_krow) {
		int v = f->ins[KI_RIDX(in->arg[0])].aux == IN_V;
		return fits(M, snprintf(out, n, "kv_f(%c%c_[c_])", in->op == KO_erow ? 'e' : 'k', v ? 'V' : 'K'), n);
	}
	if (ki_sem(in->op)->kind != SEM_EW)
		return kp_err(M->g, in, "internal: %s in a merge row value", ki_opname(in->op));
	char A[1500] = "0.f", B[1500] = "0.f", C[1500] = "0.f";
	int na = ki_nargs(in->op);
	if ((na > 0 && chanx(M, in->arg[0], A, sizeof A)) || (na > 1 && chanx(M, in->arg[1], B, sizeof B)) ||
	    (na > 2 && chanx(M, in->arg[2], C, sizeof C)))
		return -1;
	return fits(M, snprintf(out, n, ki_sem(in->op)->cuda, A, B, C), n);
}

/* an ordinary [token] value a read at held row T (pre-compaction index): kv.random inline at
** the row's position (M->pos: the positions before the compaction), others from the score
** kernels' buffer B<a> (kept alive: gen_select reserves the merge after them) */
static int tokat(Mp *M, int a, const char *T, char *out, size_t n)
{
	Gen *g = M->g;
	const KiIns *ia = &M->f->ins[a];
	if (ia->op == KO_rand) {
		char sd[400];
		if (kp_dscalar(g, ia->arg[0], sd, sizeof sd, 0) != 0)
			return kp_err(g, ia, "merge: a kv.random seed that is no constant or param on the GPU");
		return fits(M, snprintf(out, n, "kv_rand(%s, l, h, %s[%s])", sd, M->pos ? M->pos : "mPIV_", T), n);
	}
	if (g->home[a] != HM_BUF || ia->axes != AXM(AX_token))
		return kp_err(g, ia, "merge %s: a [token] value the score kernels do not keep in a buffer (GPU)", M->next == 2 ? "runs" : "next");
	return fits(M, snprintf(out, n, "B%d[%s]", a, T), n);
}

static int tokv(Mp *M, const KiIns *in, char *out, size_t n)
{
	if (KI_RKIND(in->arg[0]) != RK_INS)
		return kp_err(M->g, in, "internal: %s of a non-instruction", ki_opname(in->op));
	int a = KI_RIDX(in->arg[0]);
	if (in->op != KO_tmean)
		return tokat(M, a, in->op == KO_erow ? "et_" : "kt_", out, n);
	return tokat(M, a, "mKJ_[j0_ + u_]", out, n);    /* the loop: psite */
}

/* root r at a pair site (eK_, eV_, kK_, kV_, sim_, abs_, ntg_, ecn_, kcn_ in scope): a block
** at depth ind that assigns its value to res */
static int psite(Mp *M, KiRef r, const char *res, int ind)
{
	const KiFn *f = M->f;
	Gen *g = M->g;
	const char *tabs = "\t\t\t\t\t\t\t\t";
	if (KI_RKIND(r) != RK_INS) {
		char A[200];
		sref(M, r, A, sizeof A);
		sb(&g->s, "%.*s%s = %s;\n", ind, tabs, res, A);
		return 0;
	}
	int top = KI_RIDX(r);
	memset(M->need, 0, (size_t)f->nins);
	M->need[top] = 1;
	for (int i = top; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean || in->op == KO_pinfo)
			continue;
		for (int k = 0; k < ki_nargs(in->op) && k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
				M->need[KI_RIDX(in->arg[k])] = 1;
	}
	sb(&g->s, "%.*s{\n", ind, tabs);
	for (int i = 0; i <= top; i++) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || (in->axes & AXM(AX_chan)))
			continue;                   /* [chan] values: inline in the reductions */
		if (in->axes)
			return kp_err(g, in, "internal: %s with axes in a merge pair value", ki_opname(in->op));
		const KiSem *sem = ki_sem(in->op);
		if (in->op == KO_pinfo) {
			static const char *const pn[PI_NUM] = { "sim_", "abs_", "ntg_", "ecn_", "kcn_" };
			sb(&g->s, "%.*s\tconst float q%d = %s;\n", ind, tabs, i, in->aux < PI_NUM ? pn[in->aux] : "kv_nan()");
		} else if (in->op == KO_erow || in->op == KO_krow || in->op == KO_tmean) {
			char v[600];
			if (!M->next || tokv(M, in, v, sizeof v))
				return M->next ? -1 : kp_err(g, in, "an ordinary [token] value in a merge pair value on the GPU");
			if (in->op == KO_tmean)      /* the mean over e's targets j0_ .. j0_ + ntgi_ - 1 (NaN: none) */
				sb(&g->s, "%.*s\tfloat q%d; { float s_ = 0.f; for (int u_ = 0; u_ < ntgi_; u_++) s_ += %s; "
				   "q%d = ntgi_ > 0 ? s_ / (float)ntgi_ : kv_nan(); } /* %%%d tmean */\n", ind, tabs, i, v, i, i);
			else
				sb(&g->s, "%.*s\tconst float q%d = %s; /* %%%d %s */\n", ind, tabs, i, v, i, ki_opname(in->op));
		}
		else if (sem->kind == SEM_RED) {
			char A[1500], B[1500] = "0.f", ini[64];
			if (chanx(M, in->arg[0], A, sizeof A) || (sem->map == MAP_MUL && chanx(M, in->arg[1], B, sizeof B)))
				return -1;
			if (sem->map == MAP_DEV)
				return kp_err(g, in, "internal: %s in a merge pair value", ki_opname(in->op));
			lit(ini, sizeof ini, sem->init);
			sb(&g->s, "%.*s\tfloat q%d; { float acc_ = %s; for (int c_ = 0; c_ < KV_D; c_++) { const float y_ = %s; ",
			   ind, tabs, i, ini, A);
			const char *y = sem->map == MAP_SQ ? "y_ * y_" : "y_";
			if (sem->map == MAP_MUL)
				sb(&g->s, "const float z_ = y_ * (%s); ", B), y = "z_";
			if (sem->comb == CMB_ADD)
				sb(&g->s, "acc_ += %s; }", y);
			else
				sb(&g->s, "acc_ = %s(acc_, %s); }", sem->comb == CMB_MAX ? "kv_rmax" : "kv_rmin", y);
			const char *fin = sem->fin == FIN_MEAN ? "acc_ / (float)KV_D" : sem->fin == FIN_SQRT ? "sqrtf(acc_)"
			                : sem->fin == FIN_RMS ? "sqrtf(acc_ / (float)KV_D)" : "acc_";
			sb(&g->s, " q%d = %s; } /* %%%d %s */\n", i, fin, i, ki_opname(in->op));
		} else if (sem->kind == SEM_EW) {
			char A[200], B[200], C[200], e[800];
			int na = ki_nargs(in->op);
			sref(M, na > 0 ? in->arg[0] : KI_NIL, A, sizeof A);
			sref(M, na > 1 ? in->arg[1] : KI_NIL, B, sizeof B);
			sref(M, na > 2 ? in->arg[2] : KI_NIL, C, sizeof C);
			if (fits(M, snprintf(e, sizeof e, sem->cuda, A, B, C), sizeof e))
				return -1;
			sb(&g->s, "%.*s\tconst float q%d = %s; /* %%%d %s */\n", ind, tabs, i, e, i, ki_opname(in->op));
		} else
			return kp_err(g, in, "internal: %s in a merge pair value", ki_opname(in->op));
	}
	sb(&g->s, "%.*s\t%s = q%d;\n%.*s}\n", ind, tabs, res, top, ind, tabs);
	return 0;
}

static int mpinit(Mp *M, Gen *g)
{
	*M = (Mp){ .g = g, .f = g->f };
	M->need = malloc((size_t)g->f->nins + 1);
	if (!M->need)
		return kp_err(g, NULL, "out of memory");
	return 0;
}

/* the count of held row T (an expression) of this instance, 1 without member counts */
static void cntx(const KiFn *f, const char *T, char *buf, size_t n)
{
	if (ki_mcounts(f))
		snprintf(buf, n, "a.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + (%s)]", T);
	else
		snprintf(buf, n, "1.f");
}

/* before the kernel: the selection order of two held rows (runs' pivots) */
void kp_mpos_funcs(Gen *g)
{
	sb(&g->s,
	   "\n/* merge runs: does held row x rank before held row y in the selection order (codegen/ptx/mpos.c) */\n"
	   "__device__ __forceinline__ int kv_mpbefore(const float *sc, long long x, long long y, long long n, long long S, long long R)\n"
	   "{\n"
	   "\tint cx, cy;\n"
	   "\tdouble kx = 0.0, ky = 0.0;\n"
	   "\tif (x < S) cx = 0, kx = (double)x; else if (x >= n - R) cx = 1, kx = -(double)x;\n"
	   "\telse if (sc[x] != sc[x]) cx = 3; else cx = 2, kx = -(double)sc[x];\n"
	   "\tif (y < S) cy = 0, ky = (double)y; else if (y >= n - R) cy = 1, ky = -(double)y;\n"
	   "\telse if (sc[y] != sc[y]) cy = 3; else cy = 2, ky = -(double)sc[y];\n"
	   "\tif (cx != cy) return cx < cy;\n"
	   "\tif (kx != ky) return kx < ky;\n"
	   "\treturn x < y;\n"
	   "}\n");
}

static const char *const decl =
	"\tkv_st *const mEK_ = (kv_st *)(W + (%s)), *const mEV_ = mEK_ + (long long)N * KV_D;\n"
	"\tfloat *const mW_ = (float *)(mEV_ + (long long)N * KV_D), *const mWK_ = mW_ + N, *const mTOT_ = mWK_ + N;\n"
	"\tfloat *const mEC_ = mTOT_ + N;   /* [N] evicted counts (KV_CNT >= 0) */\n"
	"\tint *const mKJ_ = (int *)(mEC_ + N), *const mRID_ = mKJ_ + N, *const mPIV_ = mRID_ + N, *const mBI_ = mPIV_ + N;\n"
	"\tint *const mSEG_ = mBI_ + N, *const mOFF_ = mSEG_ + N;   /* mOFF_: [N + 1] */\n"
	"\t(void)mEC_; (void)mOFF_;\n";

/* merge runs reading ordinary [token] values: held index of each kept / evicted row, the
** pre-compaction positions by held index (kv.random) */
static const char *const rdecl =
	"\tint *const mKH_ = mOFF_ + N + 1, *const mEH_ = mKH_ + N, *const mPS_ = mEH_ + N;\n";

/* does the rule read an ordinary [token] value (CaM's attention, kv.random): -1 out of memory */
int kp_mpos_tokvals(const KiFn *f)
{
	if (f->merge.kind != MG_runs && f->merge.kind != MG_next)
		return 0;
	uint8_t *mv = calloc((size_t)f->nins + 1, 1);
	if (!mv || ki_mvals(f, mv) != 0)
		return free(mv), -1;
	int tv = 0;
	for (int i = 0; i < f->nins; i++)
		tv |= mv[i];
	free(mv);
	return tv;
}

int kp_mpos_decl(Gen *g)
{
	const KiFn *f = g->f;
	int nx = f->merge.kind == MG_next, tv = kp_mpos_tokvals(f);
	if (tv < 0)
		return kp_err(g, NULL, "out of memory");
	int rt = !nx;            /* runs: kh, eh, ps [N] (held indices: the parallel runs, [token] values) */
	long long off[4], one[4];
	char o[200];
	/* EK, EV [N][D] (storage dtype); w, wk, tot, ec; kj, rid, piv, bi, seg [N]; off [N + 1]
	** (next: the update's accumulators in registers, session 9; were [N][D] f32 for K and V) */
	kp_wsreserve(g, 1, (g->dtype == KVCC_F32 ? 2LL : 1LL) * g->D + 10 + (rt ? 3 : 0), off);
	kp_wsreserve(g, 0, 2, one);
	kp_wsmax(g);
	kp_offexpr(off, o, sizeof o);
	sb(&g->s, decl, o);
	if (rt)
		sb(&g->s, "%s", rdecl);
	if (!tv && !nx)
		return 0;
	/* the score kernels' buffers of the ordinary [token] values the rule reads (CaM's attention) */
	uint8_t *mv = calloc((size_t)f->nins + 1, 1);
	if (!mv || ki_mvals(f, mv) != 0)
		return free(mv), kp_err(g, NULL, "out of memory");
	for (int i = 0; i < f->nins; i++)
		if (mv[i] && f->ins[i].op != KO_rand) {
			if (g->home[i] != HM_BUF || f->ins[i].axes != AXM(AX_token)) {
				free(mv);
				return kp_err(g, &f->ins[i], "merge %s: a [token] value the score kernels do not keep in a buffer (GPU)",
				              nx ? "next" : "runs");
			}
			kp_offexpr(g->off[i], o, sizeof o);
			sb(&g->s, "\tconst float *const B%d = W + (%s);   /* %%%d, the score kernels' */\n", i, o, i);
		}
	free(mv);
	if (!nx)
		return 0;
	char mx[300];
	if (kp_dscalar(g, f->merge.m, mx, sizeof mx, 1) != 0)
		return kp_err(g, NULL, "merge next: an m that is no constant or param");
	sb(&g->s,
	   "\tconst double mmd_ = (double)(%s);   /* m of next_kept: the interpreter's check */\n"
	   "\tif (!(mmd_ >= 1.0 && mmd_ <= 1e6 && mmd_ == floor(mmd_))) { if (tid == 0) kv_seterr(a.err, KVG_EMNEXT); return; }\n"
	   "\tconst int mm_ = (int)mmd_;\n", mx);
	return 0;
}

/* before the compaction: mRID_[t] = 1 where a run starts (t = 0, or sim(t-1, t) below the
** threshold) */
int kp_mpos_pre(Gen *g)
{
	if (g->f->merge.kind == MG_next)
		return 0;
	Mp M;
	if (mpinit(&M, g))
		return -1;
	const KiMerge *m = &g->f->merge;
	char ce[200], ck[200];
	cntx(g->f, "t_ - 1", ce, sizeof ce);
	cntx(g->f, "t_", ck, sizeof ck);
	M.next = 2, M.pos = "Pb";       /* [token] values by held index, positions before the compaction */
	sb(&g->s,
	   "\t/* merge runs (codegen/ptx/mpos.c): the neighbours' similarity on the pre-compaction rows */\n"
	   "\tfor (long long t_ = tid; t_ < n; t_ += KV_NT) {\n"
	   "\t\tint brk_ = 1;\n"
	   "\t\tif (t_ > 0) {\n"
	   "\t\t\tconst kv_st *const eK_ = Kb + kv_roff(a, Tb, t_ - 1), *const eV_ = Vb + kv_roff(a, Tb, t_ - 1);\n"
	   "\t\t\tconst kv_st *const kK_ = Kb + kv_roff(a, Tb, t_), *const kV_ = Vb + kv_roff(a, Tb, t_);\n"
	   "\t\t\tconst float ecn_ = %s, kcn_ = %s;\n"
	   "\t\t\tconst float sim_ = kv_nan(), abs_ = kv_nan(), ntg_ = kv_nan();\n"
	   "\t\t\tconst long long et_ = t_ - 1, kt_ = t_;\n"
	   "\t\t\tfloat s_;\n"
	   "\t\t\t(void)eK_; (void)eV_; (void)kK_; (void)kV_; (void)ecn_; (void)kcn_; (void)sim_; (void)abs_; (void)ntg_; (void)et_; (void)kt_;\n",
	   ce, ck);
	int rc = psite(&M, m->sim, "s_", 3);
	if (rc == 0 && m->thr == MT_value) {
		sb(&g->s, "\t\t\t{\n\t\t\t\tconst float sim_ = s_;\n\t\t\t\tfloat th_;\n\t\t\t\t(void)sim_;\n");
		rc = psite(&M, m->threshold, "th_", 4);
		sb(&g->s, "\t\t\t\tbrk_ = !(s_ >= th_);\n\t\t\t}\n");
	} else if (rc == 0 && m->thr == MT_none)
		sb(&g->s, "\t\t\tbrk_ = 0; (void)s_;\n");
	else if (rc == 0)
		rc = kp_err(g, NULL, "merge runs with an adaptive threshold on the GPU");
	sb(&g->s,
	   "\t\t}\n"
	   "\t\tmRID_[t_] = brk_;\n"
	   "\t}\n"
	   "\t__syncthreads();\n");
	free(M.need);
	return rc;
}

/* in the compaction's tile loop: t's kept index or -1 */
void kp_mpos_mark(Gen *g)
{
	if (g->f->merge.kind == MG_next)    /* next: kept j's held index, evicted q's first target and held index; positions */
		sb(&g->s,
		   "\t\tif (t < n) {\n"
		   "\t\t\tmPIV_[t] = Pb[t];\n"
		   "\t\t\tif (keep) mKJ_[run + ex] = (int)t;\n"
		   "\t\t\telse { const int q_ = (int)(t - run - ex); mBI_[q_] = (int)(run + ex); mRID_[q_] = (int)t; }\n"
		   "\t\t}\n");
	else                                   /* runs: held indices (targets; [token] values), positions */
		sb(&g->s,
		   "\t\tif (t < n) {\n"
		   "\t\t\tmKJ_[t] = keep ? (int)(run + ex) : -1;\n"
		   "\t\t\tmPS_[t] = Pb[t];\n"
		   "\t\t\tif (keep) mKH_[run + ex] = (int)t; else mEH_[t - run - ex] = (int)t;\n"
		   "\t\t}\n");
}

static int nextbody(Mp *M)
{
	Gen *g = M->g;
	const KiFn *f = M->f;
	const KiMerge *m = &f->merge;
	char ck[200];
	cntx(f, "j_", ck, sizeof ck);
	M->next = 1;
	sb(&g->s,
	   "\t/* compact_merge, merge next (codegen/ptx/mpos.c): m_ kept rows, nE_ evicted rows; evicted q's\n"
	   "\t   targets are the kept rows mBI_[q] .. mBI_[q] + nt - 1, nt = min(m, m_ - mBI_[q]) */\n"
	   "\t__syncthreads();\n"
	   "\tconst int m_ = (int)run, nE_ = n - m_;\n"
	   "\tif (m_ > 0 && nE_ > 0) {\n"
	   "#define KV_MRC ((KV_D + 31) / 32)   /* channels per lane */\n"
	   "\t\t/* a warp per kept row j_: its lanes evaluate the absorbed rows' weights (a row each, 32 at\n"
	   "\t\t   a time), broadcast them (shuffles), and accumulate channels lane, lane + 32, ... in\n"
	   "\t\t   registers; every sum in member order (a long run of evicted rows before j_: 32 lanes) */\n"
	   "\t\tfor (int j_ = warp; j_ < m_; j_ += KV_NW) {\n"
	   "\t\t\t/* the evicted rows j_ absorbs: lo_ .. hi_ (mBI_ nondecreasing) */\n"
	   "\t\t\tint lo_, hi_;\n"
	   "\t\t\t{ int a_ = 0, b_ = nE_; while (a_ < b_) { const int c_ = (a_ + b_) >> 1; if ((long long)mBI_[c_] + mm_ <= j_) a_ = c_ + 1; else b_ = c_; } lo_ = a_; }\n"
	   "\t\t\t{ int a_ = lo_, b_ = nE_; while (a_ < b_) { const int c_ = (a_ + b_) >> 1; if (mBI_[c_] <= j_) a_ = c_ + 1; else b_ = c_; } hi_ = a_; }\n"
	   "\t\t\tconst int cnt_ = hi_ - lo_;\n"
	   "\t\t\tif (cnt_ <= 0) continue;   /* the warp's rows alike */\n"
	   "\t\t\tconst kv_st *const kK_ = Kb + kv_roff(a, Tb, j_), *const kV_ = Vb + kv_roff(a, Tb, j_);\n"
	   "\t\t\tconst int kt_ = mKJ_[j_];\n"
	   "\t\t\tconst float kcn_ = %s;\n"
	   "\t\t\tfloat aK_[KV_MRC], aV_[KV_MRC], den_ = 0.f;\n"
	   "\t\t\tfor (int cc_ = 0; cc_ < KV_MRC; cc_++) aK_[cc_] = 0.f, aV_[cc_] = 0.f;\n"
	   "\t\t\tfor (int b0_ = lo_; b0_ < hi_; b0_ += 32) {\n"
	   "\t\t\t\tfloat wl_ = 0.f;\n"
	   "\t\t\t\tif (b0_ + lane < hi_) {   /* w_e of row q_ from the pre-merge rows */\n"
	   "\t\t\t\t\tconst int q_ = b0_ + lane;\n"
	   "\t\t\t\t\tconst int j0_ = mBI_[q_], ntgi_ = m_ - j0_ < mm_ ? m_ - j0_ : mm_, et_ = mRID_[q_];\n"
	   "\t\t\t\t\tconst kv_st *const eK_ = mEK_ + (long long)q_ * KV_D, *const eV_ = mEV_ + (long long)q_ * KV_D;\n"
	   "\t\t\t\t\tconst float ecn_ = %s, sim_ = kv_nan(), abs_ = (float)cnt_, ntg_ = (float)ntgi_;\n"
	   "\t\t\t\t\tfloat w_;\n"
	   "\t\t\t\t\t(void)j0_; (void)et_; (void)kt_; (void)eK_; (void)eV_; (void)kK_; (void)kV_; (void)ecn_; (void)kcn_; (void)sim_; (void)abs_; (void)ntg_;\n",
	   ck, ki_mcounts(f) ? "mEC_[q_]" : "1.f");
	if (psite(M, m->weight, "w_", 5))
		return -1;
	sb(&g->s,
	   "\t\t\t\t\twl_ = w_;\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\tconst int nb_ = hi_ - b0_ < 32 ? hi_ - b0_ : 32;\n"
	   "\t\t\t\tfor (int i_ = 0; i_ < nb_; i_++) {\n"
	   "\t\t\t\t\tconst float w_ = __shfl_sync(0xffffffffu, wl_, i_);\n"
	   "\t\t\t\t\tconst long long r_ = (long long)(b0_ + i_) * KV_D;\n"
	   "\t\t\t\t\tden_ += w_;\n"
	   "\t\t\t\t\tfor (int cc_ = 0; cc_ < KV_MRC; cc_++) {\n"
	   "\t\t\t\t\t\tconst int c_ = lane + 32 * cc_;\n"
	   "\t\t\t\t\t\tif (c_ < KV_D) aK_[cc_] = fmaf(kv_f(mEK_[r_ + c_]), w_, aK_[cc_]), aV_[cc_] = fmaf(kv_f(mEV_[r_ + c_]), w_, aV_[cc_]);\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t}\n"
	   "\t\t\t}\n"
	   "\t\t\tfloat wk_;\n"
	   "\t\t\t{   /* w_k */\n"
	   "\t\t\t\tconst kv_st *const eK_ = kK_, *const eV_ = kV_;\n"
	   "\t\t\t\tconst int et_ = kt_, j0_ = 0, ntgi_ = 0;\n"
	   "\t\t\t\tconst float ecn_ = kv_nan(), sim_ = kv_nan(), abs_ = (float)cnt_, ntg_ = kv_nan();\n"
	   "\t\t\t\t(void)j0_; (void)ntgi_; (void)et_; (void)eK_; (void)eV_; (void)ecn_; (void)sim_; (void)abs_; (void)ntg_;\n");
	if (psite(M, m->self, "wk_", 4))
		return -1;
	sb(&g->s,
	   "\t\t\t}\n"
	   "\t\t\tconst float tot_ = wk_ + den_;\n"
	   "\t\t\t__syncwarp();   /* every lane's w_k read row j_ (self_weight may read k.K / k.V) before any lane writes it */\n");
	if (m->update == MU_mean)
		sb(&g->s, "\t\t\tconst int upd_ = fabsf(tot_) < kv_inf() && tot_ != 0.f;   /* else unchanged */\n");
	else
		sb(&g->s, "\t\t\tconst int upd_ = 1;\n");
	sb(&g->s,
	   "\t\t\tfor (int cc_ = 0; cc_ < KV_MRC; cc_++) {\n"
	   "\t\t\t\tconst int c_ = lane + 32 * cc_;\n"
	   "\t\t\t\tif (!upd_ || c_ >= KV_D) continue;\n"
	   "\t\t\t\tconst long long x2_ = kv_roff(a, Tb, j_) + c_;\n");
	for (int v = 0; v < 2; v++) {
		if (!(v ? m->values : m->keys))
			continue;
		sb(&g->s, "\t\t\t\t{ const float y_ = __fadd_rn(__fmul_rn(wk_, kv_f(%cb[x2_])), a%c_[cc_]); %cb[x2_] = kv_tost(%s); }\n",
		   v ? 'V' : 'K', v ? 'V' : 'K', v ? 'V' : 'K', m->update == MU_mean ? "y_ / tot_" : "y_");
	}
	sb(&g->s, "\t\t\t\t(void)x2_; (void)tot_;\n\t\t\t}\n");
	if (ki_mcounts(f))
		sb(&g->s,
		   "\t\t\tfor (int q_ = lo_; lane == 0 && q_ < hi_; q_++) {   /* member counts: + count_e / nt(e) */\n"
		   "\t\t\t\tconst int ntgi_ = m_ - mBI_[q_] < mm_ ? m_ - mBI_[q_] : mm_;\n"
		   "\t\t\t\ta.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + j_] += mEC_[q_] / (float)ntgi_;\n"
		   "\t\t\t}\n");
	sb(&g->s, "\t\t}\n#undef KV_MRC\n\t}\n");
	return 0;
}

int kp_mpos_body(Gen *g)
{
	Mp M;
	if (mpinit(&M, g))
		return -1;
	const KiFn *f = g->f;
	const KiMerge *m = &f->merge;
	if (m->kind == MG_next) {
		int rc = nextbody(&M);
		free(M.need);
		return rc;
	}
	char ck[200];
	cntx(f, "j_", ck, sizeof ck);
	int tv = kp_mpos_tokvals(f) > 0;
	M.next = 2, M.pos = "mPS_";     /* [token] values by held index, positions before the compaction */
	sb(&g->s,
	   "\t/* compact_merge, merge runs (codegen/ptx/mpos.c): m_ kept rows, nE_ evicted rows */\n"
	   "\t__syncthreads();\n"
	   "\tconst int m_ = (int)run, nE_ = n - m_;\n"
	   "\tif (m_ > 0 && nE_ > 0) {\n"
	   "\t\t/* run ids: an inclusive scan of the break flags (block scans, tile by tile); mSEG_[r]:\n"
	   "\t\t   run r's first held row */\n"
	   "\t\tint nr_ = 0;\n"
	   "\t\tfor (long long t0_ = 0; t0_ < n; t0_ += KV_NT) {\n"
	   "\t\t\tconst long long t_ = t0_ + tid;\n"
	   "\t\t\tconst int f_ = t_ < n && mRID_[t_] ? 1 : 0;\n"
	   "\t\t\tint tot_;\n"
	   "\t\t\tconst int r_ = nr_ + kv_bscan(f_, wsum, &tot_) + f_ - 1;\n"
	   "\t\t\tif (t_ < n) { mRID_[t_] = r_; if (f_) mSEG_[r_] = (int)t_; }\n"
	   "\t\t\tnr_ += tot_;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\t/* each run's pivot = its kept row first in the selection order (-1: none): a segmented\n"
	   "\t\t   scan (Hillis-Steele, the runs' ids as segments) of \"first in the order\" per tile of\n"
	   "\t\t   held rows; a run's last row in the tile folds the tile's part into mPIV_ (a run that\n"
	   "\t\t   began in an earlier tile: with that tile's part). Depth O(n / KV_NT * log KV_NT),\n"
	   "\t\t   however long a run */\n"
	   "\t\t__shared__ int mpv_[KV_NT], mpr_[KV_NT];\n"
	   "\t\tfor (long long t0_ = 0; t0_ < n; t0_ += KV_NT) {\n"
	   "\t\t\tconst long long t_ = t0_ + tid;\n"
	   "\t\t\tint p_ = t_ < n && mKJ_[t_] >= 0 ? (int)t_ : -1;\n"
	   "\t\t\tconst int r_ = t_ < n ? mRID_[t_] : -1;\n"
	   "\t\t\tmpr_[tid] = r_;\n"
	   "\t\t\tfor (int d_ = 1; d_ < KV_NT; d_ <<= 1) {\n"
	   "\t\t\t\tmpv_[tid] = p_;\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tif (tid >= d_ && mpr_[tid - d_] == r_) {\n"
	   "\t\t\t\t\tconst int o_ = mpv_[tid - d_];\n"
	   "\t\t\t\t\tif (o_ >= 0 && (p_ < 0 || kv_mpbefore(sc, o_, p_, n, S, R))) p_ = o_;\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t}\n"
	   "\t\t\tif (t_ < n && (tid == KV_NT - 1 || t_ + 1 >= n || mpr_[tid + 1] != r_)) {   /* the run's last row here */\n"
	   "\t\t\t\tif (mSEG_[r_] < t0_) {   /* began in an earlier tile */\n"
	   "\t\t\t\t\tconst int o_ = mPIV_[r_];\n"
	   "\t\t\t\t\tif (o_ >= 0 && (p_ < 0 || kv_mpbefore(sc, o_, p_, n, S, R))) p_ = o_;\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\tmPIV_[r_] = p_;\n"
	   "\t\t\t}\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t}\n"
	   "\t\t/* every evicted row's target: its run's pivot's kept index (-1: dropped) */\n"
	   "\t\tfor (int q_ = tid; q_ < nE_; q_ += KV_NT) {\n"
	   "\t\t\tconst int p_ = mPIV_[mRID_[mEH_[q_]]];\n"
	   "\t\t\tmBI_[q_] = p_ >= 0 ? mKJ_[p_] : -1;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\t/* the segments: the targeted rows in evicted order (a pivot's rows are contiguous and the\n"
	   "\t\t   targets nondecreasing in it: runs are contiguous held ranges), mOFF_ by binary search */\n"
	   "\t\tint ns_ = 0;\n"
	   "\t\tfor (int q0_ = 0; q0_ < nE_; q0_ += KV_NT) {\n"
	   "\t\t\tconst int q_ = q0_ + tid, f_ = q_ < nE_ && mBI_[q_] >= 0 ? 1 : 0;\n"
	   "\t\t\tint tot_;\n"
	   "\t\t\tconst int s_ = ns_ + kv_bscan(f_, wsum, &tot_);\n"
	   "\t\t\tif (f_) mSEG_[s_] = q_;\n"
	   "\t\t\tns_ += tot_;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\tfor (int j_ = tid; j_ <= m_; j_ += KV_NT) {   /* the first segment entry with target >= j_ */\n"
	   "\t\t\tint a_ = 0, b_ = ns_;\n"
	   "\t\t\twhile (a_ < b_) { const int c_ = (a_ + b_) >> 1; if (mBI_[mSEG_[c_]] < j_) a_ = c_ + 1; else b_ = c_; }\n"
	   "\t\t\tmOFF_[j_] = a_;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\t/* the weights w_e: the similarity to the pivot, then the weight (pre-merge rows) */\n"
	   "\t\tfor (int s2_ = tid; s2_ < mOFF_[m_]; s2_ += KV_NT) {\n"
	   "\t\t\tconst int q_ = mSEG_[s2_], j_ = mBI_[q_];\n"
	   "\t\t\tconst kv_st *const eK_ = mEK_ + (long long)q_ * KV_D, *const eV_ = mEV_ + (long long)q_ * KV_D;\n"
	   "\t\t\tconst kv_st *const kK_ = Kb + kv_roff(a, Tb, j_), *const kV_ = Vb + kv_roff(a, Tb, j_);\n"
	   "\t\t\tconst float ecn_ = %s, kcn_ = %s;\n"
	   "\t\t\tconst float sim_ = kv_nan(), abs_ = kv_nan(), ntg_ = kv_nan();\n"
	   "\t\t\tfloat s_, w_;\n"
	   "\t\t\tconst long long et_ = %s, kt_ = %s;   /* held indices: [token] values */\n"
	   "\t\t\t(void)eK_; (void)eV_; (void)kK_; (void)kV_; (void)ecn_; (void)kcn_; (void)sim_; (void)abs_; (void)ntg_; (void)et_; (void)kt_;\n",
	   ki_mcounts(f) ? "mEC_[q_]" : "1.f", ck, tv ? "mEH_[q_]" : "-1", tv ? "mKH_[j_]" : "-1");
	int rc = psite(&M, m->sim, "s_", 3);
	sb(&g->s, "\t\t\t{\n\t\t\t\tconst float sim_ = s_, abs_ = (float)(mOFF_[j_ + 1] - mOFF_[j_]), ntg_ = 1.f;\n"
	          "\t\t\t\t(void)sim_; (void)abs_; (void)ntg_;\n");
	if (rc == 0)
		rc = psite(&M, m->weight, "w_", 4);
	sb(&g->s,
	   "\t\t\t}\n"
	   "\t\t\tmW_[s2_] = w_;\n"
	   "\t\t}\n"
	   "\t\t/* the self weight w_k of each pivot */\n"
	   "\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT) {\n"
	   "\t\t\tconst int o0_ = mOFF_[j_], o1_ = mOFF_[j_ + 1];\n"
	   "\t\t\tif (o0_ == o1_) continue;\n"
	   "\t\t\tconst kv_st *const kK_ = Kb + kv_roff(a, Tb, j_), *const kV_ = Vb + kv_roff(a, Tb, j_);\n"
	   "\t\t\tconst kv_st *const eK_ = kK_, *const eV_ = kV_;\n"
	   "\t\t\tconst float ecn_ = kv_nan(), kcn_ = %s;\n"
	   "\t\t\tconst float sim_ = kv_nan(), abs_ = (float)(o1_ - o0_), ntg_ = kv_nan();\n"
	   "\t\t\tfloat wk_;\n"
	   "\t\t\tconst long long et_ = %s, kt_ = et_;   /* held index: [token] values */\n"
	   "\t\t\t(void)eK_; (void)eV_; (void)kK_; (void)kV_; (void)ecn_; (void)kcn_; (void)sim_; (void)abs_; (void)ntg_; (void)et_; (void)kt_;\n",
	   ck, tv ? "mKH_[j_]" : "-1");
	if (rc == 0)
		rc = psite(&M, m->self, "wk_", 3);
	sb(&g->s,
	   "\t\t\tmWK_[j_] = wk_;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT) {   /* the totals */\n"
	   "\t\t\tfloat den_ = 0.f;\n"
	   "\t\t\tfor (int s2_ = mOFF_[j_]; s2_ < mOFF_[j_ + 1]; s2_++) den_ += mW_[s2_];\n"
	   "\t\t\tmTOT_[j_] = mWK_[j_] + den_;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\t/* the update of every (pivot, channel) */\n"
	   "\t\tfor (long long x_ = tid; x_ < (long long)m_ * KV_D; x_ += KV_NT) {\n"
	   "\t\t\tconst int j_ = (int)(x_ / KV_D), c_ = (int)(x_ - (long long)j_ * KV_D);\n"
	   "\t\t\tconst int o0_ = mOFF_[j_], o1_ = mOFF_[j_ + 1];\n"
	   "\t\t\tif (o0_ == o1_) continue;\n"
	   "\t\t\tconst float tot_ = mTOT_[j_], wk_ = mWK_[j_];\n");
	if (m->update == MU_mean)
		sb(&g->s, "\t\t\tif (!(fabsf(tot_) < kv_inf() && tot_ != 0.f)) continue;   /* unchanged */\n");
	else
		sb(&g->s, "\t\t\t(void)tot_;\n");
	sb(&g->s,
	   "\t\t\tfloat ak_ = 0.f, av_ = 0.f;\n"
	   "\t\t\tfor (int s2_ = o0_; s2_ < o1_; s2_++) {\n"
	   "\t\t\t\tconst long long r_ = (long long)mSEG_[s2_] * KV_D + c_;\n"
	   "\t\t\t\tak_ = fmaf(kv_f(mEK_[r_]), mW_[s2_], ak_);\n"
	   "\t\t\t\tav_ = fmaf(kv_f(mEV_[r_]), mW_[s2_], av_);\n"
	   "\t\t\t}\n"
	   "\t\t\t(void)ak_; (void)av_;\n"
	   "\t\t\tconst long long x2_ = kv_roff(a, Tb, j_) + c_;\n");
	for (int v = 0; v < 2; v++) {
		if (!(v ? m->values : m->keys))
			continue;
		sb(&g->s, "\t\t\t{ const float y_ = __fadd_rn(__fmul_rn(wk_, kv_f(%cb[x2_])), %s); %cb[x2_] = kv_tost(%s); }\n",
		   v ? 'V' : 'K', v ? "av_" : "ak_", v ? 'V' : 'K', m->update == MU_mean ? "y_ / tot_" : "y_");
	}
	sb(&g->s, "\t\t}\n");
	if (ki_mcounts(f))
		sb(&g->s,
		   "\t\t/* member counts: a pivot's count grows by its absorbed rows' */\n"
		   "\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT) {\n"
		   "\t\t\tfloat *const c_ = &a.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + j_];\n"
		   "\t\t\tfor (int s2_ = mOFF_[j_]; s2_ < mOFF_[j_ + 1]; s2_++) *c_ += mEC_[mSEG_[s2_]];\n"
		   "\t\t}\n");
	sb(&g->s, "\t}\n");
	free(M.need);
	return rc;
}
