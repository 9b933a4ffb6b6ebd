/*
** The compact_merge kernels of merge nearest (DESIGN §3 "Merge semantics", §5), generated from
** the merge rule's pair expressions and their plan (compiler/mplan.h: sides, the similarity's
** tiled-product form, the row scalars); runtime/merge.c drives them around the generated Q·K
** tile (qkt) and the compaction:
**
**   mscal  per row: the [] values of one row (norms, sums over chan of erow / krow of K or V,
**          its member count e.count / k.count, elementwise ops of them), each once per evicted
**          and once per kept row; the counts are row nes / nks of the table, written by the
**          runtime before mscal
**   mbest  per tile of the evicted × kept similarity: the epilogue F(e·k, row scalars) over the
**          qkt tile, W kept tokens at a time, and the running arg-max of each evicted row per
**          lane (NaN never, ties → the lower kept index; the runtime reduces the lanes once)
**   mpair  one pair value: the threshold, the weight w_e, the self weight w_k
**   mupd   one kept row's weighted update from its evicted rows, rounded to the storage dtype
**
** f32 arithmetic (the reference interpreter: double; the differential tests state the
** tolerance); elementwise ops are the token_map loops' (kx_ew), reductions over chan follow
** the op table's map / comb / fin.
*/
#include <stdlib.h>
#include <string.h>
#include "codegen/x86/gen.h"
#include "compiler/mplan.h"

typedef struct Mg {
	Gen *g;
	const KiFn *f;
	const int *slot;         /* [nins] row scalar slots (ki_mslots) */
	const uint8_t *side;     /* [nins] KI_M* (ki_msides) */
	int dot;                 /* the similarity's cross dot */
	LLVMValueRef *val;       /* [nins] values at the current site (NULL: not yet) */
	char *need;              /* [nins] pairroot's instructions */
	int w;                   /* lanes of the pair values (mbest: kept tokens; else 1) */
	/* pair sites */
	LLVMValueRef es, lde, e, ks, ldks, k;   /* k: the first kept index of the w lanes */
	LLVMValueRef sim, abs, ntg, dotv, par;
	/* row sites (mscal) */
	LLVMValueRef K, V, row;  /* the row's first element */
	LLVMValueRef out, ld, ri; /* the row's table, its stride, the row's index */
	int nes, nks;            /* row scalars per side: the member counts are row nes / nks of out */
	/* issue 12 (session 11): mscal's 16-row blocks — the row stride, the K / V channels cb ..
	** cb+15 of the 16 rows as f32 in a stack buffer, transposed (buf[v]: [16 channels][16 rows]),
	** and the channel c of the inner loop (rowchan's ch) */
	LLVMValueRef ldk, buf[2], cv;
} Mg;

static LLVMValueRef splat32(Gen *g, LLVMValueRef x, int w)
{
	if (w == 1)
		return x;
	LLVMTypeRef vt = LLVMVectorType(g->i32, (unsigned)w);
	LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vt), x, LLVMConstInt(g->i32, 0, 0), "");
	return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vt), LLVMConstNull(vt), "");
}

static LLVMValueRef mpar(Mg *M, int p)
{
	Gen *g = M->g;
	LLVMValueRef v = LLVMBuildLoad2(g->b, LLVMDoubleTypeInContext(g->cx),
	                                gep(g, LLVMDoubleTypeInContext(g->cx), M->par, ci(g, p)), "");
	return splat(g, LLVMBuildFPTrunc(g->b, v, g->f32, ""), M->w);
}

static LLVMValueRef mref(Mg *M, KiRef r, int w, LLVMValueRef (*ins)(Mg *, int, int))
{
	switch (KI_RKIND(r)) {
	case RK_CON: return cfv(M->g, M->f->con[KI_RIDX(r)], w);
	case RK_PAR: {
		int w0 = M->w;
		M->w = w;
		LLVMValueRef v = mpar(M, KI_RIDX(r));
		M->w = w0;
		return v;
	}
	case RK_INS: return ins(M, KI_RIDX(r), w);
	}
	return cfv(M->g, NAN, w);
}

/* --- row scalars (mscal) ------------------------------------------------------------------- */

static LLVMValueRef rowscal(Mg *M, int i, int w);

static LLVMValueRef rowscalv(Mg *M, int i, int w);

/* a [chan] value of the row at channel ch (scalars broadcast); M->w = 16 (mscal16): of the 16 rows
** of the block, channel cb + ch of its stack buffer */
static LLVMValueRef rowchan(Mg *M, KiRef r, LLVMValueRef ch)
{
	Gen *g = M->g;
	int w = M->w;
	if (KI_RKIND(r) != RK_INS || !(M->f->ins[KI_RIDX(r)].axes & AXM(AX_chan)))
		return mref(M, r, w, w > 1 ? rowscalv : rowscal);
	const KiIns *in = &M->f->ins[KI_RIDX(r)];
	if (in->op == KO_erow || in->op == KO_krow) {
		int v = M->f->ins[KI_RIDX(in->arg[0])].aux == IN_V;
		if (w > 1)
			return loadf(g, M->buf[v], LLVMBuildMul(g->b, ch, ci(g, 16), ""), 16);
		return loadconv(g, v ? M->V : M->K, LLVMBuildAdd(g->b, M->row, ch, ""), 1);
	}
	return kx_ew(g, in->op, rowchan(M, in->arg[0], ch), rowchan(M, in->arg[1], ch), rowchan(M, in->arg[2], ch), w);
}

