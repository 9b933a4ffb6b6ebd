/* batch.h - many sequences of the llama model over one pool of KV pages: continuous batching in
 * miniature on libkvcc's batched and paged API (include/kvcc.h, doc/runtime.md).
 *
 * The pool is vLLM's: per layer [num_pages][page_size][kv_heads][head_dim] f32 for K (post-RoPE)
 * and V, one block table per sequence slot shared by the slot's layers and heads
 * (KVCC_TABLE_SHARED), pages handed out from a free list as the slot's longest head grows and
 * given back when libkvcc's compression frees them (kvcc_seq.freed) or the sequence ends. With
 * per_head, a table per (slot, layer, head) (KVCC_TABLE_PER_HEAD, vllm-kvcompress's layout):
 * each head takes pages as it grows and gives back what its own compression frees.
 * Positions, lengths and per-token policy state stay per slot ([layers][kv_heads][capacity]),
 * as kvcc_seq wants them.
 *
 * A step (llama_paged_forward) runs one token of each of the given slots: per layer the model's
 * own code (llama_layer_qkv, llama_layer_ffn: the same bits as llama_forward) around one
 * kvcc_append_batch + kvcc_decode_batch over all of them. */
#ifndef KVCC_LIB_LLAMA_BATCH_H
#define KVCC_LIB_LLAMA_BATCH_H

#include "kvcc.h"
#include "model.h"

typedef struct {
    const LlamaModel *m;
    kvcc_layout lay;       /* the pool's strides; capacity = rows per (slot, layer, head) */
    kvcc_paging pg;
    int max_seqs, nstate;
    int nt;                /* tables per slot: 1 (shared) or layers*kv_heads (per head) */
    float *Kpool, *Vpool;  /* [layers][num_pages][page_size][kv_heads][head_dim] */
    float **Kl, **Vl;      /* [layers] each layer's pool (vLLM's per-layer tensors) */
    int32_t *free_pages;   /* stack of free page ids, nfree of them */
    int nfree;
    unsigned char *touched; /* [num_pages] 1 once a page was handed out */
    long handed, reused;   /* pages handed out; of them, pages that had been used before */
    /* per slot */
    int32_t *table;        /* [max_seqs][nt][max_pages] */
    int *npages;           /* [max_seqs][nt] pages each table holds */
    int32_t *pos, *len;    /* [max_seqs][layers][kv_heads][capacity], [max_seqs][layers][kv_heads] */
    float *state;          /* [max_seqs][nstate][layers][kv_heads][capacity], or NULL */
    int32_t *freed;        /* [max_seqs][nt * max_pages] pages a compression freed */
    /* the packed batch of a call */
    kvcc_seq *seq;         /* [max_seqs] */
    int32_t *ptab;         /* [max_seqs][nt][max_pages] */
    /* scratch per slot */
    float *x, *xb, *xb2, *hb, *hb2, *q, *k, *v, *att, *logits;
    int32_t *ppos;         /* [max_seqs] positions of a step */
    char err[256];
} LlamaPaged;

/* A pool of num_pages pages of page_size tokens (1..256) for up to max_seqs slots of at most
 * capacity tokens each; nstate per-token state tensors per slot (the policy's); per_head: a
 * table per (slot, layer, head), else one per slot.  Returns 0 or -1 (bad sizes, out of memory). */
int llama_paged_init(LlamaPaged *P, const LlamaModel *m, int page_size, int num_pages, int max_seqs,
                     int capacity, int nstate, int per_head);
/* Pages slot's tables hold. */
int llama_paged_slot_pages(const LlamaPaged *P, int slot);
void llama_paged_free(LlamaPaged *P);

static inline int llama_paged_used(const LlamaPaged *P) { return P->pg.num_pages - P->nfree; }
/* Pages that `rows` tokens of one table take (a slot: P->nt times this at most). */
static inline int llama_paged_pages_for(const LlamaPaged *P, long rows)
{
    return (int)((rows + P->pg.page_size - 1) / P->pg.page_size);
}
/* The longest (layer, head) of a slot. */
int llama_paged_max_len(const LlamaPaged *P, int slot);

/* Empties a slot (lengths 0) and gives every page it holds back to the pool. */
void llama_paged_release(LlamaPaged *P, int slot);

/* One token of each slot slots[0..n-1] (distinct), tokens[i] at position pos[i]: appends its
 * K, V to every (layer, head) of the slot (taking a page from the pool when the slot's table
 * is full) and attends over them with `plan` (a plan of P->lay and P->pg for max_seqs
 * sequences).  obs[i] (or obs NULL, or obs[i] NULL) captures the slot's queries as
 * llama_forward does.  The logits of slot s are P->logits + s * vocab.  Returns 0, or -1 with
 * P->err (the pool is out of pages, the slot is at capacity, libkvcc's error). */
int llama_paged_forward(LlamaPaged *P, kvcc_plan *plan, const int *slots, int n, const int *tokens,
                        const int *pos, LlamaObs *const *obs);

/* kvcc_compress_batch of slots[0..n-1] with obs[i] (NULL: none) and args, then the pages it
 * freed go back to the pool.  *freed (optional) receives their number.  Returns 0, or -1 with
 * P->err. */
int llama_paged_compress(LlamaPaged *P, kvcc_plan *plan, const int *slots, int n,
                         const kvcc_obs *obs, const kvcc_args *args, int *freed);

#endif
