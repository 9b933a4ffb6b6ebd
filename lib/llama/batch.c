/* batch.c - many sequences over one page pool (batch.h). */
#include "batch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int perr(LlamaPaged *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(LlamaPaged *P, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err, sizeof P->err, fmt, ap);
    va_end(ap);
    return -1;
}

void llama_paged_free(LlamaPaged *P)
{
    if (!P)
        return;
    free(P->Kpool), free(P->Vpool), free(P->Kl), free(P->Vl);
    free(P->free_pages), free(P->touched), free(P->table), free(P->npages);
    free(P->pos), free(P->len), free(P->state), free(P->freed), free(P->seq), free(P->ptab);
    free(P->x), free(P->xb), free(P->xb2), free(P->hb), free(P->hb2);
    free(P->q), free(P->k), free(P->v), free(P->att), free(P->logits), free(P->ppos);
    memset(P, 0, sizeof *P);
}

int llama_paged_init(LlamaPaged *P, const LlamaModel *m, int page_size, int num_pages, int max_seqs,
                     int capacity, int nstate, int per_head)
{
    const LlamaConfig *c = &m->cfg;
    memset(P, 0, sizeof *P);
    if (page_size < 1 || page_size > 256 || num_pages < 1 || max_seqs < 1 || capacity < 1 ||
        nstate < 0)
        return -1;
    const int L = c->n_layers, H = c->n_kv_heads, d = c->head_dim;
    const int mp = (capacity + page_size - 1) / page_size;
    const size_t LH = (size_t)L * H, S = (size_t)max_seqs, page = (size_t)page_size * H * d;
    const size_t nt = per_head ? LH : 1;
    P->m = m;
    P->nt = (int)nt;
    P->max_seqs = max_seqs;
    P->nstate = nstate;
    P->lay = (kvcc_layout){KVCC_F32, L, H, d, capacity, (int64_t)(num_pages * page), d, (int64_t)H * d};
    P->pg = (kvcc_paging){page_size, num_pages, mp, per_head ? KVCC_TABLE_PER_HEAD : KVCC_TABLE_SHARED,
                          (int64_t)page};
    P->Kpool = calloc(L * num_pages * page, sizeof(float));
    P->Vpool = calloc(L * num_pages * page, sizeof(float));
    P->Kl = calloc((size_t)L, sizeof *P->Kl);
    P->Vl = calloc((size_t)L, sizeof *P->Vl);
    P->free_pages = calloc((size_t)num_pages, sizeof *P->free_pages);
    P->touched = calloc((size_t)num_pages, 1);
    P->table = calloc(S * nt * mp, sizeof *P->table);
    P->npages = calloc(S * nt, sizeof *P->npages);
    P->pos = calloc(S * LH * capacity, sizeof *P->pos);
    P->len = calloc(S * LH, sizeof *P->len);
    P->state = nstate ? calloc(S * nstate * LH * capacity, sizeof *P->state) : NULL;
    P->freed = calloc(S * nt * mp, sizeof *P->freed);
    P->seq = calloc(S, sizeof *P->seq);
    P->ptab = calloc(S * nt * mp, sizeof *P->ptab);
    P->x = calloc(S * c->dim, sizeof(float));
    P->xb = calloc(S * c->dim, sizeof(float));
    P->xb2 = calloc(S * c->dim, sizeof(float));
    P->hb = calloc(S * c->hidden_dim, sizeof(float));
    P->hb2 = calloc(S * c->hidden_dim, sizeof(float));
    P->q = calloc(S * c->dim, sizeof(float));
    P->k = calloc(S * c->kv_dim, sizeof(float));
    P->v = calloc(S * c->kv_dim, sizeof(float));
    P->att = calloc(S * c->dim, sizeof(float));
    P->logits = calloc(S * c->vocab_size, sizeof(float));
    P->ppos = calloc(S, sizeof *P->ppos);
    if (!P->Kpool || !P->Vpool || !P->Kl || !P->Vl || !P->free_pages || !P->touched || !P->table ||
        !P->npages || !P->pos || !P->len || (nstate && !P->state) || !P->freed || !P->seq ||
        !P->ptab || !P->x || !P->xb || !P->xb2 || !P->hb || !P->hb2 || !P->q || !P->k || !P->v ||
        !P->att || !P->logits || !P->ppos) {
        llama_paged_free(P);
        return -1;
    }
    for (int l = 0; l < L; l++) {
        P->Kl[l] = P->Kpool + (size_t)l * num_pages * page;
        P->Vl[l] = P->Vpool + (size_t)l * num_pages * page;
    }
    /* the stack pops page 0 first */
    for (int i = 0; i < num_pages; i++)
        P->free_pages[i] = num_pages - 1 - i;
    P->nfree = num_pages;
    return 0;
}

