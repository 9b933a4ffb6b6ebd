/*
** The CUDA C generator's internal header (codegen/ptx: expr.c, kernels.c,
** compile.c; ptx.h is the backend's interface). How a policy becomes CUDA C:
**
**   compile.c  kp_compile_cuda: kp_generate, then NVRTC per arch (nvrtc.c),
**              resources from the ptxas log, tile and shared-memory sizes
**   kernels.c  kp_generate: the program — the fixed CUDA code (*.cuh, embedded
**              at build time as kp_cuh_* strings: cuh.h), the KvgArgs block,
**              the score kernels (a phase each), decode, select
**   merge.c    compact_merge: merge nearest after kv_select's compaction
**   expr.c     the values inside the kernels: where each instruction lives
**              (kp_analyse), its expression at given loop indices (kp_val),
**              the loops that materialize reductions, softmax statistics,
**              pools and hmean (kp_step)
*/
#ifndef KVCC_PTX_GEN_H
#define KVCC_PTX_GEN_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "codegen/ptx/ptx.h"

#define HAS(m, ax) (((m) & AXM(ax)) != 0)

/* where a needed instruction's value lives (expr.c) */
enum { HM_NONE, HM_INL, HM_BUF, HM_STAT };

/* a growing string; oom set (and text dropped) when an allocation fails */
typedef struct Sb {
	char *p;
	size_t n, cap;
	int oom;
} Sb;

static inline void sbv(Sb *s, const char *fmt, va_list ap)
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

static inline void sb(Sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void sb(Sb *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sbv(s, fmt, ap);
	va_end(ap);
}

/* the generator's state for one policy and specialization */
typedef struct Gen {
	const KiFn *f;
	KiErr *e;
	int dtype, D, G, NT;
	uint8_t *home;       /* [nins] HM_* */
	int *phase;          /* [nins] */
	long long (*off)[4]; /* [nins] workspace offset coefficients (1, N, O, N*O) */
	long long cur[4];    /* running allocation */
	long long wsmax[4];
	int decode;          /* emitting the decode program: attn available */
	int tctx;            /* emitting a tiled step body: Q·Kᵀ comes from the logit tile sS_ */
	int minblk;          /* prologue: __launch_bounds__ minimum blocks per SM (0: none) */
	int lpt;             /* decode lanes per token (0: kp_cuda_lpt) */
	int tmp;
	Sb s;
} Gen;

/* index variable names for g, o, t, c in the current body (NULL: unbound) */
typedef struct Idx {
	const char *v[AX_NUM];
} Idx;

enum { TS_NONE, TS_STAT, TS_OBS };   /* kp_tiledstep: not tiled, softmax stats, obs reduction */

/* expr.c */
KC_FUNC int kp_err(Gen *g, const KiIns *in, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
KC_FUNC int kp_dscalar(const Gen *g, KiRef r, char *buf, size_t n, double def);
KC_FUNC int kp_val(Gen *g, KiRef r, const Idx *ix, int *memo, int d, char *out, size_t outn);
KC_FUNC int *kp_newmemo(Gen *g);
KC_FUNC void kp_mark(const KiFn *f, KiRef r, char *need);
KC_FUNC int kp_analyse(Gen *g, const char *need, int decode);
KC_FUNC int kp_tiledstep(Gen *g, int i);
KC_FUNC int kp_step(Gen *g, int i);
KC_FUNC void kp_wsreserve(Gen *g, int term, long long k, long long out[4]);
KC_FUNC void kp_wsmax(Gen *g);
KC_FUNC void kp_offexpr(const long long o[4], char *buf, size_t n);

/* merge.c: compact_merge (merge nearest) inside kv_select: the workspace and its pointers
** (after the prologue), the compaction's hook that copies the evicted rows aside, and the
** merge after the compaction */
KC_FUNC int kp_merge_decl(Gen *g);
KC_FUNC void kp_merge_copy(Gen *g);
KC_FUNC int kp_merge_body(Gen *g);
/* merge runs (KVMerger, issue 12; codegen/ptx/mpos.c): the selection-order helper before the
** select kernel, the workspace, the neighbour breaks before the compaction, the kept index of
** every held row in the compaction's loop, the runs and the update after it */
KC_FUNC void kp_mpos_funcs(Gen *g);
KC_FUNC int kp_mpos_decl(Gen *g);
KC_FUNC int kp_mpos_tokvals(const KiFn *f);   /* the merge reads ordinary [token] values: 1 (-1: out of memory) */
KC_FUNC int kp_mpos_pre(Gen *g);
KC_FUNC void kp_mpos_mark(Gen *g);
KC_FUNC int kp_mpos_body(Gen *g);

/* summary.c: compact_merge (merge summary) inside kv_select: the workspace, the block and the
** ordinary scores before the selection, the compaction's hook, the k-means after it */
KC_FUNC int kp_sum_decl(Gen *g);
KC_FUNC void kp_sum_pre(Gen *g);
KC_FUNC void kp_sum_first(Sb *s);   /* the device function kv_sfirst (the summary block's row) */
KC_FUNC void kp_sum_copy(Gen *g);
KC_FUNC void kp_sum_thr(Gen *g, const char *T);   /* select threshold at scope head (issue 12) */
KC_FUNC void kp_sum_mass(Gen *g, const char *M);  /* select mass at scope head (issue 12, session 12) */
KC_FUNC void gen_massbisect(Gen *g, const char *pick, const char *sum);   /* kernels.c: mass's prefix count */
KC_FUNC int kp_sum_body(Gen *g);
/* keep.c (issue 13): kv_count, the select keep count (after kv_nkeep) */
KC_FUNC int kp_gen_count(Gen *g);
/* keep.c (session 12): the [token] rows kv (kv[i] = 1) a keep count reduces, materialized by the
** score kernels in the instance's workspace past every other use before the count (after
** kp_analyse; the score itself stays in a.scores) */
KC_FUNC int kp_keepbufs(Gen *g, const uint8_t *kv);

/* kernels.c */
KC_FUNC int kp_generate(const KiFn *f, const KpCudaOpts *o, KpCudaOut *out, KiErr *e);

#endif