/* a reduction's step acc ⊕ x (w lanes: the same per lane) */
static LLVMValueRef redcomb(Gen *g, const KiSem *sem, LLVMValueRef a, LLVMValueRef x)
{
	LLVMBuilderRef b = g->b;
	if (sem->comb == CMB_ADD)
		return LLVMBuildFAdd(b, a, x, "");
	/* x if x beats acc or x is NaN (a NaN stays) */
	LLVMValueRef better = LLVMBuildFCmp(b, sem->comb == CMB_MAX ? LLVMRealUGT : LLVMRealULT, x, a, "");
	LLVMValueRef anan = LLVMBuildFCmp(b, LLVMRealUNO, a, a, "");
	return LLVMBuildSelect(b, LLVMBuildAnd(b, better, LLVMBuildNot(b, anan, ""), ""), x, a, "");
}

/* a reduction's final step over d channels (w lanes) */
static LLVMValueRef redfin(Gen *g, const KiSem *sem, LLVMValueRef v, int w)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef n = cfv(g, g->d, w);
	switch (sem->fin) {
	case FIN_MEAN: return LLVMBuildFDiv(b, v, n, "");
	case FIN_SQRT: return intr(g, "llvm.sqrt", fty(g, w), &v, 1);
	case FIN_RMS: {
		LLVMValueRef q = LLVMBuildFDiv(b, v, n, "");
		return intr(g, "llvm.sqrt", fty(g, w), &q, 1);
	}
	}
	return v;
}

/* a reduction over chan of the row */
static LLVMValueRef rowred(Mg *M, const KiIns *in)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	const KiSem *sem = ki_sem(in->op);
	LLVMValueRef acc = entry_alloca(g, g->f32);
	LLVMBuildStore(b, cfv(g, sem->init, 1), acc);
	Loop lc;
	LLVMValueRef ch = loop_begin(g, ci(g, 0), ci(g, g->d), 1, &lc);
	LLVMValueRef x = rowchan(M, in->arg[0], ch);
	if (sem->map == MAP_SQ)
		x = LLVMBuildFMul(b, x, x, "");
	else if (sem->map == MAP_MUL)
		x = LLVMBuildFMul(b, x, rowchan(M, in->arg[1], ch), "");
	LLVMBuildStore(b, redcomb(g, sem, LLVMBuildLoad2(b, g->f32, acc, ""), x), acc);
	loop_end(g, &lc);
	return redfin(g, sem, LLVMBuildLoad2(b, g->f32, acc, ""), 1);
}

/* a [] value of the row (computed once per row, in instruction order) */
static LLVMValueRef rowscal(Mg *M, int i, int w)
{
	(void)w;
	if (M->val[i])
		return M->val[i];
	const KiIns *in = &M->f->ins[i];
	LLVMValueRef v;
	if (in->op == KO_pinfo)   /* e.count / k.count: the runtime's row of the table (runtime/merge.c) */
		v = ldf(M->g, M->out, LLVMBuildAdd(M->g->b, LLVMBuildMul(M->g->b, ci(M->g, in->aux == PI_ecount ? M->nes : M->nks),
		                                                         M->ld, ""), M->ri, ""));
	else if (ki_sem(in->op)->kind == SEM_RED)
		v = rowred(M, in);
	else
		v = kx_ew(M->g, in->op, mref(M, in->arg[0], 1, rowscal), mref(M, in->arg[1], 1, rowscal),
		          mref(M, in->arg[2], 1, rowscal), 1);
	return M->val[i] = v;
}

/* --- mscal over 16 rows at once (issue 12, session 11) ------------------------------------
** The lanes are 16 rows: each lane does the same f32 operations in the same order as the scalar
** row loop below (a reduction over chan stays one chain per row, channel 0 first), so the row
** scalars are the scalar loop's bit for bit. Per 16 channels, the 16 rows' K (V) channels are
** converted to f32 into a stack buffer and transposed there, then a loop over the 16 channels
** reads channel c of the 16 rows with one load (loops, not unrolled: the compile time matters,
** issue 13). Rows past the last whole block of 16: the scalar loop. */

/* the [] operands of a [chan] value made before the channel loops (they are used after them);
** src[v] set where the value reads K (v = 0) or V (1) */
static void rowpre(Mg *M, KiRef r, int src[2])
{
	if (KI_RKIND(r) != RK_INS)
		return;
	const KiIns *in = &M->f->ins[KI_RIDX(r)];
	if (!(in->axes & AXM(AX_chan))) {
		mref(M, r, 16, rowscalv);
		return;
	}
	if (in->op == KO_erow || in->op == KO_krow) {
		src[M->f->ins[KI_RIDX(in->arg[0])].aux == IN_V] = 1;
		return;
	}
	for (int k = 0; k < 3; k++)
		rowpre(M, in->arg[k], src);
}

