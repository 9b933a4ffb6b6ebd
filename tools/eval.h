/*
** kvcc eval — quality versus budget on a real model (doc/eval.md).
*/
#ifndef KVCC_EVAL_H
#define KVCC_EVAL_H

#include "compiler/ir.h"

/* `kvcc eval POLICY.lua ... --model M --tokenizer T --data FILE [options]`; argv holds the
** arguments after "eval". Returns the exit status: 0, 1 (an error while running), 2 (bad
** arguments). */
KC_FUNC int kc_eval(int argc, char **argv);

#endif
