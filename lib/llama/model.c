/* model.c - llama2.c legacy checkpoints, forward pass, KV cache. */
#include "model.h"
#include "file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
}

/* ---- loading ----------------------------------------------------------------------------- */
void llama_model_free(LlamaModel *m)
{
    if (!m)
        return;
    free(m->data);
    memset(m, 0, sizeof *m);
}

static int32_t le32(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static int host_is_le(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

int llama_model_load(LlamaModel *m, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (!host_is_le()) {
        seterr(err, errlen, "%s: big-endian hosts are not supported", path);
        return -1;
    }
    FILE *f = llama_fopen(path, err, errlen);
    if (!f)
        return -1;
    unsigned char hdr[28];
    size_t got = fread(hdr, 1, sizeof hdr, f);
    if (got != sizeof hdr) {
        fclose(f);
        seterr(err, errlen, "%s: %zu bytes, too short for the 28-byte llama2.c header", path,
               got);
        return -1;
    }
    LlamaConfig c;
    memset(&c, 0, sizeof c);
    c.dim = le32(hdr);
    c.hidden_dim = le32(hdr + 4);
    c.n_layers = le32(hdr + 8);
    c.n_heads = le32(hdr + 12);
    c.n_kv_heads = le32(hdr + 16);
    int32_t vocab = le32(hdr + 20);
    c.seq_len = le32(hdr + 24);
    const int32_t lim = 1 << 20;
    if (c.dim <= 0 || c.dim > lim || c.hidden_dim <= 0 || c.hidden_dim > lim ||
        c.n_layers <= 0 || c.n_layers > 4096 || c.n_heads <= 0 || c.n_heads > c.dim ||
        c.n_kv_heads <= 0 || c.n_kv_heads > c.n_heads || vocab == 0 || vocab > lim ||
        vocab < -lim || c.seq_len <= 0 || c.seq_len > lim || c.dim % c.n_heads != 0 ||
        c.n_heads % c.n_kv_heads != 0 || (c.dim / c.n_heads) % 2 != 0) {
        fclose(f);
        seterr(err, errlen,
               "%s: implausible header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
               "n_kv_heads %d, vocab_size %d, seq_len %d): not a llama2.c version-0 "
               "checkpoint, or a garbled file",
               path, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, (int)vocab,
               c.seq_len);
        return -1;
    }
    c.shared_classifier = vocab > 0;
    c.vocab_size = vocab > 0 ? vocab : -vocab;
    c.head_dim = c.dim / c.n_heads;
    c.kv_dim = c.n_kv_heads * c.head_dim;
    c.group = c.n_heads / c.n_kv_heads;

    /* expected number of floats, in 64-bit arithmetic (all factors < 2^20, L < 2^12) */
    uint64_t D = (uint64_t)c.dim, F = (uint64_t)c.hidden_dim, L = (uint64_t)c.n_layers;
    uint64_t V = (uint64_t)c.vocab_size, KV = (uint64_t)c.kv_dim, S = (uint64_t)c.seq_len;
    uint64_t HD = (uint64_t)c.head_dim;
    uint64_t need = V * D                       /* token embedding */
                    + L * D                     /* rms_att */
                    + L * D * D                 /* wq */
                    + 2 * L * KV * D            /* wk, wv */
                    + L * D * D                 /* wo */
                    + L * D                     /* rms_ffn */
                    + 3 * L * F * D             /* w1, w2, w3 */
                    + D                         /* rms_final */
                    + S * HD                    /* freq_cis real + imag (S x HD/2 each) */
                    + (c.shared_classifier ? 0 : V * D);
    uint64_t need_bytes = 28 + 4 * need;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        seterr(err, errlen, "%s: cannot seek: %s", path, strerror(errno));
        return -1;
    }
    long fsize = ftell(f);
    if (fsize < 0 || (uint64_t)fsize != need_bytes) {
        fclose(f);
        seterr(err, errlen,
               "%s: file is %ld bytes but its header (dim %d, hidden_dim %d, n_layers %d, "
               "n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d) needs %llu bytes: %s",
               path, fsize, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
               (int)vocab, c.seq_len, (unsigned long long)need_bytes,
               (uint64_t)fsize < need_bytes ? "truncated file" : "trailing bytes or a garbled header");
        return -1;
    }
    if (need > (uint64_t)(SIZE_MAX / sizeof(float))) {
        fclose(f);
        seterr(err, errlen, "%s: model too large for this host", path);
        return -1;
    }
    float *data = malloc((size_t)need * sizeof(float));
    if (!data) {
        fclose(f);
        seterr(err, errlen, "%s: out of memory (%llu bytes)", path,
               (unsigned long long)(need * 4));
        return -1;
    }
    if (fseek(f, 28, SEEK_SET) != 0 || fread(data, sizeof(float), (size_t)need, f) != need) {
        fclose(f);
        free(data);
        seterr(err, errlen, "%s: read error", path);
        return -1;
    }
    fclose(f);
    for (uint64_t i = 0; i < need; i++) {
        if (!isfinite(data[i])) {
            free(data);
            seterr(err, errlen, "%s: weight %llu is not finite (garbled file)", path,
                   (unsigned long long)i);
            return -1;
        }
    }
    m->cfg = c;
    m->data = data;
    m->n_floats = (size_t)need;
    const float *p = data;
    m->tok_emb = p;   p += V * D;
    m->rms_att = p;   p += L * D;
    m->wq = p;        p += L * D * D;
    m->wk = p;        p += L * KV * D;
    m->wv = p;        p += L * KV * D;
    m->wo = p;        p += L * D * D;
    m->rms_ffn = p;   p += L * D;
    m->w1 = p;        p += L * F * D;
    m->w2 = p;        p += L * D * F;
    m->w3 = p;        p += L * F * D;
    m->rms_final = p; p += D;
    p += S * HD; /* freq_cis_real, freq_cis_imag: unused */
    m->wcls = c.shared_classifier ? m->tok_emb : p;
    return 0;
}

/* ---- KV cache ------------------------------------------------------------------------------ */
static void cache_layout(LlamaCache *c, int capacity)
{
    c->capacity = capacity;
    c->lay.dtype = KVCC_F32;
    c->lay.layers = c->n_layers;
    c->lay.kv_heads = c->n_kv_heads;
    c->lay.head_dim = c->head_dim;
    c->lay.capacity = capacity;
    c->lay.stride_token = c->head_dim;
    c->lay.stride_head = (int64_t)capacity * c->head_dim;
    c->lay.stride_layer = (int64_t)c->n_kv_heads * c->lay.stride_head;
}

/* Buffers of a cache of `capacity` rows per head; the shape fields of c are set. */
static int cache_alloc(LlamaCache *c, int capacity, float **K, float **V, int32_t **pos,
                       float **state)
{
    size_t heads = (size_t)c->n_layers * (size_t)c->n_kv_heads;
    size_t rows = heads * (size_t)capacity;
    *K = calloc(rows * (size_t)c->head_dim, sizeof(float));
    *V = calloc(rows * (size_t)c->head_dim, sizeof(float));
    *pos = calloc(rows, sizeof(int32_t));
    *state = c->nstate ? calloc((size_t)c->nstate * rows, sizeof(float)) : NULL;
    if (!*K || !*V || !*pos || (c->nstate && !*state)) {
        free(*K);
        free(*V);
        free(*pos);
        free(*state);
        return -1;
    }
    return 0;
}

static void cache_bind(LlamaCache *c, float *K, float *V, int32_t *pos, float *state)
{
    c->kc.K = K;
    c->kc.V = V;
    c->kc.pos = pos;
    c->state = state;
#ifdef LLAMA_KVCC_DECODE
    c->kc.state = state;
#endif
}

int llama_cache_init(LlamaCache *c, int n_layers, int n_kv_heads, int head_dim, int capacity,
                     int nstate)
{
    memset(c, 0, sizeof *c);
    if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 || capacity <= 0 || nstate < 0)
        return -1;
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->nstate = nstate;
    cache_layout(c, capacity);
    float *K, *V, *state;
    int32_t *pos;
    c->kc.len = calloc((size_t)n_layers * (size_t)n_kv_heads, sizeof(int32_t));
    if (!c->kc.len || cache_alloc(c, capacity, &K, &V, &pos, &state)) {
        free(c->kc.len);
        memset(c, 0, sizeof *c);
        return -1;
    }
    cache_bind(c, K, V, pos, state);
    return 0;
}