int llama_paged_max_len(const LlamaPaged *P, int slot)
{
    const int LH = P->lay.layers * P->lay.kv_heads;
    const int32_t *len = P->len + (size_t)slot * LH;
    int mx = 0;
    for (int k = 0; k < LH; k++)
        mx = len[k] > mx ? len[k] : mx;
    return mx;
}

int llama_paged_slot_pages(const LlamaPaged *P, int slot)
{
    int n = 0;
    for (int i = 0; i < P->nt; i++)
        n += P->npages[(size_t)slot * P->nt + i];
    return n;
}

void llama_paged_release(LlamaPaged *P, int slot)
{
    const int LH = P->lay.layers * P->lay.kv_heads, mp = P->pg.max_pages;
    for (int ti = (int)((size_t)slot * P->nt + P->nt - 1); ti >= slot * P->nt; ti--) {
        for (int j = P->npages[ti] - 1; j >= 0; j--)
            P->free_pages[P->nfree++] = P->table[(size_t)ti * mp + j];
        P->npages[ti] = 0;
    }
    memset(P->len + (size_t)slot * LH, 0, (size_t)LH * sizeof *P->len);
}

/* The longest (layer, head) of table i of a slot (shared: the slot's longest) */
static int tab_len(const LlamaPaged *P, int slot, int i)
{
    return P->nt == 1 ? llama_paged_max_len(P, slot)
                      : P->len[(size_t)slot * P->lay.layers * P->lay.kv_heads + i];
}

/* Table i of the slot grown to hold `rows` tokens, pages from the pool. */
static int grow(LlamaPaged *P, int slot, int i, long rows)
{
    int need = llama_paged_pages_for(P, rows), ti = slot * P->nt + i;
    if (need > P->pg.max_pages)
        return perr(P, "slot %d: %ld tokens, above the capacity of %d", slot, rows, P->lay.capacity);
    while (P->npages[ti] < need) {
        if (!P->nfree)
            return perr(P, "the page pool is exhausted (%d pages): slot %d needs a page for token %ld",
                        P->pg.num_pages, slot, rows);
        int32_t id = P->free_pages[--P->nfree];
        P->handed++;
        P->reused += P->touched[id];
        P->touched[id] = 1;
        P->table[(size_t)ti * P->pg.max_pages + P->npages[ti]++] = id;
    }
    return 0;
}

/* kvcc_batch of slots[0..n-1]: their sequences and tables, packed in call order. */
static void pack(LlamaPaged *P, const int *slots, int n, const kvcc_obs *obs, kvcc_batch *b)
{
    const size_t LH = (size_t)P->lay.layers * P->lay.kv_heads, cap = (size_t)P->lay.capacity;
    const int mp = P->pg.max_pages;
    for (int i = 0; i < n; i++) {
        int s = slots[i];
        kvcc_seq *q = &P->seq[i];
        memset(q, 0, sizeof *q);
        q->pos = P->pos + (size_t)s * LH * cap;
        q->len = P->len + (size_t)s * LH;
        q->state = P->state ? P->state + (size_t)s * P->nstate * LH * cap : NULL;
        if (obs)
            q->obs = obs[i];
        q->freed = P->freed + (size_t)s * P->nt * mp;
        for (int t = 0; t < P->nt; t++)
            memcpy(P->ptab + ((size_t)i * P->nt + t) * mp, P->table + ((size_t)s * P->nt + t) * mp,
                   (size_t)P->npages[s * P->nt + t] * sizeof *P->ptab);
    }
    memset(b, 0, sizeof *b);
    b->nseq = n;
    b->seq = P->seq;
    b->Kl = (void *const *)P->Kl;
    b->Vl = (void *const *)P->Vl;
    b->table = P->ptab;
}

