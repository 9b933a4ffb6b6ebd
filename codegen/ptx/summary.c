/*
** compact_merge with merge summary in CUDA C (DESIGN §3 "Merge semantics": summary rows): the
** GPU twin of runtime/summary.c, generated into the kv_select kernel (scope head), one block per
** (layer, head). compiler/merge.c `summary` is the reference: the same arithmetic in double, in
** the same order (explicit __dadd_rn / __dmul_rn: no contraction), so the assignments and the
** rows agree with the interpreter's and with x86:
**
**   pre      the summary block: the first row whose flag state row (KV_SFLAG, compiler/mplan.h
**            ki_msumrow) is set; its rows, positions and state copied aside (a kept row after
**            it may be compacted over it); the ordinary rows' scores into the workspace, so that
**            select ranks them only; n_keep - C of them kept when the instance is over budget
**   copy     during the compaction, every evicted ordinary row (K, V, count, position) aside
**   kmeans   no block yet: Lloyd (init E[floor(j |E| / C)], KV_SITERS iterations, squared L2 of
**            keys, count-weighted means, an empty cluster keeps its centroid); a block: the
**            online running means. Assignment: a thread per evicted row against the C
**            centroids; sums: a thread per (centroid, channel) over the evicted rows in order
**   rows     written after the kept rows (kv_tost), position the members' largest, count
**            their total, flag 1, the other state rows the block's (a new block: init)
**
** Workspace: kp_wsreserve (per instance, from the capacity N and C): nothing allocated at run
** time. Bad blocks and budgets below C: KVG_ESUM.
*/
#include <math.h>
#include <string.h>
#include "codegen/ptx/gen.h"
#include "compiler/mplan.h"

static const char *const sdecl =
	"\t/* merge summary (codegen/ptx/summary.c): C_ rows per instance */\n"
	"\tconst int C_ = KV_SROWS;\n"
	"\tkv_st *const mEK_ = (kv_st *)(W + (%s)), *const mEV_ = mEK_ + (long long)N * KV_D;\n"
	"\tfloat *const mOS_ = (float *)(mEV_ + (long long)N * KV_D), *const mEC_ = mOS_ + N;\n"
	"\tint *const mEP_ = (int *)(mEC_ + N), *const mA_ = mEP_ + N;\n"
	"\tkv_st *const mSK_ = (kv_st *)(mA_ + N), *const mSV_ = mSK_ + (long long)C_ * KV_D;\n"
	"\tfloat *const mSS_ = (float *)(mSV_ + (long long)C_ * KV_D);   /* [KV_NST][C] the block's state */\n"
	"\tint *const mSP_ = (int *)(mSS_ + (long long)KV_NST * C_), *const mPC_ = mSP_ + C_, *const mNM_ = mPC_ + C_;\n"
	"\tdouble *const mKC_ = (double *)(((unsigned long long)(mNM_ + C_) + 7ull) & ~7ull);\n"
	"\tdouble *const mVC_ = mKC_ + (long long)C_ * KV_D, *const mSK2_ = mVC_ + (long long)C_ * KV_D;\n"
	"\tdouble *const mSV2_ = mSK2_ + (long long)C_ * KV_D, *const mCN_ = mSV2_ + (long long)C_ * KV_D;\n"
	"\tdouble *const mSW_ = mCN_ + C_;\n";

/* the workspace and its pointers (after the prologue) */
int kp_sum_decl(Gen *g)
{
	const KiFn *f = g->f;
	long long C = (long long)f->con[KI_RIDX(f->merge.rows)], D = g->D, nst = f->nst + ki_mcounts(f);
	long long st = g->dtype == KVCC_F32 ? 2 : 1;      /* floats per storage pair (K and V) per channel */
	long long off[4], one[4];
	char o[200];
	/* per token: EK, EV (storage), scores, counts, positions, assignment */
	kp_wsreserve(g, 1, st * D + 4, off);
	/* per instance: SK, SV, the block's state, positions / pc / nm, 8-byte alignment, the doubles */
	kp_wsreserve(g, 0, st * C * D + nst * C + 3 * C + 2 + 2 * (4 * C * D + 2 * C) + 4, one);
	kp_wsmax(g);
	kp_offexpr(off, o, sizeof o);
	sb(&g->s, sdecl, o);
	return 0;
}