void llama_cache_free(LlamaCache *c)
{
    if (!c)
        return;
    free(c->kc.K);
    free(c->kc.V);
    free(c->kc.pos);
    free(c->kc.len);
    free(c->state);
    memset(c, 0, sizeof *c);
}

void llama_cache_reset(LlamaCache *c)
{
    memset(c->kc.len, 0, (size_t)c->n_layers * (size_t)c->n_kv_heads * sizeof(int32_t));
}

size_t llama_cache_bytes(const LlamaCache *c)
{
    size_t heads = (size_t)c->n_layers * (size_t)c->n_kv_heads;
    size_t rows = heads * (size_t)c->capacity;
    return 2 * rows * (size_t)c->head_dim * sizeof(float) + rows * sizeof(int32_t) +
           heads * sizeof(int32_t) + (size_t)c->nstate * rows * sizeof(float);
}

int llama_cache_max_len(const LlamaCache *c)
{
    int m = 0;
    for (size_t i = 0; i < (size_t)c->n_layers * (size_t)c->n_kv_heads; i++)
        if (c->kc.len[i] > m)
            m = c->kc.len[i];
    return m;
}

/* Rows 0..len-1 of every head of src into the buffers of dst (capacities may differ). */
static void cache_rows(const LlamaCache *src, float *K, float *V, int32_t *pos, float *state,
                       int capacity)
{
    size_t hd = (size_t)src->head_dim, heads = (size_t)src->n_layers * src->n_kv_heads;
    for (int l = 0; l < src->n_layers; l++)
        for (int h = 0; h < src->n_kv_heads; h++) {
            size_t i = llama_cache_head(src, l, h), n = (size_t)src->kc.len[i];
            memcpy(K + i * capacity * hd, llama_cache_k(src, l, h), n * hd * sizeof(float));
            memcpy(V + i * capacity * hd, llama_cache_v(src, l, h), n * hd * sizeof(float));
            memcpy(pos + i * capacity, llama_cache_pos(src, l, h), n * sizeof(int32_t));
            for (int s = 0; s < src->nstate; s++)
                memcpy(state + ((size_t)s * heads + i) * capacity,
                       src->state + ((size_t)s * heads + i) * src->capacity,
                       n * sizeof(float));
        }
}

