/*
** The artifact's descriptor (runtime/artifact.h): what the runtime needs of a policy, written at
** compile time from the KIR and its kernel plan so that loading parses nothing — the
** specialization and CPU features, params, state, when / every / observation count, the select
** rule, and per instruction the run plan (its value's axes, where it is stored, what the runtime
** does there: call a generated loop, run attn_score, run the head_mean barrier).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/x86/x86.h"
#include "compiler/plan.h"
#include "compiler/mplan.h"
#include "runtime/artifact.h"

_Static_assert((int)SC_head == (int)KA_SCOPE_HEAD && (int)SC_layer == (int)KA_SCOPE_LAYER &&
               (int)SC_model == (int)KA_SCOPE_MODEL, "scopes");
_Static_assert(AX_group == 0 && AX_obs == 1 && AX_token == 2 && AX_chan == 3, "KaIns.axes bits");
_Static_assert((int)SEL_topk == (int)KA_SEL_TOPK && (int)SEL_threshold == (int)KA_SEL_THRESHOLD &&
               (int)SEL_mass == (int)KA_SEL_MASS, "select kinds");
_Static_assert((int)SCH_none == (int)KA_SCH_NONE && (int)SCH_pyramid == (int)KA_SCH_PYRAMID &&
               (int)SCH_prefix == (int)KA_SCH_PREFIX && (int)SCH_dynamic == (int)KA_SCH_DYNAMIC, "schedules");
_Static_assert((int)WA_layer == (int)KA_WLAYER && (int)WA_head == (int)KA_WHEAD && (int)WA_group == (int)KA_WGROUP &&
               (int)WA_chan == (int)KA_WCHAN && (int)WA_out == (int)KA_WOUT && KI_MAXWDIM <= 8, "KaWeight axes");

/* a growing byte buffer */
typedef struct Buf {
	char *p;
	size_t n, cap;
	int oom;
} Buf;

static size_t put(Buf *b, const void *src, size_t n, size_t align)
{
	size_t at = (b->n + align - 1) / align * align;
	if (at + n > b->cap) {
		size_t cap = (at + n) * 2 + 256;
		char *q = realloc(b->p, cap);
		if (!q) {
			b->oom = 1;
			return 0;
		}
		memset(q + b->cap, 0, cap - b->cap);
		b->p = q, b->cap = cap;
	}
	if (src)
		memcpy(b->p + at, src, n);
	b->n = at + n;
	return at;
}

static KaRef ref(const KiFn *f, KiRef r)
{
	KaRef k = { KA_NONE, 0, 0 };
	switch (KI_RKIND(r)) {
	case RK_CON: k.kind = KA_CON, k.val = f->con[KI_RIDX(r)]; break;
	case RK_PAR: k.kind = KA_PAR, k.idx = KI_RIDX(r), k.val = f->par[KI_RIDX(r)].def; break;
	}
	return k;
}

/* The run plan of instruction i (see KaIns). */
static KaIns insof(const KiFn *f, const KiPlan *p, int i)
{
	const KiIns *in = &f->ins[i];
	KaIns k = { .axes = in->axes, .line = in->line, .col = in->col };
	int hm = p->cls[i] && in->op == KO_hmean;
	if (p->tout[i] || p->cls[i] == KI_CRED || hm)
		k.store |= KA_SARENA;
	if (p->otout[i])
		k.store |= KA_SOBSERVE;
	if (p->tgen[i] == KI_GEN_START)
		k.what = KA_LOOP, k.arg = ki_segend(p, i);
	else if (p->cls[i] == KI_CRED)
		k.what = in->op == KO_mean ? KA_ATTN_MEAN : KA_ATTN_SUM;
	else if (hm)
		k.what = KA_HMEAN, k.arg = KI_RIDX(in->arg[0]);
	return k;
}

/* KA_FLAYER: an instruction reads the layer's index (x.layer, x.nlayers, rand keyed by layer)
** or the select rule has a budget schedule over the layers */
static int layerdep(const KiFn *f)
{
	if (f->sel.sched != SCH_none)
		return 1;
	for (int i = 0; i < f->nins; i++)
		if (f->ins[i].op == KO_rand ||
		    (f->ins[i].op == KO_info && (f->ins[i].aux == INF_layer || f->ins[i].aux == INF_nlayers)))
			return 1;
	return 0;
}