/* a reduction over chan of 16 rows: per lane rowred's chain */
static LLVMValueRef rowredv(Mg *M, const KiIns *in)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	const KiSem *sem = ki_sem(in->op);
	LLVMTypeRef vt = fty(g, 16);
	int src[2] = { 0, 0 };
	rowpre(M, in->arg[0], src);
	if (sem->map == MAP_MUL)
		rowpre(M, in->arg[1], src);
	LLVMValueRef acc = entry_alloca(g, vt);
	LLVMBuildStore(b, cfv(g, sem->init, 16), acc);
	Loop lb, lc;
	LLVMValueRef cb = loop_begin(g, ci(g, 0), ci(g, g->d), 16, &lb);
	for (int v = 0; v < 2; v++)
		if (src[v]) {
			Loop lq;
			LLVMValueRef q = loop_begin(g, ci(g, 0), ci(g, 16), 1, &lq);
			storef(g, loadconv(g, v ? M->V : M->K, LLVMBuildAdd(b, LLVMBuildAdd(b, M->row, LLVMBuildMul(b, q, M->ldk, ""), ""),
			                                                   cb, ""), 16),
			       M->buf[v], LLVMBuildMul(b, q, ci(g, 16), ""));
			loop_end(g, &lq);
			loop_plain(g, &lq);
			LLVMValueRef t[16];
			/* transposed in place: kx_tr16's four rounds as a loop (one round's shuffles in the
			** code: four unrolled cost the compile ~0.1 s for a policy of several reductions) */
			Loop lt;
			loop_begin(g, ci(g, 0), ci(g, 4), 1, &lt);
			for (int q = 0; q < 16; q++)
				t[q] = loadf(g, M->buf[v], ci(g, 16 * q), 16);
			kx_tr16round(g, t);
			for (int q = 0; q < 16; q++)
				storef(g, t[q], M->buf[v], ci(g, 16 * q));
			loop_end(g, &lt);
			loop_plain(g, &lt);
		}
	M->cv = loop_begin(g, ci(g, 0), ci(g, 16), 1, &lc);
	LLVMValueRef x = rowchan(M, in->arg[0], M->cv);
	if (sem->map == MAP_SQ)
		x = LLVMBuildFMul(b, x, x, "");
	else if (sem->map == MAP_MUL)
		x = LLVMBuildFMul(b, x, rowchan(M, in->arg[1], M->cv), "");
	LLVMBuildStore(b, redcomb(g, sem, LLVMBuildLoad2(b, vt, acc, ""), x), acc);
	loop_end(g, &lc);
	loop_plain(g, &lc);
	loop_end(g, &lb);
	return redfin(g, sem, LLVMBuildLoad2(b, vt, acc, ""), 16);
}

/* a [] value of 16 rows (rowscal's, lane by lane) */
static LLVMValueRef rowscalv(Mg *M, int i, int w)
{
	(void)w;
	if (M->val[i])
		return M->val[i];
	Gen *g = M->g;
	const KiIns *in = &M->f->ins[i];
	LLVMValueRef v;
	if (in->op == KO_pinfo)
		v = loadf(g, M->out, LLVMBuildAdd(g->b, LLVMBuildMul(g->b, ci(g, in->aux == PI_ecount ? M->nes : M->nks), M->ld, ""),
		                                  M->ri, ""), 16);
	else if (ki_sem(in->op)->kind == SEM_RED)
		v = rowredv(M, in);
	else
		v = kx_ew(g, in->op, mref(M, in->arg[0], 16, rowscalv), mref(M, in->arg[1], 16, rowscalv),
		          mref(M, in->arg[2], 16, rowscalv), 16);
	return M->val[i] = v;
}

/* rows i .. i+15 of side s (every head_dim a multiple of 16, 16-lane AVX-512 targets: elsewhere the
** 16-wide transposes would be split into narrower ones and the scalar loop does every row);
** returns the next row for the scalar loop */
static LLVMValueRef mscal16(Mg *M, int s, LLVMValueRef ldk, LLVMValueRef cnt)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	if (g->d % 16 || g->W != 16)
		return ci(g, 0);
	LLVMTypeRef bt = LLVMArrayType(g->f32, 256);
	for (int v = 0; v < 2; v++) {
		M->buf[v] = entry_alloca(g, bt);
		LLVMSetAlignment(M->buf[v], 64);
	}
	Loop lr;
	LLVMValueRef i = loop_begin(g, ci(g, 0), cnt, 16, &lr);
	M->row = LLVMBuildMul(b, i, ldk, ""), M->ldk = ldk, M->ri = i, M->w = 16;
	memset(M->val, 0, (size_t)M->f->nins * sizeof *M->val);
	for (int j = 0; j < M->f->nins; j++)
		if (M->slot[j] >= 0 && M->side[j] == (s ? KI_MK : KI_ME))
			storef(g, rowscalv(M, j, 16), M->out, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, M->slot[j]), M->ld, ""), i, ""));
	loop_end(g, &lr);
	M->w = 1;
	return lr.iv;
}

