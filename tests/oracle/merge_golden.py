"""merge_golden -- the golden cases of the merge policies (manifest oracle `mergeref`), from
mergeref.py (the independent numpy implementation of DESIGN section 3 "Merge semantics" and of
each published merge).  gen_golden.py calls cases(manifest, make_inputs) and writes them.

Prefill cases (kvcc run on one compression): inputs as gen_golden's; expected per (l, h):
  expect.kept.<l>.<h>   int32  the kept rows' indices, then -1 per summary row built
  expect.K/V.<l>.<h>    float32 [rows, d] the merged rows, then the summary rows, rounded to
                        the case's storage dtype
  expect.pos.<l>.<h>    int32, expect.count.<l>.<h> float64 (member counts)
  expect.scores         [L,H,n] (NaN: not compared)
Decode cases (kvcc run on a case with dk: generation step by step, mergeref.DecodeCache):
  K, V [L,H,n0,d] the cache before the first step (a prefill policy compresses it first),
  dk, dv [S,L,H,d], dq [S,L,H,G,d] (rounded to the dtype), dpos [S], budget;
  expect.out [S,L,H,G,d] every step's attention outputs, expect.steppos [S,L,H,cap] the
  positions held after each step (ascending, -1 padded), and the final rows (sorted by
  position) as expect.K/V/pos/count.<l>.<h>.
Tolerances (compare.py): kept sets and positions exact; merged rows within one unit in the
last place of the storage dtype (both sides round a double result); counts 1e-9 relative;
step outputs 1e-5 relative + 1e-6.

Every case keeps every decision it depends on at a relative margin >= MIN_MARGIN (the
selection boundary, nearest targets, thresholds, run boundaries, pivots, Bernoulli draws,
k-means assignments): inputs are re-drawn with the next seed until they do.
"""

import math
import zlib

import numpy as np

import kvref
import mergeref as M

MIN_MARGIN = 1e-4
MAX_REDRAWS = 80

# (policy, case, L, H, G, n, d, ("ratio", r) | ("budget", B), params, dtype)
SHAPES = [
    ("d8_g1_n37_r25", 2, 2, 1, 37, 8, ("ratio", 0.25), "f32"),
    ("d64_g2_n61_r50", 2, 2, 2, 61, 64, ("ratio", 0.5), "f32"),
    ("d128_g4_n129_r75", 2, 2, 4, 129, 128, ("ratio", 0.75), "f32"),
    ("d64_g1_n129_b40", 2, 2, 1, 129, 64, ("budget", 40), "f32"),
    ("d64_g2_n61_r50_f16", 2, 2, 2, 61, 64, ("ratio", 0.5), "f16"),
    ("d8_g4_n61_r50_bf16", 2, 2, 4, 61, 8, ("ratio", 0.5), "bf16"),
]