/* the merge rule the compact_merge kernels run (ki_mkernels took it); -1: out of memory */
static int mergedesc(const KiFn *f, KaHdr *h)
{
	const KiMerge *m = &f->merge;
	h->mline = m->line, h->mcol = m->col;
	h->sflag = ki_msumrow(f);
	if (m->kind == MG_summary) {     /* runtime/merge.c kr_msummary; ki_mkernels: rows constant, iters not a param */
		h->merge = KA_MSUMMARY;
		h->srows = (int32_t)f->con[KI_RIDX(m->rows)];
		h->siters = KI_RKIND(m->iters) == RK_CON ? (int32_t)f->con[KI_RIDX(m->iters)] : 1;
		return 0;
	}
	if (m->kind == MG_runs || m->kind == MG_next) {   /* issue 12: the pair evaluator (mpos.c, runtime/mpos.c) */
		h->merge = m->kind == MG_runs ? KA_MRUNS : KA_MNEXT;
		h->mnext = m->kind == MG_next ? ref(f, m->m) : (KaRef){ KA_NONE, 0, 0 };
		h->mflags = (m->keys ? KA_MKEYS : 0) | (m->values ? KA_MVALUES : 0) | (m->update == MU_sum ? KA_MSUM : 0);
		h->mthr = m->thr == MT_value ? KA_TVALUE : KA_TNONE;
		return 0;
	}
	if (m->kind != MG_nearest)
		return 0;
	int *slot = malloc(((size_t)f->nins + 1) * sizeof *slot);
	if (!slot || ki_mslots(f, slot, &h->nes, &h->nks) != 0) {
		free(slot);
		return -1;
	}
	free(slot);
	h->merge = KA_MNEAREST;
	h->mflags = (m->keys ? KA_MKEYS : 0) | (m->values ? KA_MVALUES : 0) | (m->update == MU_sum ? KA_MSUM : 0);
	h->mthr = m->thr == MT_value ? KA_TVALUE : m->thr == MT_adaptive ? KA_TMEAN : KA_TNONE;
	return 0;
}

void *kx_desc(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, int W, uint64_t cpu, uint64_t kir_hash,
              size_t *n)
{
	return kx_desccfg(f, p, spec, NULL, W, cpu, kir_hash, n);
}