/* mscal(K, V, ldk, cnt, side, par, out, ld) */
static void gen_mscal(Mg *M)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	LLVMTypeRef ps[8] = { g->ptr, g->ptr, g->i64, g->i64, g->i64, g->ptr, g->ptr, g->i64 };
	newfn(g, "kvcc_mscal", LLVMVoidTypeInContext(g->cx), ps, 8);
	M->K = LLVMGetParam(g->fn, 0), M->V = LLVMGetParam(g->fn, 1);
	LLVMValueRef ldk = LLVMGetParam(g->fn, 2), cnt = LLVMGetParam(g->fn, 3), side = LLVMGetParam(g->fn, 4);
	LLVMValueRef out = LLVMGetParam(g->fn, 6), ld = LLVMGetParam(g->fn, 7);
	M->par = LLVMGetParam(g->fn, 5), M->w = 1;
	LLVMBasicBlockRef sk = LLVMAppendBasicBlockInContext(g->cx, g->fn, "kept");
	LLVMBasicBlockRef se = LLVMAppendBasicBlockInContext(g->cx, g->fn, "evicted");
	LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, side, ci(g, 0), ""), se, sk);
	for (int s = 0; s < 2; s++) {
		LLVMPositionBuilderAtEnd(b, s ? sk : se);
		M->out = out, M->ld = ld;
		LLVMValueRef i0 = mscal16(M, s, ldk, cnt);   /* whole blocks of 16 rows, then the rest */
		Loop lr;
		LLVMValueRef i = loop_begin2(g, i0, cnt, 1, 1, &lr);
		M->row = LLVMBuildMul(b, i, ldk, "");
		M->ri = i;
		memset(M->val, 0, (size_t)M->f->nins * sizeof *M->val);
		for (int j = 0; j < M->f->nins; j++)
			if (M->slot[j] >= 0 && M->side[j] == (s ? KI_MK : KI_ME))
				storef(g, rowscal(M, j, 1), out, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, M->slot[j]), ld, ""), i, ""));
		loop_end(g, &lr);
		LLVMBuildRetVoid(b);
	}
}

/* --- pair values (mbest, mpair) ------------------------------------------------------------- */

/* a pair value at the current site, M->w lanes (kept tokens k .. k+w-1 of evicted row e) */
static LLVMValueRef pairv(Mg *M, int i, int w)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	if (M->val[i])
		return M->val[i];
	const KiIns *in = &M->f->ins[i];
	LLVMValueRef v;
	if (M->slot[i] >= 0 && M->side[i] == KI_ME)
		v = splat(g, ldf(g, M->es, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, M->slot[i]), M->lde, ""), M->e, "")), w);
	else if (M->slot[i] >= 0)
		v = loadf(g, M->ks, LLVMBuildAdd(b, LLVMBuildMul(b, ci(g, M->slot[i]), M->ldks, ""), M->k, ""), w);
	else if (i == M->dot)
		v = M->dotv;
	else if (in->op == KO_pinfo)
		v = splat(g, in->aux == PI_sim ? M->sim : in->aux == PI_absorbed ? M->abs : M->ntg, w);
	else
		v = kx_ew(g, in->op, mref(M, in->arg[0], w, pairv), mref(M, in->arg[1], w, pairv),
		          mref(M, in->arg[2], w, pairv), w);
	return M->val[i] = v;
}

/* root r's value at the current site: its pair instructions in order (each reads values already
** made: no recursion along a long chain) */
static LLVMValueRef pairroot(Mg *M, KiRef r, int w)
{
	if (KI_RKIND(r) != RK_INS)
		return mref(M, r, w, pairv);
	const KiFn *f = M->f;
	int top = KI_RIDX(r);
	memset(M->need, 0, (size_t)top + 1);
	M->need[top] = 1;
	for (int i = top; i >= 0; i--) {
		const KiIns *in = &f->ins[i];
		if (!M->need[i] || M->slot[i] >= 0 || i == M->dot || in->op == KO_pinfo)
			continue;
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
				M->need[KI_RIDX(in->arg[k])] = 1;
	}
	for (int i = 0; i <= top; i++)
		if (M->need[i])
			pairv(M, i, w);
	return M->val[top];
}