/* the first row of n whose flag is set (-1: none), a tree reduction of the minimum over the
** block's threads (kv_select's kp_sum_pre, kv_select_grp's pass at scope layer / model) */
void kp_sum_first(Sb *s)
{
	sb(s,
	   "__device__ int kv_sfirst(const float *fl_, int n, int *smin_) {\n"
	   "\tconst int tid = threadIdx.x;\n"
	   "\tint mn_ = 0x7fffffff;\n"
	   "\tfor (int t = tid; t < n; t += KV_NT) if (fl_[t] != 0.f && t < mn_) mn_ = t;\n"
	   "\tsmin_[tid] = mn_;\n"
	   "\t__syncthreads();\n"
	   "\tfor (int s_ = KV_NT / 2; s_ > 0; s_ >>= 1) {\n"
	   "\t\tif (tid < s_ && smin_[tid + s_] < smin_[tid]) smin_[tid] = smin_[tid + s_];\n"
	   "\t\t__syncthreads();\n"
	   "\t}\n"
	   "\tconst int r_ = smin_[0] == 0x7fffffff ? -1 : smin_[0];\n"
	   "\t__syncthreads();\n"
	   "\treturn r_;\n"
	   "}\n");
}

/* before the selection: the block, its rows aside, the ordinary scores; defines s0_, no_, want */
void kp_sum_pre(Gen *g)
{
	sb(&g->s,
	   "\t/* the summary block: the first flagged row */\n"
	   "\t__shared__ int smin_[KV_NT];\n"
	   "\tconst int s0_ = kv_sfirst(a.state + (((long long)b * KV_NST + KV_SFLAG) * a.L * a.H + li) * N, n, smin_);\n"
	   "\tconst long long nk0_ = kv_count(a, b, l, h, n);\n"
	   "\tif ((s0_ >= 0 && s0_ + C_ > n) || (n > nk0_ && nk0_ < C_)) { if (tid == 0) kv_seterr(a.err, KVG_ESUM); return; }\n"
	   "\tconst long long no_ = n - (s0_ >= 0 ? C_ : 0);   /* the ordinary rows */\n"
	   "\tconst long long want = n > nk0_ ? nk0_ - C_ : no_;\n"
	   "\tfor (long long t = tid; t < n; t += KV_NT)   /* their scores, in order */\n"
	   "\t\tif (s0_ < 0 || t < s0_ || t >= s0_ + C_) mOS_[s0_ >= 0 && t >= s0_ + C_ ? t - C_ : t] = sc[t];\n"
	   "\tfor (int x_ = tid; s0_ >= 0 && x_ < C_ * KV_D; x_ += KV_NT) {   /* the block aside */\n"
	   "\t\tconst int j_ = x_ / KV_D, c_ = x_ - j_ * KV_D;\n"
	   "\t\tconst long long o_ = kv_roff(a, Tb, s0_ + j_) + c_;\n"
	   "\t\tmSK_[x_] = Kb[o_];\n"
	   "\t\tmSV_[x_] = Vb[o_];\n"
	   "\t}\n"
	   "\tfor (int j_ = tid; s0_ >= 0 && j_ < C_; j_ += KV_NT) {\n"
	   "\t\tmSP_[j_] = Pb[s0_ + j_];\n"
	   "\t\tfor (int s_ = 0; s_ < KV_NST; s_++)\n"
	   "\t\t\tmSS_[s_ * C_ + j_] = a.state[(((long long)b * KV_NST + s_) * a.L * a.H + li) * N + s0_ + j_];\n"
	   "\t}\n"
	   "\t__syncthreads();\n");
}

