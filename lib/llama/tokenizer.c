/* tokenizer.c - llama2.c-format tokenizer: load, encode, decode. */
#include "tokenizer.h"
#include "file.h"

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

static int rd_i32(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static float rd_f32(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int cmp_bytes(const char *a, int la, const char *b, int lb)
{
    int n = la < lb ? la : lb;
    int c = memcmp(a, b, (size_t)n);
    if (c)
        return c;
    return (la > lb) - (la < lb);
}

static const LlamaTokenizer *g_sort_tok; /* qsort has no context argument in C11 */

static int cmp_ids(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    int c = cmp_bytes(g_sort_tok->pieces[a], g_sort_tok->lens[a], g_sort_tok->pieces[b],
                      g_sort_tok->lens[b]);
    return c ? c : (a > b) - (a < b);
}

void llama_tok_free(LlamaTokenizer *t)
{
    if (!t)
        return;
    if (t->pieces)
        for (int i = 0; i < t->vocab_size; i++)
            free(t->pieces[i]);
    free(t->pieces);
    free(t->lens);
    free(t->scores);
    free(t->sorted);
    memset(t, 0, sizeof *t);
}

int llama_tok_load(LlamaTokenizer *t, const char *path, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    FILE *f = llama_fopen(path, err, errlen);
    if (!f)
        return -1;
    unsigned char *buf = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > ((size_t)1 << 30)) {
                fclose(f);
                free(buf);
                seterr(err, errlen, "%s: file too large for a tokenizer", path);
                return -1;
            }
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                fclose(f);
                free(buf);
                seterr(err, errlen, "%s: out of memory", path);
                return -1;
            }
            buf = nb;
        }
        size_t r = fread(buf + size, 1, cap - size, f);
        size += r;
        if (r == 0)
            break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        seterr(err, errlen, "%s: read error", path);
        return -1;
    }
    if (size < 4) {
        free(buf);
        seterr(err, errlen, "%s: %ld bytes, too short for a tokenizer file", path,
               (long)size);
        return -1;
    }
    t->max_token_length = rd_i32(buf);
    if (t->max_token_length <= 0 || t->max_token_length > 4096) {
        free(buf);
        seterr(err, errlen, "%s: implausible max_token_length %ld (garbled file?)", path,
               (long)t->max_token_length);
        return -1;
    }
    /* first pass: count and validate records */
    size_t off = 4;
    int n = 0;
    while (off < size) {
        if (size - off < 8) {
            free(buf);
            seterr(err, errlen, "%s: truncated record %ld at byte %ld", path, (long)n, (long)off);
            return -1;
        }
        int len = rd_i32(buf + off + 4);
        if (len < 0 || len > t->max_token_length || (size_t)len > size - off - 8) {
            free(buf);
            seterr(err, errlen, "%s: record %ld has a bad length (%ld; truncated or garbled)",
                   path, (long)n, (long)len);
            return -1;
        }
        off += 8 + (size_t)len;
        n++;
        if (n > (1 << 24)) {
            free(buf);
            seterr(err, errlen, "%s: too many records", path);
            return -1;
        }
    }
    if (n == 0) {
        free(buf);
        seterr(err, errlen, "%s: no tokens", path);
        return -1;
    }
    t->vocab_size = n;
    t->pieces = calloc((size_t)n, sizeof *t->pieces);
    t->lens = calloc((size_t)n, sizeof *t->lens);
    t->scores = calloc((size_t)n, sizeof *t->scores);
    t->sorted = calloc((size_t)n, sizeof *t->sorted);
    if (!t->pieces || !t->lens || !t->scores || !t->sorted) {
        free(buf);
        llama_tok_free(t);
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    off = 4;
    for (int i = 0; i < n; i++) {
        t->scores[i] = rd_f32(buf + off);
        int len = rd_i32(buf + off + 4);
        t->lens[i] = len;
        t->pieces[i] = malloc((size_t)len + 1);
        if (!t->pieces[i]) {
            free(buf);
            llama_tok_free(t);
            seterr(err, errlen, "%s: out of memory", path);
            return -1;
        }
        memcpy(t->pieces[i], buf + off + 8, (size_t)len);
        t->pieces[i][len] = 0;
        t->sorted[i] = i;
        off += 8 + (size_t)len;
    }
    free(buf);
    g_sort_tok = t;
    qsort(t->sorted, (size_t)n, sizeof *t->sorted, cmp_ids);
    g_sort_tok = NULL;
    /* byte-fallback tokens: <0x00> .. <0xFF> must be consecutive ids */
    t->byte_base = llama_tok_lookup(t, "<0x00>", 6);
    for (int b = 0; b < 256; b++)
        t->raw_bytes[b] = (unsigned char)b;
    if (t->byte_base >= 0) {
        char name[8];
        for (int b = 0; b < 256; b++) {
            snprintf(name, sizeof name, "<0x%02X>", b);
            if (t->byte_base + b >= n || llama_tok_lookup(t, name, 6) != t->byte_base + b) {
                t->byte_base = -1;
                break;
            }
        }
    }
    return 0;
}