/* mbest(S, ne, nk, j0, es, lde, ks, ldks, par, bsim, bidx): the running arg-max per lane, bsim /
** bidx [ne][W] (W = the kernel's lanes: lane l holds the best of the kept tokens j ≡ l mod W seen so
** far). Each lane sees its kept tokens in increasing order, so a strictly greater value is the
** only one that replaces its best (ties → the lower kept index per lane); the runtime reduces the
** W lanes of a row once after the last tile (runtime/merge.c lanes: the maximum, ties → the lower
** kept index). No horizontal reduction per tile: per evicted row and tile, AT/W vector steps. */
static void gen_mbest(Mg *M)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	LLVMTypeRef ps[11] = { g->ptr, g->i64, g->i64, g->i64, g->ptr, g->i64, g->ptr, g->i64, g->ptr, g->ptr, g->ptr };
	newfn(g, "kvcc_mbest", LLVMVoidTypeInContext(g->cx), ps, 11);
	LLVMValueRef S = LLVMGetParam(g->fn, 0), ne = LLVMGetParam(g->fn, 1), nk = LLVMGetParam(g->fn, 2);
	LLVMValueRef j0 = LLVMGetParam(g->fn, 3), bsim = LLVMGetParam(g->fn, 9), bidx = LLVMGetParam(g->fn, 10);
	M->es = LLVMGetParam(g->fn, 4), M->lde = LLVMGetParam(g->fn, 5), M->ks = LLVMGetParam(g->fn, 6);
	M->ldks = LLVMGetParam(g->fn, 7), M->par = LLVMGetParam(g->fn, 8);
	int W = g->W > 1 ? g->W : 1;
	M->w = W;
	LLVMTypeRef vt = fty(g, W), it = W == 1 ? g->i32 : LLVMVectorType(g->i32, (unsigned)W);
	LLVMValueRef bv = entry_alloca(g, vt), bi = entry_alloca(g, it);
	LLVMValueRef iota[64];
	for (int l = 0; l < W; l++)
		iota[l] = LLVMConstInt(g->i32, (unsigned)l, 0);
	LLVMValueRef io = W == 1 ? iota[0] : LLVMConstVector(iota, (unsigned)W);
	LLVMValueRef nk32 = splat32(g, LLVMBuildTrunc(b, nk, g->i32, ""), W);
	LLVMValueRef j032 = splat32(g, LLVMBuildTrunc(b, j0, g->i32, ""), W);
	Loop lq, lj;
	LLVMValueRef q = loop_begin2(g, ci(g, 0), ne, 1, 1, &lq);
	LLVMValueRef lo = LLVMBuildMul(b, q, ci(g, W), "");
	LLVMBuildStore(b, loadf(g, bsim, lo, W), bv);
	LLVMBuildStore(b, W == 1 ? ld(g, g->i32, bidx, lo, 4) : ld(g, it, gep(g, g->i32, bidx, lo), ci(g, 0), 4), bi);
	LLVMValueRef jc = loop_begin(g, ci(g, 0), ci(g, AT), W, &lj);
	memset(M->val, 0, (size_t)M->f->nins * sizeof *M->val);
	M->e = q, M->k = LLVMBuildAdd(b, j0, jc, "");
	M->dotv = loadf(g, S, LLVMBuildAdd(b, LLVMBuildMul(b, q, ci(g, AT), ""), jc, ""), W);
	M->sim = M->abs = M->ntg = cfv(g, NAN, 1);
	LLVMValueRef sim = pairroot(M, M->f->merge.sim, W);
	LLVMValueRef j = LLVMBuildAdd(b, splat32(g, LLVMBuildTrunc(b, jc, g->i32, ""), W), io, "");
	LLVMValueRef valid = LLVMBuildICmp(b, LLVMIntSLT, j, nk32, "");
	valid = LLVMBuildAnd(b, valid, LLVMBuildFCmp(b, LLVMRealORD, sim, sim, ""), "");
	LLVMValueRef cv = LLVMBuildLoad2(b, vt, bv, ""), cix = LLVMBuildLoad2(b, it, bi, "");
	LLVMValueRef better = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, cix, civ(g, 0, W), ""),
	                                  LLVMBuildFCmp(b, LLVMRealOGT, sim, cv, ""), "");
	better = LLVMBuildAnd(b, valid, better, "");
	LLVMValueRef kj = LLVMBuildAdd(b, j, j032, "");
	LLVMBuildStore(b, LLVMBuildSelect(b, better, sim, cv, ""), bv);
	LLVMBuildStore(b, LLVMBuildSelect(b, better, kj, cix, ""), bi);
	loop_end(g, &lj);
	storef(g, LLVMBuildLoad2(b, vt, bv, ""), bsim, lo);
	if (W == 1)
		st_(g, g->i32, LLVMBuildLoad2(b, it, bi, ""), bidx, lo, 4);
	else
		st_(g, it, LLVMBuildLoad2(b, it, bi, ""), gep(g, g->i32, bidx, lo), ci(g, 0), 4);
	loop_end(g, &lq);
	LLVMBuildRetVoid(b);
}

