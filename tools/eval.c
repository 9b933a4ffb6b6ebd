/*
** kvcc eval — quality versus budget on a real model: the prefill-compress-continue
** protocol (kvpress semantics) on examples/llama's model (doc/eval.md).
**
**   kvcc eval POLICY.lua [POLICY.lua ...] --model M --tokenizer T --data FILE
**        [--ratios 0,0.25,0.5,0.75] [--param [policy.]name=value ...] [--stories a:b]
**        [--chunk-chars K] [--from TEXT] [--csv OUT] [--plot OUT.png] [--threads N]
**
** Per story: tokens = [BOS] + encode(story) truncated to 512 (the model's seq_len),
** C = len div 2. The context 0..C-1 is prefilled with full causal attention (libkvcc's
** decode attention, kvcc_append + kvcc_decode_layer, one token at a time, into a
** kvcc_cache); every (layer, KV head) is compressed with the policy at ratio r
** (kvcc_compress, n_keep = floor(C (1 - r))), the observation queries being the post-RoPE
** queries of the last `obs` context positions (the count the policy declares: its window
** param, or all C positions for obs = kvcc.all); then the continuation C..len-2 is
** teacher-forced at its own RoPE positions (never re-indexed), attending to the compressed
** cache plus the continuation tokens already fed, and -log softmax(logits)[next token]
** is accumulated. The mean NLL pools every prediction of every story used.
**
** A story whose context is not longer than the policy's observation window (C <= window)
** is skipped for that policy (every ratio) and listed in a note under the table; the
** table's `stories` column counts the stories used.
**
** Decode policies (when = kvcc.decode{every = N}, e.g. H2O) are not compressed after the
** prefill; their observe hook runs inside decode attention from the first context token
** on, and at every N-th continuation step s (1, 2, ...) a head holding more than
** B_s = floor(C (1 - r)) + s rows is compressed to B_s (kvcc_compress with that budget):
** the same number of rows the prefill policies hold at that step, so every policy is
** compared at equal memory, and ratio 0 never compresses.
**
** The prefill is shared: once per story for all prefill policies without per-token state
** (their K, V, pos and the captured queries are snapshotted and restored for each policy
** and ratio), once per story and policy for the others. Stories run in parallel (one
** llama state, cache and set of plans per thread); the sums are reduced in story order,
** so the numbers do not depend on the thread count.
*/
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvcc.h"
#include "tools/tools.h"
#include "lib/llama/kvglue.h"
#include "lib/llama/model.h"
#include "lib/llama/stories.h"
#include "lib/llama/tokenizer.h"

enum { MAXPOL = 64, MAXRATIO = 64, MAXSET = 128, MAXTOK = 512 };

typedef struct Pol {
	const char *path;
	kvcc_policy *p;
	const char *name;
	double *par;            /* [npar] runtime values: defaults, then --param */
	int npar;
	int decode, every;      /* when = kvcc.decode{every} */
	int nstate;             /* per-token state tensors */
	int obs;                /* observation queries: -1 every context position, 0 none */
	char label[16];         /* the window column: the count, "all" or "-" */
} Pol;

typedef struct Res {
	double sum;             /* NLL summed over the story's predictions */
	long n;                 /* predictions */
	int skipped;            /* context not longer than the policy's window */
} Res;

typedef struct Eval {
	Pol pol[MAXPOL];
	int npol;
	const char *wfile[8];   /* --weights files */
	int nwf;
	KtWeights w;            /* their arrays (the policies' weights, by name) */
	double ratio[MAXRATIO];
	int nratio;
	const char *set[MAXSET];
	int nset;
	const char *model, *tokenizer, *data, *stories, *from, *csv, *plot;
	long chunk;
	int threads;
	LlamaModel m;
	LlamaTokenizer tok;
	LlamaStories S;
	int lo, hi, nst;        /* stories lo .. hi-1, nst = hi - lo */
	int **ids, *ntok;       /* [nst] tokens of each story, truncated to cap */
	Res *res;               /* [nst][npol][nratio] */
	int cap;                /* rows per (layer, head): the longest story */
	int nstate;             /* the most state tensors of any policy */
	int shared;             /* first policy of the shared prefill, -1: none */
	/* work queue and progress */
	pthread_mutex_t mu;
	int next, done, err, progress;
	char errmsg[700];
	double t0, work, worked;
} Eval;

typedef struct Worker {
	Eval *E;
	LlamaState st;
	LlamaCache base;        /* the prefill snapshot */
	LlamaObs all, cur;      /* queries of every context position; of the current step */
	kvcc_plan *plan[MAXPOL];
	float *Q;               /* packed observation queries */
	int32_t *qpos;
} Worker;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char usage_text[] =
	"usage: kvcc eval POLICY.lua [POLICY.lua ...] --model M --tokenizer T --data FILE\n"
	"           [--ratios 0,0.25,0.5,0.75] [--param [policy.]name=value]... [--stories a:b]\n"
	"           [--chunk-chars K] [--from TEXT] [--csv OUT] [--plot OUT.png] [--threads N]\n"
	"           [--weights W.npz]...\n"
	"NLL of the continuation after compressing each story's first half (prefill-compress-continue);\n"
	"see doc/eval.md.\n";