int llama_paged_forward(LlamaPaged *P, kvcc_plan *plan, const int *slots, int n, const int *tokens,
                        const int *pos, LlamaObs *const *obs)
{
    const LlamaModel *m = P->m;
    const LlamaConfig *c = &m->cfg;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, KV = (size_t)c->kv_dim;
    int oslot[256];
    if (n < 1 || n > P->max_seqs || n > 256)
        return perr(P, "%d sequences in a step (1..%d)", n, P->max_seqs);
    for (int i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= P->max_seqs)
            return perr(P, "slot %d outside 0..%d", slots[i], P->max_seqs - 1);
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return perr(P, "token id %d outside 0..%d", tokens[i], c->vocab_size - 1);
        for (int t = 0; t < P->nt; t++)
            if (grow(P, slots[i], t, (long)tab_len(P, slots[i], t) + 1))
                return -1;
    }
    kvcc_batch b;
    pack(P, slots, n, NULL, &b);
    for (int i = 0; i < n; i++) {
        P->ppos[i] = pos[i];
        oslot[i] = llama_obs_begin(obs ? obs[i] : NULL, pos[i]);
        memcpy(P->x + i * D, m->tok_emb + (size_t)tokens[i] * D, D * sizeof(float));
    }
    for (int l = 0; l < c->n_layers; l++) {
        for (int i = 0; i < n; i++) {
            llama_layer_qkv(m, l, P->x + i * D, pos[i], P->xb + i * D, P->q + i * D, P->k + i * KV,
                            P->v + i * KV);
            llama_obs_store(obs ? obs[i] : NULL, oslot[i], l, P->q + i * D);
        }
        int rc = kvcc_append_batch(plan, &b, l, P->k, P->v, P->ppos);
        if (!rc)
            rc = kvcc_decode_batch(plan, &b, l, P->q, P->att);
        if (rc)
            return perr(P, "attention of layer %d: %s (%d)", l, kvcc_last_error(), rc);
        for (int i = 0; i < n; i++)
            llama_layer_ffn(m, l, P->x + i * D, P->att + i * D, P->xb + i * D, P->xb2 + i * D,
                            P->hb + i * F, P->hb2 + i * F);
    }
    for (int i = 0; i < n; i++)
        llama_head(m, P->x + i * D, P->xb + i * D, P->logits + (size_t)slots[i] * c->vocab_size);
    return 0;
}

int llama_paged_compress(LlamaPaged *P, kvcc_plan *plan, const int *slots, int n,
                         const kvcc_obs *obs, const kvcc_args *args, int *freed)
{
    kvcc_batch b;
    const int mp = P->pg.max_pages;
    int total = 0;
    if (n < 1 || n > P->max_seqs)
        return perr(P, "%d sequences in a compression (1..%d)", n, P->max_seqs);
    pack(P, slots, n, obs, &b);
    int rc = kvcc_compress_batch(plan, &b, args);
    if (rc)
        return perr(P, "kvcc_compress_batch: %s (%d)", kvcc_last_error(), rc);
    for (int i = 0; i < n; i++) {
        int s = slots[i], nf = P->seq[i].nfreed, off = 0;
        /* libkvcc's freed pages must be each table's tail past its longest head, in order, table
           by table */
        for (int t = 0; t < P->nt; t++) {
            int ti = s * P->nt + t, keep = llama_paged_pages_for(P, tab_len(P, s, t)), k = P->npages[ti] - keep;
            const int32_t *tab = P->table + (size_t)ti * mp;
            if (k < 0 || off + k > nf || memcmp(P->seq[i].freed + off, tab + keep, (size_t)k * sizeof *tab) != 0)
                return perr(P, "slot %d table %d: kvcc_compress_batch's freed pages are not the %d past its "
                            "longest head", s, t, k);
            for (int j = k - 1; j >= 0; j--)
                P->free_pages[P->nfree++] = tab[keep + j];
            P->npages[ti] = keep;
            off += k;
        }
        if (off != nf)
            return perr(P, "slot %d: kvcc_compress_batch freed %d pages, the tables %d", s, nf, off);
        total += nf;
    }
    if (freed)
        *freed = total;
    return 0;
}
