/*
** rt.h — libkvcc_rt's internal header: an open policy (the loaded artifact and the
** descriptor sections it points into), a plan (layout, workspaces sized once, the
** thread pool), and what the runtime's files share. The runtime reads only the
** artifact (runtime/artifact.h): no KIR, no compiler.
**
**   api.c       errors, version, policy queries, plan lifecycle (workspaces)
**   load.c      kvcc_open / kvcc_close: dlopen, descriptor checks, CPU features
**   compress.c  kvcc_compress: run plan on the pool, select, compact
**   decode.c    kvcc_append, kvcc_decode_layer (split-KV attention, observe hook)
**   gpu.c       the GPU plan and launches (cuda.c: the driver through dlopen)
*/
#ifndef KVCC_RT_H
#define KVCC_RT_H

#include <stdint.h>
#include "kvcc.h"
#include "runtime/artifact.h"
#include "runtime/pool.h"

#define TILE 64      /* attn_score token tile of the generated qkt/sstat/sacc (codegen/x86 AT) */
#define DTILE 16     /* decode token tile of the generated kernel (codegen/x86 DT) */

/* axis numbers of KaIns.axes (the compiler's AX_*) */
enum { KR_GROUP, KR_OBS, KR_TOKEN, KR_CHAN, KR_NAX };
#define KR_AX(m, ax) (((m) >> (ax)) & 1)

struct kvcc_policy {
	void *dl;
	const kvcc_artifact *a;
	const KaHdr *h;            /* the descriptor and its sections (inside the blob, checked) */
	const KaParam *par;
	const KaState *st;
	const KaIns *ins;
	const char *str;
	const char *name, *src;
};

/* select, chunk > 1: a partial last chunk (instance k, len tokens) of a scope group */
typedef struct KrPart {
	uint64_t key;
	int k, len, keep;
} KrPart;

struct kvcc_plan {
	kvcc_policy *p;
	kvcc_layout lay;
	int max_obs, threads;
	size_t esz;
	KrPool pool;
	int pool_ok;
	double *par;             /* [npar] params of the observe hook */
	int *step;               /* [layers] x.step of the next decode of each layer */
	/* decode workspaces (sized here; the run path allocates nothing) */
	int64_t lds;             /* logits row stride: capacity rounded up to DTILE, + DTILE */
	int maxch;               /* split-KV chunks per head */
	float *S;                /* [kv_heads][G][lds] logits, then probabilities */
	float *qs;               /* [kv_heads][G][d] rounded, scaled queries */
	float *cst;              /* [kv_heads][maxch][G*(2+d)] chunk states (m, l, acc) */
	float **oval;            /* [kv_heads][nins] the observe loops' stored values */
	double ms[4];            /* last compress: score, select, compact, total */
	/* attn_score workspaces, one per pool thread, for ws_go = G * max_obs query rows: the fused
	** kernels' tiles and Q rows */
	int ws_go;
	float **ws;
	int obs_sized;           /* the workspaces depend on nobs: a compress may pass up to max_obs */
	uint64_t *selkeys;       /* select: candidate keys of one scope group */
	KrPart *part;            /* [layers*kv_heads] select, chunk > 1: partial last chunks of a group */
	int32_t *kidx;           /* [layers][kv_heads][capacity] sorted kept positions per instance */
	int32_t *nkept;          /* [layers][kv_heads] */
	/* compress values, in arenas sized here for capacity tokens and max_obs queries: without a
	** head_mean barrier every instance is scored by one thread in one go, so its values live in
	** that thread's arena and only the score is kept per instance; with one (values cross the
	** barrier) every instance has its own arena */
	float **hsrc, **hdst;    /* [kv_heads] head_mean barrier operands */
	int narena;              /* threads, or layers*kv_heads with head_mean */
	float **arena;           /* [narena] */
	float ***tvals;          /* [narena][nins] value pointers into the arena */
	float *scorebuf;         /* [layers][kv_heads][capacity] */
	float **score;           /* [layers*kv_heads] */
	double *cpar;            /* [npar] compress params */
};

/* api.c */
/* set kvcc_last_error's message (printf format); returns code */
KC_FUNC int kr_seterr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* a descriptor operand's value with params par (NULL: the defaults), def when there is none */
KC_FUNC double kr_ref(const KaRef *r, const double *par, double def);
/* floats of a value with axes m for G, nobs, n tokens, head_dim d */
KC_FUNC size_t kr_count(uint8_t m, int G, int nobs, int n, int d);
KC_FUNC double kr_now_ms(void);

#endif