void *kx_desccfg(const KiFn *f, const KiPlan *p, const kvcc_spec *spec, const KxConfig *cfg, int W, uint64_t cpu,
                 uint64_t kir_hash, size_t *n)
{
	Buf b = { 0 };
	KaHdr h = { .format = KA_FORMAT, .kir_hash = kir_hash, .cpu = cpu, .dtype = spec->dtype,
	            .head_dim = spec->head_dim, .group = spec->group, .target = spec->target, .vec_width = W,
	            .nins = f->nins, .npar = f->npar, .nst = f->nst + ki_mcounts(f) + ki_mtau(f), .score = KI_RIDX(f->score),
	            .fsoft = p->has_attn ? p->fsoft : -1, .when = f->when.kind == WH_decode,
	            .scope = f->sel.scope, .sel_line = f->sel.line, .sel_col = f->sel.col };
	memcpy(h.magic, KA_MAGIC, sizeof h.magic);
	snprintf(h.version, sizeof h.version, "%s", KVCC_VERSION);
	for (int k = 0; k < KA_NBUCKET; k++)      /* the decode split per bucket (0: the defaults) */
		h.dtasks[k] = cfg ? cfg->dtasks[k] : 0, h.dmin[k] = cfg ? cfg->dmin[k] : 0;
	if (cfg)
		kx_cfgstr(cfg, h.config, sizeof h.config);
	h.flags = (p->has_attn ? KA_FATTN : 0) | (p->fcausal ? KA_FCAUSAL : 0) | (p->fscale ? KA_FSCALE : 0) |
	          (p->uses_hmean ? KA_FHMEAN : 0) | (p->has_observe ? KA_FOBSERVE : 0) | (p->uses_lse ? KA_FLSE : 0) |
	          (p->uses_qpos ? KA_FQPOS : 0) | (layerdep(f) ? KA_FLAYER : 0) | (cfg && !cfg->noamx ? KA_FAMX : 0) |
	          (cfg && cfg->noamx && !cfg->nodot ? KA_FQBF16 : 0);
	h.every = f->when.kind == WH_decode ? ref(f, f->when.every) : (KaRef){ KA_NONE, 0, 0 };
	h.obs = f->obs_all ? (KaRef){ KA_ALL, 0, 0 } : ref(f, f->obs);
	h.keep_first = ref(f, f->sel.keep_first), h.keep_recent = ref(f, f->sel.keep_recent);
	h.chunk = ref(f, f->sel.chunk);
	if (mergedesc(f, &h) != 0)
		return NULL;
	h.selkind = f->sel.kind, h.nocap = f->sel.nocap, h.tau = ref(f, f->sel.tau);
	h.mass = ref(f, f->sel.mass);
	h.floor = ref(f, f->sel.floor);
	h.cnt = ki_mcounts(f) ? f->nst : -1;     /* the count state row after the declared ones */
	h.cbias = f->merge.bias;
	for (int i = 0; i < f->nw; i++)        /* every out axis has one size (ir.h) */
		if (f->w[i].size > 0)
			h.wout = f->w[i].size;
	h.mtau = ki_mtau(f) ? f->nst + ki_mcounts(f) : -1;   /* D2O's EMA threshold row (issue 12) */
	h.mbeta = h.mtau >= 0 ? ref(f, f->merge.beta) : (KaRef){ KA_NONE, 0, 0 };
	if (h.mtau >= 0)
		h.mthr = KA_TEMA;
	h.sched = f->sel.sched, h.sa = ref(f, f->sel.sa), h.sb = ref(f, f->sel.sb);
	put(&b, NULL, sizeof h, 8);
	h.par = (uint32_t)put(&b, NULL, (size_t)f->npar * sizeof(KaParam), 8);
	h.st = (uint32_t)put(&b, NULL, (size_t)h.nst * sizeof(KaState), 8);
	h.ins = (uint32_t)put(&b, NULL, (size_t)f->nins * sizeof(KaIns), 8);
	h.nw = f->nw;
	h.wt = (uint32_t)put(&b, NULL, (size_t)f->nw * sizeof(KaWeight), 8);
	h.str = (uint32_t)put(&b, "", 1, 8);
	h.name = (uint32_t)(put(&b, f->name, strlen(f->name) + 1, 1) - h.str);
	h.src = (uint32_t)(put(&b, f->src, strlen(f->src) + 1, 1) - h.str);
	for (int i = 0; i < f->npar && !b.oom; i++) {
		KaParam k = { .name = (uint32_t)(put(&b, f->par[i].name, strlen(f->par[i].name) + 1, 1) - h.str),
		              .def = f->par[i].def };
		if (!b.oom)
			memcpy(b.p + h.par + (size_t)i * sizeof k, &k, sizeof k);
	}
	for (int i = 0; i < f->nst && !b.oom; i++) {
		KaState k = { .name = (uint32_t)(put(&b, f->st[i].name, strlen(f->st[i].name) + 1, 1) - h.str),
		              .update = f->st[i].update != KI_NIL, .init = f->st[i].init };
		if (!b.oom)
			memcpy(b.p + h.st + (size_t)i * sizeof k, &k, sizeof k);
	}
	if (h.cnt >= 0 && !b.oom) {                       /* the member counts: init 1 */
		KaState k = { .name = (uint32_t)(put(&b, "count", 6, 1) - h.str), .update = 0, .init = 1 };
		if (!b.oom)
			memcpy(b.p + h.st + (size_t)h.cnt * sizeof k, &k, sizeof k);
	}
	if (h.mtau >= 0 && !b.oom) {                      /* D2O's tau: init NaN (unset) */
		KaState k = { .name = (uint32_t)(put(&b, "tau", 4, 1) - h.str), .update = 0, .init = NAN };
		if (!b.oom)
			memcpy(b.p + h.st + (size_t)h.mtau * sizeof k, &k, sizeof k);
	}
	if (h.sflag >= 0 && !b.oom) {                     /* the summary block's flag: init 0 */
		KaState k = { .name = (uint32_t)(put(&b, "summary", 8, 1) - h.str), .update = 0, .init = 0 };
		if (!b.oom)
			memcpy(b.p + h.st + (size_t)h.sflag * sizeof k, &k, sizeof k);
	}
	for (int i = 0; i < f->nw && !b.oom; i++) {     /* KA_WOUT: the out axis */
		const KiWeight *w = &f->w[i];
		KaWeight k = { .name = (uint32_t)(put(&b, w->name, strlen(w->name) + 1, 1) - h.str), .ndim = w->ndim,
		               .line = w->line, .col = w->col };
		for (int j = 0; j < w->ndim; j++)
			k.ax[j] = w->ax[j];
		if (!b.oom)
			memcpy(b.p + h.wt + (size_t)i * sizeof k, &k, sizeof k);
	}
	for (int i = 0; i < f->nins && !b.oom; i++) {
		KaIns k = insof(f, p, i);
		memcpy(b.p + h.ins + (size_t)i * sizeof k, &k, sizeof k);
	}
	put(&b, NULL, 0, 16);
	if (b.oom || b.n > 0xffffffffu) {
		free(b.p);
		return NULL;
	}
	h.size = (uint32_t)b.n;
	memcpy(b.p, &h, sizeof h);
	*n = b.n;
	return b.p;
}
