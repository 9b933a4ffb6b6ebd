/*
** compact_merge with merge nearest in CUDA C (DESIGN §3 "Merge semantics", §5): the GPU twin
** of codegen/x86/merge.c + runtime/merge.c, generated into the kv_select kernel of a policy
** whose merge rule compiler/mplan.c ki_mkernels takes (nearest at prefill, a tiled-product
** similarity). One block per (layer, head), in the select kernel after its stable in-place
** compaction:
**
**   copy     during the compaction, every evicted row (keys and values, storage dtype) into the
**            workspace, in position order, before a kept row can overwrite it (kp_mcopy)
**   mscal    the row scalars of every evicted and every kept row (a thread per row)
**   mbest    the cross dots e.K · k.K as a tiled product (tiled, session 9): tiles of evicted
**            copies and kept key rows in the staging buffer, a few dots per thread in f32
**            registers, the policy's epilogue per pair, a running arg-max per evicted row and
**            a warp combine (NaN never, ties → the lower kept index); never a matrix beyond a
**            tile
**   thresh   the rule's value per row (a pair value), or the mean of the maximum similarities
**            (double, the block's sum)
**   segments the evicted rows grouped by target in evicted order (session 9: parallel counts,
**            a block scan, a stable scatter by rank of bitonic-sorted tiles; was one thread)
**   update   the weights w_e (a thread per member), the self weight w_k and the total per
**            target, then every (target, channel): (w_k X_k + sum w_e X_e) / total, rounded
**            to the storage dtype (kv_tost)
**   counts   member counts (a state row, KV_CNT >= 0: compiler/mplan.h ki_mcounts): copied aside
**            with the evicted rows, then each target's count grows by its absorbed rows'
**
** Simultaneous: every similarity and weight comes from the pre-merge rows (the evicted rows'
** copies, the kept rows before any update). f32 as the x86 kernels (the interpreter: double;
** the emulated matrix states the tolerance). Workspace: kp_mreserve, sized per instance from
** the capacity N (nothing allocated at run time).
*/
#include <math.h>
#include <string.h>
#include "codegen/ptx/gen.h"
#include "compiler/mplan.h"

typedef struct Mc {
	Gen *g;
	const KiFn *f;
	int *slot;               /* [nins] row scalar slots (ki_mslots) */
	uint8_t *side;           /* [nins] KI_M* (ki_msides) */
	char *need;              /* [nins] scratch */
	int dot;                 /* the similarity's cross dot */
	int nes, nks;
	int oom;
} Mc;

/* a float constant as CUDA C */
static void lit(char *buf, size_t n, double v)
{
	if (isnan(v))
		snprintf(buf, n, "kv_nan()");
	else if (isinf(v))
		snprintf(buf, n, "%skv_inf()", v < 0 ? "-" : "");
	else
		snprintf(buf, n, "((float)%.17g)", v);
}

static int fits(Mc *M, int k, size_t n)
{
	if (k < 0 || (size_t)k >= n)
		return kp_err(M->g, NULL, "merge expression too long for the CUDA generator");
	return 0;
}

/* --- row scalars -------------------------------------------------------------------------- */

/* a [chan] value of the row at channel c_ (side s: 0 evicted row q_ of the copies, 1 kept row
** j_ of the cache), scalars r<i> of the same row emitted before */
static int rowchan(Mc *M, KiRef r, int s, char *out, size_t n)
{
	const KiFn *f = M->f;
	if (KI_RKIND(r) == RK_CON)
		return lit(out, n, f->con[KI_RIDX(r)]), 0;
	if (KI_RKIND(r) == RK_PAR)
		return fits(M, snprintf(out, n, "(float)a.par[%d]", KI_RIDX(r)), n);
	if (KI_RKIND(r) != RK_INS)
		return fits(M, snprintf(out, n, "kv_nan()"), n);
	int i = KI_RIDX(r);
	const KiIns *in = &f->ins[i];
	if (!(in->axes & AXM(AX_chan)))
		return fits(M, snprintf(out, n, "r%d", i), n);
	if (in->op == KO_erow || in->op == KO_krow) {
		int v = f->ins[KI_RIDX(in->arg[0])].aux == IN_V;
		if (s == 0)
			return fits(M, snprintf(out, n, "kv_f(mE%c_[(long long)q_ * KV_D + c_])", v ? 'V' : 'K'), n);
		return fits(M, snprintf(out, n, "kv_f(%cb[kv_roff(a, Tb, j_) + c_])", v ? 'V' : 'K'), n);
	}
	if (ki_sem(in->op)->kind != SEM_EW)
		return kp_err(M->g, in, "internal: %s in a merge row value", ki_opname(in->op));
	char A[1500] = "0.f", B[1500] = "0.f", C[1500] = "0.f";
	int na = ki_nargs(in->op);
	if ((na > 0 && rowchan(M, in->arg[0], s, A, sizeof A)) || (na > 1 && rowchan(M, in->arg[1], s, B, sizeof B)) ||
	    (na > 2 && rowchan(M, in->arg[2], s, C, sizeof C)))
		return -1;
	return fits(M, snprintf(out, n, ki_sem(in->op)->cuda, A, B, C), n);
}

