/*
** The kernels of a policy's CUDA C program (DESIGN §5 skeletons, GPU side):
** the fixed code of the .cuh files (embedded at build time, cuh.h) with, between
** and inside them, what the policy decides — its sizes, the argument block, the
** score phases, its select rule and state. expr.c fills the kernels' bodies.
**
** Kernels per policy (one block per (layer, head) instance, KV_NT threads):
**   kv_score<P>  attn_stats + attn_score + token_map, fused; one kernel per
**                phase, phases split at hmean (a cross-head barrier)
**   kv_select    radix select over float bits (4 × 8-bit histograms in shared
**                memory), protections, chunks, per-head budgets (pyramid) —
**                fused with the stable in-place compaction of K, V, pos, state
**                (select.cuh), then merge nearest into the kept rows (merge.c)
**   kv_select_grp  select scopes layer / model: one block per scope group ranks the
**                group's chunks (weighted radix select, greedy shorter chunks) and
**                leaves each instance a record that kv_select compacts from
**                (select_grp.cuh)
**   kv_sched     the prefix / dynamic schedules: one block per sequence sets every
**                instance's count (sched.cuh) for kv_select's per-head top-k
**   kv_decode    one decode step, split-KV: grid (instance, split), each warp an
**                online-softmax partial (m, s, sum p·V) of its token range (decode.cuh)
**   kv_decode_comb  merges the partials: attention output, x.attn, the observe hook
*/
#include <string.h>
#include <math.h>
#include "codegen/ptx/gen.h"
#include "compiler/keep.h"
#include "compiler/mplan.h"
#include "codegen/ptx/cuh.h"
#include "compiler/interp.h"
#include "compiler/plan.h"

static void prologue(Gen *g, const char *name, int need_ws)
{
	/* kv_select: at most 128 registers a thread (512 / KV_NT blocks an SM; one block with 512
	** threads): left alone, ptxas chose 48-80 registers and spilled up to 84 B on merge
	** policies (issue 12, session 8: runtime/STATUS.md) */
	int sel = !strcmp(name, "kv_select") && !g->minblk;
	sb(&g->s, "\nextern \"C\" __global__ void __launch_bounds__(KV_NT%s) %s(const KvgArgs a)\n{\n",
	   g->minblk ? ", 1" : sel ? ", (512 / KV_NT > 1 ? 512 / KV_NT : 1)" : "", name);
	/* instance (sequence b, layer l, head h); li: its index within the sequence; Tb: its page
	** table (NULL: contiguous); nothing runs after a failed table check (kv_paged) */
	/* the decode kernels of a one-layer step (a.dlay = 1 + layer): block x is (sequence, head)
	** of that layer (the other kernels keep the plain index: registers, kv_select spills) */
	if (!strncmp(name, "kv_decode", 9))
		sb(&g->s, "\tconst int inst = a.dlay ? (int)((blockIdx.x / a.H * a.L + a.dlay - 1) * a.H + blockIdx.x %% a.H) : (int)blockIdx.x;\n");
	else
		sb(&g->s, "\tconst int inst = blockIdx.x;\n");
	sb(&g->s, "\tconst int b = inst / (a.L * a.H), li = inst - b * a.L * a.H;\n");
	sb(&g->s, "\tconst int l = li / a.H, h = li - l * a.H;\n");
	sb(&g->s, "\tif (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;\n");
	sb(&g->s, "\tconst int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;\n");
	sb(&g->s, "\tconst int n = a.len[inst], N = a.N, O = a.O;\n");
	sb(&g->s, "\tkv_st *const Kb = kv_ibase(a, a.K, a.Kl, b, l, h);\n");
	sb(&g->s, "\tkv_st *const Vb = kv_ibase(a, a.V, a.Vl, b, l, h);\n");
	sb(&g->s, "\tconst int *const Tb = kv_tab(a, b, li);\n");
	sb(&g->s, "\tconst kv_st *const Qb = a.Q ? (const kv_st *)a.Q + (long long)inst * KV_G * O * KV_D : 0;\n");
	sb(&g->s, "\tint *const Pb = a.pos + (long long)inst * N;\n");
	sb(&g->s, "\tfloat *const W = %s;\n", need_ws ? "a.ws + (long long)inst * a.ws_inst" : "0");
	sb(&g->s, "\t(void)l; (void)h; (void)tid; (void)lane; (void)warp; (void)n; (void)N; (void)O;\n"
	          "\t(void)Kb; (void)Vb; (void)Qb; (void)Pb; (void)W; (void)Tb;\n");
}

static void bufdecls(Gen *g, const char *need)
{
	for (int i = 0; i < g->f->nins; i++)
		if (need[i] && (g->home[i] == HM_BUF || g->home[i] == HM_STAT)) {
			char o[200];
			kp_offexpr(g->off[i], o, sizeof o);
			sb(&g->s, "\tfloat *const B%d = W + (%s); (void)B%d;\n", i, o, i);
		}
}

