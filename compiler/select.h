/*
** Selection rules beyond per-head top-k in the reference interpreter
** (select.c): per-(layer, head) kept counts (keep expression, prefix and
** dynamic schedules, ratio / budget) and AdaKV's floor (mass: interp.c).
** Arrays: scores [L][H][n] and keep [L][H][n] as in interp.c; nk [L][H].
*/
#ifndef KVCC_SELECT_H
#define KVCC_SELECT_H

#include "compiler/interp.h"

/* Counts per instance; keepv [L][H] the keep expression's values or NULL. */
KC_FUNC int ki_selfields(const KiFn *f, const double *par, long *S, long *R, long *chunk, KiErr *e);
KC_FUNC int ki_counts(const KiFn *f, const KiCase *c, const double *par, const double *scores,
                      const double *keepv, long *nk, KiErr *e);
KC_FUNC int ki_selfloor(const KiFn *f, const KiCase *c, const double *par, const double *scores,
                        const long *nk, char *keep, KiErr *e);

/* PrefixKV's bisection (select.c); also kvcc calibrate's offline fractions. */
KC_FUNC int ki_prefix_forget(const double *S, int rows, const long *n, long stride, double target,
                             long prot, double tol, long iters, long *forget, long *bad);

#endif
