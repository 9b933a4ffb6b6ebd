/* model.h - llama2.c legacy (version 0) checkpoints, a per-token forward pass, and a KV
 * cache in kvcc's layout.
 *
 * Checkpoint: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len), then fp32 tensors token_embedding [V][D], rms_att [L][D], wq [L][D][D],
 * wk [L][KV][D], wv [L][KV][D], wo [L][D][D], rms_ffn [L][D], w1 [L][F][D], w2 [L][D][F],
 * w3 [L][F][D], rms_final [D], freq_cis_real/imag [seq_len][hd/2] (unused), and wcls [V][D]
 * only when the header's vocab_size is negative (otherwise the classifier is the
 * embedding).  See ../shared/data/README.md section 1.
 *
 * KV cache (LlamaCache): for each (layer l, kv head h) a contiguous block of `capacity`
 * rows of head_dim floats, K post-RoPE and V:
 *     k[((l * n_kv_heads + h) * capacity + slot) * head_dim + c]
 * plus len[l * n_kv_heads + h] (rows in use; heads may differ after compression) and the
 * absolute position of each row, pos[(l * n_kv_heads + h) * capacity + slot].  Rows are in
 * the order tokens arrived; every stored row is in the past of a new query.
 *
 * Attention goes through one function, LlamaAttendFn (llama_attend_ref by default), called
 * once per (layer, kv head) with the G query heads of that kv head.
 */
#ifndef KVCC_EXAMPLES_LLAMA_MODEL_H
#define KVCC_EXAMPLES_LLAMA_MODEL_H

#include <stddef.h>

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int head_dim;          /* dim / n_heads */
    int kv_dim;            /* n_kv_heads * head_dim */
    int group;             /* G = n_heads / n_kv_heads; query head q uses kv head q / G */
    int shared_classifier; /* 1 when the header's vocab_size > 0 */
} LlamaConfig;

typedef struct {
    LlamaConfig cfg;
    float *data; /* the whole file after the header, owned */
    size_t n_floats;
    const float *tok_emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final;
    const float *wcls;
} LlamaModel;

/* Loads and validates a checkpoint (header sanity, exact file size).  Returns 0, or -1 with
 * a message in err; never aborts on a bad file. */
int llama_model_load(LlamaModel *m, const char *path, char *err, size_t errlen);
void llama_model_free(LlamaModel *m);

/* ---- KV cache ---------------------------------------------------------------------------- */
typedef struct {
    int n_layers, n_kv_heads, head_dim, capacity;
    float *k;  /* [n_layers][n_kv_heads][capacity][head_dim], post-RoPE keys */
    float *v;  /* same layout, values */
    int *len;  /* [n_layers][n_kv_heads] rows in use */
    int *pos;  /* [n_layers][n_kv_heads][capacity] absolute (RoPE) position of each row */
} LlamaCache;

int llama_cache_init(LlamaCache *c, int n_layers, int n_kv_heads, int head_dim, int capacity);
void llama_cache_free(LlamaCache *c);
void llama_cache_reset(LlamaCache *c); /* all lengths to 0 */

static inline size_t llama_cache_head(const LlamaCache *c, int l, int h)
{
    return (size_t)l * (size_t)c->n_kv_heads + (size_t)h;
}
static inline float *llama_cache_k(const LlamaCache *c, int l, int h)
{
    return c->k + llama_cache_head(c, l, h) * (size_t)c->capacity * (size_t)c->head_dim;
}
static inline float *llama_cache_v(const LlamaCache *c, int l, int h)
{
    return c->v + llama_cache_head(c, l, h) * (size_t)c->capacity * (size_t)c->head_dim;
}
static inline int *llama_cache_pos(const LlamaCache *c, int l, int h)
{
    return c->pos + llama_cache_head(c, l, h) * (size_t)c->capacity;
}
static inline int *llama_cache_len(const LlamaCache *c, int l, int h)
{
    return c->len + llama_cache_head(c, l, h);
}