/* mpair(which, es, lde, e, ks, ldks, k, sim, absorbed, par) */
static void gen_mpair(Mg *M)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	LLVMTypeRef ps[10] = { g->i64, g->ptr, g->i64, g->i64, g->ptr, g->i64, g->i64, g->f32, g->f32, g->ptr };
	newfn(g, "kvcc_mpair", g->f32, ps, 10);
	LLVMValueRef which = LLVMGetParam(g->fn, 0);
	M->es = LLVMGetParam(g->fn, 1), M->lde = LLVMGetParam(g->fn, 2), M->e = LLVMGetParam(g->fn, 3);
	M->ks = LLVMGetParam(g->fn, 4), M->ldks = LLVMGetParam(g->fn, 5), M->k = LLVMGetParam(g->fn, 6);
	M->sim = LLVMGetParam(g->fn, 7), M->abs = LLVMGetParam(g->fn, 8), M->par = LLVMGetParam(g->fn, 9);
	M->w = 1, M->dotv = cfv(g, NAN, 1);
	const KiMerge *m = &M->f->merge;
	/* 3: the similarity of the pair whose dot e·k is the argument sim (msimx's winners) */
	KiRef roots[4] = { m->thr == MT_value ? m->threshold : KI_NIL, m->weight, m->self, m->sim };
	LLVMBasicBlockRef bb[4], bad = LLVMAppendBasicBlockInContext(g->cx, g->fn, "none");
	for (int r = 0; r < 4; r++)
		bb[r] = LLVMAppendBasicBlockInContext(g->cx, g->fn, "root");
	LLVMValueRef sw = LLVMBuildSwitch(b, which, bad, 4), sim = M->sim;
	for (int r = 0; r < 4; r++) {
		LLVMAddCase(sw, ci(g, r), bb[r]);
		LLVMPositionBuilderAtEnd(b, bb[r]);
		memset(M->val, 0, (size_t)M->f->nins * sizeof *M->val);
		M->dotv = r == 3 ? sim : cfv(g, NAN, 1), M->sim = r == 3 ? cfv(g, NAN, 1) : sim;
		/* the reference's ntargets: 1 for the weight (one target), NaN for the self weight */
		M->ntg = cfv(g, r == 1 ? 1.0 : NAN, 1);
		LLVMBuildRet(b, roots[r] == KI_NIL ? cfv(g, NAN, 1) : pairroot(M, roots[r], 1));
	}
	LLVMPositionBuilderAtEnd(b, bad);
	LLVMBuildRet(b, cfv(g, NAN, 1));
}

/* --- the update (mupd) ------------------------------------------------------------------------ */

/* x (cw lanes of f32) rounded to the storage dtype (nearest even) and stored at element idx */
static void storeconv(Gen *g, LLVMValueRef x, LLVMValueRef base, LLVMValueRef idx, int cw)
{
	LLVMBuilderRef b = g->b;
	if (g->dtype == KVCC_F32) {
		LLVMValueRef s = LLVMBuildStore(b, x, gep(g, g->f32, base, idx));
		LLVMSetAlignment(s, 4);
		return;
	}
	LLVMTypeRef ht = cw == 1 ? g->half : LLVMVectorType(g->half, (unsigned)cw);
	LLVMTypeRef st = cw == 1 ? g->i16 : LLVMVectorType(g->i16, (unsigned)cw);
	LLVMValueRef v;
	if (g->dtype == KVCC_F16)
		v = LLVMBuildBitCast(b, LLVMBuildFPTrunc(b, x, ht, ""), st, "");
	else {      /* + 0x7fff + lsb, truncated; NaN stays (quiet) NaN */
		LLVMTypeRef it = cw == 1 ? g->i32 : LLVMVectorType(g->i32, (unsigned)cw);
		LLVMValueRef u = LLVMBuildBitCast(b, x, it, "");
		LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, u, civ(g, 16, cw), ""), civ(g, 1, cw), "");
		LLVMValueRef r = LLVMBuildAdd(b, u, LLVMBuildAdd(b, lsb, civ(g, 0x7fff, cw), ""), "");
		LLVMValueRef nan = LLVMBuildICmp(b, LLVMIntUGT, LLVMBuildAnd(b, u, civ(g, 0x7fffffff, cw), ""),
		                                 civ(g, 0x7f800000, cw), "");
		r = LLVMBuildSelect(b, nan, LLVMBuildOr(b, u, civ(g, 0x00400000, cw), ""), r, "");
		v = LLVMBuildTrunc(b, LLVMBuildLShr(b, r, civ(g, 16, cw), ""), st, "");
	}
	LLVMValueRef s = LLVMBuildStore(b, v, gep(g, g->i16, base, idx));
	LLVMSetAlignment(s, 2);
}

/* mupd's output: each kept / value channel block wk · row + acc, times s (div: divided by s; s
** NULL: as is), rounded and stored over the target row */
static void mupdout(Gen *g, const KiMerge *m, LLVMValueRef K, LLVMValueRef V, LLVMValueRef row, LLVMValueRef wks,
                    LLVMValueRef acc, int cw, LLVMValueRef s, int div)
{
	LLVMBuilderRef b = g->b;
	int d = g->d;
	for (int c = 0; c < 2 * d; c += cw) {
		int isk = c < d;
		if ((isk && !m->keys) || (!isk && !m->values))
			continue;
		LLVMValueRef idx = LLVMBuildAdd(b, row, ci(g, c % d), "");
		LLVMValueRef x = LLVMBuildFAdd(b, LLVMBuildFMul(b, wks, loadconv(g, isk ? K : V, idx, cw), ""),
		                               loadf(g, acc, ci(g, c), cw), "");
		if (s)
			x = div ? LLVMBuildFDiv(b, x, s, "") : LLVMBuildFMul(b, x, s, "");
		storeconv(g, x, isk ? K : V, idx, cw);
	}
}