/* threshold and mass with summary rows: an instance without a block, under its count, that evicts
** (evicts: a C condition) keeps at most no_ - C_ ordinary rows (fewer held: KVG_ESUM), then the
** protected rows first and the best of the unprotected candidates, at most lim of them */
static void sumtail(Gen *g, const char *evicts, const char *lim)
{
	sb(&g->s,
	   "\tconst int ev_ = s0_ < 0 && n <= nk0_ && %s;   /* evicts under its count */\n"
	   "\tif (ev_ && no_ < C_) { if (tid == 0) kv_seterr(a.err, KVG_ESUM); return; }\n"
	   "\tconst long long wt_ = ev_ ? no_ - C_ : want;\n"
	   "\tKvSel s1, s0;\n"
	   "\tkv_topk(mOS_, no_, 1, S, R, 1, wt_, s1, hist, sv, &s_E, wsum);\n"
	   "\tconst long long w0 = wt_ - s1.used < %s ? wt_ - s1.used : %s;\n"
	   "\tkv_topk(mOS_, no_, 1, S, R, 0, w0, s0, hist, sv, &s_E, wsum);\n", evicts, lim, lim);
}

/* merge summary with select threshold (scope head, chunk 1; after kp_sum_pre): the candidates
** are the protected ordinary rows and the others >= tau (NaN never); an instance without a
** block, under its count, that evicts keeps at most no_ - C_ ordinary rows (the interpreter's
** threvicts); then the protected rows first and the best w0 candidates, as the threshold path */
void kp_sum_thr(Gen *g, const char *T)
{
	sb(&g->s,
	   "\tconst double tau = (double)(%s);\n"
	   "\tlong long ncand = 0, nbel_ = 0;   /* unprotected ordinary rows: candidates, below tau */\n"
	   "\tfor (long long c0 = 0; c0 < no_; c0 += KV_NT) {\n"
	   "\t\tconst long long ci = c0 + tid;\n"
	   "\t\tconst int up_ = ci < no_ && !kv_prot(ci, 1, no_, S, R), ok_ = up_ && (double)mOS_[ci] >= tau;\n"
	   "\t\tint tot;\n"
	   "\t\tkv_bscan(ok_, wsum, &tot);\n"
	   "\t\tncand += tot;\n"
	   "\t\tkv_bscan(up_ && !ok_, wsum, &tot);\n"
	   "\t\tnbel_ += tot;\n"
	   "\t}\n", T);
	sumtail(g, "nbel_ > 0", "ncand");
}

/* merge summary with select mass (scope head, chunk 1; after kp_sum_pre): the unprotected
** ordinary rows' total (double; one that is not >= 0: KVG_EMASS), the smallest count lo of the
** best of them whose scores reach p of it (bisection over the count, as kernels.c's mass path);
** an instance without a block, under its count, whose prefix leaves rows out keeps at most
** no_ - C_ (the interpreter's massevicts); then the protected rows and the prefix, best first,
** within that count (sumtail) */
void kp_sum_mass(Gen *g, const char *M)
{
	sb(&g->s,
	   "\t__shared__ double dred[KV_NT], dres;\n"
	   "\tdouble part = 0.0;\n"
	   "\tint bad = 0;\n"
	   "\tlong long mc = 0;   /* the unprotected ordinary rows */\n"
	   "\tfor (long long ci = tid; ci < no_; ci += KV_NT)\n"
	   "\t\tif (!kv_prot(ci, 1, no_, S, R)) { const float v = mOS_[ci]; bad |= !(v >= 0.f); part += (double)v; mc++; }\n"
	   "\tconst double tot = kv_bsumd(part, dred, &dres);\n"
	   "\tif (kv_bsumd((double)bad, dred, &dres) > 0.0) { if (tid == 0) kv_seterr(a.err, KVG_EMASS); return; }\n"
	   "\tconst long long m = (long long)kv_bsumd((double)mc, dred, &dres);\n"
	   "\tconst double p = (double)(%s);\n"
	   "\tKvSel b0_;\n", M);
	gen_massbisect(g,
	   "\t\tkv_topk(mOS_, no_, 1, S, R, 0, mid, b0_, hist, sv, &s_E, wsum);   /* the best mid rows */\n",
	   "\t\tfor (long long ci = tid; ci < no_; ci += KV_NT)\n"
	   "\t\t\tif (!kv_prot(ci, 1, no_, S, R) && kv_kept(b0_, mOS_, ci, 1, no_, S, R)) ps += (double)mOS_[ci];\n");
	sumtail(g, "lo < m", "lo");
}