# per policy: (params for every case, per-shape extras)
PREFILL = {
    "lookm": {"sinks": 4, "recent": 8, "pivot": 0},
    "lookm_pivot": {"sinks": 4, "recent": 8, "pivot": 1},
    "lookm_weighted": {"sinks": 4, "recent": 8},
    "snapkv_merge": {"window": 8, "kernel": 5},
    "kvmerger": {"recent": 8, "thr": 0.3},
    "cam": {"window": 8, "m": 4, "seed": 5},
    "razor": {"sinks": 4, "S0": 16},
    "kmeans_prefill": {"window": 8},
    "mergingpress": {"threshold": 0.1},
    # tests/policies/merge_count.lua: SnapKV's selection, a count-weighted nearest merge (every
    # count 1 at prefill: the plain mean) and the counts it leaves (1 + absorbed)
    "merge_count": {"window": 8, "kernel": 5},
    # tests/policies/summary_threshold.lua (M11): threshold on the key sum (NaN at every token
    # index 29 m + 5), 2 k-means rows; the _under family runs with budget n (every head under
    # it) and a tau below every score: only the NaN tokens go (one of them at n = 37, fewer
    # than the 2 rows)
    "summary_threshold": {"tau": 0.5, "sinks": 1, "window": 3},
    "summary_threshold_under": {"tau": -1e30, "sinks": 1, "window": 3},
    # tests/policies/summary_mass.lua (M13): mass p of the key norm, 2 k-means rows; the _under
    # family runs with budget n (every head under it) and p = 0.98: the prefix leaves a few low
    # tokens out (often fewer than the 2 rows: the rows then take more)
    "summary_mass": {"p": 0.6, "sinks": 1, "window": 3},
    "summary_mass_under": {"p": 0.98, "sinks": 1, "window": 3},
    # tests/policies/adakv_summary.lua (M14): AdaKV's floor at scope layer on the key sum over its
    # norm less the head index, 2 k-means rows counted in each head's floor
    "adakv_summary": {"alpha": 0.5, "sinks": 2, "window": 3},
    # tests/policies/summary_threshold_layer.lua (M15): threshold at scope layer on the key sum
    # (NaN at every token index 29 m + 5), 2 k-means rows out of the layer's budget
    "summary_threshold_layer": {"tau": 0.0, "sinks": 1, "window": 3},
    # ... under the budget (n) with a tau below every score: only the NaN tokens make the layer
    # evict, and each head then keeps at most n - 2 (one NaN token at n = 37: the cap binds)
    "summary_threshold_layer_under": {"tau": -1e30, "sinks": 1, "window": 3},
}
# adakv_summary cases whose floor is at or below its 2 summary rows (met by them, M14; session 12
# wt-floor12): alpha 0 ("no floor": M12's result) and alpha 0.05 (n_keep 40: floor 2)
ALPHA_SMALL = {"d8_g1_n37_r25": 0.0, "d64_g1_n129_b40": 0.05}
# the manifest name of each case family (lookm_pivot is lookm with pivot = 1)
POLICY = {"lookm_pivot": "lookm", "summary_threshold_under": "summary_threshold",
          "summary_mass_under": "summary_mass", "summary_threshold_layer_under": "summary_threshold_layer"}

# decode cases: (policy, case, L, H, G, n0, d, S, budget or ratio, params, dtype)
DECODE = [
    ("d2o", "decode_d8_g2_n24_s60_b20", 2, 2, 2, 24, 8, 60, ("budget", 20), {"recent": 4, "beta": 0.7}, "f32"),
    ("d2o", "decode_d64_g1_n40_s60_b32", 1, 2, 1, 40, 64, 60, ("budget", 32), {"recent": 8, "beta": 0.5}, "f32"),
    ("d2o", "decode_d16_g4_n20_s50_b16_bf16", 1, 2, 4, 20, 16, 50, ("budget", 16), {"recent": 4, "beta": 0.9}, "bf16"),
    ("kmeans", "decode_d8_g2_n24_s60_b20", 2, 2, 2, 24, 8, 60, ("budget", 20), {"recent": 4}, "f32"),
    ("kmeans", "decode_d64_g1_n40_s60_b32", 1, 2, 1, 40, 64, 60, ("budget", 32), {"recent": 8}, "f32"),
    ("kmeans", "decode_d16_g4_n20_s50_b16_bf16", 1, 2, 4, 20, 16, 50, ("budget", 16), {"recent": 4}, "bf16"),
    ("razor", "decode_d8_g2_n40_s60_r50", 2, 2, 2, 40, 8, 60, ("ratio", 0.5), {"sinks": 4, "S0": 4}, "f32"),
    ("razor", "decode_d64_g4_n61_s50_r75_f16", 1, 2, 4, 61, 64, 50, ("ratio", 0.75), {"sinks": 2, "S0": 8}, "f16"),
    # tests/policies/nearest_bias.lua: H2O's accumulated attention, a count-weighted nearest merge,
    # log(count) added to the logits
    ("nearest_bias", "decode_d8_g2_n24_s60_b20", 2, 2, 2, 24, 8, 60, ("budget", 20), {"recent": 4}, "f32"),
    ("nearest_bias", "decode_d16_g4_n20_s50_b16_bf16", 1, 2, 4, 20, 16, 50, ("budget", 16), {"recent": 4}, "bf16"),
]