/* mupd(K, V, ldk, k, EK, EV, rows, w, cnt, wk) */
static void gen_mupd(Mg *M)
{
	Gen *g = M->g;
	LLVMBuilderRef b = g->b;
	const KiMerge *m = &M->f->merge;
	LLVMTypeRef ps[10] = { g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->ptr, g->ptr, g->i64, g->f32 };
	newfn(g, "kvcc_mupd", LLVMVoidTypeInContext(g->cx), ps, 10);
	LLVMValueRef K = LLVMGetParam(g->fn, 0), V = LLVMGetParam(g->fn, 1), ldk = LLVMGetParam(g->fn, 2);
	LLVMValueRef k = LLVMGetParam(g->fn, 3), EK = LLVMGetParam(g->fn, 4), EV = LLVMGetParam(g->fn, 5);
	LLVMValueRef rows = LLVMGetParam(g->fn, 6), w = LLVMGetParam(g->fn, 7), cnt = LLVMGetParam(g->fn, 8);
	LLVMValueRef wk = LLVMGetParam(g->fn, 9);
	int d = g->d, W = g->W > 1 ? g->W : 1, cw = d % W == 0 ? W : d % 8 == 0 ? 8 : 1;
	LLVMTypeRef at = LLVMArrayType(g->f32, (unsigned)(2 * d));
	LLVMValueRef acc = entry_alloca(g, at), den = entry_alloca(g, g->f32);
	LLVMSetAlignment(acc, 64);
	LLVMBuildStore(b, LLVMConstNull(at), acc);
	LLVMBuildStore(b, cfv(g, 0, 1), den);
	Loop li;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), cnt, 1, 1, &li);
	LLVMValueRef wi = ldf(g, w, i);
	LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, g->f32, den, ""), wi, ""), den);
	LLVMValueRef r = LLVMBuildMul(b, LLVMBuildSExt(b, ld(g, g->i32, rows, i, 4), g->i64, ""), ci(g, d), "");
	LLVMValueRef ws = splat(g, wi, cw);
	for (int c = 0; c < 2 * d; c += cw) {
		LLVMValueRef x = loadconv(g, c < d ? EK : EV, LLVMBuildAdd(b, r, ci(g, c % d), ""), cw);
		LLVMValueRef a = loadf(g, acc, ci(g, c), cw);
		LLVMValueRef fa[3] = { x, ws, a };
		storef(g, intr(g, "llvm.fmuladd", fty(g, cw), fa, 3), acc, ci(g, c));
	}
	loop_end(g, &li);
	LLVMValueRef tot = LLVMBuildFAdd(b, wk, LLVMBuildLoad2(b, g->f32, den, ""), "");
	if (m->update == MU_mean) {      /* a total of 0 or not finite: the row is unchanged */
		LLVMValueRef fin = LLVMBuildFCmp(b, LLVMRealOLT, intr(g, "llvm.fabs", g->f32, &tot, 1), cfv(g, INFINITY, 1), "");
		LLVMValueRef ok = LLVMBuildAnd(b, fin, LLVMBuildFCmp(b, LLVMRealONE, tot, cfv(g, 0, 1), ""), "");
		LLVMBasicBlockRef go = LLVMAppendBasicBlockInContext(g->cx, g->fn, "go");
		LLVMBasicBlockRef no = LLVMAppendBasicBlockInContext(g->cx, g->fn, "unchanged");
		LLVMBuildCondBr(b, ok, go, no);
		LLVMPositionBuilderAtEnd(b, no);
		LLVMBuildRetVoid(b);
		LLVMPositionBuilderAtEnd(b, go);
	}
	LLVMValueRef row = LLVMBuildMul(b, k, ldk, ""), wks = splat(g, wk, cw);
	if (m->update != MU_mean) {
		mupdout(g, m, K, V, row, wks, acc, cw, NULL, 0);
		LLVMBuildRetVoid(b);
		return;
	}
	/* issue 12 (session 11): a total that is a power of two (a target and one member, counts 1:
	** 2) takes x · (1/tot), which is x / tot exactly (1/tot exact and normal: both round the same
	** real value), multiplications instead of 2d/16 vdivps; any other total divides */
	LLVMValueRef u = LLVMBuildAnd(b, LLVMBuildBitCast(b, tot, g->i32, ""), LLVMConstInt(g->i32, 0x7fffffff, 0), "");
	LLVMValueRef p2 = LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildAnd(b, u, LLVMConstInt(g->i32, 0x7fffff, 0), ""),
	                                LLVMConstInt(g->i32, 0, 0), "");
	p2 = LLVMBuildAnd(b, p2, LLVMBuildICmp(b, LLVMIntUGE, u, LLVMConstInt(g->i32, 0x00800000, 0), ""), "");
	p2 = LLVMBuildAnd(b, p2, LLVMBuildICmp(b, LLVMIntULE, u, LLVMConstInt(g->i32, 0x7e800000, 0), ""), "");
	LLVMBasicBlockRef bm = LLVMAppendBasicBlockInContext(g->cx, g->fn, "pow2");
	LLVMBasicBlockRef bd = LLVMAppendBasicBlockInContext(g->cx, g->fn, "div");
	LLVMBuildCondBr(b, p2, bm, bd);
	LLVMPositionBuilderAtEnd(b, bm);
	mupdout(g, m, K, V, row, wks, acc, cw, splat(g, LLVMBuildFDiv(b, cfv(g, 1, 1), tot, ""), cw), 0);
	LLVMBuildRetVoid(b);
	LLVMPositionBuilderAtEnd(b, bd);
	mupdout(g, m, K, V, row, wks, acc, cw, splat(g, tot, cw), 1);
	LLVMBuildRetVoid(b);
}

