/* batch.c - `llama batch`: continuous batching in miniature.  Stories of a data file run as
 * sequences that share one pool of KV pages (lib/llama/batch.h: vLLM's paged layout, one block
 * table per sequence, libkvcc's kvcc_append_batch / kvcc_decode_batch / kvcc_compress_batch):
 *
 *   llama batch --data FILE [--stories a:b] [--policy P --ratio R [--param name=value]...]
 *         [--pages N] [--page-size P] [--max-seqs S] [--threads T] [--generate N] [--quiet]
 *
 * Every step feeds one token of every running sequence (prefill and continuation tokens mixed)
 * through the model, layer by layer, with one append and one decode attention call per layer for
 * all of them.  A sequence is admitted (first come, first served) when a slot is free and the
 * pool can cover its peak page count on top of what the running sequences may still take; its
 * pages come from the pool as its table fills, go back when a compression frees them and when it
 * ends, and the next sequences reuse them.
 *
 * The protocol is `kvcc eval`'s (tools/eval.c, doc/eval.md), so that the NLL equals its
 * single-sequence numbers: tokens = [BOS] + encode(story) truncated to 512, C = n / 2; the
 * context 0..C-1 is prefilled; a prefill policy compresses it once at ratio R (n_keep =
 * floor(C (1 - R)) per head) with the last `window` context queries (the sequences whose prefill
 * ends in the same step: one kvcc_compress_batch); the continuation C..n-2 is teacher-forced and
 * -log softmax(logits)[next token] summed.  A decode policy (when = kvcc.decode{every = N})
 * runs its observe hook inside decode attention and, at every N-th continuation step s, a
 * sequence holding more than B_s = floor(C (1 - R)) + s rows is compressed to B_s (the
 * sequences with equal budgets in one call).  Stories whose context is not longer than the
 * policy's window are skipped, as eval skips them.  --generate N instead continues each
 * context greedily for up to N tokens and prints the texts (no NLL).
 *
 * Output: one line per event (admission, compression with the pool's occupancy before and
 * after, end of a sequence) unless --quiet, then a summary with the mean NLL and the pool's
 * statistics (peak pages in use, pages handed out and reused, pages compression freed).
 *
 * The plan's x.step is one per plan, not per sequence: policies that read x.step see the
 * step count of the whole batch (none of policies/ does in its score; gated_window does). */
#include "examples/llama/llama.h"
#include "lib/llama/batch.h"
#include "lib/llama/kvglue.h"
#include "lib/llama/stories.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WAIT, RUN, DONE, SKIP };

typedef struct {
    int story, n, C;       /* tokens (after truncation), context length */
    int *ids;
    int st, slot, p;       /* WAIT/RUN/DONE/SKIP; slot; next position to feed */
    int end;               /* feeds positions 0..end-1 */
    int last;              /* generate: the token to feed next in the continuation */
    long nkeep;            /* floor(C (1 - R)) */
    double nll;
    long cnt;
    char *text;            /* generate: the continuation's text */
    size_t tlen, tcap;
} Seq;

typedef struct {
    const Args *a;
    const LlamaModel *m;
    const LlamaTokenizer *tok;
    Gen g;
    kvcc_policy *pol;      /* g.pol or the plain policy */
    kvcc_policy *plain;
    kvcc_plan *plan;
    LlamaPaged P;
    Seq *sq;
    int nsq;
    int *slot_seq;         /* [max_seqs] the sequence in a slot, -1: free */
    LlamaObs *all, *cur;   /* [max_seqs] context queries (prefill policies), this step's (decode) */
    float *Q;              /* packed observation queries [max_seqs][...] */
    int32_t *qpos;         /* [max_seqs][cap] */
    size_t qsz;            /* floats of one slot's Q */
    int O;                 /* prefill policies: queries per compression (-1: all) */
    long step;
    int peak, compressions, cfreed, events;
} Run;

/* One line of the event log: the step, what happened, the pool's pages in use (before -> now
 * when `before` differs from now). */