def _rt(kind, amount):
    return {"ratio": amount} if kind == "ratio" else {"budget": amount}


def _seed(name):
    return (zlib.crc32(name.encode()) & 0xFFFFFF) * 64


def _retrieval(name, L, H):
    """RazorAttention's head classes for a case (the weight `razor`): about a third of the
    heads, drawn from the case name; the first head a retrieval head, the last one not."""
    r = np.random.default_rng(_seed(name) + 11).uniform(size=L * H) < 0.3
    r[0], r[-1] = L * H > 1, False
    return r.reshape(L, H)


# --------------------------------------------------------------------------- margins

def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def sel_margin(s, kept, sinks, recent):
    n = s.shape[0]
    prot = np.zeros(n, dtype=bool)
    prot[:sinks] = True
    if recent:
        prot[n - recent:] = True
    return kvref.boundary_margin(s, prot, kept)


def nearest_margin(K, kept, ev):
    if ev.size == 0 or kept.size < 2:
        return math.inf
    S = np.sort(M.cosine(K[ev], K[kept]), axis=1)
    return min(_rel(r[-1], r[-2]) for r in S)


def lloyd_margin(K, ev, C, iters, counts=None):
    return M.kmeans_margin(K, ev, C, iters, counts)


# --------------------------------------------------------------------------- prefill

def _prefill(fam, K, V, Q, pos, qpos, rt, p, retr=None):
    """The oracle result R (mergeref's per-(l, h) lists) and the decision margin."""
    L, H, n, d = K.shape
    nk = kvref.n_keep_uniform(n, **rt)
    marg = math.inf
    if fam in ("lookm", "lookm_pivot", "lookm_weighted"):
        variant = "weighted" if fam == "lookm_weighted" else "pivot" if p["pivot"] else "average"
        R = M.lookm(K, V, Q, variant=variant, recent=p["recent"], sinks=p["sinks"], qpos=qpos,
                    pos=pos, **rt)
        prot = (p["sinks"], p["recent"])
    elif fam in ("snapkv_merge", "merge_count"):
        R = M.snapkv_merge(K, V, Q, window=p["window"], kernel=p["kernel"], qpos=qpos, pos=pos, **rt)
        prot = (0, p["window"])
    elif fam == "kvmerger":
        R = M.kvmerger(K, V, Q, recent=p["recent"], thr=p["thr"], sigma=p["sigma"], qpos=qpos,
                       pos=pos, **rt)
        prot = (0, p["recent"])
    elif fam == "kmeans_prefill":
        R = M.kmeans_prefill(K, V, Q, C=4, iters=3, recent=p["window"], qpos=qpos, pos=pos, **rt)
        prot = (0, p["window"])
    elif fam == "razor":
        R = M.razor(K, V, sinks=p["sinks"], S0=p["S0"], retrieval=retr, pos=pos, **rt)
        R["scores"] = np.full((L, H, n), np.nan)
        prot = None
    elif fam in ("summary_threshold", "summary_threshold_under"):
        return _summary_threshold(K, V, pos, nk, p)
    elif fam in ("summary_mass", "summary_mass_under"):
        return _summary_mass(K, V, pos, nk, p)
    elif fam == "adakv_summary":
        return _adakv_summary(K, V, pos, nk, p)
    elif fam in ("summary_threshold_layer", "summary_threshold_layer_under"):
        return _summary_threshold_layer(K, V, pos, nk, p)
    elif fam == "cam":
        return _cam(K, V, Q, pos, qpos, rt, p)
    elif fam == "mergingpress":
        return _mergingpress(K, V, pos, rt, p)
    for l in range(L):
        for h in range(H):
            kept, ev = R["kept"][l][h], R["evicted"][l][h]
            if prot is not None:
                keep_n = nk - 4 if fam == "kmeans_prefill" and nk < n else nk
                if keep_n < prot[0] + prot[1]:
                    raise RuntimeError("%s: the budget is below the protected set" % fam)
                marg = min(marg, sel_margin(R["scores"][l, h], kept, *prot))
            if fam in ("lookm", "lookm_pivot", "lookm_weighted", "snapkv_merge", "merge_count"):
                marg = min(marg, nearest_margin(K[l, h], kept, ev))
            if fam == "lookm_weighted" and ev.size:
                _, ms = M.nearest_targets(K[l, h], kept, ev)
                tau = np.nanmean(ms)
                marg = min(marg, min(_rel(x, tau) for x in ms))
            if fam == "kvmerger":
                c = [M.cosine(K[l, h, i - 1:i], K[l, h, i:i + 1])[0, 0] for i in range(1, n)]
                marg = min(marg, min(_rel(x, p["thr"]) for x in c))
                rid = M.run_ids(K[l, h], p["thr"])
                s = R["scores"][l, h]
                for r in set(rid[kept].tolist()):
                    ks = sorted(s[k] for k in kept if rid[k] == r and k < n - p["recent"])
                    if len(ks) >= 2:
                        marg = min(marg, _rel(ks[-1], ks[-2]))
            if fam == "kmeans_prefill" and ev.size:
                marg = min(marg, lloyd_margin(K[l, h], ev, 4, 3))
    return R, marg