/* --- summary rows (mstore) --------------------------------------------------------------------- */

/* mstore(src, dst, n): n f32 values rounded to the storage dtype at dst (merge summary: the
** centroids runtime/merge.c computes, written as the cache's rows; storeconv's rounding, as mupd) */
void kx_gen_mstore(Gen *g)
{
	LLVMTypeRef ps[3] = { g->ptr, g->ptr, g->i64 };
	newfn(g, "kvcc_mstore", LLVMVoidTypeInContext(g->cx), ps, 3);
	LLVMValueRef src = LLVMGetParam(g->fn, 0), dst = LLVMGetParam(g->fn, 1), n = LLVMGetParam(g->fn, 2);
	Loop li;
	LLVMValueRef i = loop_begin2(g, ci(g, 0), n, 1, 1, &li);
	storeconv(g, ldf(g, src, i), dst, i, 1);
	loop_end(g, &li);
	LLVMBuildRetVoid(g->b);
}

/* --- entry ------------------------------------------------------------------------------------ */

static void stubs(Gen *g, LLVMValueRef fn[4], int nstub)
{
	LLVMTypeRef p8[8] = { g->ptr, g->ptr, g->i64, g->i64, g->i64, g->ptr, g->ptr, g->i64 };
	LLVMTypeRef p11[11] = { g->ptr, g->i64, g->i64, g->i64, g->ptr, g->i64, g->ptr, g->i64, g->ptr, g->ptr, g->ptr };
	LLVMTypeRef p10[10] = { g->i64, g->ptr, g->i64, g->i64, g->ptr, g->i64, g->i64, g->f32, g->f32, g->ptr };
	LLVMTypeRef pu[10] = { g->ptr, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->ptr, g->ptr, g->i64, g->f32 };
	const char *nm[4] = { "kvcc_mscal", "kvcc_mbest", "kvcc_mpair", "kvcc_mupd" };
	LLVMTypeRef *ps[4] = { p8, p11, p10, pu };
	int np[4] = { 8, 11, 10, 10 };
	for (int k = 0; k < nstub; k++) {
		newfn(g, nm[k], k == 2 ? g->f32 : LLVMVoidTypeInContext(g->cx), ps[k], np[k]);
		if (k == 2)
			LLVMBuildRet(g->b, cfv(g, NAN, 1));
		else
			LLVMBuildRetVoid(g->b);
		fn[k] = g->fn;
	}
}

int kx_gen_merge(Gen *g, const KiFn *f, LLVMValueRef fn[4])
{
	if (f->merge.kind == MG_runs || f->merge.kind == MG_next) {   /* issue 12: mupd only (runtime/mpos.c) */
		Mg M = { .g = g, .f = f };
		stubs(g, fn, 3);
		gen_mupd(&M), fn[3] = g->fn;
		return 0;
	}
	if (f->merge.kind != MG_nearest) {     /* drop: the runtime never calls them */
		stubs(g, fn, 4);
		return 0;
	}
	KiMSim sf;
	ki_msimform(f, f->merge.sim, &sf);
	Mg M = { .g = g, .f = f, .dot = sf.dot };
	int *slot = malloc(((size_t)f->nins + 1) * sizeof *slot), nes, nks;
	uint8_t *side = malloc((size_t)f->nins + 1);
	M.val = calloc((size_t)f->nins + 1, sizeof *M.val);
	M.need = malloc((size_t)f->nins + 1);
	if (!slot || !side || !M.val || !M.need || !sf.fast || ki_mslots(f, slot, &nes, &nks) != 0) {
		free(slot), free(side), free(M.val), free(M.need);
		return -1;
	}
	ki_msides(f, side);
	M.slot = slot, M.side = side, M.nes = nes, M.nks = nks;
	gen_mscal(&M), fn[0] = g->fn;
	gen_mbest(&M), fn[1] = g->fn;
	gen_mpair(&M), fn[2] = g->fn;
	gen_mupd(&M), fn[3] = g->fn;
	free(slot), free(side), free(M.val), free(M.need);
	return 0;
}
