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
 * KV cache (LlamaCache): libkvcc's kvcc_layout / kvcc_cache, f32
 * [layer][kv head][capacity][head_dim], K post-RoPE and V, int32 pos and len per head (see
 * below), so that libkvcc compresses it in place and runs decode attention on it.
 *
 * Attention: per layer, either the runtime's decode attention (LlamaState.layer set, e.g.
 * llama_kvcc_layer in kvglue.h: kvcc_append + kvcc_decode_layer) or the built-in reference
 * (LlamaState.layer NULL): append the row, then LlamaAttendFn (llama_attend_ref by default)
 * once per (layer, kv head) with the G query heads of that kv head.
 */
#ifndef KVCC_LIB_LLAMA_MODEL_H
#define KVCC_LIB_LLAMA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kvcc.h"

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

/* ---- KV cache in libkvcc's layout ---------------------------------------------------------
 * The cache IS a kvcc_layout + kvcc_cache: f32, contiguous [layer][kv head][capacity][head_dim]
 * (stride_token = head_dim, stride_head = capacity * head_dim, stride_layer = kv_heads *
 * stride_head), keys post-RoPE, int32 pos [layer][kv head][capacity] (absolute RoPE position
 * of each row) and len [layer][kv head] (rows in use; heads may differ after compression).
 * kvcc_compress, kvcc_append and kvcc_decode_layer work on `kc` directly.  Rows are in the
 * order tokens arrived; every stored row is in the past of a new query.
 * state: per-token policy state [nstate][layer][kv head][capacity] (decode policies such as
 * H2O), NULL when nstate is 0. */
typedef struct {
    kvcc_layout lay;
    kvcc_cache kc;
    int n_layers, n_kv_heads, head_dim, capacity, nstate;
    float *state;
} LlamaCache;

int llama_cache_init(LlamaCache *c, int n_layers, int n_kv_heads, int head_dim, int capacity,
                     int nstate);
void llama_cache_free(LlamaCache *c);
void llama_cache_reset(LlamaCache *c); /* all lengths to 0 */
/* Bytes the cache holds allocated (K, V, pos, len, state) for its capacity. */
size_t llama_cache_bytes(const LlamaCache *c);
/* Most rows in use by any (layer, kv head). */
int llama_cache_max_len(const LlamaCache *c);
/* Copies the rows in use (K, V, pos, state) and the lengths of src into dst; both caches must
 * have the same shape (layers, heads, head_dim, nstate) and dst room for every row.
 * Returns 0 or -1. */
int llama_cache_copy(LlamaCache *dst, const LlamaCache *src);
/* Moves the cache into a newly allocated one of `capacity` rows per head (>= every length)
 * and frees the old buffers: what actually gives memory back after a compression.  Returns
 * 0, or -1 (the cache is then unchanged). */
int llama_cache_resize(LlamaCache *c, int capacity);

static inline size_t llama_cache_head(const LlamaCache *c, int l, int h)
{
    return (size_t)l * (size_t)c->n_kv_heads + (size_t)h;
}
static inline float *llama_cache_k(const LlamaCache *c, int l, int h)
{
    return (float *)c->kc.K + (size_t)l * (size_t)c->lay.stride_layer +
           (size_t)h * (size_t)c->lay.stride_head;
}
static inline float *llama_cache_v(const LlamaCache *c, int l, int h)
{
    return (float *)c->kc.V + (size_t)l * (size_t)c->lay.stride_layer +
           (size_t)h * (size_t)c->lay.stride_head;
}
static inline int32_t *llama_cache_pos(const LlamaCache *c, int l, int h)
{
    return c->kc.pos + llama_cache_head(c, l, h) * (size_t)c->capacity;
}
static inline int32_t *llama_cache_len(const LlamaCache *c, int l, int h)
{
    return c->kc.len + llama_cache_head(c, l, h);
}

/* Keeps rows kept[0..n_keep-1] (strictly increasing slot indices < len) of (l, h), in
 * order, moving K, V, pos and state in place; len becomes n_keep.  Returns 0, or -1 when
 * kept is not strictly increasing or out of range (the cache is then unchanged). */
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
/* Called after each attend of the reference path when set: probabilities of the G query
 * heads of (layer, kv_head) over the n rows of that head (the current token is row n-1). */