static int usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvcc: eval: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: kvcc eval POLICY.lua [POLICY.lua ...] --model M --tokenizer T --data FILE\n"
	                "           [--ratios 0,0.25,0.5,0.75] [--param [policy.]name=value]... [--stories a:b]\n"
	                "           [--chunk-chars K] [--from TEXT] [--csv OUT] [--plot OUT.png] [--threads N]\n"
	                "           [--weights W.npz]...\n"
	                "(kvcc --help; doc/eval.md)\n");
	return 2;
}

static int error(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvcc: eval: error: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	return 1;
}

static int endswith(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Records the first error of a worker; the others stop at their next story. */
static int werr(Worker *W, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int werr(Worker *W, const char *fmt, ...)
{
	Eval *E = W->E;
	va_list ap;
	pthread_mutex_lock(&E->mu);
	if (!E->err) {
		E->err = 1;
		va_start(ap, fmt);
		vsnprintf(E->errmsg, sizeof E->errmsg, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&E->mu);
	return -1;
}

/* --- arguments ------------------------------------------------------------------------- */

static int parse_ratios(Eval *E, const char *s)
{
	E->nratio = 0;
	const char *p = s;
	while (*p) {
		char *e;
		double r = strtod(p, &e);
		if (e == p || (*e && *e != ',') || !(r >= 0 && r < 1))
			return usage("--ratios wants comma-separated numbers in [0, 1), got '%s'", s);
		for (int i = 0; i < E->nratio; i++)
			if (E->ratio[i] == r)
				return usage("--ratios lists a ratio twice: '%s'", s);
		if (E->nratio == MAXRATIO)
			return usage("--ratios: too many ratios in '%s'", s);
		E->ratio[E->nratio++] = r;
		p = *e ? e + 1 : e;
		if (*e == ',' && !*p)
			return usage("--ratios wants comma-separated numbers in [0, 1), got '%s'", s);
	}
	if (!E->nratio)
		return usage("--ratios is empty%s", "");
	return 0;
}

/* 0, 2 (a usage error, reported), or -1 after --help. */
static int parse_args(Eval *E, int argc, char **argv)
{
	const char *ratios = "0,0.25,0.5,0.75";
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && (i++, 1))    /* its value is v (checked below) */
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(usage_text, stdout);
			return -1;
		}
		if (!strcmp(a, "--model") || !strcmp(a, "--tokenizer") || !strcmp(a, "--data") ||
		    !strcmp(a, "--ratios") || !strcmp(a, "--param") || !strcmp(a, "--stories") ||
		    !strcmp(a, "--chunk-chars") || !strcmp(a, "--from") || !strcmp(a, "--csv") ||
		    !strcmp(a, "--plot") || !strcmp(a, "--threads") || !strcmp(a, "--weights")) {
			if (!v)
				return usage("%s needs a value", a);
		}
		if (OPT("--model"))
			E->model = v;
		else if (OPT("--tokenizer"))
			E->tokenizer = v;
		else if (OPT("--data"))
			E->data = v;
		else if (OPT("--ratios"))
			ratios = v;
		else if (OPT("--stories"))
			E->stories = v;
		else if (OPT("--from"))
			E->from = v;
		else if (OPT("--csv"))
			E->csv = v;
		else if (OPT("--plot"))
			E->plot = v;
		else if (OPT("--weights")) {
			if (E->nwf == 8)
				return usage("too many --weights%s", "");
			E->wfile[E->nwf++] = v;
		} else if (OPT("--param")) {
			if (E->nset == MAXSET)
				return usage("too many --param%s", "");
			E->set[E->nset++] = v;
		} else if (OPT("--chunk-chars")) {
			char *e;
			E->chunk = strtol(v, &e, 10);
			if (e == v || *e || E->chunk < 1 || E->chunk > 100000000)
				return usage("--chunk-chars wants a positive number of characters, got '%s'", v);
		} else if (OPT("--threads")) {
			char *e;
			long t = strtol(v, &e, 10);
			if (e == v || *e || t < 1 || t > 256)
				return usage("--threads wants a number in 1..256, got '%s'", v);
			E->threads = (int)t;
		} else if (a[0] == '-')
			return usage("unknown option '%s'", a);
		else {
			if (E->npol == MAXPOL)
				return usage("too many policies (at most 64)%s", "");
			E->pol[E->npol++].path = a;
		}
#undef OPT
	}
	if (!E->npol)
		return usage("no policy given%s", "");
	if (!E->model || !E->tokenizer || !E->data)
		return usage("needs --model, --tokenizer and --data%s", "");
	if (E->plot && !endswith(E->plot, ".png"))
		return usage("--plot writes a PNG: give a file name ending in .png, got '%s'", E->plot);
	for (int i = 0; i < E->npol; i++)
		if (endswith(E->pol[i].path, ".so"))
			return usage("%s: eval compiles the policy itself: give its .lua (or .kir)", E->pol[i].path);
	for (int j = 0; j < E->nset; j++) {
		const char *eq = strchr(E->set[j], '=');
		char *e;
		if (!eq || eq == E->set[j] || (strtod(eq + 1, &e), e == eq + 1 || *e))
			return usage("--param wants [policy.]name=number, got '%s'", E->set[j]);
	}
	return parse_ratios(E, ratios);
}

