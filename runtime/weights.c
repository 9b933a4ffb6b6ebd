/*
** The policy's weights in a plan (kvcc_plan_set_weight, include/kvcc.h): the declarations come
** from the descriptor (KaWeight), the values from the caller, checked (name, shape against the
** plan's layout, finite) and copied into one packed f32 buffer in declaration order, each
** weight row-major over its declared axes — the layout the generated code reads (x86 token_map
** loops: kvcc_tmap_ctx.wts; CUDA: KvgArgs.wts). The runtime evaluates nothing: a weight is an
** input of the generated code.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "runtime/rt.h"

/* the size of declared axis ax in layout lay (the group from the policy's specialization; the out
** axis: nout, 0 while unknown) */
static int64_t axsize(const kvcc_policy *p, const kvcc_layout *lay, int64_t nout, int ax)
{
	switch (ax) {
	case KA_WLAYER: return lay->layers;
	case KA_WHEAD: return lay->kv_heads;
	case KA_WGROUP: return p->h->group;
	case KA_WOUT: return nout;
	}
	return lay->head_dim;
}

/* elements of weight i */
static size_t wcount(const kvcc_policy *p, const kvcc_layout *lay, int64_t nout, int i)
{
	const KaWeight *w = &p->wt[i];
	size_t n = 1;
	for (int j = 0; j < w->ndim; j++)
		n *= (size_t)axsize(p, lay, nout, w->ax[j]);
	return n;
}

static size_t woff(const kvcc_policy *p, const kvcc_layout *lay, int64_t nout, int i)
{
	size_t o = 0;
	for (int k = 0; k < i; k++)
		o += wcount(p, lay, nout, k);
	return o;
}

size_t kr_weights_size(const kvcc_policy *p, const kvcc_layout *lay, int64_t nout)
{
	return p->h->nw > 0 ? woff(p, lay, nout, p->h->nw) : 0;
}

float *kr_weights_relayout(const kvcc_policy *p, const kvcc_layout *lay, const float *old, int64_t oldn,
                           int64_t nout, const unsigned char *wset)
{
	size_t n = kr_weights_size(p, lay, nout);
	float *w = malloc((n + 1) * sizeof *w);
	if (!w)
		return NULL;
	for (size_t k = 0; k <= n; k++)
		w[k] = NAN;
	for (int i = 0; old && wset && i < p->h->nw; i++)
		if (wset[i])
			memcpy(w + woff(p, lay, nout, i), old + woff(p, lay, oldn, i), wcount(p, lay, nout, i) * sizeof *w);
	return w;
}

/* plan creation: the packed buffer (NaN until given) and the given marks; -1 out of memory. A
** weight with an out axis of the data's size has no room until the first such weight is given
** (kvcc_plan_set_weight lays the buffer out again then). */
int kr_weights_init(kvcc_plan *pl)
{
	int nw = pl->p->h->nw;
	if (nw <= 0)
		return 0;
	pl->nout = pl->p->h->wout;
	pl->wts = kr_weights_relayout(pl->p, &pl->lay, NULL, 0, pl->nout, NULL);
	pl->wset = calloc((size_t)nw, 1);
	if (!pl->wts || !pl->wset)
		return -1;
	return 0;
}

int kr_weights_given(const kvcc_policy *p, const unsigned char *wset)
{
	for (int i = 0; i < p->h->nw; i++)
		if (!wset[i])
			return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: weight '%s' was not given (kvcc_plan_set_weight; "
			                 "kvcc run/eval --weights FILE.npz)", p->src, p->wt[i].line, p->wt[i].col,
			                 p->str + p->wt[i].name);
	return 0;
}

/* 0 when every declared weight was given, else KVCC_EINVAL naming the first missing one */
int kr_weights_check(const kvcc_plan *pl)
{
	return kr_weights_given(pl->p, pl->wset);
}

KVCC_API int kvcc_weight_count(const kvcc_policy *p) { return p ? p->h->nw : 0; }