int llama_tok_lookup(const LlamaTokenizer *t, const char *s, size_t len)
{
    if (len > (size_t)t->max_token_length)
        return -1;
    int lo = 0, hi = t->vocab_size; /* first element >= (s, len) */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int id = t->sorted[mid];
        if (cmp_bytes(t->pieces[id], t->lens[id], s, (int)len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < t->vocab_size) {
        int id = t->sorted[lo];
        if (cmp_bytes(t->pieces[id], t->lens[id], s, (int)len) == 0)
            return id;
    }
    return -1;
}

size_t llama_tok_max_ids(size_t len)
{
    return len + 2; /* BOS, " ", and at most one id per byte */
}

/* id of the merge of a and b, or -1 */
static int merge_id(const LlamaTokenizer *t, int a, int b, char *tmp)
{
    int la = t->lens[a], lb = t->lens[b];
    if (la + lb > t->max_token_length)
        return -1;
    memcpy(tmp, t->pieces[a], (size_t)la);
    memcpy(tmp + la, t->pieces[b], (size_t)lb);
    return llama_tok_lookup(t, tmp, (size_t)(la + lb));
}

/* A candidate merge of the adjacent nodes left, right of the linked list of tokens; valid
 * while both nodes still hold the versions it was made from. */
typedef struct {
    float score;
    int left, right, vleft, vright, id;
} Cand;

/* heap order: higher score first, then the leftmost pair (node order == text order) */
static int cand_before(const Cand *a, const Cand *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(Cand *h, int *n, Cand c)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_before(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static Cand heap_pop(Cand *h, int *n)
{
    Cand top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_before(&h[c + 1], &h[c]))
            c++;
        if (!cand_before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

typedef struct {
    const LlamaTokenizer *t;
    int *ids, *nxt, *prv, *ver;
    Cand *heap;
    int nheap;
    char *tmp;
} Merger;

static void push_pair(Merger *m, int a, int b)
{
    if (a < 0 || b < 0)
        return;
    int id = merge_id(m->t, m->ids[a], m->ids[b], m->tmp);
    if (id < 0)
        return;
    Cand c = {m->t->scores[id], a, b, m->ver[a], m->ver[b], id};
    heap_push(m->heap, &m->nheap, c);
}

/* Repeatedly merges the adjacent pair with the highest score (leftmost on ties) - the
 * greedy rule of llama2.c, with a heap instead of a rescan per merge.  Returns the new
 * count, or -1 when out of memory. */
static int merge_all(const LlamaTokenizer *t, int *ids, int n)
{
    if (n < 2)
        return n;
    Merger m = {t, ids, NULL, NULL, NULL, NULL, 0, NULL};
    m.nxt = malloc((size_t)n * sizeof(int));
    m.prv = malloc((size_t)n * sizeof(int));
    m.ver = calloc((size_t)n, sizeof(int));
    m.heap = malloc((size_t)n * 3 * sizeof(Cand)); /* n-1 initial + 2 per merge (< n) */
    m.tmp = malloc((size_t)t->max_token_length * 2 + 1);
    int rc = -1;
    if (!m.nxt || !m.prv || !m.ver || !m.heap || !m.tmp)
        goto out;
    for (int i = 0; i < n; i++) {
        m.nxt[i] = i + 1 < n ? i + 1 : -1;
        m.prv[i] = i - 1;
    }
    for (int i = 0; i + 1 < n; i++)
        push_pair(&m, i, i + 1);
    while (m.nheap > 0) {
        Cand c = heap_pop(m.heap, &m.nheap);
        if (m.ver[c.left] != c.vleft || m.ver[c.right] != c.vright || m.nxt[c.left] != c.right)
            continue; /* stale: one of the two tokens was merged since */
        int a = c.left, b = c.right;
        ids[a] = c.id;
        m.ver[a]++;
        m.ver[b]++;
        m.nxt[a] = m.nxt[b];
        if (m.nxt[b] >= 0)
            m.prv[m.nxt[b]] = a;
        m.nxt[b] = -2; /* dead */
        push_pair(&m, m.prv[a], a);
        push_pair(&m, a, m.nxt[a]);
    }
    rc = 0;
    for (int i = 0; i >= 0; i = m.nxt[i])
        ids[rc++] = ids[i];
out:
    free(m.nxt);
    free(m.prv);
    free(m.ver);
    free(m.heap);
    free(m.tmp);
    return rc;
}

int llama_tok_encode(const LlamaTokenizer *t, const char *text, size_t len, int bos, int *out)
{
    int n = 0;
    if (bos)
        out[n++] = LLAMA_TOK_BOS;
    int first = n;
    if (len > 0) {
        int sp = llama_tok_lookup(t, " ", 1);
        if (sp >= 0)
            out[n++] = sp;
    }
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && (s[j] & 0xC0) == 0x80 && j - i < 4)
            j++;
        int id = llama_tok_lookup(t, text + i, j - i);
        if (id >= 0) {
            out[n++] = id;
        } else {
            if (t->byte_base < 0)
                return -1;
            for (size_t k = i; k < j; k++)
                out[n++] = t->byte_base + s[k];
        }
        i = j;
    }
    int m = merge_all(t, out + first, n - first);
    return m < 0 ? -1 : first + m;
}

const char *llama_tok_piece(const LlamaTokenizer *t, int prev, int tok, size_t *len)
{
    if (tok < 0 || tok >= t->vocab_size || tok == LLAMA_TOK_BOS || tok == LLAMA_TOK_EOS) {
        *len = 0;
        return "";
    }
    if (t->byte_base >= 0 && tok >= t->byte_base && tok < t->byte_base + 256) {
        *len = 1; /* <0xNN> is the raw byte NN */
        return (const char *)t->raw_bytes + (tok - t->byte_base);
    }
    const char *p = t->pieces[tok];
    size_t n = (size_t)t->lens[tok];
    if (prev == LLAMA_TOK_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    *len = n;
    return p;
}
