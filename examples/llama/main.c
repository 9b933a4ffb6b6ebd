/* main.c - build/llama: inference of a llama2.c checkpoint with a KV cache in kvcc's layout.
 *
 *   llama --model M --tokenizer T generate [--steps N] [--prompt TEXT] [--ids]
 *   llama --model M --tokenizer T logits [--prompt TEXT]
 *   llama --model M --tokenizer T encode --prompt TEXT | --data FILE
 *   llama --model M --tokenizer T nll --data FILE [--stories a:b] [--per-story]
 *   llama --model M --tokenizer T eval --data FILE --policy P [--ratios r1,r2,..]
 *         [--stories a:b] [--param window=W] [--param sinks=S]
 *
 * nll: per story, [BOS] + encode(story) truncated to --max-tokens (default 512), every next
 * token scored.  eval: the prefill-compress-continue protocol of tests/oracle/eval_ref.py
 * with the built-in test compressors (streaming_llm, knorm, snapkv) until libkvcc provides real
 * ones.  Stories in FILE are terminated by a line "<|endoftext|>"; each is stripped of its
 * surrounding newlines.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include "model.h"
#include "tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fputs("usage: llama --model M --tokenizer T COMMAND [options]\n"
          "commands:\n"
          "  generate [--steps N] [--prompt TEXT] [--ids]   greedy generation (ids with --ids)\n"
          "  logits [--prompt TEXT]                         top-5 logits after BOS (+prompt)\n"
          "  encode --prompt TEXT | --data FILE             token ids\n"
          "  nll --data FILE [--stories a:b] [--per-story] [--max-tokens N]\n"
          "                                                 mean next-token NLL\n"
          "  eval --data FILE --policy streaming_llm|knorm|snapkv [--ratios r,..]\n"
          "       [--stories a:b] [--param name=value]...  prefill-compress-continue NLL\n"
          "  selftest                                       cache / attend / hook consistency\n",
          f);
}

static int fail(const char *fmt, const char *a)
{
    fprintf(stderr, "llama: error: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- stories -------------------------------------------------------------------------------- */
typedef struct {
    char *buf;
    char **text;
    size_t *len;
    int n;
} Stories;

static void stories_free(Stories *s)
{
    free(s->buf);
    free(s->text);
    free(s->len);
    memset(s, 0, sizeof *s);
}

static int stories_add(Stories *s, char *a, char *b, int *cap)
{
    while (a < b && *a == '\n')
        a++;
    while (b > a && b[-1] == '\n')
        b--;
    if (a == b)
        return 0;
    if (s->n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        char **t = realloc(s->text, (size_t)nc * sizeof *t);
        if (!t)
            return -1;
        s->text = t;
        size_t *l = realloc(s->len, (size_t)nc * sizeof *l);
        if (!l)
            return -1;
        s->len = l;
        *cap = nc;
    }
    s->text[s->n] = a;
    s->len[s->n] = (size_t)(b - a);
    s->n++;
    return 0;
}

static int stories_load(Stories *s, const char *path)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail("%s: cannot open", path);
    size_t cap = 0, size = 0;
    for (;;) {
        if (size + 1 >= cap) {
            cap = cap ? cap * 2 : 1 << 16;
            char *nb = realloc(s->buf, cap);
            if (!nb) {
                fclose(f);
                stories_free(s);
                return fail("%s: out of memory", path);
            }
            s->buf = nb;
        }
        size_t r = fread(s->buf + size, 1, cap - size - 1, f);
        size += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        stories_free(s);
        return fail("%s: read error", path);
    }
    s->buf[size] = 0;
    static const char sep[] = "<|endoftext|>";
    const size_t seplen = sizeof sep - 1;
    int scap = 0;
    char *story = s->buf, *line = s->buf, *end = s->buf + size;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *eol = nl ? nl : end;
        if ((size_t)(eol - line) == seplen && memcmp(line, sep, seplen) == 0) {
            if (stories_add(s, story, line, &scap)) {
                stories_free(s);
                return fail("%s: out of memory", path);
            }
            story = nl ? nl + 1 : end;
        }
        line = nl ? nl + 1 : end;
    }
    if (stories_add(s, story, end, &scap)) {
        stories_free(s);
        return fail("%s: out of memory", path);
    }
    return 0;
}