/* the compaction's hook: the evicted ordinary rows of the tile (sdst <= -2: evicted row -2 - sdst)
** with their counts and positions, before any row of the tile moves */
void kp_sum_copy(Gen *g)
{
	sb(&g->s,
	   "\t\tfor (int e_ = tid; e_ < cnt * KV_D; e_ += KV_NT) {   /* summary: the evicted rows aside */\n"
	   "\t\t\tconst int rr = e_ / KV_D, c = e_ - rr * KV_D, dd = sdst[rr];\n"
	   "\t\t\tif (dd <= -2) {\n"
	   "\t\t\t\tconst long long o_ = kv_roff(a, Tb, t0 + rr) + c;\n"
	   "\t\t\t\tmEK_[(long long)(-2 - dd) * KV_D + c] = Kb[o_];\n"
	   "\t\t\t\tmEV_[(long long)(-2 - dd) * KV_D + c] = Vb[o_];\n"
	   "\t\t\t\tif (c == 0) {\n"
	   "\t\t\t\t\tmEC_[-2 - dd] = a.state[(((long long)b * KV_NST + KV_CNT) * a.L * a.H + li) * N + t0 + rr];\n"
	   "\t\t\t\t\tmEP_[-2 - dd] = Pb[t0 + rr];\n"
	   "\t\t\t\t}\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n");
}