KVCC_API int kvcc_weight_info(const kvcc_policy *p, int i, const char **name, int *ndim)
{
	if (!p || i < 0 || i >= p->h->nw)
		return kr_seterr(KVCC_EINVAL, "weight index %d out of range (%d weights)", i, p ? p->h->nw : 0);
	if (name)
		*name = p->str + p->wt[i].name;
	if (ndim)
		*ndim = p->wt[i].ndim;
	return 0;
}

static const char *axname(int ax)
{
	static const char *const nm[] = { "layer", "head", "group", "chan", "out" };
	return ax >= 0 && ax <= KA_WOUT ? nm[ax] : "?";
}

/* *nout: the out axis' size, 0 while unknown: then this weight's data gives it (set in *nout; the
** caller lays its buffer out again when it changed) */
int kr_weight_arg(const kvcc_policy *p, const kvcc_layout *lay, int64_t *nout, const char *name, const float *data,
                  int ndim, const int64_t *shape, int *idx, size_t *off, size_t *count)
{
	if (!name || !data || (ndim > 0 && !shape))
		return kr_seterr(KVCC_EINVAL, "null argument (plan, name, data, shape)");
	int i = 0;
	while (i < p->h->nw && strcmp(p->str + p->wt[i].name, name) != 0)
		i++;
	if (i == p->h->nw)
		return kr_seterr(KVCC_EINVAL, "policy %s declares no weight '%s'", p->name, name);
	const KaWeight *w = &p->wt[i];
	char want[160] = "", got[160] = "";
	int ok = ndim == w->ndim;
	int64_t no = *nout;
	for (int j = 0; j < w->ndim && ok && !no; j++)      /* the out size from the data (1 .. 2^20) */
		if (w->ax[j] == KA_WOUT && shape[j] >= 1 && shape[j] <= (1 << 20))
			no = shape[j];
	for (int j = 0; j < w->ndim; j++) {
		ok = ok && shape[j] == axsize(p, lay, no, w->ax[j]) && (w->ax[j] != KA_WOUT || no >= 1);
		if (w->ax[j] == KA_WOUT && !no)
			snprintf(want + strlen(want), sizeof want - strlen(want), "%sout 1..1048576", j ? ", " : "");
		else
			snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s %lld", j ? ", " : "", axname(w->ax[j]),
			         (long long)axsize(p, lay, no, w->ax[j]));
	}
	for (int j = 0; j < ndim && j < 8; j++)
		snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", j ? ", " : "", (long long)shape[j]);
	if (!ok)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: weight '%s' has shape (%s%s), the policy declares (%s)",
		                 p->src, w->line, w->col, name, got, ndim > 8 ? ", ..." : "", want);
	size_t n = wcount(p, lay, no, i);
	for (size_t k = 0; k < n; k++)
		if (!isfinite(data[k]))
			return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: weight '%s' has a non-finite value (%g at element %zu)",
			                 p->src, w->line, w->col, name, (double)data[k], k);
	*idx = i, *off = woff(p, lay, no, i), *count = n, *nout = no;
	return 0;
}

KVCC_API int kvcc_plan_set_weight(kvcc_plan *pl, const char *name, const float *data, int ndim, const int64_t *shape)
{
	if (!pl)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, name, data, shape)");
	int i;
	size_t off, n;
	int64_t no = pl->nout;
	int rc = kr_weight_arg(pl->p, &pl->lay, &no, name, data, ndim, shape, &i, &off, &n);
	if (rc)
		return rc;
	if (kr_enter(pl))
		return KVCC_EBUSY;
	if (no != pl->nout) {                 /* the out axis' size is known now: room for it */
		float *w = kr_weights_relayout(pl->p, &pl->lay, pl->wts, pl->nout, no, pl->wset);
		if (!w) {
			kr_leave(pl);
			return kr_seterr(KVCC_ENOMEM, "cannot allocate the weights (out axis %lld)", (long long)no);
		}
		free(pl->wts);
		pl->wts = w, pl->nout = no;
	}
	memcpy(pl->wts + off, data, n * sizeof(float));
	pl->wset[i] = 1;
	kr_leave(pl);
	return 0;
}
