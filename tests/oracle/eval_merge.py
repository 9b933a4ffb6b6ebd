#!/usr/bin/env python3
"""The prefill-compress-continue protocol (eval_ref.py, doc/eval.md) for the merge policies and
their drop twins, in numpy: what `kvcc eval` reports for them, computed from mergeref.py.

Prefill policies compress the context once (merged rows, summary rows and member counts from
mergeref), then the continuation attends to those rows (plus the continuation tokens) with the
count bias log(count) on the cache rows when the rule has one. Decode policies (d2o, kmeans,
h2o8: H2O with an 8-token window, their drop twin) accumulate the attention each token receives
from the first context token on (the observe hook during prefill), then feed the continuation
one token at a time through mergeref.DecodeCache (append, attend, observe, compress to
B_s = floor(C (1 - r)) + s), as tools/eval.c does.

Twins: the same selection with merge = drop, at the same number of rows ('<policy>_drop';
summary policies keep n_keep ordinary rows instead of n_keep - C plus C summary rows).

    eval_merge.py --policies lookm,lookm_drop --ratios 0.25,0.5,0.75 --stories 0:70 --param window=16

Output: the header and rows of eval_ref.py (policy ratio window stories predictions nll).
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_ref  # noqa: E402
import kvref  # noqa: E402
import llama_ref  # noqa: E402
import mergeref as M  # noqa: E402

# the policies' defaults (policies/*.lua)
DEFAULTS = {
    "lookm": {"sinks": 4, "recent": 8, "pivot": 0},
    "lookm_weighted": {"sinks": 4, "recent": 8},
    "snapkv_merge": {"window": 64, "kernel": 5},
    "kvmerger": {"recent": 8, "thr": 0.5, "sigma": 8},
    "cam": {"window": 16, "m": 4, "seed": 0},
    "razor": {"sinks": 4, "S0": 16},
    "kmeans_prefill": {"window": 8},
    "d2o": {"recent": 8, "beta": 0.7},
    "kmeans": {"recent": 8},
    "h2o8": {"recent": 8},
    "mergingpress": {"threshold": 0},
}
BIAS = {"razor"}
DECODE = {"d2o", "kmeans", "h2o8"}
POLICIES = sorted(DEFAULTS) + [p + "_drop" for p in sorted(DEFAULTS) if p not in ("h2o8", "lookm_weighted")]


def params_of(policy, params):
    base = policy[:-5] if policy.endswith("_drop") else policy
    p = dict(DEFAULTS[base])
    for k, v in (params or {}).items():
        if k in p:
            p[k] = v
    return base, p


def obs_of(base, p, C):
    if base in ("lookm", "lookm_weighted", "kvmerger"):
        return C
    if base in ("snapkv_merge", "cam", "kmeans_prefill"):
        return int(p["window"])
    return 0


def window_label(policy, params):
    base, p = params_of(policy, params)
    O = obs_of(base, p, 1 << 30)
    return "all" if O == 1 << 30 else str(O) if O else "-"


# --------------------------------------------------------------------------- prefill policies

def compress_rows(model, st, policy, ratio, params):
    """Per layer: (K [Hkv, n, hd], V, counts [Hkv, n])."""
    base, p = params_of(policy, params)
    drop = policy.endswith("_drop")
    C = st.C
    L, H, G, hd = model.n_layers, model.n_kv_heads, model.G, model.hd
    O = obs_of(base, p, C)
    if O > C or (base in ("snapkv_merge",) and O >= C):
        raise ValueError("context of %d tokens is not longer than the %d observation queries" % (C, O))
    Q = st.pre["q"][:, :, C - O:, :].reshape(L, H, G, O, hd)
    qpos = np.arange(C - O, C)
    pos = np.arange(C)
    K, V = st.pre["k"], st.pre["v"]
    rt = {"ratio": ratio}
    nk = kvref.n_keep_uniform(C, ratio=ratio)
    if base in ("lookm", "lookm_weighted"):
        variant = "weighted" if base == "lookm_weighted" else "pivot" if p["pivot"] else "average"
        R = M.lookm(K, V, Q, variant=variant, recent=int(p["recent"]), sinks=int(p["sinks"]),
                    qpos=qpos, pos=pos, **rt)
    elif base == "snapkv_merge":
        if drop:
            r = kvref.compress("snapkv", K, V, Q, params={"window": p["window"], "kernel": p["kernel"]},
                               qpos=qpos, pos=pos, **rt)
            return [(K[l][np.arange(H)[:, None], r["kept"][l]], V[l][np.arange(H)[:, None], r["kept"][l]],
                     np.ones((H, r["kept"][l].shape[1]))) for l in range(L)]
        R = M.snapkv_merge(K, V, Q, window=int(p["window"]), kernel=int(p["kernel"]), qpos=qpos, pos=pos, **rt)
    elif base == "kvmerger":
        R = M.kvmerger(K, V, Q, recent=int(p["recent"]), thr=p["thr"], sigma=p["sigma"], qpos=qpos,
                       pos=pos, **rt)
    elif base == "cam":
        R = _cam(K, V, Q, qpos, pos, nk, p, drop)
    elif base == "mergingpress":
        R = M._result(L, H)
        for l in range(L):
            s = -np.sqrt((K[l] ** 2).sum(axis=2))
            kept, Vout = M.mergingpress(K[l], V[l], s, nk, p["threshold"])
            for h in range(H):
                R["kept"][l][h], R["K"][l][h] = kept[h], K[l, h, kept[h]]
                R["V"][l][h] = V[l, h, kept[h]] if drop else Vout[h]
                R["count"][l][h] = np.ones(kept[h].size)
    elif base == "razor":
        if drop:
            r = kvref.compress("streaming_llm", K, V, Q[:, :, :, :0], params={"sinks": p["sinks"]}, pos=pos,
                               qpos=qpos[:0], **rt)
            return [(K[l][np.arange(H)[:, None], r["kept"][l]], V[l][np.arange(H)[:, None], r["kept"][l]],
                     np.ones((H, r["kept"][l].shape[1]))) for l in range(L)]
        R = M.razor(K, V, sinks=int(p["sinks"]), S0=int(p["S0"]), pos=pos, **rt)   # no retrieval head
    elif base == "kmeans_prefill":
        if drop:
            s = kvref.causal_softmax(Q, K, qpos, pos).mean(axis=3).mean(axis=2)
            R = M._result(L, H)
            for l in range(L):
                for h in range(H):
                    kept = M.topk_keep(s[l, h], nk, 0, int(p["window"]))
                    R["kept"][l][h] = kept
            drop = True
        else:
            R = M.kmeans_prefill(K, V, Q, C=4, iters=3, recent=int(p["window"]), qpos=qpos, pos=pos, **rt)
    else:
        raise ValueError("unknown policy %r" % policy)
    out = []
    for l in range(L):
        Ks, Vs, cs = [], [], []
        for h in range(H):
            kept = R["kept"][l][h]
            if drop:
                Ks.append(K[l, h, kept]), Vs.append(V[l, h, kept]), cs.append(np.ones(len(kept)))
                continue
            Kh, Vh, ch = [R["K"][l][h]], [R["V"][l][h]], [R["count"][l][h]]
            sm = R["summary"][l][h]
            if sm is not None:
                if base == "razor":
                    Kh.append(sm[0][None, :]), Vh.append(sm[1][None, :]), ch.append([sm[3]])
                else:
                    Kh.append(sm[0]), Vh.append(sm[1]), ch.append(sm[3])
            Ks.append(np.vstack(Kh)), Vs.append(np.vstack(Vh)), cs.append(np.concatenate(ch))
        out.append((np.stack(Ks), np.stack(Vs), np.stack(cs)))
    return out


def _cam(K, V, Q, qpos, pos, nk, p, drop):
    L, H = K.shape[:2]
    n = K.shape[2]
    A = kvref.causal_softmax(Q, K, qpos, pos).sum(axis=3).mean(axis=2)
    R = M._result(L, H)
    for l in range(L):
        ms = A[l].mean(axis=0)
        order = sorted(range(n), key=lambda t: (-ms[t], t))
        kept = np.sort(np.array(order[:nk], dtype=np.int64))
        ev = np.setdiff1d(np.arange(n), kept)
        u = np.stack([kvref.random_u(p["seed"], l, h, pos[ev]) for h in range(H)]) if ev.size else None
        if not drop and ev.size:
            _, _, Vout = M.cam_kvpress(K[l], V[l], A[l], A[l], nk, int(p["m"]), n, draw="uniform", u=u)
        for h in range(H):
            R["kept"][l][h] = kept
            R["K"][l][h] = K[l, h, kept]
            R["V"][l][h] = Vout[h] if not drop and ev.size else V[l, h, kept]
            R["count"][l][h] = np.ones(kept.size)
    return R


def continue_rows(model, st, rows, bias):
    """eval_ref.continue_nll over given cache rows, with log(count) added to their logits
    when bias."""
    toks, C = st.tokens, st.C
    T = len(toks) - 1 - C
    if T <= 0:
        return 0.0, 0
    pos = np.arange(C, C + T)
    x = model.emb[toks[C:C + T]].copy()
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(model.n_layers):
        q, k, v = model.qkv(l, x, pos)
        Kc, Vc, cnt = rows[l]
        Kall = np.concatenate([Kc, k.transpose(1, 0, 2)], axis=1)
        Vall = np.concatenate([Vc, v.transpose(1, 0, 2)], axis=1)
        n_l = Kc.shape[1]
        qh = q.transpose(1, 0, 2).reshape(model.n_kv_heads, model.G, T, model.hd)
        s = qh @ Kall[:, None].transpose(0, 1, 3, 2)
        s *= 1.0 / np.sqrt(model.hd)
        s[..., n_l:] += causal
        if bias:
            with np.errstate(divide="ignore"):
                s[..., :n_l] += np.log(cnt)[:, None, None, :]
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        o = (s @ Vall[:, None]) / s.sum(-1, keepdims=True)
        o = o.reshape(model.n_heads, T, model.hd).transpose(1, 0, 2).reshape(T, model.dim)
        x = x + o @ model.wo[l].T
        x = x + model.ffn(l, x)
    nl = model.token_nll(model.logits_of(x), toks[C + 1:C + 1 + T])
    return float(nl.sum()), T


# --------------------------------------------------------------------------- decode policies

def prefill_state(model, st):
    """[L, Hkv, C]: the attention each context token received from every context query
    (summed over the group): H2O's observe hook run from the first token on."""
    C = st.C
    q, k = st.pre["q"], st.pre["k"]                          # [L, Hq, C, hd], [L, Hkv, C, hd]
    L, H, G, hd = model.n_layers, model.n_kv_heads, model.G, model.hd
    qh = q.reshape(L, H, G, C, hd)
    s = np.einsum("lhgqd,lhtd->lhgqt", qh, k) / math.sqrt(hd)
    s += np.triu(np.full((C, C), -np.inf), 1)
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return p.sum(axis=(2, 3))