static const char *rowref(Mc *M, KiRef r, char *buf, size_t n)
{
	if (KI_RKIND(r) == RK_CON)
		lit(buf, n, M->f->con[KI_RIDX(r)]);
	else if (KI_RKIND(r) == RK_PAR)
		snprintf(buf, n, "(float)a.par[%d]", KI_RIDX(r));
	else if (KI_RKIND(r) == RK_INS)
		snprintf(buf, n, "r%d", KI_RIDX(r));
	else
		snprintf(buf, n, "kv_nan()");
	return buf;
}

/* the body of a loop over the rows of side s (q_ or j_): every slot of the side into its table */
static int rowscalars(Mc *M, int s)
{
	const KiFn *f = M->f;
	Gen *g = M->g;
	uint8_t want = s ? KI_MK : KI_ME;
	memset(M->need, 0, (size_t)f->nins);
	for (int i = 0; i < f->nins; i++)
		M->need[i] = M->slot[i] >= 0 && M->side[i] == want;
	for (int i = f->nins - 1; i >= 0; i--)
		if (M->need[i] && f->ins[i].op != KO_erow && f->ins[i].op != KO_krow)
			for (int k = 0; k < 3; k++)
				if (KI_RKIND(f->ins[i].arg[k]) == RK_INS && KI_RIDX(f->ins[i].arg[k]) < i)
					M->need[KI_RIDX(f->ins[i].arg[k])] = 1;
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || in->axes)
			continue;               /* [chan] values: inline in the reductions */
		const KiSem *sem = ki_sem(in->op);
		if (in->op == KO_pinfo)      /* e.count (copied aside with the row), k.count (before the update) */
			sb(&g->s, "\t\t\tconst float r%d = %s; /* %%%d %s */\n", i,
			   in->aux == PI_ecount ? "mEC_[q_]" : "a.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + j_]", i,
			   in->aux == PI_ecount ? "e.count" : "k.count");
		else if (sem->kind == SEM_RED) {
			char A[1500], B[1500] = "0.f", ini[64];
			if (rowchan(M, in->arg[0], s, A, sizeof A) ||
			    (sem->map == MAP_MUL && rowchan(M, in->arg[1], s, B, sizeof B)))
				return -1;
			if (isinf(sem->init))
				snprintf(ini, sizeof ini, "%skv_inf()", sem->init < 0 ? "-" : "");
			else
				lit(ini, sizeof ini, sem->init);
			sb(&g->s, "\t\t\tfloat r%d; { float acc_ = %s; for (int c_ = 0; c_ < KV_D; c_++) { const float y_ = %s; ",
			   i, ini, A);
			const char *y = sem->map == MAP_SQ ? "y_ * y_" : "y_";
			if (sem->map == MAP_MUL)
				sb(&g->s, "const float z_ = y_ * (%s); ", B), y = "z_";
			if (sem->comb == CMB_ADD)
				sb(&g->s, "acc_ += %s; }", y);
			else
				sb(&g->s, "acc_ = %s(acc_, %s); }", sem->comb == CMB_MAX ? "kv_rmax" : "kv_rmin", y);
			const char *fin = sem->fin == FIN_MEAN ? "acc_ / (float)KV_D" : sem->fin == FIN_SQRT ? "sqrtf(acc_)"
			                : sem->fin == FIN_RMS ? "sqrtf(acc_ / (float)KV_D)" : "acc_";
			sb(&g->s, " r%d = %s; } /* %%%d %s */\n", i, fin, i, ki_opname(in->op));
		} else if (sem->kind == SEM_EW) {
			char A[200], B[200], C[200], e[800];
			int na = ki_nargs(in->op);
			rowref(M, na > 0 ? in->arg[0] : KI_NIL, A, sizeof A);
			rowref(M, na > 1 ? in->arg[1] : KI_NIL, B, sizeof B);
			rowref(M, na > 2 ? in->arg[2] : KI_NIL, C, sizeof C);
			snprintf(e, sizeof e, sem->cuda, A, B, C);
			sb(&g->s, "\t\t\tconst float r%d = %s; /* %%%d %s */\n", i, e, i, ki_opname(in->op));
		} else
			return kp_err(g, in, "internal: %s in a merge row value", ki_opname(in->op));
		if (M->slot[i] >= 0 && M->side[i] == want)
			sb(&g->s, "\t\t\tm%cS_[(long long)%d * N + %s] = r%d;\n", s ? 'K' : 'E', M->slot[i], s ? "j_" : "q_", i);
	}
	return 0;
}

/* --- pair values ---------------------------------------------------------------------------- */

