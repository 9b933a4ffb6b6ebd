/*
** Weights from .npz files for `kvcc run` and `kvcc eval` (policy weights: DESIGN §3
** "Weights, tables and scans"). A weights file holds one array per weight, named as
** the policy declares it; a case file of `kvcc run` may carry them as "weight.NAME".
** Arrays are converted to double; names and shapes are matched to the policy's
** declarations when it runs (interp.c bindweights), so a file may hold weights of
** several policies (kvcc calibrate writes one file for all).
*/
#include <stdlib.h>
#include <string.h>
#include "tools/npz.h"
#include "tools/tools.h"

void kt_weights_free(KtWeights *w)
{
	for (int i = 0; i < w->n; i++) {
		free(w->name[i]);
		free((void *)w->w[i].data);
	}
	memset(w, 0, sizeof *w);
}

/* Adds the arrays of z whose names start with prefix ("" for all), without it. */
int kt_weights_add(KtWeights *w, const KtNpz *z, const char *prefix, const char *path, KiErr *e)
{
	size_t pl = strlen(prefix);
	for (int i = 0; i < z->n; i++) {
		const KtArray *a = &z->a[i];
		if (strncmp(a->name, prefix, pl) != 0)
			continue;
		if (w->n == KT_MAXWEIGHTS) {
			ki_error(e, path, 0, 0, "too many weights (at most %d)", KT_MAXWEIGHTS);
			return -1;
		}
		if (a->kind != 'f' && a->kind != 'i' && a->kind != 'u' && a->kind != 'b') {
			ki_error(e, path, 0, 0, "weight '%s' must be a numeric array", a->name + pl);
			return -1;
		}
		if (a->ndim < 1 || a->ndim > KI_MAXWDIM) {
			ki_error(e, path, 0, 0, "weight '%s' has %d dimensions (1 to %d)", a->name + pl, a->ndim,
			         KI_MAXWDIM);
			return -1;
		}
		for (int k = 0; k < w->n; k++)
			if (strcmp(w->name[k], a->name + pl) == 0) {
				ki_error(e, path, 0, 0, "weight '%s' given twice", a->name + pl);
				return -1;
			}
		double *d = malloc((a->count + 1) * sizeof *d);
		char *nm = strdup(a->name + pl);
		if (!d || !nm) {
			free(d), free(nm);
			ki_error(e, path, 0, 0, "out of memory");
			return -1;
		}
		for (size_t k = 0; k < a->count; k++)
			d[k] = kt_array_get(a, k);
		KiWData *x = &w->w[w->n];
		w->name[w->n++] = nm;
		x->name = nm, x->ndim = a->ndim, x->data = d;
		for (int k = 0; k < a->ndim; k++)
			x->shape[k] = a->shape[k];
	}
	return 0;
}

int kt_weights_read(KtWeights *w, const char *path, KiErr *e)
{
	KtNpz z;
	if (kt_npz_read(path, &z, e) != 0)
		return -1;
	int rc = kt_weights_add(w, &z, "", path, e);
	kt_npz_free(&z);
	return rc;
}
