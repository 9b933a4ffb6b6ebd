#!/usr/bin/env python3
"""Reference of the prefill-compress-continue protocol (what `kvcc eval` reports), in numpy.

For each story:
  1. tokens = [BOS] + encode(story), truncated to 512; C = len(tokens) // 2.
  2. Prefill positions 0..C-1 with full causal attention (llama_ref.Model.prefill).
  3. Compress every (layer, KV head) with kvref.compress(policy, K, V, Q, params,
     ratio=r) on the post-RoPE K, V of the C context tokens; n_keep = floor(C(1-r)).
     Observation queries Q [L, H, G, O, d] (query head h*G+g) are the post-RoPE queries of
     the last O context positions, O = the policy's `window` (observed_attention: all C
     positions; streaming_llm, knorm, keydiff, random: none, O = 0); qpos = their positions.
  4. Teacher-force the continuation: tokens at positions p = C .. len-2 (RoPE position p;
     positions are never re-indexed after eviction) attend to the kept rows of their KV head
     plus the continuation tokens fed so far (appended uncompressed); accumulate
     -log softmax(logits)[tokens[p+1]].
  5. Report the mean NLL over all predictions pooled over the stories.
Ratio 0 keeps everything and equals the uncompressed model on the same predictions
(checked by `selfcheck`).  A story whose context is too short for the policy's window
(kvref raises: snapkv/pyramidkv/tova need C > window) is an error naming the story.

    eval_ref.py --policy snapkv --ratios 0.25,0.5 --stories 0:5 --param window=16
    eval_ref.py selfcheck

Output: a header line, then one row per ratio:  policy ratio window stories predictions nll
(window: the number of observation queries per head, 'all' for observed_attention, '-' when
the policy reads none).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import kvref  # noqa: E402
import selref  # noqa: E402

# AdaKV over SnapKV (policies/adakv.lua): SnapKV's scores (kvref), then selref.floor_select per
# layer; heads keep different counts (continue_nll masks the padding)
ADAKV = {"window": 64, "kernel": 5, "alpha": 0.2}

NO_QUERY = ("streaming_llm", "knorm", "keydiff", "random")

# The model-wide schedules (selref, from the methods' code): PrefixKV's in-prompt bisection
# (policies/prefixkv_bisect.lua: every context query observes, the layer's heads share the
# score, one prefix mass over all (layer, head) rows) and DynamicKV's per-layer shares
# (policies/dynamickv.lua: the window's pooled attention, a global top-k every 4 layers)
PREFIX = {"start": 4, "protect": 1}
DYNAMIC = {"window": 8, "kernel": 7, "ratio_max": 10}


def obs_count(policy, params, C):
    """Number of observation queries the policy reads (the last ones of the context)."""
    if policy in ("observed_attention", "prefixkv_bisect"):
        return C
    if policy == "dynamickv":
        return int(dict(DYNAMIC, **(params or {}))["window"])
    if policy in NO_QUERY:
        return 0
    p = dict(ADAKV if policy == "adakv" else kvref.DEFAULTS.get(policy, {}))
    p.update(params or {})
    if "window" not in p:
        return 0
    return int(p["window"])


class Story:
    """Prefill of one story's context, shared by every ratio."""

    def __init__(self, model, tokens):
        self.tokens = np.asarray(tokens)
        self.C = len(tokens) // 2
        self.pre = model.prefill(self.tokens[:self.C])     # q [L,Hq,C,hd], k/v [L,Hkv,C,hd]


def compress_story(model, st, policy, ratio, params=None, dtype="f32"):
    """Returns the kept row indices per layer: list of [Hkv, n_keep_l] int arrays."""
    C = st.C
    L, Hkv, G, hd = model.n_layers, model.n_kv_heads, model.G, model.hd
    O = obs_count(policy, params, C)
    if O > C:
        raise ValueError("context of %d tokens is shorter than the %d observation queries"
                         % (C, O))
    Q = st.pre["q"][:, :, C - O:, :].reshape(L, Hkv, G, O, hd)  # query head h*G+g
    qpos = np.arange(C - O, C)
    if policy == "adakv":
        p = dict(ADAKV, **(params or {}))
        w = int(p["window"])
        r = kvref.compress("snapkv", st.pre["k"], st.pre["v"], Q, params={"window": w, "kernel": int(p["kernel"])},
                           ratio=ratio, qpos=qpos, pos=np.arange(C), dtype=dtype)
        nk = kvref.n_keep_uniform(C, ratio=ratio)
        return [selref.floor_select(r["scores"][l], nk, p["alpha"], recent=w) for l in range(L)]
    if policy in ("prefixkv_bisect", "dynamickv"):
        return schedule_select(st, policy, Q, qpos, ratio, params)
    r = kvref.compress(policy, st.pre["k"], st.pre["v"], Q, params=params, ratio=ratio,
                       qpos=qpos, pos=np.arange(C), dtype=dtype)
    return [np.asarray(r["kept"][l]) for l in range(L)]


