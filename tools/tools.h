/*
** tools/: the `kvcc` command (main.c) and what serves only it: `kvcc eval` (eval.c, on
** the model library lib/llama), the developer commands (dev.c), .npz reading (npz.c,
** npz.h) and the op index of doc/kir.md (kirdoc.c, a build tool of its own).
*/
#ifndef KVCC_TOOLS_H
#define KVCC_TOOLS_H

#include "compiler/ir.h"
#include "compiler/interp.h"

/* main.c: a policy from POLICY.lua (through the sandbox) or FILE.kir (parsed and
** verified); NULL with e set. */
KC_FUNC KiFn *kt_load(const char *path, KiErr *e);

/* eval.c: `kvcc eval POLICY.lua ... --model M --tokenizer T --data FILE [options]`; argv
** holds the arguments after "eval". Returns the exit status: 0, 1 (an error while
** running), 2 (bad arguments). */
KC_FUNC int kt_eval(int argc, char **argv);

/* calibrate.c: `kvcc calibrate --model M --tokenizer T --data FILE [options]`: the weights
** of the learned policies. Returns the exit status: 0, 1 (an error), 2 (bad arguments). */
KC_FUNC int kt_calibrate(int argc, char **argv);

/* dev.c: `kvcc dev COMMAND ...`; argv holds the arguments after "dev". Returns the exit
** status: 0, 1 (a compile error), 2 (bad arguments). */
KC_FUNC int kt_dev(int argc, char **argv);

/* tune.c: `kvcc tune POLICY.lua [options]` (doc/tune.md); argv after "tune". Returns the exit
** status: 0, 1 (does not compile, or the database cannot be written), 2 (bad arguments). */
KC_FUNC int kt_tune(int argc, char **argv);
/* tune_gpu.c: the GPU config space for j->gpu's targets pruned by the static model (nothing run on
** a GPU), the pick recorded in the tuning database `db`; 0 or 1 (said on stderr) */
struct KiJob;
KC_FUNC int kt_tune_gpu(struct KiJob *j, const char *db, int verbose, double *wall);

/* rundecode.c: `kvcc run` on a decode case (dk, dv, dq: generation step by step through
** the interpreter); c0 is the case as read, z the case file. 0, or -1 with e set. */
struct KiCase;
struct KtNpz;
KC_FUNC int kt_rundecode(const KiFn *f, const struct KiCase *c0, const struct KtNpz *z, const char *inputs,
                         const char *out, KiErr *e);

/* weights.c: policy weights from .npz arrays (as doubles, matched to a policy by name
** when it runs). */
#define KT_MAXWEIGHTS 64
typedef struct KtWeights {
	KiWData w[KT_MAXWEIGHTS];
	char *name[KT_MAXWEIGHTS];
	int n;
} KtWeights;
KC_FUNC int kt_weights_add(KtWeights *w, const struct KtNpz *z, const char *prefix, const char *path,
                           KiErr *e);
KC_FUNC int kt_weights_read(KtWeights *w, const char *path, KiErr *e);
KC_FUNC void kt_weights_free(KtWeights *w);

#endif