static void event(Run *R, int before, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void event(Run *R, int before, const char *fmt, ...)
{
    if (R->a->quiet)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int now = llama_paged_used(&R->P);
    printf("step %5ld  %-58s pool %2d", R->step, msg, before >= 0 && before != now ? before : now);
    if (before >= 0 && before != now)
        printf(" -> %2d", now);
    printf(" of %d pages\n", R->P.pg.num_pages);
    R->events++;
}

/* "story 3 (118 -> 59 rows)" for each slot of a compression, rows[i] before */
static void rowlist(const Run *R, const int *slots, const int *rows, int n, char *buf, size_t nb)
{
    size_t w = 0;
    buf[0] = 0;
    for (int i = 0; i < n && w + 40 < nb; i++)
        w += (size_t)snprintf(buf + w, nb - w, "%s%d (%d -> %d rows)", i ? ", " : "",
                              R->sq[R->slot_seq[slots[i]]].story, rows[i], llama_paged_max_len(&R->P, slots[i]));
}

/* Rows a sequence's longest head will hold at its peak from now on (rows now, position p next),
 * following the protocol's compressions (estimated n_keep for the prefill one). */
static long peak_rows(const Run *R, const Seq *s, long rows)
{
    long peak = rows;
    for (int q = s->p; q < s->end; q++) {
        rows++;
        peak = rows > peak ? rows : peak;
        if (R->g.pol && !R->g.decode && q == s->C - 1 && rows > s->nkeep)
            rows = s->nkeep;
        if (R->g.pol && R->g.decode && q >= s->C) {
            long st = q - s->C + 1;
            if (st % R->g.every == 0 && rows > s->nkeep + st)
                rows = s->nkeep + st;
        }
    }
    return peak;
}

/* Pages a sequence may still need at its peak beyond what it holds. */
static int need(const Run *R, const Seq *s)
{
    long rows = s->st == RUN ? llama_paged_max_len(&R->P, s->slot) : 0;
    int have = s->st == RUN ? llama_paged_slot_pages(&R->P, s->slot) : 0;
    int want = R->P.nt * llama_paged_pages_for(&R->P, peak_rows(R, s, rows));   /* per head: each table */
    return want > have ? want - have : 0;
}

static void admit(Run *R)
{
    int outstanding = 0;
    for (int i = 0; i < R->nsq; i++)
        if (R->sq[i].st == RUN)
            outstanding += need(R, &R->sq[i]);
    for (int i = 0; i < R->nsq; i++) {
        Seq *s = &R->sq[i];
        if (s->st == RUN || s->st == DONE || s->st == SKIP)
            continue;
        int slot = -1;
        for (int k = 0; k < R->P.max_seqs && slot < 0; k++)
            if (R->slot_seq[k] < 0)
                slot = k;
        int nd = need(R, s);
        if (slot < 0 || R->P.nfree - outstanding < nd)
            return;                        /* first come, first served: no overtaking */
        s->st = RUN, s->slot = slot, s->p = 0;
        R->slot_seq[slot] = i;
        outstanding += nd;
        if (R->all) {                      /* context queries from position 0 on */
            R->all[slot].start = 0;
            R->all[slot].count = 0;
        }
        event(R, -1, "+ story %d -> slot %d: context %d + %d, reserves %d pages", s->story, slot, s->C,
              s->end - s->C, nd);
    }
}

static void seq_text(Seq *s, const LlamaTokenizer *tok, int prev, int next)
{
    size_t len;
    const char *p = llama_tok_piece(tok, prev, next, &len);
    if (s->tlen + len + 1 > s->tcap) {
        size_t cap = (s->tlen + len + 1) * 2;
        char *t = realloc(s->text, cap);
        if (!t)
            return;
        s->text = t, s->tcap = cap;
    }
    for (size_t i = 0; i < len; i++)      /* one line */
        s->text[s->tlen + i] = p[i] == '\n' ? ' ' : p[i];
    s->tlen += len;
    s->text[s->tlen] = 0;
}

/* The prefill compression of the sequences in slots[0..n-1] (their context just ended). */
static int compress_prefill(Run *R, const int *slots, int n)
{
    kvcc_obs obs[256];
    int before = llama_paged_used(&R->P), freed, rows[256];
    for (int i = 0; i < n; i++) {
        const Seq *s = &R->sq[R->slot_seq[slots[i]]];
        int O = R->O < 0 ? s->C : R->O;
        float *Q = R->Q + (size_t)slots[i] * R->qsz;
        int32_t *qp = R->qpos + (size_t)slots[i] * R->P.lay.capacity;
        if (O > 0 && llama_obs_pack(&R->all[slots[i]], O, Q, qp))
            return fail("%s", "observation queries were not captured");
        obs[i] = (kvcc_obs){O, O > 0 ? Q : NULL, NULL, O > 0 ? qp : NULL};
        rows[i] = llama_paged_max_len(&R->P, slots[i]);
    }
    kvcc_args ka = {R->g.ratio, -1, R->g.params, R->a->threads, NULL};
    if (llama_paged_compress(&R->P, R->plan, slots, n, obs, &ka, &freed))
        return fail("%s", R->P.err);
    R->compressions++, R->cfreed += freed;
    char what[512];
    rowlist(R, slots, rows, n, what, sizeof what);
    event(R, before, "%s: stor%s %s", kvcc_policy_name(R->g.pol), n > 1 ? "ies" : "y", what);
    return 0;
}

/* A decode policy's compressions of this step: slots[0..n-1] with budgets bud[0..n-1]. */
static int compress_decode(Run *R, const int *slots, const long *bud, int n)
{
    int done[256] = {0};
    for (int i = 0; i < n; i++) {
        if (done[i])
            continue;
        int grp[256], rows[256], k = 0, before = llama_paged_used(&R->P), freed;
        kvcc_obs obs[256];
        for (int j = i; j < n; j++)
            if (!done[j] && bud[j] == bud[i]) {
                done[j] = 1;
                rows[k] = llama_paged_max_len(&R->P, slots[j]);
                grp[k] = slots[j];
                R->qpos[(size_t)slots[j] * R->P.lay.capacity] = R->cur[slots[j]].qpos[0];
                obs[k++] = (kvcc_obs){1, R->cur[slots[j]].q, NULL, R->qpos + (size_t)slots[j] * R->P.lay.capacity};
            }
        kvcc_args ka = {0, bud[i], R->g.params, R->a->threads, NULL};
        if (llama_paged_compress(&R->P, R->plan, grp, k, obs, &ka, &freed))
            return fail("%s", R->P.err);
        R->compressions++, R->cfreed += freed;
        char what[512];
        rowlist(R, grp, rows, k, what, sizeof what);
        event(R, before, "%s: stor%s %s", kvcc_policy_name(R->g.pol), k > 1 ? "ies" : "y", what);
    }
    return 0;
}

/* One step of every running sequence, then its compressions and endings. */
static int step(Run *R)
{
    const int V = R->m->cfg.vocab_size, S = R->P.max_seqs;
    int slots[256], tok[256], pos[256], n = 0;
    LlamaObs *obs[256];
    for (int k = 0; k < S; k++) {
        if (R->slot_seq[k] < 0)
            continue;
        Seq *s = &R->sq[R->slot_seq[k]];
        slots[n] = k, pos[n] = s->p;
        tok[n] = s->p < s->C || !R->a->generate ? s->ids[s->p] : s->last;
        obs[n] = NULL;
        if (R->g.pol && !R->g.decode && s->p < s->C && R->O != 0)
            obs[n] = &R->all[k];
        if (R->g.pol && R->g.decode && s->p >= s->C) {
            R->cur[k].start = s->p, R->cur[k].count = 0;
            obs[n] = &R->cur[k];
        }
        n++;
    }
    if (!n)
        return fail("%s", "no sequence fits the pool (raise --pages)");
    if (llama_paged_forward(&R->P, R->plan, slots, n, tok, pos, obs))
        return fail("%s", R->P.err);
    int used = llama_paged_used(&R->P);
    R->peak = used > R->peak ? used : R->peak;
    int cs[256], nc = 0, ds[256], nd = 0, fin[256], nf = 0;
    long bud[256];
    for (int i = 0; i < n; i++) {
        Seq *s = &R->sq[R->slot_seq[slots[i]]];
        const float *lg = R->P.logits + (size_t)slots[i] * V;
        int p = s->p++;
        if (p >= s->C && !R->a->generate) {
            s->nll += llama_nll(lg, V, s->ids[p + 1]);
            s->cnt++;
        }
        if (p >= s->C - 1 && R->a->generate) {
            int next = 0;
            for (int j = 1; j < V; j++)
                if (lg[j] > lg[next])
                    next = j;
            if (next == LLAMA_TOK_BOS || next == LLAMA_TOK_EOS)
                s->end = s->p;
            else
                seq_text(s, R->tok, p >= s->C ? s->last : s->ids[p], next), s->last = next;
        }
        if (R->g.pol && !R->g.decode && p == s->C - 1)
            cs[nc++] = slots[i];
        if (R->g.pol && R->g.decode && p >= s->C) {
            long st = p - s->C + 1;
            if (st % R->g.every == 0 && llama_paged_max_len(&R->P, slots[i]) > s->nkeep + st)
                ds[nd] = slots[i], bud[nd++] = s->nkeep + st;
        }
        if (s->p >= s->end)
            fin[nf++] = slots[i];
    }
    if ((nc && compress_prefill(R, cs, nc)) || (nd && compress_decode(R, ds, bud, nd)))
        return -1;
    for (int i = 0; i < nf; i++) {
        Seq *s = &R->sq[R->slot_seq[fin[i]]];
        int before = llama_paged_used(&R->P);
        llama_paged_release(&R->P, fin[i]);
        R->slot_seq[fin[i]] = -1;
        s->st = DONE;
        if (R->a->generate)
            event(R, before, "- story %d ends: \"%.34s%s\"", s->story, s->text ? s->text : "",
                  s->tlen > 34 ? "..." : "");
        else
            event(R, before, "- story %d ends: %ld predictions, nll %.4f", s->story, s->cnt,
                  s->cnt ? s->nll / (double)s->cnt : 0.0);
    }
    R->step++;
    return 0;
}

static int setup(Run *R, const LlamaStories *S, int lo, int hi)
{
    const Args *a = R->a;
    const LlamaConfig *cfg = &R->m->cfg;
    char err[600];
    int cap = 2, maxtok = a->max_tokens;
    if (gen_setup(a, cfg, &R->g))
        return 1;
    if (R->g.pol && R->g.fixed > 0)
        return fail("%s", "batch follows kvcc eval's protocol: give --ratio, not --budget");
    R->O = R->g.pol && !R->g.decode ? R->g.window : 0;
    R->nsq = hi - lo;
    R->sq = calloc((size_t)R->nsq, sizeof *R->sq);
    if (!R->sq)
        return fail("%s", "out of memory");
    for (int i = 0; i < R->nsq; i++) {
        Seq *s = &R->sq[i];
        int full;
        s->story = lo + i;
        s->slot = -1;
        s->ids = encode_story(R->tok, S->text[lo + i], S->len[lo + i], maxtok, &s->n, &full);
        if (!s->ids)
            return fail("%s", "a story cannot be encoded");
        s->C = s->n / 2;
        s->end = a->generate ? s->C + a->generate : s->n - 1;
        if (s->end > maxtok)
            s->end = maxtok;
        s->nkeep = (long)((double)s->C * (1.0 - R->g.ratio));
        if (s->C < 1 || s->end <= s->C || (R->O > 0 && s->C <= R->O))
            s->st = SKIP;              /* as kvcc eval: nothing to predict, or context <= window */
        cap = s->end > cap ? s->end : cap;
    }
    if (!R->g.pol && llama_plain_policy(cfg, &R->plain, err, sizeof err))
        return fail("plain attention policy: %s", err);
    R->pol = R->g.pol ? R->g.pol : R->plain;
    if (llama_paged_init(&R->P, R->m, a->page_size, a->pages, a->max_seqs, cap, R->g.nstate, a->per_head))
        return fail("%s", "bad pool sizes or out of memory");
    for (int i = 0; i < R->nsq; i++)
        if (R->sq[i].st == WAIT && need(R, &R->sq[i]) > a->pages) {
            snprintf(err, sizeof err, "story %d needs %d pages of %d tokens at its peak, the pool has %d",
                     R->sq[i].story, need(R, &R->sq[i]), a->page_size, a->pages);
            return fail("%s", err);
        }
    int max_obs = R->g.decode ? 1 : R->O < 0 ? cap : R->O;
    if (kvcc_plan_create_batch(R->pol, &R->P.lay, &R->P.pg, a->max_seqs, max_obs, a->threads, &R->plan) ||
        (R->g.pol && kvcc_plan_set_params(R->plan, R->g.params)))
        return fail("kvcc_plan_create_batch: %s", kvcc_last_error());
    if (R->g.pol && gen_weights(&R->g, R->plan))
        return 1;
    R->slot_seq = malloc((size_t)a->max_seqs * sizeof *R->slot_seq);
    R->all = calloc((size_t)a->max_seqs, sizeof *R->all);
    R->cur = calloc((size_t)a->max_seqs, sizeof *R->cur);
    R->qsz = (size_t)cfg->n_layers * cfg->n_heads * cap * cfg->head_dim;
    R->Q = R->O ? malloc((size_t)a->max_seqs * R->qsz * sizeof *R->Q) : NULL;
    R->qpos = malloc((size_t)a->max_seqs * cap * sizeof *R->qpos);
    if (!R->slot_seq || !R->all || !R->cur || (R->O && !R->Q) || !R->qpos)
        return fail("%s", "out of memory");
    for (int k = 0; k < a->max_seqs; k++) {
        R->slot_seq[k] = -1;
        if ((R->O && llama_obs_init(&R->all[k], cfg, cap)) || (R->g.decode && llama_obs_init(&R->cur[k], cfg, 1)))
            return fail("%s", "out of memory");
    }
    return 0;
}

static void run_free(Run *R)
{
    for (int i = 0; R->sq && i < R->nsq; i++)
        free(R->sq[i].ids), free(R->sq[i].text);
    for (int k = 0; R->all && R->cur && k < R->a->max_seqs; k++)
        llama_obs_free(&R->all[k]), llama_obs_free(&R->cur[k]);
    free(R->sq), free(R->slot_seq), free(R->all), free(R->cur), free(R->Q), free(R->qpos);
    kvcc_plan_destroy(R->plan);
    llama_paged_free(&R->P);
    kvcc_close(R->plain);
    gen_free(&R->g);
}

int cmd_batch(const Args *a, const LlamaModel *m, const LlamaTokenizer *tok)
{
    LlamaStories S;
    char err[600];
    if (!a->data)
        return fail("%s", "batch needs --data FILE");
    if (a->page_size < 1 || a->page_size > 256 || a->pages < 1 || a->max_seqs < 1 || a->max_seqs > 256 ||
        a->threads < 1 || a->generate < 0)
        return fail("%s", "batch wants --page-size 1..256, --pages >= 1, --max-seqs 1..256, --threads >= 1");
    if (llama_stories_load(&S, a->data, a->chunk_chars, a->from, err, sizeof err))
        return fail("%s", err);
    int lo, hi;
    if (llama_parse_range(a->stories, S.n, &lo, &hi) || hi <= lo) {
        llama_stories_free(&S);
        return fail("bad --stories '%s' (want a:b)", a->stories);
    }
    Run R;
    memset(&R, 0, sizeof R);
    R.a = a, R.m = m, R.tok = tok;
    int rc = setup(&R, &S, lo, hi);
    llama_stories_free(&S);
    if (!rc && !a->quiet)
        printf("batch: %d stories, %s%s%s, %d slots, pool of %d pages x %d tokens (vLLM layout, one "
               "table per %s)\n", hi - lo, R.g.pol ? kvcc_policy_name(R.g.pol) : "no compression",
               R.g.pol ? " " : "", R.g.pol ? R.g.what : "", a->max_seqs, a->pages, a->page_size,
               a->per_head ? "(sequence, layer, head)" : "sequence");
    int ndone = 0;
    for (int i = 0; i < R.nsq; i++)
        ndone += R.sq[i].st == SKIP;
    while (!rc && ndone < R.nsq) {
        admit(&R);
        rc = step(&R);
        ndone = 0;
        for (int i = 0; i < R.nsq; i++)
            ndone += R.sq[i].st == SKIP || R.sq[i].st == DONE;
    }
    if (!rc) {
        double sum = 0;
        long cnt = 0;
        int used = 0, skipped = 0;
        for (int i = 0; i < R.nsq; i++) {
            if (R.sq[i].st == SKIP) {
                skipped++;
                continue;
            }
            sum += R.sq[i].nll, cnt += R.sq[i].cnt, used++;
        }
        if (!a->generate)
            printf("batch: %s%s%s: stories %d predictions %ld nll %.6f ppl %.4f\n",
                   R.g.pol ? kvcc_policy_name(R.g.pol) : "none", R.g.pol ? " " : "", R.g.pol ? R.g.what : "",
                   used, cnt, cnt ? sum / (double)cnt : 0.0, exp(cnt ? sum / (double)cnt : 0.0));
        printf("pool: %ld steps, peak %d of %d pages in use; %ld pages handed out, %ld of them reused "
               "after a release; %d compressions freed %d pages%s\n",
               R.step, R.peak, a->pages, R.P.handed, R.P.reused, R.compressions, R.cfreed,
               skipped ? "" : "");
        if (skipped)
            printf("note: %d stories skipped (context not longer than the policy's window, or nothing to "
                   "predict)\n", skipped);
    }
    run_free(&R);
    return rc;
}