static const char *pairref(Mc *M, KiRef r, char *buf, size_t n)
{
	if (KI_RKIND(r) != RK_INS)
		return rowref(M, r, buf, n);
	int i = KI_RIDX(r);
	const KiIns *in = &M->f->ins[i];
	if (M->slot[i] >= 0)
		snprintf(buf, n, "m%cS_[(long long)%d * N + %s]", M->side[i] == KI_ME ? 'E' : 'K', M->slot[i],
		         M->side[i] == KI_ME ? "q_" : "j_");
	else if (i == M->dot)
		snprintf(buf, n, "dot_");
	else if (in->op == KO_pinfo)
		snprintf(buf, n, "%s", in->aux == PI_sim ? "sim_" : in->aux == PI_absorbed ? "abs_" : "ntg_");
	else
		snprintf(buf, n, "p%d", i);
	return buf;
}

/* root r at a pair site (q_, j_, dot_, sim_, abs_, ntg_ bound): its instructions as statements
** at depth ind, the value's expression into out */
static int pairsite(Mc *M, KiRef r, int ind, char *out, size_t n)
{
	const KiFn *f = M->f;
	Gen *g = M->g;
	if (KI_RKIND(r) != RK_INS) {
		pairref(M, r, out, n);
		return 0;
	}
	int top = KI_RIDX(r);
	memset(M->need, 0, (size_t)f->nins);
	M->need[top] = 1;
	for (int i = top; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || M->slot[i] >= 0 || i == M->dot || in->op == KO_pinfo)
			continue;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
				M->need[KI_RIDX(in->arg[k])] = 1;
	}
	for (int i = 0; i <= top; i++) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || M->slot[i] >= 0 || i == M->dot || in->op == KO_pinfo)
			continue;
		if (ki_sem(in->op)->kind != SEM_EW || in->axes)
			return kp_err(g, in, "internal: %s in a merge pair value", ki_opname(in->op));
		char A[200], B[200], C[200], e[800];
		int na = ki_nargs(in->op);
		pairref(M, na > 0 ? in->arg[0] : KI_NIL, A, sizeof A);
		pairref(M, na > 1 ? in->arg[1] : KI_NIL, B, sizeof B);
		pairref(M, na > 2 ? in->arg[2] : KI_NIL, C, sizeof C);
		snprintf(e, sizeof e, ki_sem(in->op)->cuda, A, B, C);
		sb(&g->s, "%.*sconst float p%d = %s; /* %%%d %s */\n", ind, "\t\t\t\t\t\t\t\t", i, e, i, ki_opname(in->op));
	}
	pairref(M, r, out, n);
	return 0;
}

/* --- the kernel's pieces ---------------------------------------------------------------------- */

static const char *const decl =
	"\tkv_st *const mEK_ = (kv_st *)(W + (%s)), *const mEV_ = mEK_ + (long long)N * KV_D;\n"
	"\tfloat *const mES_ = (float *)(mEV_ + (long long)N * KV_D), *const mKS_ = mES_ + (long long)%d * N;\n"
	"\tfloat *const mBS_ = mKS_ + (long long)%d * N, *const mW_ = mBS_ + N, *const mWK_ = mW_ + N, *const mTOT_ = mWK_ + N;\n"
	"\tint *const mBI_ = (int *)(mTOT_ + N), *const mSEG_ = mBI_ + N, *const mOFF_ = mSEG_ + N;\n"
	"\tfloat *const mEC_ = (float *)(mOFF_ + N + 1);   /* [N] evicted counts (KV_CNT >= 0) */\n"
	"\t(void)mES_; (void)mKS_; (void)mEC_;\n";

/* the compaction's hook: the evicted rows of the tile (sdst <= -2: evicted row -2 - sdst) copied
** before any row of the tile moves */
void kp_merge_copy(Gen *g)
{
	sb(&g->s,
	   "\t\tfor (int e_ = tid; e_ < cnt * KV_D; e_ += KV_NT) {   /* merge: the evicted rows aside */\n"
	   "\t\t\tconst int rr = e_ / KV_D, c = e_ - rr * KV_D, dd = sdst[rr];\n"
	   "\t\t\tif (dd <= -2) {\n"
	   "\t\t\t\tconst long long o_ = kv_roff(a, Tb, t0 + rr) + c;   /* paged: through the table */\n"
	   "\t\t\t\tmEK_[(long long)(-2 - dd) * KV_D + c] = Kb[o_];\n"
	   "\t\t\t\tmEV_[(long long)(-2 - dd) * KV_D + c] = Vb[o_];\n"
	   "\t\t\t\tif (KV_CNT >= 0 && c == 0)   /* its member count */\n"
	   "\t\t\t\t\tmEC_[-2 - dd] = a.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + t0 + rr];\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n");
}