def _summary_threshold(K, V, pos, nk, p):
    """mergeref.summary_threshold on the policy's score (the key sum, NaN at every token index
    29 m + 5); margins: every finite score against tau, the candidates' selection boundary,
    Lloyd's assignments."""
    L, H, n, d = K.shape
    s = K.sum(axis=3)
    s[..., np.arange(n) % 29 == 5] = np.nan
    sk, w, tau = int(p["sinks"]), int(p["window"]), p["tau"]
    R = M.summary_threshold(K, V, s, tau, 2, 2, nk, sk, w, pos)
    fin = s[np.isfinite(s)]
    marg = min(_rel(x, tau) for x in fin)
    prot = np.zeros(n, dtype=bool)
    prot[:sk] = True
    prot[n - w:] = True
    for l in range(L):
        for h in range(H):
            kept, ev = R["kept"][l][h], R["evicted"][l][h]
            with np.errstate(invalid="ignore"):
                cand = ~prot & (s[l, h] >= tau)
            km = np.zeros(n, dtype=bool)
            km[kept] = True
            a, b = s[l, h][km & cand], s[l, h][~km & cand]
            if a.size and b.size:
                marg = min(marg, _rel(a.min(), b.max()))
            if ev.size:
                marg = min(marg, lloyd_margin(K[l, h], ev, 2, 2))
    return R, marg


def _summary_mass(K, V, pos, nk, p):
    """mergeref.summary_mass on the policy's score (the key norm); margins: the prefix's running
    sum against p (selref.mass_margin), the kept / evicted boundary, Lloyd's assignments."""
    import selref
    L, H, n, d = K.shape
    s = np.sqrt((K * K).sum(axis=3))
    sk, w, pm = int(p["sinks"]), int(p["window"]), p["p"]
    R = M.summary_mass(K, V, s, pm, 2, 2, nk, sk, w, pos)
    marg = math.inf
    for l in range(L):
        for h in range(H):
            kept, ev = R["kept"][l][h], R["evicted"][l][h]
            marg = min(marg, selref.mass_margin(s[l, h], pm, sk, w))
            marg = min(marg, sel_margin(s[l, h], kept, sk, w))
            if ev.size:
                marg = min(marg, lloyd_margin(K[l, h], ev, 2, 2))
    return R, marg