/* the centroids and the rows, after the compaction (run: the kept rows) */
int kp_sum_body(Gen *g)
{
	const KiFn *f = g->f;
	int nst = f->nst + ki_mcounts(f);
	sb(&g->s, "\t/* merge summary: k-means (Lloyd) or the online running means, then the rows */\n"
	          "\t{\n\tconst float ini_[%d] = {", nst + 1);
	for (int s = 0; s < nst; s++) {
		double v = s < f->nst ? (double)(float)f->st[s].init : s == ki_msumrow(f) ? 0.0 : 1.0;
		if (isnan(v))
			sb(&g->s, " kv_nan(),");
		else if (isinf(v))
			sb(&g->s, " %skv_inf(),", v < 0 ? "-" : "");
		else
			sb(&g->s, " %.9ef,", v);
	}
	sb(&g->s,
	   " 0.f };\n"
	   "\t(void)ini_;\n"
	   "\t__syncthreads();\n"
	   "\tconst int m_ = (int)run, nE_ = (int)(no_ - run), cex_ = s0_ >= 0;\n"
	   "\tif (cex_ || nE_ > 0) {\n"
	   "\t\tif (cex_) {   /* the block's rows as the centroids */\n"
	   "\t\t\tfor (int x_ = tid; x_ < C_ * KV_D; x_ += KV_NT) {\n"
	   "\t\t\t\tmKC_[x_] = (double)kv_f(mSK_[x_]);\n"
	   "\t\t\t\tmVC_[x_] = (double)kv_f(mSV_[x_]);\n"
	   "\t\t\t}\n"
	   "\t\t\tfor (int j_ = tid; j_ < C_; j_ += KV_NT) {\n"
	   "\t\t\t\tmCN_[j_] = (double)mSS_[KV_CNT * C_ + j_];\n"
	   "\t\t\t\tmPC_[j_] = mSP_[j_];\n"
	   "\t\t\t}\n"
	   "\t\t} else {      /* Lloyd's initialization: evicted rows evenly spaced */\n"
	   "\t\t\tfor (int x_ = tid; x_ < C_ * KV_D; x_ += KV_NT) {\n"
	   "\t\t\t\tconst int j_ = x_ / KV_D, c_ = x_ - j_ * KV_D;\n"
	   "\t\t\t\tconst long long i_ = (long long)j_ * nE_ / C_;\n"
	   "\t\t\t\tmKC_[x_] = (double)kv_f(mEK_[i_ * KV_D + c_]);\n"
	   "\t\t\t\tmVC_[x_] = (double)kv_f(mEV_[i_ * KV_D + c_]);\n"
	   "\t\t\t\tif (c_ == 0) mPC_[j_] = mEP_[i_];\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\tconst int rounds_ = cex_ ? 1 : KV_SITERS;\n"
	   "\t\tif (rounds_ < 1) {   /* no assignment: every row in the first centroid, nothing summed */\n"
	   "\t\t\tfor (int q_ = tid; q_ < nE_; q_ += KV_NT) mA_[q_] = 0;\n"
	   "\t\t\tfor (int j_ = tid; j_ < C_; j_ += KV_NT) mSW_[j_] = 0.0;\n"
	   "\t\t}\n"
	   "\t\tfor (int it_ = 0; it_ < rounds_; it_++) {\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tfor (int q_ = tid; q_ < nE_; q_ += KV_NT) {   /* the nearest centroid (ties: the lower) */\n"
	   "\t\t\t\tint bj_ = 0;\n"
	   "\t\t\t\tdouble bd_ = 0.0;\n"
	   "\t\t\t\tfor (int j_ = 0; j_ < C_; j_++) {\n"
	   "\t\t\t\t\tdouble s_ = 0.0;\n"
	   "\t\t\t\t\tfor (int c_ = 0; c_ < KV_D; c_++) {\n"
	   "\t\t\t\t\t\tconst double x_ = __dsub_rn((double)kv_f(mEK_[(long long)q_ * KV_D + c_]), mKC_[(long long)j_ * KV_D + c_]);\n"
	   "\t\t\t\t\t\ts_ = __dadd_rn(s_, __dmul_rn(x_, x_));\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t\tif (j_ == 0 || s_ < bd_) { bj_ = j_; bd_ = s_; }\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\tmA_[q_] = bj_;\n"
	   "\t\t\t}\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tfor (int x_ = tid; x_ < C_ * KV_D; x_ += KV_NT) {   /* the members' weighted sums, in order */\n"
	   "\t\t\t\tconst int j_ = x_ / KV_D, c_ = x_ - j_ * KV_D;\n"
	   "\t\t\t\tdouble sk_ = 0.0, sv_ = 0.0;\n"
	   "\t\t\t\tfor (int q_ = 0; q_ < nE_; q_++)\n"
	   "\t\t\t\t\tif (mA_[q_] == j_) {\n"
	   "\t\t\t\t\t\tconst double w_ = (double)mEC_[q_];\n"
	   "\t\t\t\t\t\tsk_ = __dadd_rn(sk_, __dmul_rn(w_, (double)kv_f(mEK_[(long long)q_ * KV_D + c_])));\n"
	   "\t\t\t\t\t\tsv_ = __dadd_rn(sv_, __dmul_rn(w_, (double)kv_f(mEV_[(long long)q_ * KV_D + c_])));\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\tmSK2_[x_] = sk_;\n"
	   "\t\t\t\tmSV2_[x_] = sv_;\n"
	   "\t\t\t}\n"
	   "\t\t\tfor (int j_ = tid; j_ < C_; j_ += KV_NT) {\n"
	   "\t\t\t\tdouble sw_ = 0.0;\n"
	   "\t\t\t\tint nm_ = 0, pc_ = mPC_[j_];\n"
	   "\t\t\t\tfor (int q_ = 0; q_ < nE_; q_++)\n"
	   "\t\t\t\t\tif (mA_[q_] == j_) { sw_ = __dadd_rn(sw_, (double)mEC_[q_]); nm_++; if (mEP_[q_] > pc_) pc_ = mEP_[q_]; }\n"
	   "\t\t\t\tmSW_[j_] = sw_;\n"
	   "\t\t\t\tmNM_[j_] = nm_;\n"
	   "\t\t\t\tif (cex_) mPC_[j_] = pc_;\n"
	   "\t\t\t}\n"
	   "\t\t\t__syncthreads();\n"
	   "\t\t\tfor (int x_ = tid; x_ < C_ * KV_D; x_ += KV_NT) {   /* the new centroids */\n"
	   "\t\t\t\tconst int j_ = x_ / KV_D;\n"
	   "\t\t\t\tif (!mNM_[j_]) continue;\n"
	   "\t\t\t\tif (cex_) {       /* the running mean with the row's count */\n"
	   "\t\t\t\t\tconst double tot_ = __dadd_rn(mCN_[j_], mSW_[j_]);\n"
	   "\t\t\t\t\tif (tot_ != 0.0 && isfinite(tot_)) {\n"
	   "\t\t\t\t\t\tmKC_[x_] = __ddiv_rn(__dadd_rn(__dmul_rn(mCN_[j_], mKC_[x_]), mSK2_[x_]), tot_);\n"
	   "\t\t\t\t\t\tmVC_[x_] = __ddiv_rn(__dadd_rn(__dmul_rn(mCN_[j_], mVC_[x_]), mSV2_[x_]), tot_);\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t} else if (mSW_[j_] != 0.0) {\n"
	   "\t\t\t\t\tmKC_[x_] = __ddiv_rn(mSK2_[x_], mSW_[j_]);\n"
	   "\t\t\t\t\tmVC_[x_] = __ddiv_rn(mSV2_[x_], mSW_[j_]);\n"
	   "\t\t\t\t}\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\tfor (int j_ = tid; j_ < C_; j_ += KV_NT) {   /* counts; Lloyd: the last assignment's positions */\n"
	   "\t\t\tif (cex_) {\n"
	   "\t\t\t\tif (mNM_[j_]) mCN_[j_] = __dadd_rn(mCN_[j_], mSW_[j_]);\n"
	   "\t\t\t} else {\n"
	   "\t\t\t\tint seen_ = 0, pc_ = mPC_[j_];\n"
	   "\t\t\t\tfor (int q_ = 0; q_ < nE_; q_++)\n"
	   "\t\t\t\t\tif (mA_[q_] == j_) { pc_ = seen_ && pc_ > mEP_[q_] ? pc_ : mEP_[q_]; seen_ = 1; }\n"
	   "\t\t\t\tmPC_[j_] = pc_;\n"
	   "\t\t\t\tmCN_[j_] = mSW_[j_];\n"
	   "\t\t\t}\n"
	   "\t\t}\n"
	   "\t\t__syncthreads();\n"
	   "\t\tfor (int x_ = tid; x_ < C_ * KV_D; x_ += KV_NT) {   /* the rows after the kept ones */\n"
	   "\t\t\tconst int j_ = x_ / KV_D, c_ = x_ - j_ * KV_D;\n"
	   "\t\t\tconst long long o_ = kv_roff(a, Tb, m_ + j_) + c_;\n"
	   "\t\t\tKb[o_] = kv_tost((float)mKC_[x_]);\n"
	   "\t\t\tVb[o_] = kv_tost((float)mVC_[x_]);\n"
	   "\t\t}\n"
	   "\t\tfor (int j_ = tid; j_ < C_; j_ += KV_NT) {\n"
	   "\t\t\tPb[m_ + j_] = mPC_[j_];\n"
	   "\t\t\tfor (int s_ = 0; s_ < KV_NST; s_++)\n"
	   "\t\t\t\ta.state[(((long long)b * KV_NST + s_) * a.L * a.H + li) * N + m_ + j_] =\n"
	   "\t\t\t\t\ts_ == KV_CNT ? (float)mCN_[j_] : s_ == KV_SFLAG ? 1.f : cex_ ? mSS_[s_ * C_ + j_] : ini_[s_];\n"
	   "\t\t}\n"
	   "\t\tif (tid == 0) a.len[inst] = m_ + C_;\n"
	   "\t}\n"
	   "\t}\n");
	return 0;
}