/* the segments: mOFF_[j] .. mOFF_[j + 1] of mSEG_, target j's evicted rows in evicted order
** (session 9, was a counting sort on one thread): the counts by atomics (their sum does not
** depend on the order), an inclusive scan of them in tiles of KV_NT (Hillis-Steele in shared
** memory), then a stable scatter by rank in tiles of KV_MSP evicted rows: the tile's keys
** (target << 32 | index in the tile) sorted by a bitonic network in shared memory, a row's rank
** among its target's rows of the tile = its sorted place minus its target's first place (a
** binary search), plus the target's cursor (mCUR_, in mW_'s space: the weights come after),
** which the target's last row of the tile then advances. The same mSEG_ as the serial sort, bit
** for bit. Depth O(|E| / KV_MSP · log² KV_MSP + m / KV_NT · log KV_NT). */
static void segments(Gen *g)
{
	sb(&g->s,
	   "#ifndef KV_MSP   /* the scatter's tile: KV_NT rounded up to a power of two */\n"
	   "#define KV_MSP (KV_NT <= 32 ? 32 : KV_NT <= 64 ? 64 : KV_NT <= 128 ? 128 : KV_NT <= 256 ? 256 : KV_NT <= 512 ? 512 : 1024)\n"
	   "#endif\n"
	   "\t\t{   /* the segments: mOFF_[j] .. mOFF_[j + 1] of mSEG_, target j's rows in evicted order */\n"
	   "\t\t\t__shared__ unsigned long long msk_[KV_MSP];\n"
	   "\t\t\t__shared__ int mcar_;\n"
	   "\t\t\tint *const mCUR_ = (int *)mW_, *const msc_ = (int *)msk_;\n"
	   "\t\t\tfor (int j = tid; j <= m_; j += KV_NT) mOFF_[j] = 0;\n"
	   "\t\t\tif (tid == 0) mcar_ = 0;\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tfor (int q = tid; q < nE_; q += KV_NT) if (mBI_[q] >= 0) atomicAdd(&mOFF_[mBI_[q] + 1], 1);\n"
	   "\t\t\tfor (int j0 = 1; j0 <= m_; j0 += KV_NT) {   /* mOFF_[1 .. m_]: the inclusive scan */\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tint v_ = j0 + tid <= m_ ? mOFF_[j0 + tid] : 0;\n"
	   "\t\t\t\tmsc_[tid] = v_;\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tfor (int d_ = 1; d_ < KV_NT; d_ <<= 1) {\n"
	   "\t\t\t\t\tconst int u_ = tid >= d_ ? msc_[tid - d_] : 0;\n"
	   "\t\t\t\t\t__syncthreads();\n"
	   "\t\t\t\t\tv_ += u_;\n"
	   "\t\t\t\t\tmsc_[tid] = v_;\n"
	   "\t\t\t\t\t__syncthreads();\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\tif (j0 + tid <= m_) mOFF_[j0 + tid] = mcar_ + v_;\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tif (tid == KV_NT - 1) mcar_ += v_;\n"
	   "\t\t\t}\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tfor (int j = tid; j < m_; j += KV_NT) mCUR_[j] = mOFF_[j];\n"
	   "\t\t\tfor (int q0_ = 0; q0_ < nE_; q0_ += KV_MSP) {   /* the stable scatter, a tile of evicted rows at a time */\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tfor (int i_ = tid; i_ < KV_MSP; i_ += KV_NT) {\n"
	   "\t\t\t\t\tconst int j = q0_ + i_ < nE_ ? mBI_[q0_ + i_] : -1;\n"
	   "\t\t\t\t\tmsk_[i_] = j >= 0 ? (unsigned long long)j << 32 | (unsigned)i_ : ~0ull;\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tfor (int k_ = 2; k_ <= KV_MSP; k_ <<= 1)   /* bitonic sort, ascending */\n"
	   "\t\t\t\t\tfor (int h_ = k_ >> 1; h_ > 0; h_ >>= 1) {\n"
	   "\t\t\t\t\t\tfor (int i_ = tid; i_ < KV_MSP; i_ += KV_NT) {\n"
	   "\t\t\t\t\t\t\tconst int p_ = i_ ^ h_;\n"
	   "\t\t\t\t\t\t\tif (p_ <= i_) continue;\n"
	   "\t\t\t\t\t\t\tconst unsigned long long x_ = msk_[i_], y_ = msk_[p_];\n"
	   "\t\t\t\t\t\t\tif (((i_ & k_) == 0) == (x_ > y_)) { msk_[i_] = y_; msk_[p_] = x_; }\n"
	   "\t\t\t\t\t\t}\n"
	   "\t\t\t\t\t\t__syncthreads();\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\tfor (int r_ = 0; r_ < 2; r_++) {   /* 0: the scatter; 1: each target's last row advances its cursor */\n"
	   "\t\t\t\t\tfor (int i_ = tid; i_ < KV_MSP; i_ += KV_NT) {\n"
	   "\t\t\t\t\t\tconst unsigned long long x_ = msk_[i_], b_ = x_ & ~0xffffffffull;\n"
	   "\t\t\t\t\t\tif (x_ == ~0ull) continue;\n"
	   "\t\t\t\t\t\tconst int j = (int)(x_ >> 32);\n"
	   "\t\t\t\t\t\tif (r_ && i_ + 1 < KV_MSP && (msk_[i_ + 1] & ~0xffffffffull) == b_) continue;\n"
	   "\t\t\t\t\t\tint lo_ = 0, hi_ = i_;   /* the target's first place in the sorted tile */\n"
	   "\t\t\t\t\t\twhile (lo_ < hi_) { const int md_ = (lo_ + hi_) >> 1; if (msk_[md_] < b_) lo_ = md_ + 1; else hi_ = md_; }\n"
	   "\t\t\t\t\t\tif (r_) mCUR_[j] += i_ + 1 - lo_;\n"
	   "\t\t\t\t\t\telse mSEG_[mCUR_[j] + i_ - lo_] = q0_ + (int)(x_ & 0xffffffffull);\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t\t__syncthreads();\n"
	   "\t\t\t\t}\n"
	   "\t\t\t}\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t}\n");
}

