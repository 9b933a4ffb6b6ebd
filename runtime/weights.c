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

/* the size of declared axis ax in layout lay (the group from the policy's specialization) */
static int64_t axsize(const kvcc_policy *p, const kvcc_layout *lay, int ax)
{
	switch (ax) {
	case KA_WLAYER: return lay->layers;
	case KA_WHEAD: return lay->kv_heads;
	case KA_WGROUP: return p->h->group;
	}
	return lay->head_dim;
}

/* elements of weight i */
static size_t wcount(const kvcc_policy *p, const kvcc_layout *lay, int i)
{
	const KaWeight *w = &p->wt[i];
	size_t n = 1;
	for (int j = 0; j < w->ndim; j++)
		n *= (size_t)axsize(p, lay, w->ax[j]);
	return n;
}

static size_t woff(const kvcc_policy *p, const kvcc_layout *lay, int i)
{
	size_t o = 0;
	for (int k = 0; k < i; k++)
		o += wcount(p, lay, k);
	return o;
}

size_t kr_weights_size(const kvcc_policy *p, const kvcc_layout *lay)
{
	return p->h->nw > 0 ? woff(p, lay, p->h->nw) : 0;
}

/* plan creation: the packed buffer (NaN until given) and the given marks; -1 out of memory */
int kr_weights_init(kvcc_plan *pl)
{
	int nw = pl->p->h->nw;
	if (nw <= 0)
		return 0;
	size_t n = kr_weights_size(pl->p, &pl->lay);
	pl->wts = malloc((n + 1) * sizeof(float));
	pl->wset = calloc((size_t)nw, 1);
	if (!pl->wts || !pl->wset)
		return -1;
	for (size_t k = 0; k < n; k++)
		pl->wts[k] = NAN;
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
	static const char *const nm[] = { "layer", "head", "group", "chan" };
	return ax >= 0 && ax <= KA_WCHAN ? nm[ax] : "?";
}

int kr_weight_arg(const kvcc_policy *p, const kvcc_layout *lay, const char *name, const float *data, int ndim,
                  const int64_t *shape, int *idx, size_t *off, size_t *count)
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
	for (int j = 0; j < w->ndim; j++) {
		ok = ok && shape[j] == axsize(p, lay, w->ax[j]);
		snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s %lld", j ? ", " : "", axname(w->ax[j]),
		         (long long)axsize(p, lay, w->ax[j]));
	}
	for (int j = 0; j < ndim && j < 8; j++)
		snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", j ? ", " : "", (long long)shape[j]);
	if (!ok)
		return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: weight '%s' has shape (%s%s), the policy declares (%s)",
		                 p->src, w->line, w->col, name, got, ndim > 8 ? ", ..." : "", want);
	size_t n = wcount(p, lay, i);
	for (size_t k = 0; k < n; k++)
		if (!isfinite(data[k]))
			return kr_seterr(KVCC_EINVAL, "%s:%u:%u: error: weight '%s' has a non-finite value (%g at element %zu)",
			                 p->src, w->line, w->col, name, (double)data[k], k);
	*idx = i, *off = woff(p, lay, i), *count = n;
	return 0;
}

KVCC_API int kvcc_plan_set_weight(kvcc_plan *pl, const char *name, const float *data, int ndim, const int64_t *shape)
{
	if (!pl)
		return kr_seterr(KVCC_EINVAL, "null argument (plan, name, data, shape)");
	int i;
	size_t off, n;
	int rc = kr_weight_arg(pl->p, &pl->lay, name, data, ndim, shape, &i, &off, &n);
	if (rc)
		return rc;
	if (kr_enter(pl))
		return KVCC_EBUSY;
	memcpy(pl->wts + off, data, n * sizeof(float));
	pl->wset[i] = 1;
	kr_leave(pl);
	return 0;
}