/* --- policies -------------------------------------------------------------------------- */

/* Compiles every policy for the model, applies --param, reads when/state/obs. */
static int setup_policies(Eval *E)
{
	const LlamaConfig *cfg = &E->m.cfg;
	char err[700];
	for (int i = 0; i < E->npol; i++) {
		Pol *P = &E->pol[i];
		if (llama_policy_load(P->path, cfg, &P->p, err, sizeof err)) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		P->name = kvcc_policy_name(P->p);
		P->npar = kvcc_param_count(P->p);
		P->par = calloc((size_t)P->npar + 1, sizeof *P->par);
		if (!P->par)
			return error("%s", "out of memory");
		for (int k = 0; k < P->npar; k++)
			kvcc_param_info(P->p, k, NULL, &P->par[k]);
		P->decode = llama_policy_is_decode(P->p, &P->every);
		P->nstate = llama_policy_nstate(P->p);
		if (P->nstate > E->nstate)
			E->nstate = P->nstate;
		if ((P->decode || P->nstate) && !llama_kvcc_has_decode()) {
			snprintf(err, sizeof err, "%s: policy %s runs during decoding, and this libkvcc has no decode attention",
			         P->path, P->name);
			return error("%s", err);
		}
	}
	/* --param name=value (every policy with that param) or policy.name=value */
	for (int j = 0; j < E->nset; j++) {
		const char *s = E->set[j], *eq = strchr(s, '='), *dot = memchr(s, '.', (size_t)(eq - s));
		char pname[64] = "", name[64];
		const char *n0 = dot ? dot + 1 : s;
		if ((dot && (size_t)(dot - s) >= sizeof pname) || (size_t)(eq - n0) >= sizeof name || eq == n0)
			return usage("--param wants [policy.]name=number, got '%s'", s);
		if (dot)
			memcpy(pname, s, (size_t)(dot - s)), pname[dot - s] = 0;
		memcpy(name, n0, (size_t)(eq - n0)), name[eq - n0] = 0;
		double v = strtod(eq + 1, NULL);
		int hit = 0, polhit = 0;
		for (int i = 0; i < E->npol; i++) {
			Pol *P = &E->pol[i];
			if (dot && strcmp(pname, P->name) != 0)
				continue;
			polhit = 1;
			for (int k = 0; k < P->npar; k++) {
				const char *pn;
				kvcc_param_info(P->p, k, &pn, NULL);
				if (!strcmp(pn, name))
					P->par[k] = v, hit = 1;
			}
		}
		if (dot && !polhit)
			return usage("--param %s: no policy of that name is being evaluated", s);
		if (!hit) {
			snprintf(err, sizeof err, "--param %s: %s has no param '%s'", s,
			         dot ? pname : (E->npol == 1 ? E->pol[0].name : "none of the policies"), name);
			return usage("%s", err);
		}
	}
	/* observation queries: what the policy declares (obs = N | param | kvcc.all; -1 = all) */
	for (int i = 0; i < E->npol; i++) {
		Pol *P = &E->pol[i];
		if (kvcc_policy_obs(P->p, P->par, &P->obs) != 0)
			return usage("%s", kvcc_last_error());
		if (P->obs > MAXTOK) {
			snprintf(err, sizeof err, "policy %s: its observation window must be at most %d, got %d", P->name,
			         MAXTOK, P->obs);
			return usage("%s", err);
		}
		if (P->obs < 0)
			snprintf(P->label, sizeof P->label, "all");
		else if (P->obs > 0)
			snprintf(P->label, sizeof P->label, "%d", P->obs);
		else
			snprintf(P->label, sizeof P->label, "-");
	}
	E->shared = -1;
	for (int i = 0; i < E->npol && E->shared < 0; i++)
		if (!E->pol[i].decode && !E->pol[i].nstate)
			E->shared = i;
	return 0;
}

/* --- the protocol ------------------------------------------------------------------------ */

static void bind(Worker *W, int pi)
{
	if (llama_kvcc_has_decode()) {
		W->st.layer = llama_kvcc_layer;
		W->st.layer_user = W->plan[pi];
	} else
		W->st.layer = NULL;        /* the example's reference attention, same cache */
}

static void setstep(Worker *W, int pi, int step)
{
#ifdef LLAMA_KVCC_DECODE
	kvcc_plan_set_step(W->plan[pi], step);
#else
	(void)W, (void)pi, (void)step;
#endif
}