/* Keeps rows kept[0..n_keep-1] (strictly increasing slot indices < len) of (l, h), in
 * order, moving K, V and pos in place; len becomes n_keep.  Returns 0, or -1 when kept is
 * not strictly increasing or out of range (the cache is then unchanged). */
int llama_cache_keep(LlamaCache *c, int l, int h, const int *kept, int n_keep);

/* ---- attention ----------------------------------------------------------------------------- */
/* Attention of the G query heads sharing one kv head: q [G][hd] (post-RoPE), K, V [n][hd]
 * (rows of the cache, the current token included), scale 1/sqrt(hd).  Writes out [G][hd],
 * and when probs is non-NULL the softmax probabilities probs [G][n]. */
typedef void (*LlamaAttendFn)(const float *q, const float *K, const float *V, int n, int hd,
                              int G, float *out, float *probs);

/* Reference implementation: one pass with an online softmax (no scratch memory). */
void llama_attend_ref(const float *q, const float *K, const float *V, int n, int hd, int G,
                      float *out, float *probs);

/* ---- observation queries -------------------------------------------------------------------- */
/* Capture of post-RoPE queries of the positions start .. start+window-1 (the last `window`
 * prefill positions) for every layer and query head:
 *     q[((l * n_heads + qh) * window + o) * head_dim + c],  qpos[o] = start + o
 * which is kvref's Q [L][H_kv][G][O][d] with query head qh = h * G + g.  `count` is the
 * number of positions captured so far. */
typedef struct {
    int n_layers, n_heads, head_dim, window;
    int start, count;
    float *q;
    int *qpos;
} LlamaObs;

int llama_obs_init(LlamaObs *o, const LlamaConfig *cfg, int window);
void llama_obs_free(LlamaObs *o);

/* ---- inference state ------------------------------------------------------------------------- */
/* Called after each attend when set: probabilities of the G query heads of (layer, kv_head)
 * over the n rows of that head (the current token is row n-1). */
typedef void (*LlamaObserveFn)(void *user, int layer, int kv_head, const float *probs, int n,
                               int G);

typedef struct {
    const LlamaModel *m;
    LlamaCache cache;
    LlamaAttendFn attend;   /* llama_attend_ref unless replaced */
    LlamaObs *obs;          /* when set, forward() stores queries of positions in its range */
    LlamaObserveFn observe; /* optional */
    void *observe_user;
    /* scratch */
    float *x, *xb, *xb2, *hb, *hb2, *q, *k, *v, *att_out, *probs, *logits;
} LlamaState;

/* capacity: rows per (layer, kv head); 0 means the model's seq_len. */
int llama_state_init(LlamaState *s, const LlamaModel *m, int capacity);
void llama_state_free(LlamaState *s);

/* One token at RoPE position pos: appends its K, V (post-RoPE) to every (layer, kv head) of
 * the cache, attends over all rows of the head, and returns the logits [vocab] (owned by
 * s, valid until the next call).  Returns NULL when a head of the cache is full or the
 * token id is out of range. */
const float *llama_forward(LlamaState *s, int token, int pos);

/* Runs tokens[0..n-1] at positions pos0.. through llama_forward.  When obs is non-NULL its
 * window is set to the last min(obs->window, n) positions and those queries are captured.
 * When nll_sum is non-NULL it receives the sum over i < n-1 of -log softmax(logits_i)[tokens[i+1]]
 * (the last token's logits are in s->logits either way).  Returns 0 or -1. */
int llama_prefill(LlamaState *s, const int *tokens, int n, int pos0, LlamaObs *obs,
                  double *nll_sum);

/* -log softmax(logits)[target], in double. */
double llama_nll(const float *logits, int vocab, int target);

/* Compression hook: called by the caller between prefill and continuation; it may rewrite
 * the cache (e.g. with llama_cache_keep, or with libkvcc's compiled kernels).  Returns 0 or
 * a negative error. */
typedef int (*LlamaCompressFn)(LlamaCache *cache, const LlamaObs *obs, void *user);

#endif