static int parse_range(const char *arg, int n, int *lo, int *hi)
{
    *lo = 0;
    *hi = n;
    if (!arg)
        return 0;
    const char *colon = strchr(arg, ':');
    char *e;
    if (!colon)
        return -1;
    if (colon != arg) {
        long a = strtol(arg, &e, 10);
        if (e != colon || a < 0)
            return -1;
        *lo = a > n ? n : (int)a;
    }
    if (colon[1]) {
        long b = strtol(colon + 1, &e, 10);
        if (*e || b < 0)
            return -1;
        *hi = b > n ? n : (int)b;
    }
    if (*hi < *lo)
        *hi = *lo;
    return 0;
}

/* [BOS] + encode(text), truncated to max_tokens; *full receives the untruncated count. */
static int *encode_story(const LlamaTokenizer *tok, const char *text, size_t len, int max_tokens,
                         int *n, int *full)
{
    int *ids = malloc(llama_tok_max_ids(len) * sizeof *ids);
    if (!ids)
        return NULL;
    int k = llama_tok_encode(tok, text, len, 1, ids);
    if (k < 0) {
        free(ids);
        return NULL;
    }
    *full = k;
    *n = k < max_tokens ? k : max_tokens;
    return ids;
}

/* ---- built-in test compressors ----------------------------------------------------------------
 * Stand-ins for libkvcc's compiled policies, written from tests/oracle/README.md, so that the
 * prefill -> compress -> continue path (and the observation-query capture) can be checked
 * against tests/oracle/eval_ref.py now.  n_keep = floor(n (1 - ratio)) per (layer, kv head).
 *   streaming_llm (sinks): the first min(sinks, n_keep) rows and the last n_keep - sinks.
 *   knorm: the rows with the smallest key L2 norm.
 *   snapkv (window, kernel): the last `window` rows are protected; the others are scored by
 *     mean over the G query heads of avgpool_kernel(mean over the window's observation
 *     queries of their causal softmax attention), pooled over the unprotected prefix with
 *     zero padding counted. */
typedef struct {
    const char *policy;
    double ratio;
    int sinks, window, kernel;
    int *kept;     /* scratch [capacity] */
    float *score;  /* scratch [capacity] */
    double *a, *p; /* scratch [capacity] */
} TestCompressor;

/* keep the n_keep highest scores, ties towards the lower slot, in slot order */
static void topk_slots(const float *score, int n, int n_keep, int *kept)
{
    /* slot t is kept iff fewer than n_keep slots beat it */
    int m = 0;
    for (int t = 0; t < n && m < n_keep; t++) {
        int better = 0;
        for (int u = 0; u < n && better < n_keep; u++)
            if (score[u] > score[t] || (score[u] == score[t] && u < t))
                better++;
        if (better < n_keep)
            kept[m++] = t;
    }
}

static int snapkv_scores(TestCompressor *tc, const LlamaCache *c, const LlamaObs *obs, int l,
                         int h, int n)
{
    const int hd = c->head_dim, w = tc->window, k = tc->kernel, pre = n - w;
    const int G = obs->n_heads / c->n_kv_heads;
    if (w <= 0 || pre <= 0 || obs->count != w || k < 1 || k % 2 == 0)
        return -1;
    const float *K = llama_cache_k(c, l, h);
    const int *pos = llama_cache_pos(c, l, h);
    for (int t = 0; t < n; t++)
        tc->score[t] = t < pre ? 0.0f : INFINITY; /* the window is protected */
    for (int g = 0; g < G; g++) {
        int qh = h * G + g;
        for (int t = 0; t < pre; t++)
            tc->a[t] = 0;
        for (int o = 0; o < w; o++) {
            const float *q = obs->q + (((size_t)l * obs->n_heads + qh) * obs->window + o) * hd;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t < n; t++) {
                if (pos[t] > obs->qpos[o]) { /* not visible to this query */
                    tc->p[t] = -INFINITY;
                    continue;
                }
                double d = 0;
                for (int i = 0; i < hd; i++)
                    d += (double)q[i] * K[(size_t)t * hd + i];
                tc->p[t] = d / sqrt((double)hd);
                if (tc->p[t] > mx)
                    mx = tc->p[t];
            }
            for (int t = 0; t < n; t++)
                sum += tc->p[t] == -INFINITY ? 0.0 : exp(tc->p[t] - mx);
            for (int t = 0; t < pre; t++)
                if (tc->p[t] != -INFINITY)
                    tc->a[t] += exp(tc->p[t] - mx) / sum / w;
        }
        for (int t = 0; t < pre; t++) {
            double acc = 0;
            for (int j = t - k / 2; j <= t + k / 2; j++)
                if (j >= 0 && j < pre)
                    acc += tc->a[j];
            tc->score[t] += (float)(acc / k / G);
        }
    }
    return 0;
}