def schedule_select(st, policy, Q, qpos, ratio, params):
    """prefixkv_bisect / dynamickv: kept rows per layer, a list of per-head arrays."""
    K, C = st.pre["k"], st.C
    L, H, G, O = Q.shape[:4]
    A = kvref.causal_softmax(Q, K, qpos, np.arange(C))             # [L, H, G, O, C]
    if policy == "prefixkv_bisect":
        p = dict(PREFIX, **(params or {}))
        s0, pr = int(p["start"]), int(p["protect"])
        Sc = selref.prefixkv_scores(A.reshape(L, H * G, O, C))      # [L, C]
        rows = np.repeat(Sc[:, None, :], H, axis=1).reshape(L * H, C)
        forget = selref.prefixkv_forget(rows, ratio, s0, pr)
        return [[selref.prefixkv_select(rows[l * H + h], int(forget[l * H + h]), s0, pr) for h in range(H)]
                for l in range(L)]
    p = dict(DYNAMIC, **(params or {}))
    w, k = int(p["window"]), int(p["kernel"])
    a = kvref._avgpool_include_pad(A[..., :C - w].sum(axis=3), k)  # [L, H, G, C - w]
    kept, _ = selref.dynamickv(a.mean(axis=2), kvref.n_keep_uniform(C, ratio=ratio), w,
                               radio_max=p["ratio_max"])
    return kept


def continue_nll(model, st, kept):
    """Teacher-forced continuation over the compressed cache, batched per layer.
    Returns (sum of NLL, number of predictions)."""
    toks, C = st.tokens, st.C
    T = len(toks) - 1 - C                                  # positions C .. len-2
    if T <= 0:
        return 0.0, 0
    pos = np.arange(C, C + T)
    x = model.emb[toks[C:C + T]].copy()
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(model.n_layers):
        q, k, v = model.qkv(l, x, pos)                     # [T,Hq,hd], [T,Hkv,hd]
        idx, pad = kept[l], None                           # [Hkv, n_l]
        if isinstance(idx, list):                          # per-head counts: padded, masked
            m = max([len(a) for a in idx] + [0])
            idx, pad = np.zeros((len(kept[l]), m), dtype=np.int64), np.full((len(kept[l]), m), -np.inf)
            for h, a in enumerate(kept[l]):
                idx[h, :len(a)], pad[h, :len(a)] = a, 0.0
        rows = np.arange(model.n_kv_heads)[:, None]
        Kc = st.pre["k"][l][rows, idx]                     # [Hkv, n_l, hd]
        Vc = st.pre["v"][l][rows, idx]
        Kall = np.concatenate([Kc, k.transpose(1, 0, 2)], axis=1)   # [Hkv, n_l+T, hd]
        Vall = np.concatenate([Vc, v.transpose(1, 0, 2)], axis=1)
        n_l = Kc.shape[1]
        mask = np.concatenate([np.zeros((T, n_l)), causal], axis=1)  # [T, n_l+T]
        qh = q.transpose(1, 0, 2).reshape(model.n_kv_heads, model.G, T, model.hd)
        s = qh @ Kall[:, None].transpose(0, 1, 3, 2)       # [Hkv, G, T, n_l+T]
        s *= 1.0 / np.sqrt(model.hd)
        s += mask
        if pad is not None:
            s[..., :n_l] += pad[:, None, None, :]
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        o = (s @ Vall[:, None]) / s.sum(-1, keepdims=True)  # [Hkv, G, T, hd]
        o = o.reshape(model.n_heads, T, model.hd).transpose(1, 0, 2).reshape(T, model.dim)
        x = x + o @ model.wo[l].T
        x = x + model.ffn(l, x)
    nl = model.token_nll(model.logits_of(x), toks[C + 1:C + 1 + T])
    return float(nl.sum()), T


def continue_nll_incremental(model, st, kept):
    """The same continuation one token at a time with llama_ref's KV-cache decoder (slow;
    used by selfcheck to validate continue_nll)."""
    toks, C = st.tokens, st.C
    rows = np.arange(model.n_kv_heads)[:, None]
    cache = {"k": [st.pre["k"][l][rows, kept[l]] for l in range(model.n_layers)],
             "v": [st.pre["v"][l][rows, kept[l]] for l in range(model.n_layers)]}
    tot, n = 0.0, 0
    for p in range(C, len(toks) - 1):
        lg = model.step(cache, int(toks[p]), p)
        tot += float(model.token_nll(lg[None, :], np.array([toks[p + 1]]))[0])
        n += 1
    return tot, n