int llama_cache_copy(LlamaCache *dst, const LlamaCache *src)
{
    if (dst->n_layers != src->n_layers || dst->n_kv_heads != src->n_kv_heads ||
        dst->head_dim != src->head_dim || dst->nstate != src->nstate ||
        llama_cache_max_len(src) > dst->capacity)
        return -1;
    cache_rows(src, dst->kc.K, dst->kc.V, dst->kc.pos, dst->state, dst->capacity);
    memcpy(dst->kc.len, src->kc.len,
           (size_t)src->n_layers * (size_t)src->n_kv_heads * sizeof(int32_t));
    return 0;
}

int llama_cache_resize(LlamaCache *c, int capacity)
{
    if (capacity <= 0 || capacity < llama_cache_max_len(c))
        return -1;
    float *K, *V, *state;
    int32_t *pos;
    if (cache_alloc(c, capacity, &K, &V, &pos, &state))
        return -1;
    cache_rows(c, K, V, pos, state, capacity);
    free(c->kc.K);
    free(c->kc.V);
    free(c->kc.pos);
    free(c->state);
    cache_bind(c, K, V, pos, state);
    cache_layout(c, capacity);
    return 0;
}

int llama_cache_keep(LlamaCache *c, int l, int h, const int *kept, int n_keep)
{
    if (l < 0 || l >= c->n_layers || h < 0 || h >= c->n_kv_heads || n_keep < 0)
        return -1;
    int32_t *len = llama_cache_len(c, l, h);
    if (n_keep > *len)
        return -1;
    for (int i = 0; i < n_keep; i++)
        if (kept[i] < 0 || kept[i] >= *len || (i > 0 && kept[i] <= kept[i - 1]))
            return -1;
    float *K = llama_cache_k(c, l, h), *V = llama_cache_v(c, l, h);
    int32_t *pos = llama_cache_pos(c, l, h);
    size_t hd = (size_t)c->head_dim, heads = (size_t)c->n_layers * c->n_kv_heads;
    for (int i = 0; i < n_keep; i++) { /* kept[i] >= i: a forward copy is safe */
        int j = kept[i];
        if (j == i)
            continue;
        memmove(K + (size_t)i * hd, K + (size_t)j * hd, hd * sizeof(float));
        memmove(V + (size_t)i * hd, V + (size_t)j * hd, hd * sizeof(float));
        pos[i] = pos[j];
        for (int s = 0; s < c->nstate; s++) {
            float *st = c->state + ((size_t)s * heads + llama_cache_head(c, l, h)) * c->capacity;
            st[i] = st[j];
        }
    }
    *len = n_keep;
    return 0;
}