/* the evicted x kept similarity as a tiled product (issue 12 Kernels: never an |E| x |S| matrix
** beyond a tile) and the arg-max per evicted row. The select kernel's staging buffer (kv_dsm,
** 2 KV_TT rows of KV_D, free after the compaction) holds a tile of KV_MTE evicted rows (the
** copies) and one of KV_MTK kept rows, channel-major (a pitch of one more row when the buffer
** has room: conflict-free shared loads). Warp w, lane x: evicted rows w + KV_NW r (r < KV_MRE),
** kept rows x + 32 c (c < KV_MRK) of the tiles, the dots in registers, each dot a sequential
** fmaf over the channels (the x86 kernels' and the untiled loop's order); every pair's epilogue
** from its dot and the row scalars; a running arg-max per (thread, evicted row) over kept
** indices ascending (ties: the lower, NaN never), then the warp's 32 lanes combined by
** shuffles (larger similarity, ties: the lower kept index): interp.c's rule. */
static int tiled(Mc *M)
{
	const KiMerge *m = &M->f->merge;
	Gen *g = M->g;
	char S[300];
	sb(&g->s,
	   "\t\t/* the similarity: a tiled product in shared memory, the arg-max per evicted row (codegen/ptx/merge.c tiled) */\n"
	   "#define KV_MAV (2 * KV_TT)   /* staging rows */\n"
	   "#if KV_MAV >= 4 * KV_NW + 64 + 2\n"
	   "#define KV_MTE (4 * KV_NW)\n#define KV_MTK 64\n#define KV_MPD 1\n"
	   "#else\n"
	   "#define KV_MTK (KV_MAV / 2)\n#define KV_MTE (KV_MAV - KV_MTK < 4 * KV_NW ? KV_MAV - KV_MTK : 4 * KV_NW)\n#define KV_MPD 0\n"
	   "#endif\n"
	   "#define KV_MRE ((KV_MTE + KV_NW - 1) / KV_NW)\n"
	   "#define KV_MRK ((KV_MTK + 31) / 32)\n"
	   "\t\tkv_st *const tE_ = (kv_st *)kv_dsm, *const tK_ = tE_ + (KV_MTE + KV_MPD) * KV_D;\n"
	   "\t\tfor (int q0_ = 0; q0_ < nE_; q0_ += KV_MTE) {\n"
	   "\t\t\t__syncthreads();   /* the last tile's readers are done */\n"
	   "\t\t\tfor (int x_ = tid; x_ < KV_MTE * KV_D; x_ += KV_NT) {\n"
	   "\t\t\t\tconst int r_ = x_ / KV_D, c_ = x_ - r_ * KV_D;\n"
	   "\t\t\t\tif (q0_ + r_ < nE_) tE_[c_ * (KV_MTE + KV_MPD) + r_] = mEK_[(long long)(q0_ + r_) * KV_D + c_];\n"
	   "\t\t\t}\n"
	   "\t\t\tfloat bs_[KV_MRE];\n"
	   "\t\t\tint bi_[KV_MRE];\n"
	   "\t\t\tfor (int re_ = 0; re_ < KV_MRE; re_++) bs_[re_] = -kv_inf(), bi_[re_] = -1;\n"
	   "\t\t\tfor (int j0_ = 0; j0_ < m_; j0_ += KV_MTK) {\n"
	   "\t\t\t\tif (j0_ > 0) __syncthreads();\n"
	   "\t\t\t\tfor (int x_ = tid; x_ < KV_MTK * KV_D; x_ += KV_NT) {\n"
	   "\t\t\t\t\tconst int r_ = x_ / KV_D, c_ = x_ - r_ * KV_D;\n"
	   "\t\t\t\t\tif (j0_ + r_ < m_) tK_[c_ * (KV_MTK + KV_MPD) + r_] = Kb[kv_roff(a, Tb, j0_ + r_) + c_];\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tfloat acc_[KV_MRE][KV_MRK];\n"
	   "\t\t\t\tfor (int re_ = 0; re_ < KV_MRE; re_++) for (int rk_ = 0; rk_ < KV_MRK; rk_++) acc_[re_][rk_] = 0.f;\n"
	   "\t\t\t\tfor (int c_ = 0; c_ < KV_D; c_++) {\n"
	   "\t\t\t\t\tfloat ev_[KV_MRE], kw_[KV_MRK];\n"
	   "\t\t\t\t\tfor (int re_ = 0; re_ < KV_MRE; re_++) { const int r_ = warp + KV_NW * re_; ev_[re_] = r_ < KV_MTE ? kv_f(tE_[c_ * (KV_MTE + KV_MPD) + r_]) : 0.f; }\n"
	   "\t\t\t\t\tfor (int rk_ = 0; rk_ < KV_MRK; rk_++) { const int r_ = lane + 32 * rk_; kw_[rk_] = r_ < KV_MTK ? kv_f(tK_[c_ * (KV_MTK + KV_MPD) + r_]) : 0.f; }\n"
	   "\t\t\t\t\tfor (int re_ = 0; re_ < KV_MRE; re_++) for (int rk_ = 0; rk_ < KV_MRK; rk_++) acc_[re_][rk_] = fmaf(ev_[re_], kw_[rk_], acc_[re_][rk_]);\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\tfor (int re_ = 0; re_ < KV_MRE; re_++)\n"
	   "\t\t\t\t\tfor (int rk_ = 0; rk_ < KV_MRK; rk_++) {\n"
	   "\t\t\t\t\t\tconst int q_ = q0_ + warp + KV_NW * re_, j_ = j0_ + lane + 32 * rk_;\n"
	   "\t\t\t\t\t\tif (warp + KV_NW * re_ >= KV_MTE || lane + 32 * rk_ >= KV_MTK || q_ >= nE_ || j_ >= m_) continue;\n"
	   "\t\t\t\t\t\tconst float dot_ = acc_[re_][rk_], sim_ = kv_nan(), abs_ = kv_nan(), ntg_ = kv_nan();\n"
	   "\t\t\t\t\t\t(void)sim_; (void)abs_; (void)ntg_;\n");
	if (pairsite(M, m->sim, 6, S, sizeof S))
		return -1;
	sb(&g->s,
	   "\t\t\t\t\t\tconst float s_ = %s;\n"
	   "\t\t\t\t\t\tif (s_ == s_ && (bi_[re_] < 0 || s_ > bs_[re_])) { bs_[re_] = s_; bi_[re_] = j_; }\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t}\n"
	   "\t\t\tfor (int re_ = 0; re_ < KV_MRE; re_++) {   /* the warp's lanes combined (every lane takes part) */\n"
	   "\t\t\t\tfloat bs2_ = bs_[re_];\n"
	   "\t\t\t\tint bi2_ = bi_[re_];\n"
	   "\t\t\t\tfor (int o_ = 16; o_ > 0; o_ >>= 1) {\n"
	   "\t\t\t\t\tconst float s2_ = __shfl_xor_sync(0xffffffffu, bs2_, o_);\n"
	   "\t\t\t\t\tconst int i2_ = __shfl_xor_sync(0xffffffffu, bi2_, o_);\n"
	   "\t\t\t\t\tif (i2_ >= 0 && (bi2_ < 0 || s2_ > bs2_ || (s2_ == bs2_ && i2_ < bi2_))) bs2_ = s2_, bi2_ = i2_;\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\tconst int q_ = q0_ + warp + KV_NW * re_;\n"
	   "\t\t\t\tif (lane != 0 || warp + KV_NW * re_ >= KV_MTE || q_ >= nE_) continue;\n"
	   "\t\t\t\tfloat bs_ = bs2_;\n"
	   "\t\t\t\tint bi_ = bi2_;\n", S);
	if (m->thr == MT_value) {
		sb(&g->s,
		   "\t\t\t\tif (bi_ >= 0) {   /* the threshold */\n"
		   "\t\t\t\t\tconst int j_ = bi_;\n"
		   "\t\t\t\t\tconst float dot_ = kv_nan(), sim_ = bs_, abs_ = kv_nan(), ntg_ = kv_nan();\n"
		   "\t\t\t\t\t(void)j_; (void)dot_; (void)sim_; (void)abs_; (void)ntg_;\n");
		if (pairsite(M, m->threshold, 5, S, sizeof S))
			return -1;
		sb(&g->s, "\t\t\t\t\tif (!(bs_ >= %s)) bi_ = -1;\n\t\t\t\t}\n", S);
	}
	sb(&g->s,
	   "\t\t\t\tmBS_[q_] = bs_;\n"
	   "\t\t\t\tmBI_[q_] = bi_;\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "#undef KV_MAV\n#undef KV_MTE\n#undef KV_MTK\n#undef KV_MPD\n#undef KV_MRE\n#undef KV_MRK\n"
	   "\t\t__syncthreads();\n");
	return 0;
}

