/* main.c - build/llama: inference of a llama2.c checkpoint with its KV cache in libkvcc's
 * layout (kvcc_layout / kvcc_cache, f32 [layer][kv head][capacity][head_dim]).
 *
 *   llama --model M --tokenizer T generate [--steps N] [--prompt TEXT] [--ids]
 *         [--policy P.lua|P.so --ratio R | --budget B [--param name=value]...]
 *   llama --model M --tokenizer T logits [--prompt TEXT]
 *   llama --model M --tokenizer T encode --prompt TEXT | --data FILE
 *   llama --model M --tokenizer T nll --data FILE [--stories a:b] [--per-story]
 *         [--max-tokens N] [--chunk-chars K] [--from TEXT]
 *   llama --model M --tokenizer T batch --data FILE [--stories a:b] [--policy P --ratio R]
 *         [--pages N] [--page-size P] [--max-seqs S] [--threads T] [--generate N] [--per-head-tables]
 *         [--quiet]
 *         (continuous batching over one page pool: batch.c, doc/runtime.md)
 *   llama --model M --tokenizer T selftest
 *   --weights W.npz (generate, batch; repeatable): the weights a policy declares (kv.weights),
 *         by name from the files' arrays (`kvcc calibrate` writes them), set in each plan
 *   global: --attn kvcc|ref   attention through libkvcc (kvcc_append + kvcc_decode_layer,
 *           the default when this libkvcc has them) or the example's reference attend
 *
 * generate --policy P --ratio R: the policy is compiled in process (kvcc_compile_file, spec
 * f32 / the model's head_dim / group) or loaded (kvcc_open of a .so from `kvcc compile`).
 *   - a prefill policy (when = kvcc.prefill) compresses the prompt's cache once, after the
 *     prefill, with kvcc_compress at ratio R (n_keep = floor(n_prompt (1 - R)) per head);
 *     its observation queries are the prompt's last post-RoPE queries, as many as the policy
 *     declares (kvcc_policy_obs: its `window` param, a count, all of them, or none);
 *   - a decode policy (when = kvcc.decode{every = N}, e.g. policies/h2o.lua) keeps the cache
 *     within the budget B = floor(S (1 - R)), S = prompt + steps (the rows the uncompressed
 *     generation would need): at every N-th generated token, when a head holds more than B
 *     rows, kvcc_compress with budget B; its observe hook runs inside decode attention;
 *   - --budget B instead of --ratio: B rows per head, for either kind (kvcc_compress's budget).
 *   Memory really shrinks: after a compression the cache is moved into a newly allocated,
 *   smaller one (llama_cache_resize: capacity = rows kept + rows still to come) and the old
 *   buffers are freed.  The report on stderr gives the allocated bytes before and after, and
 *   what the uncompressed generation would have allocated.
 *
 * The prefill-compress-continue evaluation lives in `kvcc eval` (tools/eval.c), which
 * uses this example's model, cache and glue.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include "examples/llama/llama.h"
#include "lib/llama/kvglue.h"
#include "lib/llama/model.h"
#include "lib/llama/stories.h"
#include "lib/llama/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fputs("usage: llama --model M --tokenizer T [--attn kvcc|ref] COMMAND [options]\n"
          "commands:\n"
          "  generate [--steps N] [--prompt TEXT] [--ids]   greedy generation (ids with --ids)\n"
          "       [--policy P.lua|P.so --ratio R|--budget B] [--param name=value]... [--weights W.npz]...\n"
          "                                                 ... with a compressed KV cache\n"
          "  logits [--prompt TEXT]                         top-5 logits after BOS (+prompt)\n"
          "  encode --prompt TEXT | --data FILE             token ids\n"
          "  nll --data FILE [--stories a:b] [--per-story] [--max-tokens N]\n"
          "      [--chunk-chars K] [--from TEXT]            mean next-token NLL\n"
          "  batch --data FILE [--stories a:b] [--policy P --ratio R [--param name=value]...]\n"
          "      [--pages N] [--page-size P] [--max-seqs S] [--threads T] [--generate N] [--per-head-tables]\n"
          "      [--quiet]\n"
          "                                                 many stories over one page pool\n"
          "                                                 (kvcc eval's protocol; batch.c)\n"
          "  selftest                                       cache / attention / hook checks\n"
          "(the compression benchmark is `kvcc eval`)\n",
          f);
}

int fail(const char *fmt, const char *a)
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

/* [BOS] + encode(text), truncated to max_tokens; *full receives the untruncated count. */
int *encode_story(const LlamaTokenizer *tok, const char *text, size_t len, int max_tokens,
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

/* ---- commands ------------------------------------------------------------------------------- */

/* Attention backend of a state: libkvcc's decode attention (with `plan`) or the reference. */
typedef struct {
    int use_kvcc;
    kvcc_policy *plain; /* a keep-everything policy planned for plain attention */
    kvcc_plan *plan;
    const Gen *gen;     /* the policy's weights (generate --weights), or NULL */
} Attn;

static void attn_free(Attn *at)
{
    kvcc_plan_destroy(at->plan);
    kvcc_close(at->plain);
    memset(at, 0, sizeof *at);
}

/* (Re)plans for the cache's current layout: a plan of `pol` (or, for libkvcc's attention
 * without a policy, of a plain one) and, with libkvcc's attention, st's attention through
 * it.  Called again after the cache is resized (a plan is made for one layout). */
static int attn_bind(Attn *at, LlamaState *st, kvcc_policy *pol, int max_obs)
{
    char err[512];
    kvcc_plan_destroy(at->plan);
    at->plan = NULL;
    st->layer = NULL;
    if (!pol && !at->use_kvcc)
        return 0;
    if (!pol) {
        if (!at->plain && llama_plain_policy(&st->m->cfg, &at->plain, err, sizeof err))
            return fail("plain attention policy: %s", err);
        pol = at->plain;
    }
    if (kvcc_plan_create(pol, &st->cache.lay, max_obs, 1, &at->plan))
        return fail("kvcc_plan_create: %s", kvcc_last_error());
    if (at->gen && pol == at->gen->pol && gen_weights(at->gen, at->plan))
        return 1;
    if (at->use_kvcc) {
        st->layer = llama_kvcc_layer;
        st->layer_user = at->plan;
    }
    return 0;
}

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

static size_t cache_bytes_for(const LlamaConfig *c, int capacity)
{
    LlamaCache z;
    memset(&z, 0, sizeof z);
    z.n_layers = c->n_layers;
    z.n_kv_heads = c->n_kv_heads;
    z.head_dim = c->head_dim;
    z.capacity = capacity;
    return llama_cache_bytes(&z);
}

static int state_init(LlamaState *st, const LlamaModel *m, int capacity, int nstate)
{
    if (llama_state_init(st, m, capacity, nstate))
        return fail("%s", "out of memory");
    return 0;
}

static int *encode_prompt(const LlamaTokenizer *tok, const char *prompt, int *n_out)
{
    size_t len = prompt ? strlen(prompt) : 0;
    int *ids = malloc(llama_tok_max_ids(len) * sizeof *ids);
    if (!ids) {
        fail("%s", "out of memory");
        return NULL;
    }
    int n = llama_tok_encode(tok, prompt ? prompt : "", len, 1, ids);
    if (n < 0) {
        free(ids);
        fail("%s", "prompt cannot be encoded");
        return NULL;
    }
    *n_out = n;
    return ids;
}


int gen_setup(const Args *a, const LlamaConfig *cfg, Gen *g)
{
    char err[600];
    memset(g, 0, sizeof *g);
    g->window = -1;
    g->fixed = -1;
    if (!a->policy) {
        if (a->ratio || a->budget || a->n_params || a->n_weights)
            return fail("%s", "--ratio, --budget, --param and --weights need --policy");
        return 0;
    }
    char *e;
    if (!a->ratio == !a->budget)
        return fail("%s", "--policy needs --ratio R (fraction of the cache removed, 0 <= R < 1) "
                          "or --budget B (rows kept per head)");
    if (a->ratio) {
        g->ratio = strtod(a->ratio, &e);
        if (e == a->ratio || *e || !(g->ratio >= 0 && g->ratio < 1))
            return fail("--ratio must be a number in [0, 1), got '%s'", a->ratio);
        snprintf(g->what, sizeof g->what, "ratio %g", g->ratio);
    } else {
        g->fixed = strtol(a->budget, &e, 10);
        if (e == a->budget || *e || g->fixed < 1 || g->fixed > 1 << 20)
            return fail("--budget must be a positive number of rows, got '%s'", a->budget);
        snprintf(g->what, sizeof g->what, "budget %ld", g->fixed);
    }
    if (llama_policy_load(a->policy, cfg, &g->pol, err, sizeof err))
        return fail("%s", err);
    int np = kvcc_param_count(g->pol);
    g->params = calloc((size_t)np + 1, sizeof *g->params);
    if (!g->params)
        return fail("%s", "out of memory");
    for (int j = 0; j < a->n_params; j++) {
        char name[64];
        const char *eq = strchr(a->params[j], '=');
        size_t nl = eq ? (size_t)(eq - a->params[j]) : 0;
        if (nl && nl < sizeof name) {
            memcpy(name, a->params[j], nl);
            name[nl] = 0;
            if (kvcc_param_index(g->pol, name) < 0) {
                snprintf(err, sizeof err, "policy %s has no param '%s'", kvcc_policy_name(g->pol),
                         name);
                return fail("%s", err);
            }
        }
    }
    if (llama_policy_params(g->pol, a->params, a->n_params, g->params, err, sizeof err))
        return fail("%s", err);
    /* the observation queries the policy declares (its window, kvcc.all: -1, or none: 0) */
    if (kvcc_policy_obs(g->pol, g->params, &g->window))
        return fail("%s", kvcc_last_error());
    g->decode = llama_policy_is_decode(g->pol, &g->every);
    g->nstate = llama_policy_nstate(g->pol);
    for (int i = 0; i < a->n_weights; i++) {
        KiErr ke = { 0 };
        if (kt_npz_read(a->weights[i], &g->wz[g->nwz], &ke) != 0)
            return fail("%s", ke.msg);
        g->nwz++;
    }
    for (int k = 0; k < kvcc_weight_count(g->pol); k++) {
        const char *nm = NULL;
        kvcc_weight_info(g->pol, k, &nm, NULL);
        int found = 0;
        for (int i = 0; i < g->nwz && !found; i++)
            found = kt_npz_get(&g->wz[i], nm) != NULL;
        if (!found) {
            snprintf(err, sizeof err, "policy %s declares weight '%s': give it with --weights FILE.npz "
                     "(kvcc calibrate writes them)", kvcc_policy_name(g->pol), nm);
            return fail("%s", err);
        }
    }
    return 0;
}

int gen_weights(const Gen *g, kvcc_plan *pl)
{
    for (int k = 0; g->pol && k < kvcc_weight_count(g->pol); k++) {
        const char *nm = NULL;
        kvcc_weight_info(g->pol, k, &nm, NULL);
        const KtArray *w = NULL;
        for (int i = 0; i < g->nwz && !w; i++)
            w = kt_npz_get(&g->wz[i], nm);
        if (!w)
            return fail("weight '%s' was not given (--weights FILE.npz)", nm);
        if (w->kind != 'f' && w->kind != 'i' && w->kind != 'u' && w->kind != 'b')
            return fail("weight '%s' is not a numeric array", nm);
        int64_t shape[8];
        for (int j = 0; j < w->ndim && j < 8; j++)
            shape[j] = w->shape[j];
        float *f = malloc((w->count + 1) * sizeof *f);
        if (!f)
            return fail("%s", "out of memory");
        for (size_t j = 0; j < w->count; j++)
            f[j] = (float)kt_array_get(w, j);
        int rc = kvcc_plan_set_weight(pl, nm, f, w->ndim, shape);
        free(f);
        if (rc)
            return fail("%s", kvcc_last_error());
    }
    return 0;
}

void gen_free(Gen *g)
{
    kvcc_close(g->pol);
    free(g->params);
    for (int i = 0; i < g->nwz; i++)
        kt_npz_free(&g->wz[i]);
    memset(g, 0, sizeof *g);
}

static int cmd_generate(const Args *a, const LlamaModel *m, const LlamaTokenizer *tok, Attn *at)
{
    const LlamaConfig *cfg = &m->cfg;
    Gen g;
    int n, rc = 1;
    if (gen_setup(a, cfg, &g)) {
        gen_free(&g);
        return 1;
    }
    if (g.decode && !at->use_kvcc) {
        gen_free(&g);
        return fail("%s", "a decode policy runs inside libkvcc's decode attention: not with --attn ref");
    }
    int *ids = encode_prompt(tok, a->prompt, &n);
    if (!ids) {
        gen_free(&g);
        return 1;
    }
    LlamaState st;
    LlamaObs obs, dq;
    memset(&st, 0, sizeof st);
    memset(&obs, 0, sizeof obs);
    memset(&dq, 0, sizeof dq);
    /* S: rows the uncompressed generation needs (positions stop at the model's seq_len) */
    const int S = n + a->steps < cfg->seq_len ? n + a->steps : cfg->seq_len;
    int cap = S;
    if (n > cfg->seq_len) {
        fail("%s", "prompt longer than the model's seq_len");
        goto out;
    }
    if (g.pol && g.decode) {
        g.budget = g.fixed > 0 ? g.fixed : (long)((double)S * (1.0 - g.ratio));
        if (g.budget < 1) {
            fail("%s", "budget floor(S (1 - ratio)) is 0 rows: lower --ratio or raise --steps");
            goto out;
        }
        long c = (n > g.budget ? n : g.budget) + g.every;
        cap = c < S ? (int)c : S;
    }
    if (state_init(&st, m, cap, g.nstate))
        goto out;
    if ((g.pol && !g.decode && llama_obs_init(&obs, cfg, n)) ||
        (g.decode && llama_obs_init(&dq, cfg, 1))) {
        fail("%s", "out of memory");
        goto out;
    }
    at->gen = &g;
    if (attn_bind(at, &st, g.pol, g.decode ? 1 : n))
        goto out;
    if (llama_prefill(&st, ids, n, 0, g.pol && !g.decode ? &obs : NULL, NULL)) {
        fail("forward pass failed: %s", st.err);
        goto out;
    }
    if (!a->ids)
        for (int i = 1; i < n; i++) {
            size_t len;
            const char *p = llama_tok_piece(tok, ids[i - 1], ids[i], &len);
            fwrite(p, 1, len, stdout);
        }
    char msg[600];
    size_t bytes0 = llama_cache_bytes(&st.cache);
    int cap0 = st.cache.capacity;
    if (g.pol && !g.decode) {
        int O = g.window < 0 ? n : g.window;   /* kvcc.all: every prompt position */
        if (n < 2 || (g.window > 0 && n <= g.window)) {
            snprintf(msg, sizeof msg,
                     "llama: note: the prompt (%d tokens) is not longer than the policy's window "
                     "(%d): the cache is not compressed\n", n, O);
            fputs(msg, stderr);
        } else {
            float *Q = O ? malloc((size_t)cfg->n_layers * cfg->n_heads * O * cfg->head_dim * sizeof *Q) : NULL;
            int32_t *qpos = O ? malloc((size_t)O * sizeof *qpos) : NULL;
            int bad = O && (!Q || !qpos || llama_obs_pack(&obs, O, Q, qpos));
            kvcc_obs ko = {O, Q, NULL, qpos};
            kvcc_args ka = {g.ratio, g.fixed, g.params, 1, NULL};
            if (bad)
                fail("%s", "out of memory");
            else if (kvcc_compress(at->plan, &st.cache.kc, &ko, &ka))
                bad = fail("kvcc_compress: %s", kvcc_last_error());
            free(Q);
            free(qpos);
            if (bad)
                goto out;
            int kept = llama_cache_max_len(&st.cache);
            if (llama_cache_resize(&st.cache, kept + (S - n)) || attn_bind(at, &st, g.pol, 1)) {
                fail("%s", "out of memory");
                goto out;
            }
            fprintf(stderr,
                    "llama: %s %s: the prompt's cache compressed from %d to %d rows per head; "
                    "the cache moved to a new allocation of %d rows per head (room for %d more): "
                    "%zu bytes allocated before, %zu after (uncompressed generation: %zu)\n",
                    kvcc_policy_name(g.pol), g.what, n, kept, st.cache.capacity, S - n, bytes0,
                    llama_cache_bytes(&st.cache), cache_bytes_for(cfg, S));
        }
    }
    const int V = cfg->vocab_size;
    int prev = ids[n - 1], pos = n, step = 0, compressions = 0;
    int maxheld = 0, maxcap = 0;     /* decode: the most rows per head after any compression, capacity */
    const float *lg = st.logits;
    for (step = 0; step < a->steps; step++) {
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
        if (step + 1 == a->steps || pos >= S)
            break;
        if (g.decode) {
            dq.start = pos;
            dq.count = 0;
            st.obs = &dq;
        }
        lg = llama_forward(&st, next, pos++);
        st.obs = NULL;
        if (!lg) {
            fail("forward pass failed: %s", st.err);
            goto out;
        }
        if (g.decode && (step + 1) % g.every == 0 && llama_cache_max_len(&st.cache) > g.budget) {
            int32_t qp = pos - 1;
            kvcc_obs ko = {1, dq.q, NULL, &qp};
            kvcc_args ka = {0, g.budget, g.params, 1, NULL};
            if (kvcc_compress(at->plan, &st.cache.kc, &ko, &ka)) {
                fail("kvcc_compress: %s", kvcc_last_error());
                goto out;
            }
            if (compressions++ == 0 && st.cache.capacity > g.budget + g.every) {
                if (llama_cache_resize(&st.cache, (int)g.budget + g.every) ||
                    attn_bind(at, &st, g.pol, 1)) {
                    fail("%s", "out of memory");
                    goto out;
                }
            }
            if (llama_cache_max_len(&st.cache) > maxheld)
                maxheld = llama_cache_max_len(&st.cache);
            if (compressions > 1 && st.cache.capacity > maxcap)
                maxcap = st.cache.capacity;
        }
    }
    putchar('\n');
    if (g.decode)
        fprintf(stderr,
                "llama: %s %s: budget %ld rows per head (of %d), %d compressions while "
                "generating; the cache was allocated for %d rows per head (%zu bytes), then moved to "
                "%d rows (%zu bytes); holds %d rows now (uncompressed generation: %zu bytes); "
                "after every compression at most %d rows per head, capacity at most %d rows from the "
                "second on\n",
                kvcc_policy_name(g.pol), g.what, g.budget, S, compressions, cap0, bytes0,
                st.cache.capacity, llama_cache_bytes(&st.cache), llama_cache_max_len(&st.cache),
                cache_bytes_for(cfg, S), maxheld, maxcap);
    rc = 0;
out:
    llama_obs_free(&obs);
    llama_obs_free(&dq);
    llama_state_free(&st);
    kvcc_plan_destroy(at->plan);
    at->plan = NULL;
    at->gen = NULL;
    gen_free(&g);
    free(ids);
    return rc;
}

static int cmd_logits(const Args *a, const LlamaModel *m, const LlamaTokenizer *tok, Attn *at)
{
    int n, idx[5], rc = 1;
    int *ids = encode_prompt(tok, a->prompt, &n);
    if (!ids)
        return 1;
    LlamaState st;
    memset(&st, 0, sizeof st);
    if (n > m->cfg.seq_len)
        fail("%s", "prompt longer than the model's seq_len");
    else if (!state_init(&st, m, n, 0) && !attn_bind(at, &st, NULL, 0)) {
        if (llama_prefill(&st, ids, n, 0, NULL, NULL)) {
            fail("forward pass failed: %s", st.err);
        } else {
            int k = top5(st.logits, m->cfg.vocab_size, idx);
            for (int j = 0; j < k; j++)
                printf("%d %.6f\n", idx[j], st.logits[idx[j]]);
            rc = 0;
        }
    }
    llama_state_free(&st);
    free(ids);
    return rc;
}

static int cmd_nll(const Args *a, const LlamaModel *m, const LlamaTokenizer *tok, Attn *at)
{
    LlamaStories S;
    char err[600];
    if (!a->data)
        return fail("%s", "nll needs --data FILE");
    if (llama_stories_load(&S, a->data, a->chunk_chars, a->from, err, sizeof err))
        return fail("%s", err);
    int lo, hi;
    if (llama_parse_range(a->stories, S.n, &lo, &hi)) {
        llama_stories_free(&S);
        return fail("bad --stories '%s' (want a:b)", a->stories);
    }
    LlamaState st;
    if (state_init(&st, m, a->max_tokens, 0) || attn_bind(at, &st, NULL, 0)) {
        llama_stories_free(&S);
        return 1;
    }
    double t0 = now(), total = 0;
    long ntok = 0, nscored = 0, npred = 0;
    int rc = 0;
    for (int i = lo; i < hi && !rc; i++) {
        int n, full;
        int *ids = encode_story(tok, S.text[i], S.len[i], a->max_tokens, &n, &full);
        if (!ids) {
            rc = fail("%s", "a story cannot be encoded");
            break;
        }
        llama_cache_reset(&st.cache);
        double sum;
        if (llama_prefill(&st, ids, n, 0, NULL, &sum)) {
            rc = fail("forward pass failed: %s", st.err);
        } else {
            if (a->per_story)
                printf("story %d tokens %d predictions %d nll %.6f\n", i, n, n - 1,
                       n > 1 ? sum / (n - 1) : 0.0);
            total += sum;
            ntok += full;
            nscored += n;
            npred += n - 1;
        }
        free(ids);
    }
    if (!rc) {
        double mean = npred ? total / (double)npred : 0.0;
        printf("stories %d tokens %ld truncated_tokens %ld predictions %ld nll %.6f ppl %.4f "
               "seconds %.2f attention %s\n",
               hi - lo, ntok, nscored, npred, mean, exp(mean), now() - t0,
               at->use_kvcc ? "kvcc" : "ref");
    }
    llama_state_free(&st);
    llama_stories_free(&S);
    return rc;
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

/* ---- selftest: internal consistency of the cache, attend, hooks and libkvcc ---------------- */
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

static int cmd_selftest(const LlamaModel *m, Attn *at)
{
    int failed = 0;
    LlamaState state, *st = &state;
    if (state_init(st, m, 0, 0))
        return 1;
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
        int32_t *len = llama_cache_len(&st->cache, 0, 0);
        int32_t *pos = llama_cache_pos(&st->cache, 0, 0);
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
    /* copy and resize keep every row; a resized cache computes the same logits */
    {
        static const int toks[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376};
        const int n = (int)(sizeof toks / sizeof toks[0]);
        LlamaState small;
        int rc = state_init(&small, m, n + 1, 0);
        llama_cache_reset(&st->cache);
        rc = rc || llama_prefill(st, toks, n - 1, 0, NULL, NULL) ||
             llama_cache_copy(&small.cache, &st->cache);
        T("cache_copy into a smaller cache", rc == 0);
        int kept[] = {0, 2, 3, 7};
        rc = llama_cache_keep(&st->cache, 1, 2, kept, 4) ||
             llama_cache_keep(&small.cache, 1, 2, kept, 4) ||
             llama_cache_resize(&small.cache, 10) || small.cache.capacity != 10 ||
             llama_cache_resize(&small.cache, 8) == 0; /* 9 rows in use elsewhere */
        T("cache_resize to 10 rows, refused below the longest head", rc == 0);
        size_t heads = (size_t)m->cfg.n_layers * m->cfg.n_kv_heads;
        T("cache bytes follow the capacity (K, V, pos per row; len per head)",
          llama_cache_bytes(&small.cache) ==
              heads * 10 * (2 * m->cfg.head_dim * sizeof(float) + sizeof(int32_t)) +
                  heads * sizeof(int32_t));
        const float *a = llama_forward(st, toks[n - 1], n - 1);
        const float *b = a ? llama_forward(&small, toks[n - 1], n - 1) : NULL;
        double err = b ? 0 : 1;
        for (int i = 0; b && i < m->cfg.vocab_size; i++)
            err = fmax(err, fabs((double)a[i] - b[i]));
        T("same logits from the original and the resized cache", err == 0);
        llama_state_free(&small);
    }
    /* libkvcc: compress the example's cache in place; decode attention == reference */
    {
        static const int toks[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};
        const int n = (int)(sizeof toks / sizeof toks[0]);
        char err[512];
        kvcc_policy *plain = NULL;
        kvcc_plan *pl = NULL;
        int rc = llama_plain_policy(&m->cfg, &plain, err, sizeof err) ||
                 kvcc_plan_create(plain, &st->cache.lay, 0, 1, &pl);
        llama_cache_reset(&st->cache);
        rc = rc || llama_prefill(st, toks, n, 0, NULL, NULL);
        kvcc_args ka = {0.5, -1, NULL, 1, NULL};
        rc = rc || kvcc_compress(pl, &st->cache.kc, NULL, &ka);
        int ok = rc == 0;
        for (int l = 0; ok && l < m->cfg.n_layers; l++)
            for (int h = 0; h < m->cfg.n_kv_heads; h++) {
                ok &= *llama_cache_len(&st->cache, l, h) == n / 2;
                for (int t = 0; t < n / 2; t++)
                    ok &= llama_cache_pos(&st->cache, l, h)[t] == n / 2 + t;
            }
        T("kvcc_compress on the example's cache (score x.t, ratio 0.5: the newest half)", ok);
        kvcc_plan_destroy(pl);
        kvcc_close(plain);
        if (at->use_kvcc) {
            LlamaState ks;
            rc = state_init(&ks, m, n, 0) || attn_bind(at, &ks, NULL, 0);
            llama_cache_reset(&st->cache);
            st->layer = NULL;
            double e = 0;
            for (int i = 0; i < n && !rc; i++) {
                const float *a = llama_forward(st, toks[i], i);
                const float *b = a ? llama_forward(&ks, toks[i], i) : NULL;
                if (!b) {
                    rc = 1;
                    break;
                }
                for (int v = 0; v < m->cfg.vocab_size; v++)
                    e = fmax(e, fabs((double)a[v] - b[v]));
            }
            snprintf(err, sizeof err, "libkvcc decode attention == reference: logits of %d tokens "
                     "within 1e-4 (max |diff| %.2e)", n, e);
            T(err, rc == 0 && e < 1e-4);
            llama_state_free(&ks);
        } else {
            printf("SKIP libkvcc decode attention == reference: this libkvcc has no "
                   "kvcc_decode_layer\n");
        }
    }
#undef T
    llama_state_free(st);
    printf("selftest: %d failed\n", failed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    Args a;
    memset(&a, 0, sizeof a);
    a.steps = 256;
    a.max_tokens = 512;
    a.page_size = 16;
    a.pages = 64;
    a.max_seqs = 4;
    a.threads = 1;
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
        else if (OPT("--ratio"))
            a.ratio = val;
        else if (OPT("--budget"))
            a.budget = val;
        else if (OPT("--attn"))
            a.attn = val;
        else if (OPT("--from"))
            a.from = val;
        else if (OPT("--steps"))
            a.steps = atoi(val);
        else if (OPT("--max-tokens"))
            a.max_tokens = atoi(val);
        else if (OPT("--pages"))
            a.pages = atoi(val);
        else if (OPT("--page-size"))
            a.page_size = atoi(val);
        else if (OPT("--max-seqs"))
            a.max_seqs = atoi(val);
        else if (OPT("--threads"))
            a.threads = atoi(val);
        else if (OPT("--generate"))
            a.generate = atoi(val);
        else if (OPT("--chunk-chars")) {
            char *e;
            a.chunk_chars = strtol(val, &e, 10);
            if (e == val || *e || a.chunk_chars < 1)
                return fail("--chunk-chars wants a positive number of characters, got '%s'", val), 2;
        } else if (OPT("--param")) {
            if (a.n_params == 16)
                return fail("%s", "too many --param");
            a.params[a.n_params++] = val;
        } else if (OPT("--weights")) {
            if (a.n_weights == 8)
                return fail("%s", "too many --weights");
            a.weights[a.n_weights++] = val;
        } else if (strcmp(o, "--ids") == 0)
            a.ids = 1;
        else if (strcmp(o, "--per-story") == 0)
            a.per_story = 1;
        else if (strcmp(o, "--per-head-tables") == 0)
            a.per_head = 1;
        else if (strcmp(o, "--quiet") == 0)
            a.quiet = 1;
        else if (o[0] != '-' && !a.cmd)
            a.cmd = o;
        else {
            usage(stderr);
            return fail("unexpected argument '%s'", o), 2;
        }
#undef OPT
    }
    if (!a.cmd || !a.model || !a.tokenizer) {
        usage(stderr);
        return 2;
    }
    if (strcmp(a.cmd, "generate") && strcmp(a.cmd, "logits") && strcmp(a.cmd, "encode") &&
        strcmp(a.cmd, "nll") && strcmp(a.cmd, "selftest") && strcmp(a.cmd, "batch")) {
        usage(stderr);
        return fail("unknown command '%s'", a.cmd), 2;
    }
    if (a.max_tokens < 1)
        return fail("%s", "--max-tokens must be positive");
    if (a.steps < 1)
        return fail("%s", "--steps must be positive");
    Attn at;
    memset(&at, 0, sizeof at);
    at.use_kvcc = llama_kvcc_has_decode();
    if (a.attn && strcmp(a.attn, "ref") == 0)
        at.use_kvcc = 0;
    else if (a.attn && strcmp(a.attn, "kvcc") == 0) {
        if (!llama_kvcc_has_decode())
            return fail("%s", "--attn kvcc: this libkvcc has no decode attention (kvcc_decode_layer)");
    } else if (a.attn)
        return fail("--attn wants kvcc or ref, got '%s'", a.attn), 2;
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
    if (a.max_tokens > m.cfg.seq_len)
        a.max_tokens = m.cfg.seq_len;
    if (tok.vocab_size != m.cfg.vocab_size) {
        snprintf(err, sizeof err, "tokenizer has %d tokens, model vocab_size is %d",
                 tok.vocab_size, m.cfg.vocab_size);
        rc = fail("%s", err);
    } else if (strcmp(a.cmd, "encode") == 0) {
        rc = cmd_encode(&a, &tok);
    } else if (strcmp(a.cmd, "generate") == 0) {
        rc = cmd_generate(&a, &m, &tok, &at);
    } else if (strcmp(a.cmd, "logits") == 0) {
        rc = cmd_logits(&a, &m, &tok, &at);
    } else if (strcmp(a.cmd, "batch") == 0) {
        rc = cmd_batch(&a, &m, &tok);
    } else if (strcmp(a.cmd, "nll") == 0) {
        rc = cmd_nll(&a, &m, &tok, &at);
    } else {
        rc = cmd_selftest(&m, &at);
    }
    attn_free(&at);
    llama_tok_free(&tok);
    llama_model_free(&m);
    return rc;
}
