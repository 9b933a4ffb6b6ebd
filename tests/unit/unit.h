/*
** Shared helpers of the unit tests (white-box: they include the internal
** headers). Each test_<area>.c exports Suite *<area>_suite(void); main.c
** runs them all.
*/
#ifndef KVCC_UNIT_H
#define KVCC_UNIT_H

#include <check.h>
#include "compiler/ir.h"

/* Emit an instruction with its result axes computed by the axis rule (leaves
** get theirs from the op), at policy position line:col. Fails the test when
** the rule rejects the operands. */
KiRef t_ins(KiFn *f, int op, KiRef a, KiRef b, KiRef c, int axis, int aux, uint32_t line,
            uint32_t col);

/* Sample policies, valid (ki_verify passes), built by hand. */
KiFn *t_snapkv(void);   /* SnapKV: Q·K, softmax, means, avgpool, params */
KiFn *t_h2o(void);      /* H2O: state, observe with attn, decode every */
KiFn *t_allops(void);   /* every op of ops.h at least once, odd constants */

/* Assert print(parse(print(f))) == print(f); returns print(f) (free it). */
char *t_roundtrip(const KiFn *f);

/* Parse text that must parse; fails the test with the message otherwise. */
KiFn *t_parse(const char *text);

#endif
