/*
** One policy as the run-path tests (tests/diff/noalloc.c, threads.c) take it: loaded (its KIR
** for the test's own reading) and compiled, its parameters' defaults, and a plan's weights from
** casegen's values (tests/common/casegen.h cg_weights). Include after kvcc.h, kvcc_compiler.h,
** dsl/dsl.h and casegen.h.
*/
#ifndef KVCC_TESTS_POLICYCASE_H
#define KVCC_TESTS_POLICYCASE_H

/* path's KIR into *f and its compilation for spec into *p: 0, or -1 with a FAIL line for `name`
** printed (both freed) */
static inline int cg_open(const char *path, const char *name, const kvcc_spec *spec, KiFn **f, kvcc_policy **p)
{
	KiErr e = { 0 };
	*f = kd_loadfile(path, NULL, &e), *p = NULL;
	if (*f && kvcc_compile_file(path, spec, p) == 0)
		return 0;
	printf("FAIL %s: load/compile: %s %s\n", name, e.msg, kvcc_last_error());
	ki_free(*f), *f = NULL;
	return -1;
}

/* the parameters' defaults into par[32], a "window" capped at 8; returns the observation
** queries a plan of capacity cap needs (every context query: cap) */
static inline int cg_params(const KiFn *f, kvcc_policy *p, double *par, int cap)
{
	for (int i = 0; i < kvcc_param_count(p) && i < 32; i++)
		kvcc_param_info(p, i, NULL, &par[i]);
	int wi = kvcc_param_index(p, "window");
	if (wi >= 0 && par[wi] > 8)
		par[wi] = 8;
	return f->obs_all ? cap : KI_RKIND(f->obs) ? (int)pval(f, par, f->obs, 0) : 0;
}

/* 0, or non-zero when casegen or kvcc_plan_set_weight failed */
static inline int cg_setweights(const KiFn *f, kvcc_plan *pl, int L, int H, int G, int d)
{
	KiWData wd[KI_MAXW];
	float *wf = NULL;
	double *wdv = NULL;
	int rc = 0;
	if (!f->nw)
		return 0;
	if (cg_weights(f, L, H, G, d, wd, &wf, &wdv) != 0)
		rc = -1;
	for (int i = 0, o = 0; rc == 0 && i < f->nw; i++) {
		int64_t shp[KI_MAXWDIM];
		int cnt = 1;
		for (int j = 0; j < wd[i].ndim; j++)
			shp[j] = wd[i].shape[j], cnt *= (int)shp[j];
		rc = kvcc_plan_set_weight(pl, wd[i].name, wf + o, wd[i].ndim, shp);
		o += cnt;
	}
	free(wf), free(wdv);
	return rc;
}

#endif