def continue_decode(model, st, policy, ratio, params):
    base, p = params_of(policy, params)
    drop = policy.endswith("_drop") or base == "h2o8"
    C = st.C
    nk = kvref.n_keep_uniform(C, ratio=ratio)
    state = prefill_state(model, st)
    caches = []
    for l in range(model.n_layers):
        row = []
        for h in range(model.n_kv_heads):
            kw = dict(budget=None, recent=int(p["recent"]))
            if drop:
                kw["rule"] = "drop"
            elif base == "d2o":
                kw.update(rule="nearest", weight="d2o", ema_beta=p["beta"])
            else:
                kw.update(rule="summary", C=4, iters=3)
            row.append(M.DecodeCache(st.pre["k"][l, h], st.pre["v"][l, h], np.arange(C), state[l, h], **kw))
        caches.append(row)
    toks = st.tokens
    tot, n = 0.0, 0
    for pp in range(C, len(toks) - 1):
        s = pp - C + 1
        x = model.emb[toks[pp]][None, :].copy()
        for l in range(model.n_layers):
            q, k, v = model.qkv(l, x, [pp])
            qh = q[0].reshape(model.n_kv_heads, model.G, model.hd)
            o = np.zeros((model.n_kv_heads, model.G, model.hd))
            for h in range(model.n_kv_heads):
                c = caches[l][h]
                c.budget = None
                o[h] = c.step(k[0, h], v[0, h], pp, qh[h])
                if ratio > 0:
                    c.budget = nk + s
                    Cx = 0 if c.summary is None else c.summary[0].shape[0]
                    if c.K.shape[0] + Cx > c.budget:
                        keep = c.budget - (Cx if Cx else (c.C or 0) if c.rule == "summary" else 0)
                        c._compress(keep)
            x = x + o.reshape(1, model.dim) @ model.wo[l].T
            x = x + model.ffn(l, x)
        lg = model.logits_of(x)[0]
        tot += float(model.token_nll(lg[None, :], np.array([toks[pp + 1]]))[0])
        n += 1
    return tot, n