/* Prefill of the context with policy pi's plan into W->base, queries into W->all. */
static int prefill(Worker *W, int si, int pi, const int *ids, int C)
{
	llama_cache_reset(&W->st.cache);
	bind(W, pi);
	setstep(W, pi, 0);
	if (llama_prefill(&W->st, ids, C, 0, &W->all, NULL))
		return werr(W, "story %d: prefill: %s", W->E->lo + si, W->st.err);
	if (llama_cache_copy(&W->base, &W->st.cache))
		return werr(W, "story %d: cache snapshot failed", W->E->lo + si);
	return 0;
}

/* Teacher-forced continuation C .. n-2 on the cache as it is; decode policies compress at
** their trigger steps to B_s = n_keep + s. */
static int cont(Worker *W, int si, int pi, int ri, const int *ids, int n, int C, Res *r)
{
	Eval *E = W->E;
	Pol *P = &E->pol[pi];
	const int V = E->m.cfg.vocab_size;
	long nkeep = (long)((double)C * (1.0 - E->ratio[ri]));
	double sum = 0;
	long cnt = 0;
	bind(W, pi);
	setstep(W, pi, C);
	for (int p = C; p + 1 < n; p++) {
		if (P->decode) {
			W->cur.start = p;
			W->cur.count = 0;
			W->st.obs = &W->cur;
		}
		const float *lg = llama_forward(&W->st, ids[p], p);
		W->st.obs = NULL;
		if (!lg)
			return werr(W, "story %d, %s ratio %g: position %d: %s", E->lo + si, P->name, E->ratio[ri], p,
			            W->st.err);
		sum += llama_nll(lg, V, ids[p + 1]);
		cnt++;
		long s = p - C + 1;
		if (P->decode && s % P->every == 0 && llama_cache_max_len(&W->st.cache) > nkeep + s) {
			int32_t qp = p;
			kvcc_obs ko = { 1, W->cur.q, NULL, &qp };
			kvcc_args ka = { 0, nkeep + s, P->par, 1, NULL };
			if (kvcc_compress(W->plan[pi], &W->st.cache.kc, &ko, &ka))
				return werr(W, "story %d, %s ratio %g: kvcc_compress at position %d: %s", E->lo + si, P->name,
				            E->ratio[ri], p, kvcc_last_error());
		}
	}
	r->sum = sum;
	r->n = cnt;
	return 0;
}

/* Every ratio of policy pi from the snapshot in W->base (queries in W->all). */
static int ratios(Worker *W, int si, int pi, const int *ids, int n, int C)
{
	Eval *E = W->E;
	Pol *P = &E->pol[pi];
	Res *r = &E->res[((size_t)si * E->npol + pi) * E->nratio];
	int O = P->obs < 0 ? C : P->obs;
	if (!P->decode && P->obs > 0 && C <= O) {
		for (int ri = 0; ri < E->nratio; ri++)
			r[ri].skipped = 1;
		return 0;
	}
	kvcc_obs ko = { O, W->Q, NULL, W->qpos };
	if (!P->decode && O > 0 && llama_obs_pack(&W->all, O, W->Q, W->qpos))
		return werr(W, "story %d: %d observation queries were not captured", E->lo + si, O);
	for (int ri = 0; ri < E->nratio; ri++) {
		if (llama_cache_copy(&W->st.cache, &W->base))
			return werr(W, "story %d: cache restore failed", E->lo + si);
		if (!P->decode) {
			kvcc_args ka = { E->ratio[ri], -1, P->par, 1, NULL };
			if (kvcc_compress(W->plan[pi], &W->st.cache.kc, O > 0 ? &ko : NULL, &ka))
				return werr(W, "story %d (context %d tokens), %s ratio %g: kvcc_compress: %s", E->lo + si, C,
				            P->name, E->ratio[ri], kvcc_last_error());
		}
		if (cont(W, si, pi, ri, ids, n, C, &r[ri]))
			return -1;
	}
	return 0;
}

static int story(Worker *W, int si)
{
	Eval *E = W->E;
	const int *ids = E->ids[si];
	int n = E->ntok[si], C = n / 2;
	if (C < 1)                         /* nothing to compress, nothing to predict */
		return 0;
	if (E->shared >= 0) {
		if (prefill(W, si, E->shared, ids, C))
			return -1;
		for (int pi = 0; pi < E->npol; pi++)
			if (!E->pol[pi].decode && !E->pol[pi].nstate && ratios(W, si, pi, ids, n, C))
				return -1;
	}
	for (int pi = 0; pi < E->npol; pi++)
		if ((E->pol[pi].decode || E->pol[pi].nstate) &&
		    (prefill(W, si, pi, ids, C) || ratios(W, si, pi, ids, n, C)))
			return -1;
	return 0;
}