static int test_compress(LlamaCache *c, const LlamaObs *obs, void *user)
{
    TestCompressor *tc = user;
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            int n = *llama_cache_len(c, l, h);
            int n_keep = (int)floor((double)n * (1.0 - tc->ratio));
            if (n_keep >= n)
                continue;
            if (n_keep < 0)
                n_keep = 0;
            if (strcmp(tc->policy, "streaming_llm") == 0) {
                int s = tc->sinks < n_keep ? tc->sinks : n_keep, m = 0;
                for (int t = 0; t < s; t++)
                    tc->kept[m++] = t;
                for (int t = n - (n_keep - s); t < n; t++)
                    tc->kept[m++] = t;
            } else {
                if (strcmp(tc->policy, "knorm") == 0) {
                    const float *K = llama_cache_k(c, l, h);
                    for (int t = 0; t < n; t++) {
                        double ss = 0;
                        for (int d = 0; d < c->head_dim; d++) {
                            double x = K[(size_t)t * c->head_dim + d];
                            ss += x * x;
                        }
                        tc->score[t] = -(float)sqrt(ss);
                    }
                } else if (!obs || snapkv_scores(tc, c, obs, l, h, n)) {
                    return -1;
                }
                topk_slots(tc->score, n, n_keep, tc->kept);
            }
            if (llama_cache_keep(c, l, h, tc->kept, n_keep))
                return -1;
        }
    return 0;
}

/* ---- commands ------------------------------------------------------------------------------- */
typedef struct {
    const char *model, *tokenizer, *cmd, *prompt, *data, *stories, *policy, *ratios;
    int steps, ids, per_story, max_tokens;
    const char *params[16];
    int n_params;
} Args;

static int top5(const float *lg, int V, int *idx)
{
    int k = V < 5 ? V : 5;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < V; i++) {
            int used = 0;
            for (int u = 0; u < j; u++)
                used |= idx[u] == i;
            if (!used && (best < 0 || lg[i] > lg[best]))
                best = i;
        }
        idx[j] = best;
    }
    return k;
}

