/* llama.h - what the commands of build/llama share (main.c; batch.c: the batch command). */
#ifndef KVCC_EXAMPLES_LLAMA_H
#define KVCC_EXAMPLES_LLAMA_H

#include "kvcc.h"
#include "tools/npz.h"
#include "lib/llama/model.h"
#include "lib/llama/tokenizer.h"

typedef struct {
    const char *model, *tokenizer, *cmd, *prompt, *data, *stories, *policy, *ratio, *budget, *attn;
    const char *from;
    int steps, ids, per_story, max_tokens;
    long chunk_chars;
    const char *params[16];
    int n_params;
    int page_size, pages, max_seqs, threads, generate, quiet; /* batch */
    int per_head;          /* batch --per-head-tables: a page table per (sequence, layer, head) */
    const char *weights[8]; /* --weights W.npz: the policy's weights (kvcc calibrate writes them) */
    int n_weights;
} Args;

/* The compression of generate --policy: the policy, its params, when it runs, its budget. */
typedef struct {
    kvcc_policy *pol;
    double ratio, *params;
    int decode, every, nstate, window; /* observation queries: kvcc_policy_obs (-1: all) */
    long budget;                       /* decode policies: rows per head */
    long fixed;                        /* --budget, or -1 */
    char what[64];                     /* "ratio R" or "budget B", for the reports */
    KtNpz wz[8];                       /* --weights files (every declared weight among them) */
    int nwz;
} Gen;

/* "llama: error: " + the message, on stderr; returns 1. */
int fail(const char *fmt, const char *a);
/* The policy of --policy with --ratio or --budget and --param (nothing without --policy).
 * Returns 0, or 1 after reporting; gen_free in either case. */
int gen_setup(const Args *a, const LlamaConfig *cfg, Gen *g);
void gen_free(Gen *g);
/* The policy's weights (from --weights) into a plan of it: kvcc_plan_set_weight for each (f32
 * copies; the plan checks shape and values). Returns 0, or 1 after reporting. */
int gen_weights(const Gen *g, kvcc_plan *pl);
/* [BOS] + encode(text), truncated to max_tokens; *full receives the untruncated count. */
int *encode_story(const LlamaTokenizer *tok, const char *text, size_t len, int max_tokens, int *n,
                  int *full);
/* llama batch: many stories over one page pool (batch.c). */
int cmd_batch(const Args *a, const LlamaModel *m, const LlamaTokenizer *tok);

#endif