static int body(Mc *M)
{
	Gen *g = M->g;
	const KiMerge *m = &M->f->merge;
	char S[300];
	sb(&g->s,
	   "\t/* compact_merge, merge nearest (codegen/ptx/merge.c): m_ kept rows, nE_ evicted rows */\n"
	   "\t__syncthreads();\n"
	   "\tconst int m_ = (int)run, nE_ = n - m_;\n"
	   "\tif (m_ > 0 && nE_ > 0) {\n"
	   "\t\t/* row scalars */\n"
	   "\t\tfor (int q_ = tid; q_ < nE_; q_ += KV_NT) {\n");
	if (rowscalars(M, 0))
		return -1;
	sb(&g->s, "\t\t}\n\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT) {\n");
	if (rowscalars(M, 1))
		return -1;
	sb(&g->s,
	   "\t\t}\n");
	if (tiled(M))
		return -1;
	char ema[400] = "", B[64];
	if (ki_mtau(M->f)) {            /* D2O (issue 12): tau = beta tau' + (1 - beta) mean, carried */
		if (kp_dscalar(g, m->beta, B, sizeof B, 0) != 0)
			return kp_err(g, NULL, "merge: a beta that is no constant or param");
		snprintf(ema, sizeof ema,
		         "\t\t\tif (mTAU_ == mTAU_) tau_ = (double)(%s) * mTAU_ + (1.0 - (double)(%s)) * tau_;\n"
		         "\t\t\t__syncthreads();\n"
		         "\t\t\tif (tid == 0) mTAU_ = tau_;\n", B, B);
	}
	if (m->thr == MT_adaptive)      /* beta 0: the mean of this call's maxima; D2O: its EMA */
		sb(&g->s,
		   "\t\t{   /* the threshold: the mean of the maximum similarities (double) */\n"
		   "\t\t\t__shared__ double mred_[KV_NT], mres_;\n"
		   "\t\t\tdouble ps_ = 0.0, pc_ = 0.0;\n"
		   "\t\t\tfor (int q_ = tid; q_ < nE_; q_ += KV_NT)\n"
		   "\t\t\t\tif (mBI_[q_] >= 0) { ps_ += (double)mBS_[q_]; pc_ += 1.0; }\n"
		   "\t\t\tconst double sum_ = kv_bsumd(ps_, mred_, &mres_), cnt_ = kv_bsumd(pc_, mred_, &mres_);\n"
		   "\t\t\tdouble tau_ = cnt_ > 0.0 ? sum_ / cnt_ : (double)kv_nan();\n"
		   "%s"
		   "\t\t\tfor (int q_ = tid; q_ < nE_; q_ += KV_NT)\n"
		   "\t\t\t\tif (mBI_[q_] >= 0 && !((double)mBS_[q_] >= tau_)) mBI_[q_] = -1;\n"
		   "\t\t}\n", ema);
	sb(&g->s,
	   "\t\t__syncthreads();\n");
	segments(g);
	sb(&g->s,
	   "\t\t/* the weights w_e */\n"
	   "\t\tfor (int s2_ = tid; s2_ < mOFF_[m_]; s2_ += KV_NT) {\n"
	   "\t\t\tconst int q_ = mSEG_[s2_], j_ = mBI_[q_];\n"
	   "\t\t\tconst float dot_ = kv_nan(), sim_ = mBS_[q_], abs_ = (float)(mOFF_[j_ + 1] - mOFF_[j_]), ntg_ = 1.f;\n"
	   "\t\t\t(void)dot_; (void)sim_; (void)abs_; (void)ntg_;\n");
	if (pairsite(M, m->weight, 3, S, sizeof S))
		return -1;
	sb(&g->s,
	   "\t\t\tmW_[s2_] = %s;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\t/* the self weight w_k and the total of each target */\n"
	   "\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT) {\n"
	   "\t\t\tconst int o0_ = mOFF_[j_], o1_ = mOFF_[j_ + 1];\n"
	   "\t\t\tif (o0_ == o1_) continue;\n"
	   "\t\t\tconst int q_ = 0;\n"
	   "\t\t\tconst float dot_ = kv_nan(), sim_ = kv_nan(), abs_ = (float)(o1_ - o0_), ntg_ = kv_nan();\n"
	   "\t\t\t(void)q_; (void)dot_; (void)sim_; (void)abs_; (void)ntg_;\n", S);
	if (pairsite(M, m->self, 3, S, sizeof S))
		return -1;
	sb(&g->s,
	   "\t\t\tconst float wk_ = %s;\n"
	   "\t\t\tfloat den_ = 0.f;\n"
	   "\t\t\tfor (int s2_ = o0_; s2_ < o1_; s2_++) den_ += mW_[s2_];\n"
	   "\t\t\tmWK_[j_] = wk_;\n"
	   "\t\t\tmTOT_[j_] = wk_ + den_;\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\t/* the update of every (target, channel) */\n"
	   "\t\tfor (long long x_ = tid; x_ < (long long)m_ * KV_D; x_ += KV_NT) {\n"
	   "\t\t\tconst int j_ = (int)(x_ / KV_D), c_ = (int)(x_ - (long long)j_ * KV_D);\n"
	   "\t\t\tconst int o0_ = mOFF_[j_], o1_ = mOFF_[j_ + 1];\n"
	   "\t\t\tif (o0_ == o1_) continue;\n"
	   "\t\t\tconst float tot_ = mTOT_[j_], wk_ = mWK_[j_];\n", S);
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
	if (ki_mcounts(M->f))
		sb(&g->s,
		   "\t\t/* member counts: a target's count grows by its absorbed rows' */\n"
		   "\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT) {\n"
		   "\t\t\tfloat *const c_ = &a.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + j_];\n"
		   "\t\t\tfor (int s2_ = mOFF_[j_]; s2_ < mOFF_[j_ + 1]; s2_++) *c_ += mEC_[mSEG_[s2_]];\n"
		   "\t\t}\n");
	if (ki_mtau(M->f))
		sb(&g->s,
		   "\t\t__syncthreads();\n"
		   "\t\tfor (int j_ = tid; j_ < m_; j_ += KV_NT)   /* D2O: every kept row holds this call's tau */\n"
		   "\t\t\ta.state[(((long long)b * KV_NST + KV_TAU) * a.L * a.H + li) * N + j_] = (float)mTAU_;\n");
	sb(&g->s, "\t}\n");
	return 0;
}