def _layer_groups(K, V, pos, s, group, sk, w, tau=None):
    """A layer-scope summary family's result R and margin: group(l) is the oracle's per-head
    (kept, evicted, summary) for layer l; margins: each head's kept / evicted boundary (without
    tau), the layer's (any two of its unprotected tokens, candidates only with tau: one kept and
    one not, adjacent by score), Lloyd's assignments."""
    L, H, n, d = K.shape
    R = M._result(L, H)
    marg = math.inf
    for l in range(L):
        lab = []
        for h, (kept, ev, sm) in enumerate(group(l)):
            R["kept"][l][h], R["evicted"][l][h] = kept, ev
            R["target"][l][h] = np.full(ev.size, -1)
            R["K"][l][h], R["V"][l][h] = K[l, h, kept], V[l, h, kept]
            R["pos"][l][h], R["count"][l][h] = pos[kept], np.ones(kept.size)
            R["summary"][l][h] = sm
            if tau is None:
                marg = min(marg, sel_margin(s[l, h], kept, sk, w))
            km = np.zeros(n, dtype=bool)
            km[kept] = True
            lab += [(s[l, h, t], km[t]) for t in range(sk, n - w) if tau is None or s[l, h, t] >= tau]
            if ev.size:
                marg = min(marg, lloyd_margin(K[l, h], ev, 2, 2))
        lab.sort()
        for (a, ka), (b, kb) in zip(lab[:-1], lab[1:]):
            if ka != kb:
                marg = min(marg, _rel(a, b))
    R["scores"] = s
    return R, marg


def _adakv_summary(K, V, pos, nk, p):
    """mergeref.summary_floor per layer on the policy's score (the key sum over its norm, less the
    head index)."""
    L, H, n, d = K.shape
    s = K.sum(axis=3) / np.sqrt((K * K).sum(axis=3)) - np.arange(H)[None, :, None]
    sk, w = int(p["sinks"]), int(p["window"])
    return _layer_groups(K, V, pos, s, lambda l: M.summary_floor(K[l], V[l], s[l], [n] * H, [nk] * H, p["alpha"],
                                                                 2, 2, sk, w, [pos] * H), sk, w)


def _summary_threshold_layer(K, V, pos, nk, p):
    """mergeref.summary_threshold_group per layer on the policy's score (the key sum, NaN at every
    token index 29 m + 5); margins: every finite score against tau too."""
    L, H, n, d = K.shape
    s = K.sum(axis=3)
    s[..., np.arange(n) % 29 == 5] = np.nan
    sk, w, tau = int(p["sinks"]), int(p["window"]), p["tau"]
    R, marg = _layer_groups(K, V, pos, s, lambda l: M.summary_threshold_group(K[l], V[l], s[l], [n] * H, [nk] * H,
                                                                           tau, 2, 2, sk, w, [pos] * H), sk, w, tau)
    return R, min([marg] + [_rel(x, tau) for x in s[np.isfinite(s)]])


def _mergingpress(K, V, pos, rt, p):
    """kvpress MergingPress (mergeref.mergingpress, checked against kvpress itself by
    test_mergeref.py) around KnormPress's score -|k|."""
    L, H, n, d = K.shape
    nk = kvref.n_keep_uniform(n, **rt)
    R = M._result(L, H)
    R["scores"] = -np.sqrt((K * K).sum(axis=3))
    marg = math.inf
    for l in range(L):
        kept, Vout = M.mergingpress(K[l], V[l], R["scores"][l], nk, p["threshold"])
        for h in range(H):
            ev = np.setdiff1d(np.arange(n), kept[h])
            marg = min(marg, sel_margin(R["scores"][l, h], kept[h], 0, 0), nearest_margin(K[l, h], kept[h], ev))
            tgt, ms = M.nearest_targets(K[l, h], kept[h], ev)
            marg = min([marg] + [_rel(x, p["threshold"]) for x in ms])
            cnt = np.ones(kept[h].size)
            for i, t in enumerate(tgt):
                if t >= 0 and ms[i] >= p["threshold"]:
                    cnt[t] += 1
            R["kept"][l][h], R["evicted"][l][h] = kept[h], ev
            R["K"][l][h], R["V"][l][h] = K[l, h, kept[h]], Vout[h]
            R["pos"][l][h], R["count"][l][h] = pos[kept[h]], cnt
    return R, marg