static int gen_score(Gen *g, KpCudaOut *out)
{
	const KiFn *f = g->f;
	char *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return kp_err(g, NULL, "out of memory");
	kp_mark(f, f->score, need);
	for (int s = 0; s < f->nst; s++)   /* a scan runs at every compression (its state is kept) */
		if (ki_isscanstate(f, s))
			kp_mark(f, f->st[s].update, need);
	uint8_t *kv = calloc((size_t)f->nins + 1, 1);   /* the [token] rows a keep count reduces (keep.c) */
	if (!kv || ki_keepvals(f, kv) != 0) {
		free(kv), free(need);
		return kp_err(g, NULL, "out of memory");
	}
	for (int i = 0; i < f->nins; i++)
		if (kv[i])
			kp_mark(f, KI_REF(RK_INS, i), need);
	g->decode = 0;
	int rc = kp_analyse(g, need, 0);
	if (rc == 0)
		rc = kp_keepbufs(g, kv);
	if (rc == 0)
		kp_wsmax(g);
	int last = KI_RKIND(f->score) == RK_INS ? g->phase[KI_RIDX(f->score)] : 0;
	for (int i = 0; rc == 0 && i < f->nins; i++)
		if (kv[i] && g->phase[i] > last)
			last = g->phase[i];
	free(kv);
	for (int s = 0; rc == 0 && s < f->nst; s++)
		if (ki_isscanstate(f, s) && g->phase[KI_RIDX(f->st[s].update)] > last)
			last = g->phase[KI_RIDX(f->st[s].update)];
	for (int p = 0; rc == 0 && p <= last; p++) {
		char name[32];
		snprintf(name, sizeof name, "kv_score%d", p);
		if (out->nkern >= KVG_MAXKERN - 3)   /* room for select_grp, select, paged */
			return free(need), kp_err(g, NULL, "too many cross-head phases (at most %d)", KVG_MAXKERN - 3);
		KpCudaKernel *k = &out->kern[out->nkern++];
		snprintf(k->name, sizeof k->name, "%s", name);
		k->role = KVG_SCORE, k->phase = p;
		for (int i = 0; i < f->nins; i++)
			k->tiled |= need[i] && g->phase[i] == p && kp_tiledstep(g, i) != TS_NONE;
		/* one block per SM: the tiles' shared memory allows no more; without it ptxas
		** aims at several blocks and spills (NVRTC 13.0). Likewise for the segment ops' loops
		** over a segment of [token, chan] values (lagkv spilled 12 B at 40 registers) and a scan's walk
		** (gated_window f32 d8 G4: 4 B at 32), and the loops over out / the shifts along chan */
		int seg = 0;
		for (int i = 0; i < f->nins; i++)
			seg |= need[i] && g->phase[i] == p && (ki_rule(f->ins[i].op) == AR_SEG || f->ins[i].op == KO_scan ||
			                                       /* out-axis loops, shifts along chan (expected_attention
			                                       ** f16 d64 G1: 32 B at 48 registers) */
			                                       (f->ins[i].axes & AXM(AX_out)) ||
			                                       (f->ins[i].op == KO_shift && f->ins[i].axis == AX_chan));
		g->minblk = k->tiled || seg;
		prologue(g, name, 1);
		g->minblk = 0;
		bufdecls(g, need);
		if (k->tiled)
			sb(&g->s, "\tKV_DYNSMEM(kv_dsm);   /* score tiles: kp_cuda_score_dsmem */\n"
			          "\tkv_qk *const sQ_ = (kv_qk *)kv_dsm, *const sK_ = sQ_ + KV_SQ * KV_DP;   /* K: KV_ST tile buffers */\n"
			          "\tfloat *const sS_ = (float *)(sK_ + KV_ST * KV_SK * KV_DP), *const sA_ = sS_ + KV_SQ * KV_SK;\n"
			          "\t(void)sA_;\n");
		for (int i = 0; rc == 0 && i < f->nins; i++)
			if (need[i] && g->phase[i] == p && (g->home[i] == HM_BUF || g->home[i] == HM_STAT))
				rc = kp_step(g, i);
		if (p == last && rc == 0) {
			sb(&g->s, "\t/* scores (NaN past the held tokens) */\n");
			sb(&g->s, "\tfor (int it = tid; it < N; it += KV_NT) {\n");
			sb(&g->s, "\t\tif (it >= n) { a.scores[(long long)inst * N + it] = kv_nan(); continue; }\n");
			Idx ix = { { NULL, NULL, "it", NULL } };
			int *memo = kp_newmemo(g);
			char A[400];
			if (!memo || kp_val(g, f->score, &ix, memo, 2, A, sizeof A))
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
		return kp_err(g, NULL, "out of memory");
	for (int s = 0; s < f->nst; s++)
		if (!ki_isscanstate(f, s))      /* scans run at compression (step_scan) */
			kp_mark(f, f->st[s].update, need);
	memset(g->home, 0, (size_t)f->nins);
	memset(g->phase, 0, (size_t)f->nins * sizeof *g->phase);
	g->decode = 1;
	int rc = kp_analyse(g, need, 1);
	/* every update is materialized before the write-back: all of them read the old state */
	for (int s = 0; rc == 0 && s < f->nst; s++)
		if (KI_RKIND(f->st[s].update) == RK_INS && !ki_isscanstate(f, s))
			g->home[KI_RIDX(f->st[s].update)] = HM_BUF;
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
	kp_wsreserve(g, 1, g->G, poff);
	kp_wsmax(g);
	char o[200];
	kp_offexpr(poff, o, sizeof o);
	/* split-KV partials: lanes over channels, kv_lpt lanes per token (about 4
	** channels each, coalesced), query heads kv_gb at a time in registers */
	int lpt = g->lpt ? g->lpt : kp_cuda_lpt(g->D);
	int cpl = (g->D + lpt - 1) / lpt, gb = 32 / cpl;   /* q and acc: at most 64 registers */
	gb = gb > g->G ? g->G : gb > 8 ? 8 : gb < 1 ? 1 : gb;
	sb(&g->s, "\nenum { kv_lpt = %d, kv_tpw = 32 / kv_lpt, kv_cpl = (KV_D + kv_lpt - 1) / kv_lpt, kv_gb = %d,\n"
	          "       kv_rec = KV_G * (KV_D + 2), kv_part = KV_NW * kv_rec };\n", lpt, gb);
	sb(&g->s, "%s", kp_cuh_decode);
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_decode");
	k->role = KVG_DECODE;
	prologue(g, "kv_decode", 1);
	sb(&g->s, "\tfloat *const Pr = W + (%s);\n", o);
	sb(&g->s, "\tkv_decode_part(a, inst, n, N, Kb, Vb, Tb, W, Pr);\n}\n");
	k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_decode_comb");
	k->role = KVG_COMBINE;
	prologue(g, "kv_decode_comb", 1);
	sb(&g->s, "\tfloat *const Pr = W + (%s);\n", o);
	sb(&g->s, "\t__shared__ float s_m[KV_G], s_s[KV_G];\n");
	bufdecls(g, need);
	sb(&g->s, "\tkv_decode_merge(a, inst, n, N, W, Pr, s_m, s_s);\n"
	          "\t/* observe hook */\n");
	for (int i = 0; rc == 0 && i < f->nins; i++)
		if (need[i] && (g->home[i] == HM_BUF || g->home[i] == HM_STAT))
			rc = kp_step(g, i);
	sb(&g->s, "\tfor (int it = tid; it < n; it += KV_NT) {\n");
	for (int s = 0; rc == 0 && s < f->nst; s++) {
		if (ki_isscanstate(f, s))
			continue;
		Idx ix = { { NULL, NULL, "it", NULL } };
		int *memo = kp_newmemo(g);
		char A[400];
		if (!memo || kp_val(g, f->st[s].update, &ix, memo, 2, A, sizeof A))
			rc = -1;
		free(memo);
		sb(&g->s, "\t\ta.state[(((long long)b * KV_NST + %d) * a.L * a.H + li) * N + it] = %s;\n", s, A);
	}
	sb(&g->s, "\t}\n}\n");
	free(need);
	return rc;
}

/* mass p (after the total tot, the unprotected count m and p): the smallest count lo of the best
** unprotected tokens (chunks) whose sum reaches p of tot, by bisection over the count; `pick`
** selects the best mid (one call in the loop, inlined once: the probes, then lo, which it leaves
** selected), `sum` sums their scores into ps (kv_select: kv_topk per instance; kv_select_grp:
** kv_gpick over the group weighing each chunk 1) */
void gen_massbisect(Gen *g, const char *pick, const char *sum)
{
	sb(&g->s,
	   "\t/* the smallest count lo of the best unprotected chunks whose sums reach p of the total */\n"
	   "\tconst int srch = p > 0.0 && tot > 0.0 && m > 0;\n"
	   "\tlong long lo = srch, hi = m;\n"
	   "\tfor (;;) {\n"
	   "\t\tconst int fin = !srch || lo >= hi;\n"
	   "\t\tconst long long mid = fin ? lo : lo + (hi - lo) / 2;\n"
	   "%s"
	   "\t\tif (fin) break;\n"
	   "\t\tdouble ps = 0.0;\n"
	   "%s"
	   "\t\tif (kv_bsumd(ps, dred, &dres) / tot >= p) hi = mid; else lo = mid + 1;\n"
	   "\t}\n", pick, sum);
}

/* mass p at scope layer / model, in kv_select_grp after the group's budget `want`: the group's
** unprotected chunks' total (double; a score that is not >= 0 is KVG_EMASS) and their number m,
** the smallest count lo of its best unprotected chunks (key, then instance, then position: the
** reference's order) whose sums reach p of it by bisection over the count (kv_gpick weighing
** each chunk 1, its records of class 0, their sums), that prefix's records copied to records 2:
** the candidates of the final ranking (kv_gin fl 4; kv_select checks them too) */
static void gen_grpmass(Gen *g, const char *M)
{
	sb(&g->s,
	   "\t__shared__ double dred[KV_NT], dres;\n"
	   "\tdouble part = 0.0;\n"
	   "\tint bad = 0;\n"
	   "\tlong long mc = 0;   /* the group's unprotected chunks */\n"
	   "\tfor (int k = i0; k < i0 + ni; k++) {\n"
	   "\t\tconst long long n = KV_GLEN(a, k), nch = (n + ch - 1) / ch;\n"
	   "\t\tconst float *const sc = KV_GSC(a, k);\n"
	   "\t\tfor (long long ci = threadIdx.x; ci < nch; ci += KV_NT)\n"
	   "\t\t\tif (!kv_prot(ci, ch, n, S, R)) {\n"
	   "\t\t\t\tconst long long t1 = ci * ch + kv_clen(ci, ch, n);\n"
	   "\t\t\t\tfor (long long t = ci * ch; t < t1; t++) { const float v = sc[t]; bad |= !(v >= 0.f); part += (double)v; }\n"
	   "\t\t\t\tmc++;\n"
	   "\t\t\t}\n"
	   "\t}\n"
	   "\tconst double tot = kv_bsumd(part, dred, &dres);\n"
	   "\tif (kv_bsumd((double)bad, dred, &dres) > 0.0) { if (threadIdx.x == 0) kv_seterr(a.err, KVG_EMASS); return; }\n"
	   "\tconst long long m = (long long)kv_bsumd((double)mc, dred, &dres);\n"
	   "\tconst double p = (double)(%s);\n", M);
	gen_massbisect(g,
	   "\t\tkv_gpick(a, i0, ni, ch, S, R, 0, mid, hist, sv, wsum, 0, 0.0, 1);   /* the best mid chunks */\n",
	   "\t\tfor (int k = i0; k < i0 + ni; k++) {\n"
	   "\t\t\tconst long long n = KV_GLEN(a, k), nch = (n + ch - 1) / ch;\n"
	   "\t\t\tconst float *const sc = KV_GSC(a, k);\n"
	   "\t\t\tconst KvSel o = kv_ldrec(kv_grec(a, k, 0));\n"
	   "\t\t\tfor (long long ci = threadIdx.x; ci < nch; ci += KV_NT)\n"
	   "\t\t\t\tif (!kv_prot(ci, ch, n, S, R) && kv_kept(o, sc, ci, ch, n, S, R)) {\n"
	   "\t\t\t\t\tconst long long t1 = ci * ch + kv_clen(ci, ch, n);\n"
	   "\t\t\t\t\tfor (long long t = ci * ch; t < t1; t++) ps += (double)sc[t];\n"
	   "\t\t\t\t}\n"
	   "\t\t}\n");
	sb(&g->s,
	   "\t/* the prefix (lo chunks): records 2 */\n"
	   "\tfor (int k = i0 + threadIdx.x; k < i0 + ni; k += KV_NT)\n"
	   "\t\tfor (int j = 0; j < 4; j++) kv_grec(a, k, 2)[j] = kv_grec(a, k, 0)[j];\n"
	   "\t__syncthreads();\n");
}

/* select scopes layer and model: one block per scope group (kv_select_grp) decides the
** kept chunks of the group's instances and leaves each instance a record, 4 ints at the
** start of its workspace per class (protected, others): the threshold key T, the last
** tie chunk kept E, whether its shorter last chunk is kept, whether the class is kept
** whole; kv_select then compacts every instance from its record */
static void gen_selgrp(Gen *g, KpCudaOut *out, const char *S, const char *R, const char *C, const char *F,
                       const char *T, const char *M)
{
	const KiSelect *s = &g->f->sel;
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_select_grp");
	k->role = KVG_SELGRP;
	k->phase = s->scope == SC_layer;
	/* the records: 8 floats at the start of each instance's workspace (16 with the floor's or
	** mass's prefix) */
	long long ro[4];
	memset(g->cur, 0, sizeof g->cur);
	int su = g->f->merge.kind == MG_summary;
	kp_wsreserve(g, 0, F && su ? 24 : F || M || su ? 16 : 8, ro);   /* floor + summary: records 4, 5 too */
	long long lo[4] = { 0 };
	if (su) {     /* merge summary: the ordinary rows' count and whether the instance has a block, then
	              ** their scores (kv_select reads its own) */
		long long so[4];
		char o[200];
		kp_wsreserve(g, 0, 2, lo);
		kp_wsreserve(g, 1, 1, so);
		sb(&g->s, "#define KV_GLEN(a, k) ((long long)((const int *)((a).ws + (long long)(k) * (a).ws_inst))[%lld])\n",
		   lo[0]);
		kp_offexpr(so, o, sizeof o);
		sb(&g->s, "#define KV_GSC(a, k) ((a).ws + (long long)(k) * (a).ws_inst + kv_gsco((a).N))\n"
		          "__device__ __forceinline__ long long kv_gsco(const int N) { const int O = 0; (void)O; return %s; }\n", o);
	}
	kp_wsmax(g);
	sb(&g->s, "%s", kp_cuh_select_grp);
	sb(&g->s, "\nextern \"C\" __global__ void __launch_bounds__(KV_NT) kv_select_grp(const KvgArgs a)\n{\n");
	sb(&g->s, "\tconst int i0 = %s, ni = %s;\n", s->scope == SC_layer ? "(int)blockIdx.x * a.H" :
	   "(int)blockIdx.x * a.L * a.H", s->scope == SC_layer ? "a.H" : "a.L * a.H");
	sb(&g->s, "\tif (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;\n");
	sb(&g->s, "\t__shared__ unsigned long long hist[256], sv[8];\n\t__shared__ int wsum[KV_NW];\n");
	sb(&g->s, "\tconst long long S = (long long)(%s), R = (long long)(%s), ch = (long long)(%s);\n", S, R, C);
	sb(&g->s,
	   "\tif (S < 0 || R < 0 || ch < 1) { if (threadIdx.x == 0) kv_seterr(a.err, KVG_ESELECT); return; }\n"
	   "\t/* the group's budget: the sum of its instances' n_keep */\n"
	   "\tlong long want = 0;\n");
	if (T && su)  /* threshold with summary rows: a row below tau makes the group evict (M15) */
		sb(&g->s, "\tconst double tau = (double)(%s);\n", T);
	if (F && su)  /* the floor's value first, as the interpreter and x86 check it before the counts */
		sb(&g->s,
		   "\tconst double alpha = (double)(%s);\n"
		   "\tif (!(alpha >= 0.0 && alpha <= 1.0)) { if (threadIdx.x == 0) kv_seterr(a.err, KVG_EFLOOR); return; }\n", F);
	if (F && !su) /* AdaKV: each head's own top floor(alpha n_keep) first, out of the layer's ranking */
		sb(&g->s,
		   "\tconst double alpha = (double)(%s);\n"
		   "\tif (!(alpha >= 0.0 && alpha <= 1.0)) { if (threadIdx.x == 0) kv_seterr(a.err, KVG_EFLOOR); return; }\n"
		   "\tif (ch != 1) { if (threadIdx.x == 0) kv_seterr(a.err, KVG_ESELECT); return; }\n"
		   "\t__shared__ unsigned fhist[256], fsv[4];\n"
		   "\t__shared__ long long fE;\n"
		   "\tfor (int k = i0; k < i0 + ni; k++) {\n"
		   "\t\tconst long long n = a.len[k], nk = kv_count(a, k / (a.L * a.H), k / a.H %% a.L, k %% a.H, n);\n"
		   "\t\tlong long fl = (long long)floor(__dmul_rn(alpha, (double)nk));\n"
		   "\t\tif (fl > nk) fl = nk;\n"
		   "\t\tconst float *const sc = a.scores + (long long)k * a.N;\n"
		   "\t\tKvSel f1, f0;\n"
		   "\t\tkv_topk(sc, n, 1, S, R, 1, fl, f1, fhist, fsv, &fE, wsum);\n"
		   "\t\tkv_topk(sc, n, 1, S, R, 0, fl - f1.used, f0, fhist, fsv, &fE, wsum);\n"
		   "\t\tif (threadIdx.x == 0) { kv_strec(kv_grec(a, k, 3), f1); kv_strec(kv_grec(a, k, 2), f0); }\n"
		   "\t\twant += nk - fl;\n"
		   "\t}\n"
		   "\t__syncthreads();\n", F);
	else if (su)  /* merge summary (summary.c kp_sum_pre, per instance; interp.c selectsummary): the
	              ** ordinary rows ranked, the block left out; a group with an instance over its n_keep
	              ** keeps the sum of n_keep - C, each instance without a block at most no - C of them
	              ** (its own top, records 2 and 3: kv_gin's fl 3), so none holds more than it held;
	              ** a group with none over keeps all */
		sb(&g->s,
		   "\t__shared__ int smin_[KV_NT];\n"
		   "\t__shared__ unsigned chist_[256], csv_[4];\n"
		   "\t__shared__ long long cE_;\n"
		   "\tint bad_ = 0, gev_ = 0;\n"
		   "\tlong long mnk_ = 0x7fffffffffffffffLL, wno_ = 0;\n"
		   "\tconst int tid = threadIdx.x;\n"
		   "\tfor (int k = i0; k < i0 + ni; k++) {\n"
		   "\t\tconst int b = k / (a.L * a.H), li = k - b * a.L * a.H, n = a.len[k];\n"
		   "\t\tconst int s0_ = kv_sfirst(a.state + (((long long)b * KV_NST + KV_SFLAG) * a.L * a.H + li) * a.N, n, smin_);\n"
		   "\t\tconst long long nk = kv_count(a, b, li / a.H, li %% a.H, n), no_ = n - (s0_ >= 0 ? KV_SROWS : 0);\n"
		   "\t\tif (s0_ >= 0 && s0_ + KV_SROWS > n) { bad_ = 1; continue; }\n"
		   "\t\tgev_ |= n > nk;\n"
		   "\t\tif (n > 0) { mnk_ = nk < mnk_ ? nk : mnk_; want += (nk < n ? nk : n) - KV_SROWS; }   /* an empty one takes no part */\n"
		   "\t\twno_ += no_;\n"
		   "\t\tfloat *const os_ = (float *)KV_GSC(a, k);\n"
		   "\t\tfor (long long t = tid; t < n; t += KV_NT)\n"
		   "\t\t\tif (s0_ < 0 || t < s0_ || t >= s0_ + KV_SROWS) os_[s0_ >= 0 && t >= s0_ + KV_SROWS ? t - KV_SROWS : t] = a.scores[(long long)k * a.N + t];\n"
		   "\t\tif (tid == 0) { int *const w_ = (int *)(a.ws + (long long)k * a.ws_inst); w_[%lld] = (int)no_; w_[%lld] = s0_ >= 0; }\n"
		   "%s"
		   "\t}\n"
		   "\tif (bad_ || (gev_ && mnk_ < KV_SROWS)) { if (tid == 0) kv_seterr(a.err, KVG_ESUM); return; }   /* kv_select stops */\n"
		   "\tif (!gev_) want = wno_;\n"
		   "\t__syncthreads();\n"
		   "\tif (ch != 1) { if (tid == 0) kv_seterr(a.err, KVG_ECHUNK); return; }\n"
		   "\tfor (int k = i0; k < i0 + ni; k++) {   /* each instance's cap: records 3 and 2 */\n"
		   "\t\tconst long long no_ = KV_GLEN(a, k), cap_ = gev_ && no_ > 0 && !((const int *)(a.ws + (long long)k * a.ws_inst))[%lld] ? no_ - KV_SROWS : no_;\n"
		   "\t\tKvSel c1_, c0_;\n"
		   "\t\tkv_topk(KV_GSC(a, k), no_, 1, S, R, 1, cap_, c1_, chist_, csv_, &cE_, wsum);\n"
		   "\t\tkv_topk(KV_GSC(a, k), no_, 1, S, R, 0, cap_ - c1_.used, c0_, chist_, csv_, &cE_, wsum);\n"
		   "\t\tif (tid == 0) { kv_strec(kv_grec(a, k, 3), c1_); kv_strec(kv_grec(a, k, 2), c0_); }\n"
		   "\t\t__syncthreads();\n"
		   "\t}\n", lo[0], lo[0] + 1, T ?
		   "\t\t__syncthreads();\n"
		   "\t\tfor (long long c0 = 0; c0 < no_; c0 += KV_NT) {   /* an unprotected row below tau (NaN too) */\n"
		   "\t\t\tconst long long ci = c0 + tid;\n"
		   "\t\t\tint nb_;\n"
		   "\t\t\tkv_bscan(ci < no_ && !kv_prot(ci, 1, no_, S, R) && !((double)os_[ci] >= tau), wsum, &nb_);\n"
		   "\t\t\tgev_ |= nb_ > 0;\n"
		   "\t\t}\n" : "", lo[0] + 1);
	else
		sb(&g->s, "\tfor (int k = i0; k < i0 + ni; k++) want += %s;\n",
		   s->nocap ? "a.len[k]" : "kv_count(a, k / (a.L * a.H), k / a.H % a.L, k % a.H, a.len[k])");
	if (F && su)  /* AdaKV with summary rows (interp.c floorsum): in a group that evicts, each non-empty
	              ** instance's floor includes its C rows (at or below C: met by them); its own best
	              ** max(fl - C, 0) ordinary rows (records 5 and 4) are kept first, out of the layer's
	              ** ranking (kv_gin fl 5) */
		sb(&g->s,
		   "\tfor (int k = i0; k < i0 + ni; k++) {\n"
		   "\t\tconst int b = k / (a.L * a.H), li = k - b * a.L * a.H, n = a.len[k];\n"
		   "\t\tconst long long nk = kv_count(a, b, li / a.H, li %% a.H, n), no_ = KV_GLEN(a, k);\n"
		   "\t\tlong long fl = (long long)floor(__dmul_rn(alpha, (double)nk));\n"
		   "\t\tif (fl > nk) fl = nk;\n"
		   "\t\tif (fl > n) fl = n;\n"
		   "\t\tconst long long fo_ = gev_ && n > 0 && fl > KV_SROWS ? fl - KV_SROWS : 0;\n"
		   "\t\tKvSel f1_, f0_;\n"
		   "\t\tkv_topk(KV_GSC(a, k), no_, 1, S, R, 1, fo_, f1_, chist_, csv_, &cE_, wsum);\n"
		   "\t\tkv_topk(KV_GSC(a, k), no_, 1, S, R, 0, fo_ - f1_.used, f0_, chist_, csv_, &cE_, wsum);\n"
		   "\t\tif (tid == 0) { kv_strec(kv_grec(a, k, 5), f1_); kv_strec(kv_grec(a, k, 4), f0_); }\n"
		   "\t\twant -= f1_.used + f0_.used;\n"
		   "\t\t__syncthreads();\n"
		   "\t}\n");
	if (T && su)
		;             /* declared before the summary rows' block */
	else if (T)   /* threshold: the candidates are the protected chunks and the others whose mean is >= tau */
		sb(&g->s, "\tconst double tau = (double)(%s);\n", T);
	else
		sb(&g->s, "\tconst double tau = 0.0;\n");
	if (M)
		gen_grpmass(g, M);
	int fl = F && su ? 5 : T && su ? 6 : F ? 1 : T ? 2 : su ? 3 : M ? 4 : 0;
	if (fl == 0 || (fl >= 3 && fl != 5)) {   /* plain top-k, summary caps, mass prefix: two inlined calls (sm_80 rolled:
	                            ** 20 B spill for scope layer's top-k, 24 B for summary_layer's caps, 0 B
	                            ** inlined; summary_model: 8 B inlined, 0 B rolled; the mass prefix 0 B) */
		sb(&g->s,
		   "\t/* protected chunks first (sinks, then the newest recent), then the others */\n"
		   "\tconst long long u1 = kv_gpick(a, i0, ni, ch, S, R, 1, want, hist, sv, wsum, %d, tau);\n"
		   "\tkv_gpick(a, i0, ni, ch, S, R, 0, want - u1, hist, sv, wsum, %d, tau);\n"
		   "}\n", fl, fl);
		return;
	}
	/* floor, threshold, floor with summary rows (fl 5: 0 B spills rolled, 80 B inlined on sm_80,
	** session 12): one inlined kv_gpick in a loop of two (issue 13, compile time: NVVM and ptxas
	** compile it once; adakv's kv_select_grp 0.62 -> 0.44 s NVRTC CPU on sm_80, registers 64 -> 73
	** / 59 -> 64 on sm_90; threshold_layer's 8 B spill on sm_80 gone; no spills; one block per
	** scope group, so occupancy does not matter) */
	sb(&g->s,
	   "\t/* protected chunks first (sinks, then the newest recent), then the others */\n"
	   "\tlong long u1 = 0;\n"
	   "\tKV_ROLLED\n"
	   "\tfor (int g_ = 1; g_ >= 0; g_--) {\n"
	   "\t\tconst long long u_ = kv_gpick(a, i0, ni, ch, S, R, g_, g_ ? want : want - u1, hist, sv, wsum, %d, tau);\n"
	   "\t\tif (g_) u1 = u_;\n"
	   "\t}\n"
	   "}\n", fl);
}

/* the prefix / dynamic schedules (scope head): kv_sched, one block per sequence, leaves each
** instance's count in its record (sched.cuh kv_srec, 16 floats at the start of its workspace:
** kv_gpick's records, then the schedule's) for kv_select's per-head top-k */
static int gen_sched(Gen *g, KpCudaOut *out, const char *S, const char *R)
{
	const KiSelect *s = &g->f->sel;
	char A[200], B[200];
	int pf = s->sched == SCH_prefix;
	if (kp_dscalar(g, s->sa, A, sizeof A, pf ? 5 : 10) || kp_dscalar(g, s->sb, B, sizeof B, pf ? 200 : 4))
		return kp_err(g, NULL, "schedule arguments must be constants or params");
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_sched");
	k->role = KVG_SELGRP;
	k->phase = 0;                   /* grid: one block per sequence */
	long long ro[4];
	memset(g->cur, 0, sizeof g->cur);
	kp_wsreserve(g, 0, 16, ro);
	kp_wsmax(g);
	sb(&g->s, "%s%s", kp_cuh_select_grp, kp_cuh_sched);
	sb(&g->s, "\nextern \"C\" __global__ void __launch_bounds__(KV_NT) kv_sched(const KvgArgs a)\n{\n"
	          "\tconst int i0 = (int)blockIdx.x * a.L * a.H;\n"
	          "\tif (a.pt && *(volatile int *)a.err == KVG_ETABLE) return;\n"
	          "\tconst long long S = (long long)(%s), R = (long long)(%s);\n"
	          "\tif (S < 0 || R < 0) return;   /* kv_select reports it */\n", S, R);
	if (pf)
		sb(&g->s, "\tkv_sched_prefix(a, i0, a.L * a.H, S, R, (double)(%s), (double)(%s));\n}\n", A, B);
	else
		sb(&g->s, "\t__shared__ unsigned long long hist[256], sv[8];\n\t__shared__ int wsum[KV_NW];\n"
		          "\tkv_sched_dynamic(a, i0, a.L, a.H, R, (double)(%s), (double)(%s), hist, sv, wsum);\n}\n", A, B);
	return 0;
}

static int gen_select(Gen *g, KpCudaOut *out)
{
	const KiFn *f = g->f;
	const KiSelect *s = &f->sel;
	int th = s->kind == SEL_threshold, ms = s->kind == SEL_mass;
	if (s->kind != SEL_topk && !th && !ms)
		return kp_err(g, NULL, "only top-k selection, threshold and mass are supported");
	char S[200], R[200], C[200], B[200], T[200], M[200], F[200];
	if (kp_dscalar(g, s->keep_first, S, sizeof S, 0) || kp_dscalar(g, s->keep_recent, R, sizeof R, 0) ||
	    kp_dscalar(g, s->chunk, C, sizeof C, 1) || kp_dscalar(g, s->beta, B, sizeof B, 20) ||
	    kp_dscalar(g, s->tau, T, sizeof T, 0) || kp_dscalar(g, s->mass, M, sizeof M, 0) ||
	    kp_dscalar(g, s->floor, F, sizeof F, 0))
		return kp_err(g, NULL, "select arguments must be constants or params");
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
	if (kp_gen_count(g) != 0)       /* kv_count: select keep's count, else kv_nkeep's (keep.c) */
		return -1;
	int sch = s->sched == SCH_prefix || s->sched == SCH_dynamic;
	if (s->scope != SC_head)
		gen_selgrp(g, out, S, R, C, s->floor ? F : NULL, th ? T : NULL, ms ? M : NULL);
	else if (sch) {
		if (gen_sched(g, out, S, R) != 0)
			return -1;
	} else if (f->merge.kind != MG_next && kp_mpos_tokvals(f) == 0)   /* next (CaM), runs reading [token] values: */
		memset(g->cur, 0, sizeof g->cur);      /* the score kernels' buffers stay; else dead: the merge's workspace */
	int mg = f->merge.kind == MG_nearest, su = f->merge.kind == MG_summary;
	int mp = f->merge.kind == MG_runs || f->merge.kind == MG_next;   /* issue 12 (codegen/ptx/mpos.c) */
	if (su && sch)
		return kp_err(g, NULL, "merge summary with a schedule is not compiled to CUDA yet");
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_select");
	k->role = KVG_SELECT;
	/* kv_select's code (its own, the merge's, mpos's and summary's; issue 13, compile time): row
	** offsets by kv_rofs, the 32-bit division (paged.cuh), and kv_topk's / kv_kept's kv_key with
	** its chunk loop rolled (their last argument, roll, select.cuh); a macro's own name is not
	** expanded again, so kv_topk(...) calls the function with one more argument */
	sb(&g->s, "\n/* kv_select: 32-bit row offsets (paged.cuh), kv_key's chunk loop rolled (select.cuh) */\n"
	          "#define kv_roff(a_, tb_, t_) kv_rofs(a_, tb_, t_)\n"
	          "#define kv_topk(...) kv_topk(__VA_ARGS__, 1)\n"
	          "#define kv_kept(...) kv_kept(__VA_ARGS__, 1)\n");
	if (mp)
		kp_mpos_funcs(g);
	prologue(g, "kv_select", mg || su || mp);
	if ((mg && kp_merge_decl(g) != 0) || (su && kp_sum_decl(g) != 0))
		return -1;
	if (mp && kp_mpos_decl(g) != 0)
		return -1;
	sb(&g->s,
	   "\t__shared__ unsigned hist[256], sv[4];\n"
	   "\t__shared__ long long s_E;\n"
	   "\t__shared__ int wsum[KV_NW];\n"
	   "\t__shared__ int sdst[KV_NT];\n"
	   "\tKV_DYNSMEM(kv_dsm);\n"
	   "\t/* staging rows: as many as the launch's dynamic shared memory holds (the arch's tile) */\n"
	   "\tconst unsigned ttn_ = KV_DSMEM_BYTES() / (2u * KV_D * (unsigned)sizeof(kv_st));\n"
	   "\tconst int tt_ = ttn_ > 0 ? (int)ttn_ : 1;\n"
	   "\tkv_st *const stK = (kv_st *)kv_dsm, *const stV = stK + tt_ * KV_D;\n"
	   "\tconst float *const sc = a.scores + (long long)inst * N;\n");
	sb(&g->s, "\tconst long long S = (long long)(%s), R = (long long)(%s), ch = (long long)(%s);\n", S, R, C);
	sb(&g->s,
	   "\tif (S < 0 || R < 0 || ch < 1) { if (tid == 0) kv_seterr(a.err, KVG_ESELECT); return; }\n");
	if (su)    /* threshold and mass at every scope take chunks (issue 13) */
		sb(&g->s, "\tif (ch != 1) { if (tid == 0) kv_seterr(a.err, KVG_ECHUNK); return; }\n");
	if (su && s->scope != SC_head) {   /* kv_select_grp ranked the group's ordinary rows */
		kp_sum_pre(g);
		sb(&g->s,
		   "\t/* decided by kv_select_grp for the whole %s (the ordinary rows, mOS_ as it ranked them;\n"
		   "\t** its KVG_ESUM stops here); within the instance's cap (records 3, 2) */\n"
		   "\tif (*(volatile int *)a.err) return;   /* KVG_ESUM, or an earlier kernel's error: no records */\n"
		   "\tconst KvSel s1 = kv_ldrec(kv_grec(a, inst, 1)), s0 = kv_ldrec(kv_grec(a, inst, 0));\n"
		   "\tconst KvSel c1_ = kv_ldrec(kv_grec(a, inst, 3)), c0_ = kv_ldrec(kv_grec(a, inst, 2));\n"
		   "%s"
		   "\t(void)hist; (void)sv; (void)s_E; (void)want;\n", ki_scopename(s->scope), s->floor ?
		   "\tconst KvSel f1 = kv_ldrec(kv_grec(a, inst, 5)), f0 = kv_ldrec(kv_grec(a, inst, 4));   /* the floor's */\n" : "");
	} else if (su && th) {      /* threshold: the ordinary candidates (summary.c) */
		kp_sum_pre(g);
		kp_sum_thr(g, T);
	} else if (su && ms) {      /* mass: the ordinary rows' prefix (summary.c) */
		kp_sum_pre(g);
		kp_sum_mass(g, M);
	} else if (su) {      /* the ordinary rows only (summary.c); n_keep - C of them */
		kp_sum_pre(g);
		sb(&g->s,
		   "\tKvSel s1, s0;\n"
		   "\tkv_topk(mOS_, no_, ch, S, R, 1, want, s1, hist, sv, &s_E, wsum);\n"
		   "\tkv_topk(mOS_, no_, ch, S, R, 0, want - s1.used, s0, hist, sv, &s_E, wsum);\n");
	} else if (s->scope == SC_head && th)     /* threshold: the best of the candidates >= tau */
		sb(&g->s,
		   "\tconst long long want = %s;\n"
		   "\t/* protected tokens first (sinks, then the newest recent), then the others */\n"
		   "\tKvSel s1, s0;\n"
		   "\tkv_topk(sc, n, ch, S, R, 1, want, s1, hist, sv, &s_E, wsum);\n"
		   "\t/* the unprotected candidates: chunks whose mean score, in double as the reference's,\n"
		   "\t** is >= tau (NaN never); candidates outrank the rest, so the best w0 unprotected\n"
		   "\t** tokens, w0 = min(what is left, the candidates' tokens), are the reference's pick */\n"
		   "\tconst double tau = (double)(%s);\n"
		   "\tconst long long nfull = n / ch, rem = n - nfull * ch;\n"
		   "\tlong long ncand = 0;\n"
		   "\t__syncthreads();\n"
		   "\tfor (long long c0 = 0; c0 < nfull; c0 += KV_NT) {\n"
		   "\t\tconst long long ci = c0 + tid;\n"
		   "\t\tint tot;\n"
		   "\t\tkv_bscan(ci < nfull && !kv_prot(ci, ch, n, S, R) && kv_cmean(sc, ci, ch, n) >= tau, wsum, &tot);\n"
		   "\t\tncand += tot * ch;\n"
		   "\t}\n"
		   "\t/* the shorter last chunk, unprotected (no recent window): a candidate, or left out of the\n"
		   "\t** ranking (n - rem tokens rank the full chunks alike when R is 0) */\n"
		   "\tconst int lastc = rem > 0 && !kv_prot(nfull, ch, n, S, R), pc = lastc && kv_cmean(sc, nfull, ch, n) >= tau;\n"
		   "\tif (pc) ncand += rem;\n"
		   "\tconst long long w0 = want - s1.used < ncand ? want - s1.used : ncand;\n"
		   "\tkv_topk(sc, lastc && !pc ? n - rem : n, ch, S, R, 0, w0, s0, hist, sv, &s_E, wsum);\n", s->nocap ? "(long long)n" : "kv_count(a, b, l, h, n)", T);
	else if (s->scope == SC_head && ms) {   /* mass: a count of chunks as the reference's, then top-k */
		sb(&g->s,
		   "\t/* the unprotected chunks' total (double), their number m and tokens mt, and a score in\n"
		   "\t** them that is not >= 0 (an error); a chunk with a protected token is protected */\n"
		   "\t__shared__ double dred[KV_NT], dres;\n"
		   "\tconst long long nch = (n + ch - 1) / ch;\n"
		   "\tdouble part = 0.0;\n"
		   "\tint bad = 0;\n"
		   "\tlong long mc = 0, mtc = 0;\n"
		   "\tfor (long long ci = tid; ci < nch; ci += KV_NT)\n"
		   "\t\tif (!kv_prot(ci, ch, n, S, R)) {\n"
		   "\t\t\tconst long long t1 = ci * ch + ch < n ? ci * ch + ch : n;\n"
		   "\t\t\tfor (long long t = ci * ch; t < t1; t++) { const float v = sc[t]; bad |= !(v >= 0.f); part += (double)v; }\n"
		   "\t\t\tmc++, mtc += t1 - ci * ch;\n"
		   "\t\t}\n"
		   "\tconst double tot = kv_bsumd(part, dred, &dres);\n"
		   "\tif (kv_bsumd((double)bad, dred, &dres) > 0.0) { if (tid == 0) kv_seterr(a.err, KVG_EMASS); return; }\n"
		   "\tconst long long m = (long long)kv_bsumd((double)mc, dred, &dres), mt = (long long)kv_bsumd((double)mtc, dred, &dres);\n"
		   "\tconst double p = (double)(%s);\n"
		   "\tKvSel s1, s0;\n", M);
		gen_massbisect(g,
		   "\t\tkv_topk(sc, n, ch, S, R, 0, mid * ch, s0, hist, sv, &s_E, wsum);   /* the best mid chunks */\n",
		   "\t\tfor (long long ci = tid; ci < nch; ci += KV_NT)\n"
		   "\t\t\tif (!kv_prot(ci, ch, n, S, R) && kv_kept(s0, sc, ci, ch, n, S, R)) {\n"
		   "\t\t\t\tconst long long t1 = ci * ch + ch < n ? ci * ch + ch : n;\n"
		   "\t\t\t\tfor (long long t = ci * ch; t < t1; t++) ps += (double)sc[t];\n"
		   "\t\t\t}\n");
		sb(&g->s,
		   "\t/* the candidates: the protected chunks and that prefix (its tokens pu; the shorter last\n"
		   "\t** chunk, unprotected, in it or left out of the ranking: n - rem tokens rank the full chunks\n"
		   "\t** alike when R is 0); the budget, capped at their tokens, takes whole chunks best first */\n"
		   "\tlong long pu = lo, nr = n;\n"
		   "\tif (ch > 1) {   /* s0: the best lo chunks (gen_massbisect's last pick) */\n"
		   "\t\tconst long long rem = n %% ch;\n"
		   "\t\tpu = s0.used;\n"
		   "\t\tif (rem > 0 && !kv_prot(n / ch, ch, n, S, R) && !s0.takep) nr = n - rem;\n"
		   "\t}\n"
		   "\tconst long long cap = %s, want = n - mt + pu < cap ? n - mt + pu : cap;\n"
		   "\tkv_topk(sc, n, ch, S, R, 1, want, s1, hist, sv, &s_E, wsum);\n"
		   "\tkv_topk(sc, nr, ch, S, R, 0, want - s1.used, s0, hist, sv, &s_E, wsum);\n",
		   s->nocap ? "(long long)n" : "kv_count(a, b, l, h, n)");
	} else if (s->scope == SC_head)
		sb(&g->s,
		   "\tconst long long want = %s;\n"
		   "\t/* protected chunks first (sinks, then the newest recent), then the others; one\n"
		   "\t** inlined kv_topk in a loop of two (NVVM and ptxas compile it once, not twice) */\n"
		   "\tKvSel s1, s0;\n"
		   "\tKV_ROLLED\n"
		   "\tfor (int g_ = 1; g_ >= 0; g_--) {\n"
		   "\t\tKvSel o_;\n"
		   "\t\tkv_topk(sc, n, ch, S, R, g_, g_ ? want : want - s1.used, o_, hist, sv, &s_E, wsum);\n"
		   "\t\tif (g_) s1 = o_; else s0 = o_;\n"
		   "\t}\n",
		   sch ? "kv_schcnt(a, inst)   /* kv_sched's count */" : "kv_count(a, b, l, h, n)");
	else
		sb(&g->s,
		   "\t/* decided by kv_select_grp for the whole %s */\n"
		   "\tconst KvSel s1 = kv_ldrec(kv_grec(a, inst, 1)), s0 = kv_ldrec(kv_grec(a, inst, 0));\n"
		   "\t(void)hist; (void)sv; (void)s_E;\n", ki_scopename(s->scope));
	if (s->scope != SC_head && ms)    /* kv_select_grp found a score that is not >= 0: no records */
		sb(&g->s, "\tif (*(volatile int *)a.err) return;   /* KVG_EMASS, or an earlier kernel's error */\n"
		          "\tconst KvSel p0 = kv_ldrec(kv_grec(a, inst, 2));   /* the mass prefix (kv_gin fl 4) */\n");
	if (s->scope != SC_head && th)    /* the records rank the candidates only (kv_gin) */
		sb(&g->s, "\tconst double tau = (double)(%s);\n", T);
	if (s->floor && !su)   /* AdaKV: the head's own floor (kv_select_grp's records 2, 3; with summary 4, 5) */
		sb(&g->s, "\tconst KvSel f1 = kv_ldrec(kv_grec(a, inst, 3)), f0 = kv_ldrec(kv_grec(a, inst, 2));\n");
	if (mp && kp_mpos_pre(g) != 0)
		return -1;
	/* merge summary: the keep rule's text (the guard's count and the compaction use it) */
	const char *kx = "", *kb =
	   "\t\tconst int blk_ = s0_ >= 0 && t >= s0_ && t < s0_ + C_;\n"
	   "\t\tconst long long nb_ = s0_ < 0 || t < s0_ ? 0 : t - s0_ < C_ ? t - s0_ : C_;   /* block rows before t */\n"
	   "\t\tif (t < n && !blk_) {\n"
	   "\t\t\tconst long long ci = t - nb_;\n"
	   "\t\t\tkeep = kv_kept(kv_prot(ci, 1, no_, S, R) ? s1 : s0, mOS_, ci, 1, no_, S, R);\n";
	if (su) {    /* the block's rows stay out (set aside); an ordinary row: its ordinary index */
		kx = s->floor ?
		   "\t\t\tkeep = keep && kv_kept(kv_prot(ci, 1, no_, S, R) ? c1_ : c0_, mOS_, ci, 1, no_, S, R);\n"
		   "\t\t\tkeep = keep || kv_kept(kv_prot(ci, 1, no_, S, R) ? f1 : f0, mOS_, ci, 1, no_, S, R);\n" :
		   s->scope != SC_head && th ?
		   "\t\t\tkeep = keep && kv_kept(kv_prot(ci, 1, no_, S, R) ? c1_ : c0_, mOS_, ci, 1, no_, S, R);\n"
		   "\t\t\tkeep = keep && (kv_prot(ci, 1, no_, S, R) || (double)mOS_[ci] >= tau);   /* a candidate */\n" :
		   s->scope != SC_head ?
		   "\t\t\tkeep = keep && kv_kept(kv_prot(ci, 1, no_, S, R) ? c1_ : c0_, mOS_, ci, 1, no_, S, R);\n" : "";
		/* the guard (the interpreter's merge.c instance, x86 selectkeep): the kept ordinary rows
		** and the C summary rows fit the rows the instance holds, counted with the compaction's own
		** keep rule before any row moves; no rule reaches it (each keeps at most no_ - C_): a
		** selection bug stops here with KVG_ESUM, never a write past the instance's rows */
		sb(&g->s,
		   "\t{   /* merge summary: kept + C_ rows must fit the n held */\n"
		   "\t\tlong long kn_ = 0;\n"
		   "\t\tfor (long long t0 = 0; t0 < n; t0 += KV_NT) {\n"
		   "\t\tconst long long t = t0 + tid;\n"
		   "\t\tint keep = 0;\n"
		   "%s%s"
		   "\t\t}\n"
		   "\t\tint tot;\n"
		   "\t\tkv_bscan(keep, wsum, &tot);\n"
		   "\t\tkn_ += tot;\n"
		   "\t\t}\n"
		   "\t\tif ((s0_ >= 0 || kn_ < no_) && kn_ + C_ > n) { if (tid == 0) kv_seterr(a.err, KVG_ESUM); return; }\n"
		   "\t}\n", kb, kx);
	}
	sb(&g->s,
	   "\t/* stable in-place compaction, one tile of KV_NT tokens at a time; rows are\n"
	   "\t   staged in shared memory tt_ at a time (destinations never pass sources) */\n"
	   "\tlong long run = 0;\n"
	   "\tfor (long long t0 = 0; t0 < n; t0 += KV_NT) {\n"
	   "\t\tconst long long t = t0 + tid;\n"
	   "\t\tint keep = 0;\n");
	if (su)
		sb(&g->s,
		   "%s%s"
		   "\t\t}\n"
		   "\t\tint tot;\n"
		   "\t\tconst int ex = kv_bscan(keep, wsum, &tot);\n"
		   "\t\tsdst[tid] = keep ? (int)(run + ex) : t < n && !blk_ ? (int)(-2 - (t - run - ex - nb_)) : -1;\n"
		   "\t\tconst int pv = keep ? Pb[t] : 0;\n", kb, kx);
	else
		sb(&g->s,
		   "\t\tif (t < n) {\n"
		   "\t\t\tconst long long ci = t / ch;\n"
		   "\t\t\tkeep = kv_kept(kv_prot(ci, ch, n, S, R) ? s1 : s0, sc, ci, ch, n, S, R);\n"
		   "%s%s"
		   "\t\t}\n"
		   "\t\tint tot;\n"
		   "\t\tconst int ex = kv_bscan(keep, wsum, &tot);\n"
		   "\t\tsdst[tid] = keep ? (int)(run + ex) : %s;\n"
		   "\t\tconst int pv = keep ? Pb[t] : 0;\n",
		   s->floor ? "\t\t\tkeep = keep || kv_kept(kv_prot(ci, ch, n, S, R) ? f1 : f0, sc, ci, ch, n, S, R);\n" : "",
		   s->scope != SC_head && th ? "\t\t\tkeep = keep && (kv_prot(ci, ch, n, S, R) || kv_cmean(sc, ci, ch, n) >= tau);\n" :
		   s->scope != SC_head && ms ? "\t\t\tkeep = keep && (kv_prot(ci, ch, n, S, R) || kv_kept(p0, sc, ci, ch, n, S, R));\n" : "",
		   mg || mp ? "t < n ? (int)(-2 - (t - run - ex)) : -1" : "-1");
	if (mp)
		kp_mpos_mark(g);
	for (int st = 0; st < f->nst + ki_mcounts(f) + ki_mtau(f); st++)     /* the state rows, member counts included */
		sb(&g->s, "\t\tconst float stv%d = keep ? a.state[(((long long)b * KV_NST + %d) * a.L * a.H + li) * N + t] : 0.f;\n",
		   st, st);
	sb(&g->s,
	   "\t\t__syncthreads();\n"
	   "\t\tconst int cnt = n - t0 < KV_NT ? (int)(n - t0) : KV_NT;\n");
	if (mg || mp)
		kp_merge_copy(g);
	if (su)
		kp_sum_copy(g);
	sb(&g->s,
	   "\t\tif (!(run == t0 && tot == cnt))\n"
	   "\t\t\tfor (int r0 = 0; r0 < cnt; r0 += tt_) {\n"
	   "\t\t\t\tconst int rows = cnt - r0 < tt_ ? cnt - r0 : tt_;\n"
	   "\t\t\t\tfor (int e_ = tid; e_ < rows * KV_D; e_ += KV_NT) {\n"
	   "\t\t\t\t\tconst int rr = e_ / KV_D, c = e_ - rr * KV_D;\n"
	   "\t\t\t\t\tif (sdst[r0 + rr] >= 0) {\n"
	   "\t\t\t\t\t\tconst long long o_ = kv_roff(a, Tb, t0 + r0 + rr) + c;\n"
	   "\t\t\t\t\t\tstK[e_] = Kb[o_];\n"
	   "\t\t\t\t\t\tstV[e_] = Vb[o_];\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t\tfor (int e_ = tid; e_ < rows * KV_D; e_ += KV_NT) {\n"
	   "\t\t\t\t\tconst int rr = e_ / KV_D, c = e_ - rr * KV_D, dd = sdst[r0 + rr];\n"
	   "\t\t\t\t\tif (dd >= 0) {\n"
	   "\t\t\t\t\t\tconst long long o_ = kv_roff(a, Tb, dd) + c;\n"
	   "\t\t\t\t\t\tKb[o_] = stK[e_];\n"
	   "\t\t\t\t\t\tVb[o_] = stV[e_];\n"
	   "\t\t\t\t\t}\n"
	   "\t\t\t\t}\n"
	   "\t\t\t\t__syncthreads();\n"
	   "\t\t\t}\n"
	   "\t\tif (keep) {\n"
	   "\t\t\tPb[run + ex] = pv;\n");
	for (int st = 0; st < f->nst + ki_mcounts(f) + ki_mtau(f); st++)
		sb(&g->s, "\t\t\ta.state[(((long long)b * KV_NST + %d) * a.L * a.H + li) * N + run + ex] = stv%d;\n", st, st);
	sb(&g->s,
	   "\t\t}\n"
	   "\t\trun += tot;\n"
	   "\t\t__syncthreads();\n"
	   "\t}\n"
	   "\tif (tid == 0) a.len[inst] = (int)run;\n");
	if ((mg && kp_merge_body(g) != 0) || (su && kp_sum_body(g) != 0))
		return -1;
	if (mp && kp_mpos_body(g) != 0)
		return -1;
	sb(&g->s, "}\n#undef kv_roff\n#undef kv_topk\n#undef kv_kept\n");
	return 0;
}

/* kv_paged (paged.cuh): the table check before a call, the freed pages after a compression,
** an append; one block per sequence (per (sequence, head) to append) */
static void gen_paged(Gen *g, KpCudaOut *out)
{
	KpCudaKernel *k = &out->kern[out->nkern++];
	snprintf(k->name, sizeof k->name, "kv_paged");
	k->role = KVG_PAGED;
	sb(&g->s, "\nextern \"C\" __global__ void __launch_bounds__(KV_NT) kv_paged(const KvgArgs a)\n{\n");
	int nst = g->f->nst + ki_mcounts(g->f) + ki_mtau(g->f);     /* the member counts' row: init 1 */
	sb(&g->s, "\tconst float ini[%d] = {", nst + 1);
	for (int s = 0; s < nst; s++) {
		double v = s < g->f->nst ? (double)(float)g->f->st[s].init : s == ki_msumrow(g->f) ? 0.0   /* summary flag: 0 */
		         : ki_mtau(g->f) && s == g->f->nst + ki_mcounts(g->f) ? NAN : 1.0;         /* D2O's tau: unset */
		if (isnan(v))
			sb(&g->s, " kv_nan(),");
		else if (isinf(v))
			sb(&g->s, " %skv_inf(),", v < 0 ? "-" : "");
		else
			sb(&g->s, " %.9ef,", v);
	}
	sb(&g->s, " 0.f };\n"
	          "\tif (a.pgop == KVG_PG_CHECK) kv_pgcheck(a, blockIdx.x);\n"
	          "\telse if (a.pgop == KVG_PG_FREE) kv_pgfree(a, blockIdx.x);\n"
	          "\telse if (a.pgop == KVG_PG_APPEND) kv_pgappend(a, blockIdx.x / a.H, blockIdx.x %% a.H, ini, KV_NST);\n"
	          "\telse if (a.pgop == KVG_PG_STEP && a.steps && a.dlay && threadIdx.x == 0) a.steps[blockIdx.x * a.L + a.dlay - 1]++;\n"
	          "}\n");
}

static void argsdecl(Sb *s)
{
	sb(s, "#define KVG_MAXPAR %d\ntypedef struct KvgArgs {\n", KVG_MAXPAR);
#define KVG_PRINT(t, nm) sb(s, "\t%s %s;\n", #t, #nm);
	KVG_ARGS_FIELDS(KVG_PRINT)
#undef KVG_PRINT
	sb(s, "} KvgArgs;\n");
}

/* does root reach an instruction with this op? (-1: out of memory) */
static int uses(const KiFn *f, KiRef root, int op)
{
	char *need = calloc((size_t)f->nins + 1, 1);
	if (!need)
		return -1;
	kp_mark(f, root, need);
	int u = 0;
	for (int i = 0; i < f->nins; i++)
		u |= need[i] && f->ins[i].op == op;
	free(need);
	return u;
}

/*
** The CUDA C program of `f` for the specialization in `o` (no NVRTC): the fixed
** code of the .cuh files, the argument block, then the kernels (decode first when the
** policy has state or runs at decode, then the score phases, select). Fills out->src,
** the kernel list and the workspace coefficients; -1 with e set (positioned at the
** policy line) for what the GPU backend does not support.
*/
int kp_generate(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KiErr *e)
{
	Gen g = { .f = f, .e = e, .dtype = o->dtype, .D = o->head_dim, .G = o->group, .NT = out->nthreads,
	          .lpt = o->cfg ? o->cfg->lpt : 0 };
	if (g.D < 1 || g.D > 1024 || g.G < 1 || g.G > 64)
		return ki_error(e, f->src, f->line, f->col, "GPU backend: head_dim %d / group %d out of range", g.D, g.G), -1;
	if (f->npar > KVG_MAXPAR)
		return ki_error(e, f->src, f->line, f->col, "GPU backend: %d params, at most %d", f->npar, KVG_MAXPAR), -1;
	if (ki_unsupported_gpu(f, e) != 0)   /* merge rules, the issue-13 language (compiler/support.c) */
		return -1;
	if (ki_mkernels_gpu(f, e) != 0)  /* merge rules x86 has and CUDA not yet (compiler/mplan.c) */
		return -1;
	/* the same mapping rules as the x86 plan where it applies (state and x.attn are ours) */
	int ustate = uses(f, f->score, KO_state), uattn = uses(f, f->score, KO_attn);
	if (ustate < 0 || uattn < 0)
		return ki_error(e, f->src, 0, 0, "GPU backend: out of memory"), -1;
	if (!o->plan && !ustate && !uattn) {
		KiPlan p;
		if (ki_plan(f, &p, e) != 0)
			return -1;
		ki_plan_free(&p);
	}
	g.home = calloc((size_t)f->nins + 1, 1);
	g.phase = calloc((size_t)f->nins + 1, sizeof *g.phase);
	g.off = calloc((size_t)f->nins + 1, sizeof *g.off);
	if (!g.home || !g.phase || !g.off) {
		free(g.home), free(g.phase), free(g.off);
		return ki_error(e, f->src, 0, 0, "GPU backend: out of memory"), -1;
	}
	sb(&g.s, "%s", kp_cuh_prelude);
	sb(&g.s, "/* policy %s: dtype %s, head_dim %d, group %d */\n", f->name, ki_dtypename(o->dtype), g.D, g.G);
	sb(&g.s, "#define KV_G %d\n#define KV_D %d\n", g.G, g.D);
	sb(&g.s, "%s", o->dtype == KVCC_F16 ? kp_cuh_storage_f16 : o->dtype == KVCC_BF16 ? kp_cuh_storage_bf16
	                                                         : kp_cuh_storage_f32);
	argsdecl(&g.s);
	/* KV_NST: the state rows, the member counts' included (KV_CNT, compiler/mplan.h ki_mcounts);
	** KV_CBIAS: decode adds log(count) to each logit (decode.cuh) */
	sb(&g.s, "#define KV_NST %d\n#define KV_CNT %d\n#define KV_CBIAS %d\n#define KV_TAU %d\n",
	   f->nst + ki_mcounts(f) + ki_mtau(f), ki_mcounts(f) ? f->nst : -1, f->merge.bias,
	   ki_mtau(f) ? f->nst + ki_mcounts(f) : -1);
	/* merge summary: KV_SROWS rows, KV_SITERS Lloyd iterations, the flag state row KV_SFLAG (summary.c) */
	sb(&g.s, "#define KV_SROWS %d\n#define KV_SITERS %d\n#define KV_SFLAG %d\n%s",
	   f->merge.kind == MG_summary ? (int)f->con[KI_RIDX(f->merge.rows)] : 0,
	   f->merge.kind == MG_summary && KI_RKIND(f->merge.iters) == RK_CON ? (int)f->con[KI_RIDX(f->merge.iters)] : 1,
	   ki_msumrow(f), kp_cuh_paged);
	if (f->merge.kind == MG_summary)
		kp_sum_first(&g.s);
	/* defined with the select kernel (gen_select); the score kernels read it (x.nkeep) */
	sb(&g.s, "__device__ long long kv_nkeep(const KvgArgs &a, int l, long long n);\n");
	sb(&g.s, "%s", kp_cuh_select);
	if (kp_cuda_mma(o->dtype, g.D))
		sb(&g.s, "#define KV_MMA_T \"%s\"\n#define KV_MMA_BF16 %d\n%s", ki_dtypename(o->dtype),
		   o->dtype == KVCC_BF16, kp_cuh_tile_mma);
	else
		sb(&g.s, "%s", kp_cuh_tile_fma);
	sb(&g.s, "%s", kp_cuh_tile);
	int rc = 0;
	{   /* every policy decodes (kvcc_gpu_decode_batch); the observe hook when it has one */
		sb(&g.s, "#if KV_PART != 2   /* part 1: decode (compile.c, two NVRTC programs) */\n");
		rc = gen_decode(&g, out);
		sb(&g.s, "#endif\n");
		out->has_decode = rc == 0;
		out->dec_part = kvg_dec_part(g.G, g.D, g.NT);
		memset(g.home, 0, (size_t)f->nins);
		memset(g.phase, 0, (size_t)f->nins * sizeof *g.phase);
	}
	sb(&g.s, "#if KV_PART != 1   /* part 2: score and select */\n");
	if (rc == 0)
		rc = gen_score(&g, out);
	if (rc == 0)
		rc = gen_select(&g, out);
	sb(&g.s, "#endif\n#if KV_PART != 2   /* part 1: the paged-cache kernel */\n");
	if (rc == 0)
		gen_paged(&g, out);
	sb(&g.s, "#endif\n");
	out->has_compress = rc == 0;
	memcpy(out->ws_coef, g.wsmax, sizeof g.wsmax);
	free(g.home), free(g.phase), free(g.off);
	if (g.s.oom) {
		free(g.s.p);
		return ki_error(e, f->src, 0, 0, "GPU backend: out of memory"), -1;
	}
	if (rc) {
		free(g.s.p);
		return -1;
	}
	out->src = g.s.p;
	out->nsrc = g.s.n;
	return 0;
}