static void progress(Eval *E)
{
	double el = now() - E->t0, f = E->work > 0 ? E->worked / E->work : 1;
	int w = 30, k = (int)(f * w + 0.5);
	char bar[64];
	for (int i = 0; i < w; i++)
		bar[i] = i < k ? '#' : '.';
	bar[w] = 0;
	fprintf(stderr, "\r  eval [%s] %3.0f%%  %d/%d stories  %.0f s", bar, 100 * f, E->done, E->nst, el);
	if (f > 0.02 && f < 1)
		fprintf(stderr, ", about %.0f s left", el / f - el);
	fprintf(stderr, "\033[K");
	fflush(stderr);
}

static void *worker(void *arg)
{
	Worker *W = arg;
	Eval *E = W->E;
	for (;;) {
		pthread_mutex_lock(&E->mu);
		int si = E->err ? E->nst : E->next++;
		pthread_mutex_unlock(&E->mu);
		if (si >= E->nst || story(W, si))
			break;
		pthread_mutex_lock(&E->mu);
		E->done++;
		E->worked += E->ntok[si];
		if (E->progress)
			progress(E);
		pthread_mutex_unlock(&E->mu);
	}
	return NULL;
}
/* --weights: the files' arrays; every weight a policy declares must be among them (by name) */
static int setup_weights(Eval *E)
{
	KiErr e = { 0 };
	for (int i = 0; i < E->nwf; i++)
		if (kt_weights_read(&E->w, E->wfile[i], &e) != 0)
			return error("%s", e.msg);
	for (int i = 0; i < E->npol; i++)
		for (int k = 0; k < kvcc_weight_count(E->pol[i].p); k++) {
			const char *nm = NULL;
			kvcc_weight_info(E->pol[i].p, k, &nm, NULL);
			int j = 0;
			while (j < E->w.n && strcmp(E->w.w[j].name, nm) != 0)
				j++;
			if (j == E->w.n) {
				char m[300];
				snprintf(m, sizeof m, "%s declares weight '%s': give it with --weights FILE.npz (kvcc calibrate "
				         "writes them)", E->pol[i].name, nm);
				return error("%s", m);
			}
		}
	return 0;
}

/* policy i's weights into its plan (f32 copies; the plan checks shape and values) */
static int plan_weights(const Eval *E, int i, kvcc_plan *pl)
{
	for (int k = 0; k < kvcc_weight_count(E->pol[i].p); k++) {
		const char *nm = NULL;
		kvcc_weight_info(E->pol[i].p, k, &nm, NULL);
		const KiWData *d = NULL;
		for (int j = 0; j < E->w.n && !d; j++)
			if (!strcmp(E->w.w[j].name, nm))
				d = &E->w.w[j];
		if (!d)
			return error("weight '%s' is missing", nm);
		int64_t shape[KI_MAXWDIM];
		size_t n = 1;
		for (int j = 0; j < d->ndim && j < KI_MAXWDIM; j++)
			shape[j] = d->shape[j], n *= (size_t)d->shape[j];
		float *f = malloc((n + 1) * sizeof *f);
		if (!f)
			return error("%s", "out of memory");
		for (size_t j = 0; j < n; j++)
			f[j] = (float)d->data[j];
		int rc = kvcc_plan_set_weight(pl, nm, f, d->ndim, shape);
		free(f);
		if (rc)
			return error("%s", kvcc_last_error());
	}
	return 0;
}


static int worker_init(Eval *E, Worker *W)
{
	const LlamaConfig *cfg = &E->m.cfg;
	memset(W, 0, sizeof *W);
	W->E = E;
	if (llama_state_init(&W->st, &E->m, E->cap, E->nstate) ||
	    llama_cache_init(&W->base, cfg->n_layers, cfg->n_kv_heads, cfg->head_dim, E->cap, E->nstate) ||
	    llama_obs_init(&W->all, cfg, E->cap) || llama_obs_init(&W->cur, cfg, 1) ||
	    !(W->Q = malloc((size_t)cfg->n_layers * cfg->n_heads * E->cap * cfg->head_dim * sizeof *W->Q)) ||
	    !(W->qpos = malloc((size_t)E->cap * sizeof *W->qpos)))
		return error("%s", "out of memory");
	for (int i = 0; i < E->npol; i++) {
		if (kvcc_plan_create(E->pol[i].p, &W->st.cache.lay, E->cap, 1, &W->plan[i]))
			return error("kvcc_plan_create: %s", kvcc_last_error());
		if (plan_weights(E, i, W->plan[i]))
			return 1;
#ifdef LLAMA_KVCC_DECODE
		if (kvcc_plan_set_params(W->plan[i], E->pol[i].par))
			return error("kvcc_plan_set_params: %s", kvcc_last_error());
#endif
	}
	return 0;
}

static void worker_free(Worker *W)
{
	if (!W->E)
		return;
	for (int i = 0; i < W->E->npol; i++)
		kvcc_plan_destroy(W->plan[i]);
	llama_state_free(&W->st);
	llama_cache_free(&W->base);
	llama_obs_free(&W->all);
	llama_obs_free(&W->cur);
	free(W->Q);
	free(W->qpos);
}