def _cam(K, V, Q, pos, qpos, rt, p):
    """CaM: kvpress CAMPress's merge rule (mergeref.cam_kvpress) per layer, the attention
    of the window queries as both the base score and A, the draw u = kvcc.random."""
    L, H, n, d = K.shape
    nk = kvref.n_keep_uniform(n, **rt)
    A = kvref.causal_softmax(Q, K, qpos, pos).sum(axis=3).mean(axis=2)      # [L, H, n]
    R = M._result(L, H)
    R["scores"] = np.repeat(A.mean(axis=1, keepdims=True), H, axis=1)
    marg = math.inf
    for l in range(L):
        ms = A[l].mean(axis=0)
        order = sorted(range(n), key=lambda t: (ms[t], t))
        ev = np.sort(np.array(order[:n - nk], dtype=np.int64))
        kept = np.sort(np.array(order[n - nk:], dtype=np.int64))
        if ev.size and kept.size:
            marg = min(marg, _rel(ms[kept].min(), ms[ev].max()))
        u = np.stack([kvref.random_u(p["seed"], l, h, pos[ev]) for h in range(H)]) if ev.size else None
        k2, _, Vout = M.cam_kvpress(K[l], V[l], A[l], A[l], nk, p["m"], n, draw="uniform", u=u)
        assert np.array_equal(k2, kept)
        tg = M.next_kept_targets(kept, ev, p["m"])
        for h in range(H):
            for i, e in enumerate(ev):
                t = kept[tg[i]]
                if t.size:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        pr = A[l, h, e] / (A[l, h, t].sum() / t.size)
                    pr = 0.0 if math.isnan(pr) else min(max(pr, 0.0), 1.0)
                    marg = min(marg, _rel(u[h, i], pr))
            cnt = np.ones(kept.size)
            for i, e in enumerate(ev):
                for j in tg[i]:
                    cnt[j] += 1.0 / len(tg[i])
            R["kept"][l][h], R["evicted"][l][h] = kept, ev
            R["K"][l][h], R["V"][l][h] = K[l, h, kept].astype(np.float64), Vout[h]
            R["pos"][l][h], R["count"][l][h] = pos[kept], cnt
    return R, marg


def prefill_case(fam, shape, manifest, make_inputs):
    name, L, H, G, n, d, (kind, amount), dtype = shape
    policy = POLICY.get(fam, fam)
    p = dict(PREFILL[fam])
    if fam == "adakv_summary" and name in ALPHA_SMALL:   # floors at or below the 2 rows (M14)
        p["alpha"] = ALPHA_SMALL[name]
    if fam == "kvmerger":       # about half the neighbouring keys in one run; weights ~ e^-1
        p["sigma"] = math.sqrt(d)
        p["thr"] = {8: 0.35, 64: 0.2, 128: 0.3}[d]
    obs = manifest[policy]["obs"]
    O = n if obs == "all" else 0 if obs == "0" else int(p[obs])
    if fam in ("summary_threshold_under", "summary_mass_under", "summary_threshold_layer_under"):   # every head under its budget
        kind, amount = "budget", n
    rt = _rt(kind, amount)
    cname = "%s__%s" % (fam, name)
    base = _seed(cname)
    for seed in range(base, base + MAX_REDRAWS):
        K, V, Q, pos = make_inputs(seed, L, H, G, n, d, O, "default")
        K, V, Q = (kvref.round_storage(x, dtype).astype(np.float64) for x in (K, V, Q))
        qpos = pos[n - O:] if O else np.zeros(0, dtype=np.int64)
        R, marg = _prefill(fam, K, V, Q, pos, qpos, rt, p, _retrieval(cname, L, H))
        if marg >= MIN_MARGIN:
            break
    else:
        raise RuntimeError("%s: decision margin < %g in %d draws" % (cname, MIN_MARGIN, MAX_REDRAWS))
    arrays = {"K": K.astype(np.float32), "V": V.astype(np.float32), "Q": Q.astype(np.float32),
              "qpos": qpos.astype(np.int32), "pos": pos.astype(np.int32)}
    if kind == "ratio":
        arrays["ratio"] = np.array(amount, dtype=np.float64)
    else:
        arrays["budget"] = np.array(amount, dtype=np.int64)
    for key in sorted(p):
        arrays["param." + key] = np.array(p[key], dtype=np.float64)
    arrays["dtype"] = np.array(dtype)
    if fam == "razor":
        arrays["weight.razor"] = _retrieval(cname, L, H).astype(np.float64)
    arrays["expect.scores"] = np.asarray(R["scores"], dtype=np.float64)
    for l in range(L):
        for h in range(H):
            kept = list(R["kept"][l][h])
            Kr, Vr = [R["K"][l][h]], [R["V"][l][h]]
            pr, cr = list(R["pos"][l][h]), list(R["count"][l][h])
            sm = R["summary"][l][h]
            if sm is not None:
                if fam == "razor":
                    k, v, sp, sc = sm
                    Kc, Vc, pc, cnt = k[None, :], v[None, :], [sp], [sc]
                else:
                    Kc, Vc, pc, cnt, _ = sm
                kept += [-1] * len(pc)
                Kr.append(Kc)
                Vr.append(Vc)
                pr += list(pc)
                cr += list(cnt)
            arrays["expect.kept.%d.%d" % (l, h)] = np.array(kept, dtype=np.int32)
            arrays["expect.K.%d.%d" % (l, h)] = kvref.round_storage(np.vstack(Kr), dtype)
            arrays["expect.V.%d.%d" % (l, h)] = kvref.round_storage(np.vstack(Vr), dtype)
            arrays["expect.pos.%d.%d" % (l, h)] = np.array(pr, dtype=np.int32)
            arrays["expect.count.%d.%d" % (l, h)] = np.array(cr, dtype=np.float64)
    return policy, cname + ".npz", arrays, seed, marg