# --------------------------------------------------------------------------- driver

def evaluate(policy, ratios, lo, hi, params=None, model=None, tok=None, stories=None):
    model = model or llama_ref.Model()
    tok = tok or llama_ref.Tokenizer()
    stories = stories if stories is not None else llama_ref.load_stories()
    base, p = params_of(policy, params)
    out = {r: [0.0, 0, 0] for r in ratios}
    for i in range(lo, hi):
        st = eval_ref.Story(model, llama_ref.story_tokens(tok, stories[i]))
        for r in ratios:
            if base in DECODE:
                s, n = continue_decode(model, st, policy, r, params)
            else:
                O = obs_of(base, p, st.C)
                if O and O != st.C and st.C <= O:
                    out[r][2] += 1          # skipped, as kvcc eval does
                    continue
                rows = compress_rows(model, st, policy, r, params)
                s, n = continue_rows(model, st, rows, base in BIAS and not policy.endswith("_drop"))
            out[r][0] += s
            out[r][1] += n
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--stories", default="")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--data", default=llama_ref.STORIES_PATH)
    a = ap.parse_args(argv)
    params = eval_ref.parse_params(a.param)
    ratios = [float(x) for x in a.ratios.split(",") if x]
    stories = llama_ref.load_stories(a.data)
    lo, hi = llama_ref.parse_range(a.stories, len(stories))
    model, tok = llama_ref.Model(), llama_ref.Tokenizer()
    print("policy ratio window stories predictions nll")
    for pol in a.policies.split(","):
        ev = evaluate(pol, ratios, lo, hi, params, model, tok, stories)
        for r in ratios:
            s, n, sk = ev[r]
            print("%s %g %s %d:%d %d %.6f%s" % (pol, r, window_label(pol, params), lo, hi, n, s / max(n, 1),
                                                " (skipped %d)" % sk if sk else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
