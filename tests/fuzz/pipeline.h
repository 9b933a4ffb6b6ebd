/* tests/fuzz/pipeline.c: the stages after loading, shared by fz_kir.c and fz_dsl.c. */
#ifndef KVCC_FUZZ_PIPELINE_H
#define KVCC_FUZZ_PIPELINE_H

#include "compiler/ir.h"

/* Runs passes, plan, interpreter and CUDA C generation on a verified f (which
** the passes change); aborts through fz_bug when an invariant breaks. */
void fz_pipeline(KiFn *f);

#endif