# --------------------------------------------------------------------------- decode

def _caches(policy, K, V, pos, Q, rt, p, dtype, retr=None):
    """One DecodeCache per (l, h), after the prefill compression of a prefill policy."""
    L, H, n0, d = K.shape
    out = []
    if policy == "razor":
        R = M.razor(K, V, sinks=p["sinks"], S0=p["S0"], retrieval=retr, pos=pos, **rt)
    for l in range(L):
        row = []
        for h in range(H):
            if policy == "d2o":
                c = M.DecodeCache(K[l, h], V[l, h], pos, np.zeros(n0), budget=rt["budget"],
                                  recent=p["recent"], rule="nearest", weight="d2o",
                                  ema_beta=p["beta"], dtype=dtype)
            elif policy == "nearest_bias":
                c = M.DecodeCache(K[l, h], V[l, h], pos, np.zeros(n0), budget=rt["budget"],
                                  recent=p["recent"], rule="nearest", weight="count", bias=True,
                                  dtype=dtype)
            elif policy == "kmeans":
                c = M.DecodeCache(K[l, h], V[l, h], pos, np.zeros(n0), budget=rt["budget"],
                                  recent=p["recent"], rule="summary", C=4, iters=3, dtype=dtype)
            else:
                sm = R["summary"][l][h]
                summ = None if sm is None else (
                    kvref.round_storage(sm[0][None, :], dtype).astype(np.float64),
                    kvref.round_storage(sm[1][None, :], dtype).astype(np.float64),
                    np.array([sm[2]]), np.array([sm[3]]), np.zeros(1))
                c = M.DecodeCache(R["K"][l][h], R["V"][l][h], R["pos"][l][h], np.zeros(len(R["kept"][l][h])),
                                  summary=summ, rule="summary", bias=True, counts=R["count"][l][h],
                                  dtype=dtype)
            row.append(c)
        out.append(row)
    return out