/* --- output ------------------------------------------------------------------------------ */

typedef struct Row {
	double nll;
	long n;
	int used;
} Row;

static Row total(const Eval *E, int pi, int ri)
{
	Row t = { 0, 0, 0 };
	double sum = 0;
	for (int si = 0; si < E->nst; si++) {
		const Res *r = &E->res[((size_t)si * E->npol + pi) * E->nratio + ri];
		if (r->skipped)
			continue;
		sum += r->sum;
		t.n += r->n;
		t.used++;
	}
	t.nll = t.n ? sum / (double)t.n : NAN;
	return t;
}

static const char *basename_of(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static void table(const Eval *E, double seconds, int threads)
{
	int r0 = -1;
	for (int ri = 0; ri < E->nratio; ri++)
		if (E->ratio[ri] == 0)
			r0 = ri;
	printf("kvcc eval: %s on %d %s of %s (%d:%d), prefill-compress-continue, %.1f s on %d thread%s\n",
	       basename_of(E->model), E->nst, E->chunk ? "chunks" : "stories", basename_of(E->data), E->lo, E->hi,
	       seconds, threads, threads == 1 ? "" : "s");
	printf("%-20s %6s %7s %8s %12s %10s %8s%s\n", "policy", "ratio", "window", "stories", "predictions", "nll",
	       "ppl", r0 >= 0 ? "     dnll" : "");
	for (int pi = 0; pi < E->npol; pi++)
		for (int ri = 0; ri < E->nratio; ri++) {
			Row t = total(E, pi, ri);
			printf("%-20s %6.3g %7s %8d %12ld %10.6f %8.4f", E->pol[pi].name, E->ratio[ri], E->pol[pi].label,
			       t.used, t.n, t.nll, exp(t.nll));
			if (r0 >= 0)
				printf(" %+8.4f", t.nll - total(E, pi, r0).nll);
			putchar('\n');
		}
	if (r0 >= 0)
		printf("(dnll: nll minus the same policy's nll at ratio 0, the uncompressed cache)\n");
	for (int pi = 0; pi < E->npol; pi++) {
		int skipped = 0;
		for (int si = 0; si < E->nst; si++)
			skipped += E->res[((size_t)si * E->npol + pi) * E->nratio].skipped;
		if (!skipped)
			continue;
		printf("note: %s skipped %d of %d stories whose context is not longer than its observation window "
		       "(C <= %d):", E->pol[pi].name, skipped, E->nst, E->pol[pi].obs);
		int k = 0;
		for (int si = 0; si < E->nst; si++)
			if (E->res[((size_t)si * E->npol + pi) * E->nratio].skipped && k++ < 20)
				printf(" %d", E->lo + si);
		printf("%s\n", k > 20 ? " ..." : "");
	}
	fflush(stdout);
}

static int write_csv(const Eval *E)
{
	FILE *f = fopen(E->csv, "w");
	if (!f) {
		fprintf(stderr, "kvcc: eval: error: %s: cannot write: %s\n", E->csv, strerror(errno));
		return 1;
	}
	fprintf(f, "policy,ratio,window,stories,predictions,nll\n");
	for (int pi = 0; pi < E->npol; pi++)
		for (int ri = 0; ri < E->nratio; ri++) {
			Row t = total(E, pi, ri);
			fprintf(f, "%s,%g,%s,%d,%ld,%.6f\n", E->pol[pi].name, E->ratio[ri], E->pol[pi].label, t.used, t.n,
			        t.nll);
		}
	if (fclose(f) != 0) {
		fprintf(stderr, "kvcc: eval: error: %s: write error\n", E->csv);
		return 1;
	}
	return 0;
}

/* gnuplot string literal (double quotes): escape \ and ", newlines as \n */
static void gpstr(FILE *g, const char *s)
{
	fputc('"', g);
	for (; *s; s++) {
		if (*s == '\n') {
			fputs("\\n", g);
			continue;
		}
		if (*s == '"' || *s == '\\')
			fputc('\\', g);
		fputc(*s, g);
	}
	fputc('"', g);
}

static int write_plot(const Eval *E)
{
	/* the script goes to a file first: a failing gnuplot then leaves something to look at */
	char script[4096];
	snprintf(script, sizeof script, "%s.gp", E->plot);
	FILE *g = fopen(script, "w");
	if (!g) {
		fprintf(stderr, "kvcc: eval: error: %s: cannot write: %s\n", script, strerror(errno));
		return 1;
	}
	double lo = E->ratio[0], hi = E->ratio[0], full = NAN;
	for (int ri = 0; ri < E->nratio; ri++) {
		lo = fmin(lo, E->ratio[ri]), hi = fmax(hi, E->ratio[ri]);
		if (E->ratio[ri] == 0)
			for (int pi = 0; pi < E->npol && isnan(full); pi++) {
				Row t = total(E, pi, ri);
				if (t.used == E->nst)
					full = t.nll;
			}
	}
	fprintf(g, "# kvcc eval plot: gnuplot %s\n", basename_of(script));
	fprintf(g, "set terminal pngcairo size 1000,650 font \"DejaVu Sans,11\" noenhanced\nset output ");
	gpstr(g, E->plot);
	char title[1024];
	snprintf(title, sizeof title, "%s: mean NLL vs KV-cache compression\n%d %s of %s, prefill-compress-continue "
	         "(compress the first half's cache, teacher-force the second half)", basename_of(E->model), E->nst,
	         E->chunk ? "chunks" : "stories", basename_of(E->data));
	fprintf(g, "\nset title ");
	gpstr(g, title);
	fprintf(g, "\nset xlabel \"compression ratio r (fraction of the context's KV cache evicted)\"\n"
	           "set ylabel \"mean NLL of the continuation (nats/token), lower is better\"\n"
	           "set grid xtics ytics lc rgb \"#dddddd\"\nset border 15\nset xtics nomirror\nset format y \"%%.3f\"\n"
	           "set key top left box opaque spacing 1.2\nset xrange [%g:%g]\nset x2range [%g:%g]\n",
	        lo - 0.04, hi + 0.04, lo - 0.04, hi + 0.04);
	fprintf(g, "set xtics (");
	for (int ri = 0; ri < E->nratio; ri++)
		fprintf(g, "%s\"%g\" %g", ri ? ", " : "", E->ratio[ri], E->ratio[ri]);
	fprintf(g, ")\nset x2tics (");
	for (int ri = 0; ri < E->nratio; ri++)
		fprintf(g, "%s\"%g%%%% kept\" %g", ri ? ", " : "", 100 * (1 - E->ratio[ri]), E->ratio[ri]);
	fprintf(g, ")\n");
	for (int pi = 0; pi < E->npol; pi++) {
		fprintf(g, "$d%d << EOD\n", pi);
		for (int ri = 0; ri < E->nratio; ri++) {
			Row t = total(E, pi, ri);
			if (t.n)
				fprintf(g, "%g %.6f\n", E->ratio[ri], t.nll);
		}
		fprintf(g, "EOD\n");
	}
	fprintf(g, "plot ");
	if (!isnan(full))
		fprintf(g, "%.6f with lines dt 2 lw 1.5 lc rgb \"#777777\" title \"full cache\", ", full);
	/* distinguishable lines for up to 10 policies: colours and point shapes cycle apart */
	static const char *const color[] = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
		                             "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#000000" };
	static const int point[] = { 7, 5, 9, 11, 13, 15, 4, 6 };
	const int ncolor = (int)(sizeof color / sizeof color[0]), npoint = (int)(sizeof point / sizeof point[0]);
	for (int pi = 0; pi < E->npol; pi++) {
		char key[128];
		const Pol *P = &E->pol[pi];
		if (P->obs > 0)
			snprintf(key, sizeof key, "%s (window %d)", P->name, P->obs);
		else
			snprintf(key, sizeof key, "%s%s", P->name, P->decode ? " (during decoding)" : "");
		fprintf(g, "%s$d%d with linespoints lw 2 lc rgb \"%s\" pt %d ps 1.3 title ", pi ? ", " : "", pi,
		        color[pi % ncolor], point[pi % npoint]);
		gpstr(g, key);
	}
	fprintf(g, "\n");
	if (fclose(g) != 0) {
		fprintf(stderr, "kvcc: eval: error: %s: write error\n", script);
		return 1;
	}
	/* run it: gnuplot reads the script file named as an argument (no shell) */
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>&1", script);
	if (strchr(script, '\'')) {
		fprintf(stderr, "kvcc: eval: error: --plot: the file name must not contain a quote\n");
		return 1;
	}
	FILE *p = popen(cmd, "r");
	char line[512], out[2048] = "";
	while (p && fgets(line, sizeof line, p))
		if (strlen(out) + strlen(line) < sizeof out)
			strcat(out, line);
	int st = p ? pclose(p) : -1;
	if (st != 0) {
		if (st > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 127)
			fprintf(stderr, "kvcc: eval: error: --plot needs gnuplot (scripts/install-deps installs gnuplot-nox); "
			                "the script is in %s\n", script);
		else
			fprintf(stderr, "kvcc: eval: error: gnuplot failed on %s:\n%s", script, out);
		unlink(E->plot);
		return 1;
	}
	unlink(script);
	return 0;
}