/* ---- observation queries ------------------------------------------------------------------- */
int llama_obs_init(LlamaObs *o, const LlamaConfig *cfg, int window)
{
    memset(o, 0, sizeof *o);
    if (window <= 0)
        return -1;
    o->n_layers = cfg->n_layers;
    o->n_heads = cfg->n_heads;
    o->head_dim = cfg->head_dim;
    o->window = window;
    o->q = calloc((size_t)cfg->n_layers * (size_t)cfg->n_heads * (size_t)window *
                      (size_t)cfg->head_dim, sizeof(float));
    o->qpos = calloc((size_t)window, sizeof(int));
    if (!o->q || !o->qpos) {
        llama_obs_free(o);
        return -1;
    }
    return 0;
}

void llama_obs_free(LlamaObs *o)
{
    if (!o)
        return;
    free(o->q);
    free(o->qpos);
    memset(o, 0, sizeof *o);
}

/* ---- math --------------------------------------------------------------------------------- */
/* y[r] = sum_c W[r][c] x[c]; eight partial sums so that the compiler can vectorize */
static void matvec(float *restrict y, const float *restrict W, const float *restrict x,
                   int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * (size_t)cols;
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int c = 0;
        for (; c + 8 <= cols; c += 8)
            for (int u = 0; u < 8; u++)
                a[u] += w[c + u] * x[c + u];
        float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
        for (; c < cols; c++)
            s += w[c] * x[c];
        y[r] = s;
    }
}

static void rmsnorm(float *out, const float *x, const float *w, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + 1e-5));
    for (int i = 0; i < n; i++)
        out[i] = x[i] * inv * w[i];
}

/* RoPE on adjacent pairs (i, i+1) of every head: freq = 10000^-((i mod hd)/hd) */
static void rope(float *x, int n, int hd, int pos)
{
    for (int i = 0; i < n; i += 2) {
        int j = i % hd;
        double ang = (double)pos * pow(10000.0, -(double)j / (double)hd);
        float c = (float)cos(ang), s = (float)sin(ang);
        float a = x[i], b = x[i + 1];
        x[i] = a * c - b * s;
        x[i + 1] = a * s + b * c;
    }
}

void llama_attend_ref(const float *q, const float *K, const float *V, int n, int hd, int G,
                      float *out, float *probs)
{
    const float scale = 1.0f / sqrtf((float)hd);
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * hd;
        float *o = out + (size_t)g * hd;
        float mx = -INFINITY, sum = 0.0f;
        for (int c = 0; c < hd; c++)
            o[c] = 0.0f;
        for (int t = 0; t < n; t++) {
            const float *k = K + (size_t)t * hd, *v = V + (size_t)t * hd;
            float s = 0.0f;
            for (int c = 0; c < hd; c++)
                s += qg[c] * k[c];
            s *= scale;
            if (probs)
                probs[(size_t)g * n + t] = s;
            if (s > mx) { /* rescale what was accumulated under the old maximum */
                float r = expf(mx - s);
                sum *= r;
                for (int c = 0; c < hd; c++)
                    o[c] *= r;
                mx = s;
            }
            float e = expf(s - mx);
            sum += e;
            for (int c = 0; c < hd; c++)
                o[c] += e * v[c];
        }
        float inv = n > 0 ? 1.0f / sum : 0.0f;
        for (int c = 0; c < hd; c++)
            o[c] *= inv;
        if (probs)
            for (int t = 0; t < n; t++)
                probs[(size_t)g * n + t] = expf(probs[(size_t)g * n + t] - mx) * inv;
    }
}