def decode_case(case, manifest, make_inputs):
    policy, name, L, H, G, n0, d, S, (kind, amount), p, dtype = case
    rt = _rt(kind, amount)
    cname = "%s__%s" % (policy, name)
    base = _seed(cname)
    cap = n0 + S
    for seed in range(base, base + MAX_REDRAWS):
        rng = np.random.default_rng(seed + 7)
        K, V, _, pos = make_inputs(seed, L, H, G, n0 + S, d, 0, "default")
        K, V = (kvref.round_storage(x, dtype).astype(np.float64) for x in (K, V))
        dk = np.transpose(K[:, :, n0:], (2, 0, 1, 3))
        dv = np.transpose(V[:, :, n0:], (2, 0, 1, 3))
        K0, V0, pos0 = K[:, :, :n0], V[:, :, :n0], pos[:n0]
        dq = kvref.round_storage(1.5 * rng.standard_normal((S, L, H, G, d)) + 0.5 * K0.mean(axis=2)[None, :, :, None, :],
                                 dtype).astype(np.float64)
        dpos = pos[n0:]
        caches = _caches(policy, K0, V0, pos0, None, rt, p, dtype, _retrieval(cname, L, H))
        outs = np.zeros((S, L, H, G, d))
        steppos = np.full((S, L, H, cap), -1, dtype=np.int32)
        steplen = np.zeros((S, L, H), dtype=np.int32)
        for s in range(S):
            for l in range(L):
                for h in range(H):
                    c = caches[l][h]
                    outs[s, l, h] = c.step(dk[s, l, h], dv[s, l, h], int(dpos[s]), dq[s, l, h])
                    pp = np.sort(c.rows()[2])
                    steppos[s, l, h, :pp.size] = pp
                    steplen[s, l, h] = pp.size
        marg = min(c.margin for row in caches for c in row)
        if marg >= MIN_MARGIN:
            break
    else:
        raise RuntimeError("%s: decision margin < %g in %d draws" % (cname, MIN_MARGIN, MAX_REDRAWS))
    arrays = {"K": K0.astype(np.float32), "V": V0.astype(np.float32), "pos": pos0.astype(np.int32),
              "dk": dk.astype(np.float32), "dv": dv.astype(np.float32), "dq": dq.astype(np.float32),
              "dpos": dpos.astype(np.int32)}
    if kind == "ratio":
        arrays["ratio"] = np.array(amount, dtype=np.float64)
    else:
        arrays["budget"] = np.array(amount, dtype=np.int64)
    for key in sorted(p):
        arrays["param." + key] = np.array(p[key], dtype=np.float64)
    arrays["dtype"] = np.array(dtype)
    if policy == "razor":
        arrays["weight.razor"] = _retrieval(cname, L, H).astype(np.float64)
    arrays["expect.out"] = outs.astype(np.float32)
    arrays["expect.steppos"] = steppos
    arrays["expect.steplen"] = steplen
    for l in range(L):
        for h in range(H):
            Kr, Vr, pr, cr = caches[l][h].rows()
            o = np.argsort(pr, kind="stable")
            arrays["expect.K.%d.%d" % (l, h)] = kvref.round_storage(Kr[o], dtype)
            arrays["expect.V.%d.%d" % (l, h)] = kvref.round_storage(Vr[o], dtype)
            arrays["expect.pos.%d.%d" % (l, h)] = pr[o].astype(np.int32)
            arrays["expect.count.%d.%d" % (l, h)] = cr[o].astype(np.float64)
    return policy, cname + ".npz", arrays, seed, marg


def cases(manifest, make_inputs):
    """Every merge golden case: (policy, file name, arrays, seed, margin)."""
    out = []
    have = {name for name, m in manifest.items() if m["oracle"] == "mergeref" and "golden" in m["matrices"]}
    for fam in PREFILL:
        if POLICY.get(fam, fam) not in have:
            raise RuntimeError("merge golden family %s: no mergeref golden line in the manifest" % fam)
        for shape in SHAPES:
            out.append(prefill_case(fam, shape, manifest, make_inputs))
    for case in DECODE:
        if case[0] not in have:
            raise RuntimeError("merge decode case %s: no mergeref golden line in the manifest" % case[0])
        out.append(decode_case(case, manifest, make_inputs))
    return out