typedef void (*LlamaObserveFn)(void *user, int layer, int kv_head, const float *probs, int n,
                               int G);

/* Attention of one layer for the token at position pos: appends its k, v [n_kv_heads][hd]
 * (post-RoPE) to every kv head of the layer, attends with q [n_heads][hd] over the rows of
 * each kv head and writes out [n_heads][hd].  Returns 0 or a negative code (cache full...). */
typedef int (*LlamaLayerFn)(void *user, LlamaCache *c, int layer, const float *q,
                            const float *k, const float *v, int pos, float *out);

typedef struct {
    const LlamaModel *m;
    LlamaCache cache;
    LlamaLayerFn layer;     /* NULL: the reference path below */
    void *layer_user;
    LlamaAttendFn attend;   /* reference path: llama_attend_ref unless replaced */
    LlamaObs *obs;          /* when set, forward() stores queries of positions in its range */
    LlamaObserveFn observe; /* reference path, optional */
    void *observe_user;
    char err[256];          /* why the last llama_forward returned NULL */
    /* scratch */
    float *x, *xb, *xb2, *hb, *hb2, *q, *k, *v, *att_out, *probs, *logits;
} LlamaState;

/* capacity: rows per (layer, kv head); 0 means the model's seq_len.  nstate: per-token state
 * tensors of the policy that will run on the cache (0 for none). */
int llama_state_init(LlamaState *s, const LlamaModel *m, int capacity, int nstate);
void llama_state_free(LlamaState *s);

/* One token at RoPE position pos: appends its K, V (post-RoPE) to every (layer, kv head) of
 * the cache, attends over all rows of the head, and returns the logits [vocab] (owned by
 * s, valid until the next call).  Returns NULL (with s->err) when a head of the cache is
 * full, the token id is out of range or the attention backend fails. */
const float *llama_forward(LlamaState *s, int token, int pos);

/* Runs tokens[0..n-1] at positions pos0.. through llama_forward.  When obs is non-NULL its
 * window is set to the last min(obs->window, n) positions and those queries are captured.
 * When nll_sum is non-NULL it receives the sum over i < n-1 of -log softmax(logits_i)[tokens[i+1]]
 * (the last token's logits are in s->logits either way).  Returns 0 or -1. */
int llama_prefill(LlamaState *s, const int *tokens, int n, int pos0, LlamaObs *obs,
                  double *nll_sum);

/* ---- pieces of the forward pass, for drivers that attend many sequences at once ------------
 * llama_forward is: x = embedding; per layer llama_layer_qkv, attention, llama_layer_ffn;
 * llama_head.  The same code, so a driver built from them computes the same bits. */
/* Layer l before attention: xb = rmsnorm(x), q [dim], k, v [kv_dim] (q and k post-RoPE at pos). */
void llama_layer_qkv(const LlamaModel *m, int l, const float *x, int pos, float *xb, float *q,
                     float *k, float *v);
/* Layer l after attention: x += wo att_out, then x += the FFN's output (scratch xb, xb2
 * [dim], hb, hb2 [hidden_dim]). */
void llama_layer_ffn(const LlamaModel *m, int l, float *x, const float *att_out, float *xb,
                     float *xb2, float *hb, float *hb2);
/* logits [vocab] of the last layer's x (scratch xb [dim]). */
void llama_head(const LlamaModel *m, const float *x, float *xb, float *logits);
/* Observation capture of a token at pos: its slot in obs (qpos and count updated), or -1 when
 * obs is NULL or pos is outside its window; llama_obs_store copies layer l's queries q
 * [n_heads][head_dim] into that slot (nothing for slot -1). */
int llama_obs_begin(LlamaObs *obs, int pos);
void llama_obs_store(LlamaObs *obs, int slot, int l, const float *q);

/* -log softmax(logits)[target], in double. */
double llama_nll(const float *logits, int vocab, int target);

#endif