/* ---- state & forward ------------------------------------------------------------------------- */
void llama_state_free(LlamaState *s)
{
    if (!s)
        return;
    llama_cache_free(&s->cache);
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att_out);
    free(s->probs);
    free(s->logits);
    memset(s, 0, sizeof *s);
}

int llama_state_init(LlamaState *s, const LlamaModel *m, int capacity, int nstate)
{
    memset(s, 0, sizeof *s);
    const LlamaConfig *c = &m->cfg;
    if (capacity <= 0)
        capacity = c->seq_len;
    s->m = m;
    s->attend = llama_attend_ref;
    if (llama_cache_init(&s->cache, c->n_layers, c->n_kv_heads, c->head_dim, capacity, nstate))
        return -1;
    s->x = calloc((size_t)c->dim, sizeof(float));
    s->xb = calloc((size_t)c->dim, sizeof(float));
    s->xb2 = calloc((size_t)c->dim, sizeof(float));
    s->hb = calloc((size_t)c->hidden_dim, sizeof(float));
    s->hb2 = calloc((size_t)c->hidden_dim, sizeof(float));
    s->q = calloc((size_t)c->dim, sizeof(float));
    s->k = calloc((size_t)c->kv_dim, sizeof(float));
    s->v = calloc((size_t)c->kv_dim, sizeof(float));
    s->att_out = calloc((size_t)c->dim, sizeof(float));
    /* probabilities of the reference path's observe hook: room for a cache that is later
     * resized up to the model's seq_len */
    s->probs = calloc((size_t)c->group * (size_t)(capacity > c->seq_len ? capacity : c->seq_len),
                      sizeof(float));
    s->logits = calloc((size_t)c->vocab_size, sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v ||
        !s->att_out || !s->probs || !s->logits) {
        llama_state_free(s);
        return -1;
    }
    return 0;
}

const float *llama_forward(LlamaState *s, int token, int pos)
{
    const LlamaModel *m = s->m;
    const LlamaConfig *c = &m->cfg;
    LlamaCache *kc = &s->cache;
    const int D = c->dim, hd = c->head_dim, G = c->group;
    if (token < 0 || token >= c->vocab_size) {
        snprintf(s->err, sizeof s->err, "token id %d outside 0..%d", token, c->vocab_size - 1);
        return NULL;
    }
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++)
            if (*llama_cache_len(kc, l, h) >= kc->capacity) {
                snprintf(s->err, sizeof s->err,
                         "the KV cache is full (layer %d, kv head %d: %d rows)", l, h,
                         kc->capacity);
                return NULL;
            }
    int obs_slot = llama_obs_begin(s->obs, pos);
    float *x = s->x;
    memcpy(x, m->tok_emb + (size_t)token * D, (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer_qkv(m, l, x, pos, s->xb, s->q, s->k, s->v);
        llama_obs_store(s->obs, obs_slot, l, s->q);
        if (s->layer) {
            int rc = s->layer(s->layer_user, kc, l, s->q, s->k, s->v, pos, s->att_out);
            if (rc) {
                snprintf(s->err, sizeof s->err, "attention of layer %d at position %d: %s (%d)",
                         l, pos, kvcc_last_error(), rc);
                return NULL;
            }
        } else {
            for (int h = 0; h < c->n_kv_heads; h++) {
                int32_t *len = llama_cache_len(kc, l, h);
                int slot = (*len)++;
                memcpy(llama_cache_k(kc, l, h) + (size_t)slot * hd, s->k + (size_t)h * hd,
                       (size_t)hd * sizeof(float));
                memcpy(llama_cache_v(kc, l, h) + (size_t)slot * hd, s->v + (size_t)h * hd,
                       (size_t)hd * sizeof(float));
                llama_cache_pos(kc, l, h)[slot] = pos;
                float *probs = s->observe ? s->probs : NULL;
                s->attend(s->q + (size_t)h * G * hd, llama_cache_k(kc, l, h),
                          llama_cache_v(kc, l, h), *len, hd, G, s->att_out + (size_t)h * G * hd,
                          probs);
                if (s->observe)
                    s->observe(s->observe_user, l, h, probs, *len, G);
            }
        }
        llama_layer_ffn(m, l, x, s->att_out, s->xb, s->xb2, s->hb, s->hb2);
    }
    llama_head(m, x, s->xb, s->logits);
    return s->logits;
}