static int run_prompt(LlamaState *st, const LlamaTokenizer *tok, const char *prompt, int **ids_out,
                      int *n_out)
{
    size_t len = prompt ? strlen(prompt) : 0;
    int *ids = malloc(llama_tok_max_ids(len) * sizeof *ids);
    if (!ids)
        return fail("%s", "out of memory");
    int n = llama_tok_encode(tok, prompt ? prompt : "", len, 1, ids);
    if (n < 0) {
        free(ids);
        return fail("%s", "prompt cannot be encoded");
    }
    if (n > st->cache.capacity) {
        free(ids);
        return fail("%s", "prompt longer than the model's seq_len");
    }
    if (llama_prefill(st, ids, n, 0, NULL, NULL)) {
        free(ids);
        return fail("%s", "forward pass failed");
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

static int cmd_generate(const Args *a, LlamaState *st, const LlamaTokenizer *tok)
{
    int *ids, n;
    if (run_prompt(st, tok, a->prompt, &ids, &n))
        return 1;
    const int V = st->m->cfg.vocab_size;
    int prev = ids[n - 1], pos = n;
    if (!a->ids) {
        for (int i = 1; i < n; i++) {
            size_t len;
            const char *p = llama_tok_piece(tok, ids[i - 1], ids[i], &len);
            fwrite(p, 1, len, stdout);
        }
    }
    const float *lg = st->logits;
    for (int step = 0; step < a->steps; step++) {
        int next = 0;
        for (int i = 1; i < V; i++)
            if (lg[i] > lg[next])
                next = i;
        if (next == LLAMA_TOK_BOS || next == LLAMA_TOK_EOS)
            break;
        if (a->ids) {
            printf(step ? " %d" : "%d", next);
        } else {
            size_t len;
            const char *p = llama_tok_piece(tok, prev, next, &len);
            fwrite(p, 1, len, stdout);
        }
        fflush(stdout);
        prev = next;
        if (step + 1 == a->steps || pos >= st->cache.capacity)
            break;
        lg = llama_forward(st, next, pos++);
        if (!lg) {
            free(ids);
            return fail("%s", "forward pass failed");
        }
    }
    putchar('\n');
    free(ids);
    return 0;
}

static int cmd_logits(const Args *a, LlamaState *st, const LlamaTokenizer *tok)
{
    int *ids, n, idx[5];
    if (run_prompt(st, tok, a->prompt, &ids, &n))
        return 1;
    int k = top5(st->logits, st->m->cfg.vocab_size, idx);
    for (int j = 0; j < k; j++)
        printf("%d %.6f\n", idx[j], st->logits[idx[j]]);
    free(ids);
    return 0;
}

/* encode --prompt TEXT, or encode --data FILE (the whole file as one text) */
static int cmd_encode(const Args *a, const LlamaTokenizer *tok)
{
    const char *text = a->prompt ? a->prompt : "";
    size_t len = strlen(text);
    char *buf = NULL;
    if (a->data) {
        FILE *f = fopen(a->data, "rb");
        if (!f)
            return fail("%s: cannot open", a->data);
        size_t cap = 1 << 16;
        len = 0;
        buf = malloc(cap);
        for (;;) {
            if (!buf) {
                fclose(f);
                return fail("%s", "out of memory");
            }
            size_t r = fread(buf + len, 1, cap - len, f);
            len += r;
            if (r == 0)
                break;
            if (len == cap) {
                char *nb = realloc(buf, cap *= 2);
                if (!nb)
                    free(buf);
                buf = nb;
            }
        }
        fclose(f);
        text = buf;
    }
    int *ids = malloc(llama_tok_max_ids(len) * sizeof *ids);
    int n = ids ? llama_tok_encode(tok, text, len, 1, ids) : -1;
    free(buf);
    if (n < 0) {
        free(ids);
        return fail("%s", "text cannot be encoded");
    }
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

static int cmd_nll(const Args *a, LlamaState *st, const LlamaTokenizer *tok)
{
    Stories S;
    if (!a->data)
        return fail("%s", "nll needs --data FILE");
    if (stories_load(&S, a->data))
        return 1;
    int lo, hi;
    if (parse_range(a->stories, S.n, &lo, &hi)) {
        stories_free(&S);
        return fail("bad --stories '%s' (want a:b)", a->stories);
    }
    double t0 = now(), total = 0;
    long ntok = 0, nscored = 0, npred = 0;
    for (int i = lo; i < hi; i++) {
        int n, full;
        int *ids = encode_story(tok, S.text[i], S.len[i], a->max_tokens, &n, &full);
        if (!ids) {
            stories_free(&S);
            return fail("%s", "a story cannot be encoded");
        }
        llama_cache_reset(&st->cache);
        double sum;
        if (llama_prefill(st, ids, n, 0, NULL, &sum)) {
            free(ids);
            stories_free(&S);
            return fail("%s", "forward pass failed");
        }
        if (a->per_story)
            printf("story %d tokens %d predictions %d nll %.6f\n", i, n, n - 1,
                   n > 1 ? sum / (n - 1) : 0.0);
        total += sum;
        ntok += full;
        nscored += n;
        npred += n - 1;
        free(ids);
    }
    double mean = npred ? total / (double)npred : 0.0;
    printf("stories %d tokens %ld truncated_tokens %ld predictions %ld nll %.6f ppl %.4f "
           "seconds %.2f\n",
           hi - lo, ntok, nscored, npred, mean, exp(mean), now() - t0);
    stories_free(&S);
    return 0;
}

static int cmd_eval(const Args *a, LlamaState *st, const LlamaTokenizer *tok)
{
    if (!a->data || !a->policy)
        return fail("%s", "eval needs --data FILE and --policy P");
    int snapkv = strcmp(a->policy, "snapkv") == 0;
    if (strcmp(a->policy, "streaming_llm") && strcmp(a->policy, "knorm") && !snapkv)
        return fail("built-in test compressors are streaming_llm, knorm and snapkv, not '%s'",
                    a->policy);
    /* defaults of tests/oracle/kvref.py */
    TestCompressor tc = {a->policy, 0.0, 4, 64, 5, NULL, NULL, NULL, NULL};
    for (int i = 0; i < a->n_params; i++) {
        const char *p = a->params[i];
        if (strncmp(p, "sinks=", 6) == 0 && !strcmp(a->policy, "streaming_llm"))
            tc.sinks = atoi(p + 6);
        else if (strncmp(p, "window=", 7) == 0 && snapkv)
            tc.window = atoi(p + 7);
        else if (strncmp(p, "kernel=", 7) == 0 && snapkv)
            tc.kernel = atoi(p + 7);
        else
            return fail("policy has no parameter '%s'", p);
    }
    if (snapkv && (tc.window <= 0 || tc.kernel <= 0 || tc.kernel % 2 == 0))
        return fail("%s", "snapkv needs window > 0 and an odd kernel > 0");
    Stories S;
    if (stories_load(&S, a->data))
        return 1;
    int lo, hi;
    if (parse_range(a->stories, S.n, &lo, &hi)) {
        stories_free(&S);
        return fail("bad --stories '%s' (want a:b)", a->stories);
    }
    size_t cap = (size_t)st->cache.capacity;
    LlamaObs obs;
    memset(&obs, 0, sizeof obs);
    tc.kept = malloc(cap * sizeof *tc.kept);
    tc.score = malloc(cap * sizeof *tc.score);
    tc.a = malloc(cap * sizeof *tc.a);
    tc.p = malloc(cap * sizeof *tc.p);
    int rc = 0;
    if (!tc.kept || !tc.score || !tc.a || !tc.p ||
        (snapkv && llama_obs_init(&obs, &st->m->cfg, tc.window)))
        rc = fail("%s", "out of memory");
    LlamaCompressFn compress = test_compress; /* where libkvcc's kvcc_compress will go */
    const char *r = a->ratios ? a->ratios : "0";
    if (!rc)
        printf("policy ratio window stories predictions nll\n");
    while (*r && !rc) {
        char *e;
        tc.ratio = strtod(r, &e);
        if (e == r || !(tc.ratio >= 0 && tc.ratio < 1)) { /* kvref: [0, 1) */
            rc = fail("bad --ratios '%s'", a->ratios);
            break;
        }
        r = *e == ',' ? e + 1 : e;
        double total = 0;
        long npred = 0;
        for (int i = lo; i < hi && !rc; i++) {
            int n, full;
            int *ids = encode_story(tok, S.text[i], S.len[i], a->max_tokens, &n, &full);
            if (!ids) {
                rc = fail("%s", "a story cannot be encoded");
                break;
            }
            int C = n / 2;
            llama_cache_reset(&st->cache);
            if (llama_prefill(st, ids, C, 0, snapkv ? &obs : NULL, NULL)) {
                rc = fail("%s", "prefill failed");
            } else if (compress(&st->cache, snapkv ? &obs : NULL, &tc)) {
                char msg[128];
                snprintf(msg, sizeof msg, "story %d (context %d tokens): compression failed%s",
                         i, C, snapkv && C <= tc.window ? " (context <= window)" : "");
                rc = fail("%s", msg);
            }
            for (int p = C; p + 1 < n && !rc; p++) {
                const float *lg = llama_forward(st, ids[p], p);
                if (!lg)
                    rc = fail("%s", "forward pass failed");
                else
                    total += llama_nll(lg, st->m->cfg.vocab_size, ids[p + 1]);
                npred++;
            }
            free(ids);
        }
        if (!rc) {
            char wl[16] = "-";
            if (snapkv)
                snprintf(wl, sizeof wl, "%d", tc.window);
            printf("%s %g %s %d:%d %ld %.6f\n", a->policy, tc.ratio, wl, lo, hi, npred,
                   npred ? total / (double)npred : 0.0);
        }
    }
    llama_obs_free(&obs);
    free(tc.kept);
    free(tc.score);
    free(tc.a);
    free(tc.p);
    stories_free(&S);
    return rc;
}

/* ---- selftest: internal consistency of the cache, attend and hooks -------------------------- */
typedef struct {
    int calls, bad;
    const LlamaCache *cache;
} ObserveCount;

static void observe_count(void *user, int layer, int kv_head, const float *probs, int n, int G)
{
    ObserveCount *oc = user;
    oc->calls++;
    if (!probs || n != *llama_cache_len(oc->cache, layer, kv_head))
        oc->bad++;
    for (int g = 0; probs && g < G; g++) {
        double s = 0;
        for (int t = 0; t < n; t++)
            s += probs[(size_t)g * n + t];
        if (fabs(s - 1.0) > 1e-5)
            oc->bad++;
    }
}

static int cmd_selftest(LlamaState *st)
{
    int failed = 0;
#define T(name, cond)                                                                          \
    do {                                                                                       \
        int ok_ = (cond);                                                                      \
        failed += !ok_;                                                                        \
        printf("%s %s\n", ok_ ? "PASS" : "FAIL", name);                                         \
    } while (0)
    const LlamaConfig *c = &st->m->cfg;
    /* attend: probabilities sum to 1 and out = probs @ V, with and without probs */
    {
        enum { N = 37, HD = 8, G = 2 };
        float q[G * HD], K[N * HD], V[N * HD], o1[G * HD], o2[G * HD], pr[G * N];
        unsigned x = 12345;
        for (int i = 0; i < N * HD; i++) {
            x = x * 1103515245u + 12345u;
            K[i] = (float)((x >> 8) & 0xFFFF) / 8192.0f - 4.0f;
            x = x * 1103515245u + 12345u;
            V[i] = (float)((x >> 8) & 0xFFFF) / 32768.0f - 1.0f;
        }
        for (int i = 0; i < G * HD; i++)
            q[i] = (float)(i % 5) - 2.0f;
        llama_attend_ref(q, K, V, N, HD, G, o1, NULL);
        llama_attend_ref(q, K, V, N, HD, G, o2, pr);
        double err = 0, sum_err = 0;
        for (int g = 0; g < G; g++) {
            double s = 0;
            for (int t = 0; t < N; t++)
                s += pr[g * N + t];
            sum_err = fmax(sum_err, fabs(s - 1));
            for (int d = 0; d < HD; d++) {
                double ref = 0;
                for (int t = 0; t < N; t++)
                    ref += (double)pr[g * N + t] * V[t * HD + d];
                err = fmax(err, fabs(ref - o1[g * HD + d]));
                err = fmax(err, fabs((double)o1[g * HD + d] - o2[g * HD + d]));
            }
        }
        T("attend: probabilities sum to 1", sum_err < 1e-5);
        T("attend: out == probs @ V, with or without probs", err < 1e-5);
    }
    /* observe hook and observation-query capture during a prefill */
    {
        static const int toks[] = {1, 403, 407, 261, 378, 432, 383, 286};
        const int n = (int)(sizeof toks / sizeof toks[0]);
        ObserveCount oc = {0, 0, &st->cache};
        LlamaObs obs;
        llama_cache_reset(&st->cache);
        st->observe = observe_count;
        st->observe_user = &oc;
        int rc = llama_obs_init(&obs, c, 3) || llama_prefill(st, toks, n, 0, &obs, NULL);
        st->observe = NULL;
        T("prefill with observation capture", rc == 0);
        T("observe hook: once per (layer, kv head, token), probs sum to 1",
          oc.calls == n * c->n_layers * c->n_kv_heads && oc.bad == 0);
        T("observation window = last 3 positions (values: checked by eval snapkv vs eval_ref)",
          obs.count == 3 && obs.start == n - 3 && obs.qpos[0] == n - 3 && obs.qpos[2] == n - 1);
        /* cache compaction */
        int *len = llama_cache_len(&st->cache, 0, 0);
        int *pos = llama_cache_pos(&st->cache, 0, 0);
        float k5 = llama_cache_k(&st->cache, 0, 0)[5 * c->head_dim];
        int bad1[] = {2, 1}, bad2[] = {0, n};
        T("cache_keep rejects unordered or out-of-range rows",
          llama_cache_keep(&st->cache, 0, 0, bad1, 2) && llama_cache_keep(&st->cache, 0, 0, bad2, 2) &&
              *len == n);
        int kept[] = {0, 5, 7};
        rc = llama_cache_keep(&st->cache, 0, 0, kept, 3);
        T("cache_keep gathers rows and positions in order",
          rc == 0 && *len == 3 && pos[0] == 0 && pos[1] == 5 && pos[2] == 7 &&
              llama_cache_k(&st->cache, 0, 0)[c->head_dim] == k5 &&
              *llama_cache_len(&st->cache, 0, 1) == n);
        T("forward after compaction: heads of different lengths",
          llama_forward(st, 432, n) != NULL && *len == 4 &&
              *llama_cache_len(&st->cache, 0, 1) == n + 1 && pos[3] == n);
        llama_obs_free(&obs);
    }
    /* a full cache is an error, not an overflow */
    {
        llama_cache_reset(&st->cache);
        int rc = 0;
        for (int p = 0; p < st->cache.capacity && !rc; p++)
            rc = llama_forward(st, 1, p) == NULL;
        T("forward fills the cache to capacity", rc == 0);
        T("forward on a full cache returns NULL", llama_forward(st, 1, 0) == NULL);
        T("forward with a bad token id returns NULL", (llama_cache_reset(&st->cache),
                                                       llama_forward(st, c->vocab_size, 0) == NULL));
    }
#undef T
    printf("selftest: %d failed\n", failed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    Args a;
    memset(&a, 0, sizeof a);
    a.steps = 256;
    a.max_tokens = 512;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(o, name) == 0 && (val ? (i++, 1) : (fail("%s needs a value", name), exit(2), 0)))
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (OPT("--model"))
            a.model = val;
        else if (OPT("--tokenizer"))
            a.tokenizer = val;
        else if (OPT("--prompt"))
            a.prompt = val;
        else if (OPT("--data"))
            a.data = val;
        else if (OPT("--stories"))
            a.stories = val;
        else if (OPT("--policy"))
            a.policy = val;
        else if (OPT("--ratios") || OPT("--ratio"))
            a.ratios = val;
        else if (OPT("--steps"))
            a.steps = atoi(val);
        else if (OPT("--max-tokens"))
            a.max_tokens = atoi(val);
        else if (OPT("--param")) {
            if (a.n_params == 16)
                return fail("%s", "too many --param");
            a.params[a.n_params++] = val;
        } else if (strcmp(o, "--ids") == 0)
            a.ids = 1;
        else if (strcmp(o, "--per-story") == 0)
            a.per_story = 1;
        else if (o[0] != '-' && !a.cmd)
            a.cmd = o;
        else {
            usage(stderr);
            return fail("unexpected argument '%s'", o);
        }
#undef OPT
    }
    if (!a.cmd || !a.model || !a.tokenizer) {
        usage(stderr);
        return 2;
    }
    if (strcmp(a.cmd, "generate") && strcmp(a.cmd, "logits") && strcmp(a.cmd, "encode") &&
        strcmp(a.cmd, "nll") && strcmp(a.cmd, "eval") && strcmp(a.cmd, "selftest")) {
        usage(stderr);
        return fail("unknown command '%s'", a.cmd);
    }
    if (a.max_tokens < 1)
        return fail("%s", "--max-tokens must be positive");
    char err[512];
    LlamaModel m;
    LlamaTokenizer tok;
    if (llama_model_load(&m, a.model, err, sizeof err))
        return fail("%s", err);
    if (llama_tok_load(&tok, a.tokenizer, err, sizeof err)) {
        llama_model_free(&m);
        return fail("%s", err);
    }
    int rc;
    if (tok.vocab_size != m.cfg.vocab_size) {
        snprintf(err, sizeof err, "tokenizer has %d tokens, model vocab_size is %d",
                 tok.vocab_size, m.cfg.vocab_size);
        rc = fail("%s", err);
    } else if (strcmp(a.cmd, "encode") == 0) {
        rc = cmd_encode(&a, &tok);
    } else {
        LlamaState st;
        if (a.max_tokens > m.cfg.seq_len)
            a.max_tokens = m.cfg.seq_len;
        if (llama_state_init(&st, &m, 0)) {
            rc = fail("%s", "out of memory");
        } else {
            if (strcmp(a.cmd, "generate") == 0)
                rc = cmd_generate(&a, &st, &tok);
            else if (strcmp(a.cmd, "logits") == 0)
                rc = cmd_logits(&a, &st, &tok);
            else if (strcmp(a.cmd, "nll") == 0)
                rc = cmd_nll(&a, &st, &tok);
            else if (strcmp(a.cmd, "selftest") == 0)
                rc = cmd_selftest(&st);
            else
                rc = cmd_eval(&a, &st, &tok);
            llama_state_free(&st);
        }
    }
    llama_tok_free(&tok);
    llama_model_free(&m);
    return rc;
}