def evaluate(policy, ratios, lo, hi, params=None, dtype="f32", model=None, tok=None,
             stories=None):
    """{ratio: (sum_nll, predictions)} over stories lo..hi-1."""
    model = model or llama_ref.Model()
    tok = tok or llama_ref.Tokenizer()
    stories = stories if stories is not None else llama_ref.load_stories()
    out = {r: [0.0, 0] for r in ratios}
    for i in range(lo, hi):
        st = Story(model, llama_ref.story_tokens(tok, stories[i]))
        for r in ratios:
            try:
                kept = compress_story(model, st, policy, r, params, dtype)
            except ValueError as e:
                raise ValueError("story %d (context %d tokens): %s" % (i, st.C, e))
            s, n = continue_nll(model, st, kept)
            out[r][0] += s
            out[r][1] += n
    return {r: tuple(v) for r, v in out.items()}


def window_label(policy, params):
    if policy in ("observed_attention", "prefixkv_bisect"):
        return "all"
    O = obs_count(policy, params, 1 << 30)
    return str(O) if O else "-"


def parse_params(items):
    params = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit("eval_ref.py: --param wants name=value, got %r" % it)
        f = float(v)
        params[k] = int(f) if f == int(f) else f
    return params


def selfcheck():
    t0 = time.time()
    res = []

    def check(name, ok, detail=""):
        res.append(ok)
        print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""))

    model, tok = llama_ref.Model(), llama_ref.Tokenizer()
    stories = llama_ref.load_stories()
    # ratio 0 == the uncompressed model on the same predictions, for every policy family
    for policy, params in (("knorm", None), ("streaming_llm", None),
                           ("snapkv", {"window": 16}), ("observed_attention", None)):
        tot_u, n_u = 0.0, 0
        tot_0, n_0 = 0.0, 0
        for i in (0, 2):
            toks = llama_ref.story_tokens(tok, stories[i])
            st = Story(model, toks)
            full = model.prefill(toks)
            C = st.C
            nl = model.token_nll(full["logits"][C:-1], np.asarray(toks[C + 1:]))
            tot_u += float(nl.sum())
            n_u += len(nl)
            s, n = continue_nll(model, st, compress_story(model, st, policy, 0.0, params))
            tot_0 += s
            n_0 += n
        check("eval_ref %s ratio 0 == uncompressed" % policy,
              n_u == n_0 and abs(tot_u / n_u - tot_0 / n_0) < 1e-9,
              "%.9f vs %.9f (%d predictions)" % (tot_0 / n_0, tot_u / n_u, n_0))
    # batched continuation == token-by-token decoding over the compressed cache
    toks = llama_ref.story_tokens(tok, stories[4])
    st = Story(model, toks)
    for policy, r, params in (("snapkv", 0.5, {"window": 16}), ("streaming_llm", 0.75, None)):
        kept = compress_story(model, st, policy, r, params)
        a = continue_nll(model, st, kept)
        b = continue_nll_incremental(model, st, kept)
        check("eval_ref %s r=%g batched == incremental" % (policy, r),
              a[1] == b[1] and abs(a[0] - b[0]) < 1e-8 * max(1.0, abs(b[0])),
              "%.9f vs %.9f" % (a[0] / a[1], b[0] / b[1]))
    # the kept rows are what kvref says: n_keep = floor(C (1 - r)) per head
    kept = compress_story(model, st, "knorm", 0.25)
    check("eval_ref knorm n_keep = floor(C*0.75)",
          all(k.shape == (model.n_kv_heads, int(st.C * 0.75)) for k in kept),
          "C=%d, n_keep=%d" % (st.C, kept[0].shape[1]))
    # compression must cost something on average, and more at a higher ratio
    ev = evaluate("streaming_llm", [0.0, 0.5, 0.9], 0, 3, model=model, tok=tok, stories=stories)
    m = [ev[r][0] / ev[r][1] for r in (0.0, 0.5, 0.9)]
    check("eval_ref streaming_llm NLL rises with the ratio", m[0] < m[1] < m[2],
          " ".join("%.4f" % x for x in m))
    nf = sum(1 for x in res if not x)
    print("eval_ref self-check: %d passed, %d failed (%.1f s)" % (len(res) - nf, nf,
                                                                  time.time() - t0))
    return 1 if nf else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", nargs="?", choices=["eval", "selfcheck"], default="eval")
    ap.add_argument("--policy")
    ap.add_argument("--ratios", default="0")
    ap.add_argument("--stories", default="")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--data", default=llama_ref.STORIES_PATH)
    a = ap.parse_args(argv)
    if a.cmd == "selfcheck":
        return selfcheck()
    if not a.policy:
        ap.error("--policy is required")
    params = parse_params(a.param)
    ratios = [float(x) for x in a.ratios.split(",") if x]
    stories = llama_ref.load_stories(a.data)
    lo, hi = llama_ref.parse_range(a.stories, len(stories))
    try:
        ev = evaluate(a.policy, ratios, lo, hi, params or None, a.dtype, stories=stories)
    except ValueError as e:
        print("eval_ref.py: error: %s" % e, file=sys.stderr)
        return 1
    print("policy ratio window stories predictions nll")
    wl = window_label(a.policy, params)
    for r in ratios:
        s, n = ev[r]
        print("%s %g %s %d:%d %d %.6f" % (a.policy, r, wl, lo, hi, n, s / max(n, 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