int llama_obs_begin(LlamaObs *obs, int pos)
{
    if (!obs || pos < obs->start || pos >= obs->start + obs->window)
        return -1;
    int slot = pos - obs->start;
    obs->qpos[slot] = pos;
    if (slot + 1 > obs->count)
        obs->count = slot + 1;
    return slot;
}

void llama_obs_store(LlamaObs *obs, int slot, int l, const float *q)
{
    if (!obs || slot < 0)
        return;
    const size_t hd = (size_t)obs->head_dim;
    for (int qh = 0; qh < obs->n_heads; qh++)
        memcpy(obs->q + (((size_t)l * obs->n_heads + qh) * obs->window + slot) * hd,
               q + (size_t)qh * hd, hd * sizeof(float));
}

void llama_layer_qkv(const LlamaModel *m, int l, const float *x, int pos, float *xb, float *q,
                     float *k, float *v)
{
    const LlamaConfig *c = &m->cfg;
    const int D = c->dim, KV = c->kv_dim;
    rmsnorm(xb, x, m->rms_att + (size_t)l * D, D);
    matvec(q, m->wq + (size_t)l * D * D, xb, D, D);
    matvec(k, m->wk + (size_t)l * KV * D, xb, KV, D);
    matvec(v, m->wv + (size_t)l * KV * D, xb, KV, D);
    rope(q, D, c->head_dim, pos);
    rope(k, KV, c->head_dim, pos);
}

void llama_layer_ffn(const LlamaModel *m, int l, float *x, const float *att_out, float *xb,
                     float *xb2, float *hb, float *hb2)
{
    const int D = m->cfg.dim, F = m->cfg.hidden_dim;
    matvec(xb2, m->wo + (size_t)l * D * D, att_out, D, D);
    for (int i = 0; i < D; i++)
        x[i] += xb2[i];
    rmsnorm(xb, x, m->rms_ffn + (size_t)l * D, D);
    matvec(hb, m->w1 + (size_t)l * F * D, xb, F, D);
    matvec(hb2, m->w3 + (size_t)l * F * D, xb, F, D);
    for (int i = 0; i < F; i++) {
        float a = hb[i];
        hb[i] = a / (1.0f + expf(-a)) * hb2[i];
    }
    matvec(xb2, m->w2 + (size_t)l * D * F, hb, D, F);
    for (int i = 0; i < D; i++)
        x[i] += xb2[i];
}

void llama_head(const LlamaModel *m, const float *x, float *xb, float *logits)
{
    rmsnorm(xb, x, m->rms_final, m->cfg.dim);
    matvec(logits, m->wcls, xb, m->cfg.vocab_size, m->cfg.dim);
}

double llama_nll(const float *logits, int vocab, int target)
{
    if (target < 0 || target >= vocab)
        return NAN;
    double mx = logits[0];
    for (int i = 1; i < vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - mx);
    return mx + log(sum) - (double)logits[target];
}

int llama_prefill(LlamaState *s, const int *tokens, int n, int pos0, LlamaObs *obs,
                  double *nll_sum)
{
    LlamaObs *saved = s->obs;
    if (obs) {
        int w = n < obs->window ? n : obs->window;
        obs->start = pos0 + n - w;
        obs->count = 0;
        s->obs = obs;
    }
    double acc = 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const float *lg = llama_forward(s, tokens[i], pos0 + i);
        if (!lg) {
            rc = -1;
            break;
        }
        if (nll_sum && i + 1 < n)
            acc += llama_nll(lg, s->m->cfg.vocab_size, tokens[i + 1]);
    }
    s->obs = saved;
    if (nll_sum)
        *nll_sum = acc;
    return rc;
}