static int mcinit(Mc *M, Gen *g)
{
	const KiFn *f = g->f;
	KiMSim sf;
	ki_msimform(f, f->merge.sim, &sf);
	*M = (Mc){ .g = g, .f = f, .dot = sf.dot };
	M->slot = malloc(((size_t)f->nins + 1) * sizeof *M->slot);
	M->side = malloc((size_t)f->nins + 1);
	M->need = malloc((size_t)f->nins + 1);
	if (!M->slot || !M->side || !M->need || ki_mslots(f, M->slot, &M->nes, &M->nks) != 0)
		return kp_err(g, NULL, "out of memory");
	if (!sf.fast && sf.why && !strcmp(sf.why, "out of memory"))
		return kp_err(g, NULL, "out of memory");
	if (!sf.fast)
		return kp_err(g, NULL, "a merge similarity outside the tiled-product form (%s)", sf.why ? sf.why : "");
	ki_msides(f, M->side);
	return 0;
}

static void mcfree(Mc *M)
{
	free(M->slot), free(M->side), free(M->need);
}

int kp_merge_decl(Gen *g)
{
	Mc M;
	int rc = mcinit(&M, g);
	if (rc == 0) {
		/* EK, EV [N][D] (storage dtype); es [nes][N], ks [nks][N]; bsim, w, wk, tot, bidx, seg [N]; off [N + 1];
		** ec [N] (the evicted rows' member counts) */
		long long off[4], one[4];
		char o[200];
		kp_wsreserve(g, 1, (g->dtype == KVCC_F32 ? 2LL : 1LL) * g->D + M.nes + M.nks + 8, off);
		kp_wsreserve(g, 0, 2, one);
		kp_wsmax(g);
		kp_offexpr(off, o, sizeof o);
		sb(&g->s, decl, o, M.nes, M.nks);
		if (ki_mtau(g->f))     /* D2O's carried tau (issue 12): the first held row's value not NaN */
			sb(&g->s,
			   "\t__shared__ double mTAU_;   /* the carried tau in, this call's out (KV_TAU, compiler/mplan.h ki_mtau) */\n"
			   "\tif (tid == 0) {\n"
			   "\t\tfloat v_ = kv_nan();\n"
			   "\t\tfor (int t_ = 0; t_ < n; t_++) {\n"
			   "\t\t\tconst float x_ = a.state[(((long long)b * KV_NST + KV_TAU) * a.L * a.H + li) * N + t_];\n"
			   "\t\t\tif (x_ == x_) { v_ = x_; break; }\n"
			   "\t\t}\n"
			   "\t\tmTAU_ = (double)v_;\n"
			   "\t}\n"
			   "\t__syncthreads();\n");
	}
	mcfree(&M);
	return rc;
}

int kp_merge_body(Gen *g)
{
	Mc M;
	int rc = mcinit(&M, g);
	if (rc == 0)
		rc = body(&M);
	mcfree(&M);
	return rc;
}