/* --- the command ------------------------------------------------------------------------- */

int kt_eval(int argc, char **argv)
{
	Eval *E = calloc(1, sizeof *E);
	if (!E)
		return error("%s", "out of memory");
	int rc = parse_args(E, argc, argv);
	char err[700];
	Worker *W = NULL;
	int nthreads = 0;
	if (rc < 0)                        /* --help */
		rc = 0;
	if (rc || argc < 1 || !E->npol)
		goto done;
	rc = 1;
	if (llama_model_load(&E->m, E->model, err, sizeof err) ||
	    llama_tok_load(&E->tok, E->tokenizer, err, sizeof err)) {
		error("%s", err);
		goto done;
	}
	if (E->tok.vocab_size != E->m.cfg.vocab_size) {
		snprintf(err, sizeof err, "%s has %d tokens, %s has vocab_size %d", E->tokenizer, E->tok.vocab_size,
		         E->model, E->m.cfg.vocab_size);
		error("%s", err);
		goto done;
	}
	if ((rc = setup_policies(E)) != 0 || (rc = setup_weights(E)) != 0)
		goto done;
	rc = 1;
	if (llama_stories_load(&E->S, E->data, E->chunk, E->from, err, sizeof err)) {
		error("%s", err);
		goto done;
	}
	if (llama_parse_range(E->stories, E->S.n, &E->lo, &E->hi)) {
		rc = usage("bad --stories '%s' (want a:b, e.g. 0:10)", E->stories);
		goto done;
	}
	E->nst = E->hi - E->lo;
	if (E->nst < 1) {
		snprintf(err, sizeof err, "no stories to evaluate (%s holds %d, --stories %s)", E->data, E->S.n,
		         E->stories ? E->stories : "");
		error("%s", err);
		goto done;
	}
	int maxtok = E->m.cfg.seq_len < MAXTOK ? E->m.cfg.seq_len : MAXTOK;
	E->ids = calloc((size_t)E->nst, sizeof *E->ids);
	E->ntok = calloc((size_t)E->nst, sizeof *E->ntok);
	E->res = calloc((size_t)E->nst * E->npol * E->nratio, sizeof *E->res);
	if (!E->ids || !E->ntok || !E->res) {
		error("%s", "out of memory");
		goto done;
	}
	for (int si = 0; si < E->nst; si++) {
		size_t len = E->S.len[E->lo + si];
		E->ids[si] = malloc(llama_tok_max_ids(len) * sizeof(int));
		int k = E->ids[si] ? llama_tok_encode(&E->tok, E->S.text[E->lo + si], len, 1, E->ids[si]) : -1;
		if (k < 0) {
			snprintf(err, sizeof err, "story %d cannot be encoded", E->lo + si);
			error("%s", err);
			goto done;
		}
		E->ntok[si] = k < maxtok ? k : maxtok;
		if (E->ntok[si] > E->cap)
			E->cap = E->ntok[si];
		E->work += E->ntok[si];
	}
	long predictions = 0;          /* continuation tokens C..n-2 of every story */
	for (int si = 0; si < E->nst; si++)
		predictions += E->ntok[si] - 1 - E->ntok[si] / 2 > 0 ? E->ntok[si] - 1 - E->ntok[si] / 2 : 0;
	if (!predictions) {
		snprintf(err, sizeof err, "%s: nothing to predict: a story is scored on the tokens after its "
		         "first half, and stories %d:%d are at most 2 tokens long with [BOS]; give a longer text",
		         E->data, E->lo, E->hi);
		error("%s", err);
		goto done;
	}
	if (E->cap < 2)
		E->cap = 2;
	nthreads = E->threads ? E->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (nthreads < 1)
		nthreads = 1;
	if (nthreads > E->nst)
		nthreads = E->nst;
	W = calloc((size_t)nthreads, sizeof *W);
	if (!W) {
		error("%s", "out of memory");
		goto done;
	}
	for (int t = 0; t < nthreads; t++)
		if (worker_init(E, &W[t]))
			goto done;
	pthread_mutex_init(&E->mu, NULL);
	E->progress = isatty(2);
	E->t0 = now();
	pthread_t th[256];
	int started = 0;
	for (int t = 1; t < nthreads; t++)
		if (pthread_create(&th[started], NULL, worker, &W[t]) == 0)
			started++;
	worker(&W[0]);
	for (int t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	double seconds = now() - E->t0;
	if (E->progress)
		fprintf(stderr, "\r\033[K");
	pthread_mutex_destroy(&E->mu);
	if (E->err) {
		error("%s", E->errmsg);
		goto done;
	}
	table(E, seconds, started + 1);
	if ((E->csv && write_csv(E)) || (E->plot && write_plot(E)))
		goto done;
	rc = 0;
done:
	for (int t = 0; W && t < nthreads; t++)
		worker_free(&W[t]);
	free(W);
	for (int i = 0; i < E->npol; i++) {
		kvcc_close(E->pol[i].p);
		free(E->pol[i].par);
	}
	for (int si = 0; E->ids && si < E->nst; si++)
		free(E->ids[si]);
	free(E->ids);
	free(E->ntok);
	free(E->res);
	llama_stories_free(&E->S);
	llama_tok_free(&E->tok);
	llama_model_free(&E->m);
	kt_weights_free(&E->w);
	free(E);
	return rc;
}
