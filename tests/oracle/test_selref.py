#!/usr/bin/env python3
"""Self-test of selref (the selection-rule oracle): each rule against a plain-loop restatement
or a property that holds by construction, and, when torch and kvpress import, against kvpress
0.5.5's AdaKVPress, CriticalKVPress, CriticalAdaKVPress, ChunkKVPress, LagKVPress and
ExpectedAttentionPress on random tensors (kept sets compared exactly; otherwise SKIP).
Exit status non-zero on failure."""

import math
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import selref as S  # noqa: E402

FAILS = []
TALLY = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("not ok -", what)


# ----------------------------------------------------------------- rules (no kvpress)

def test_threshold():
    s = np.array([0.5, 3.0, np.nan, 2.0, 2.0, -1.0, 7.0, 0.1])
    check(S.threshold_select(s, 2.0).tolist() == [1, 3, 4, 6], "threshold >= tau, NaN never")
    check(S.threshold_select(s, 2.0, n_keep=2).tolist() == [1, 6], "threshold with n_keep: best first")
    check(S.threshold_select(s, 2.0, n_keep=3).tolist() == [1, 3, 6], "threshold ties -> lower position")
    check(S.threshold_select(s, 100.0, sinks=1, recent=1).tolist() == [0, 7], "protected kept")
    check(S.threshold_select(s, 100.0, n_keep=1, sinks=1, recent=1).tolist() == [0], "sinks first")
    check(S.dms_threshold_keep(s, 2.0, 3).tolist() == [1, 3, 4, 5, 6, 7], "DMS: window + above tau")


def test_mass():
    s = np.array([9.0, 4.0, 1.0, 3.0, 2.0, 0.0, 1.0, 5.0])
    # unprotected 1..6: 4,1,3,2,0,1 sum 11; sorted 4(1),3(3),2(4),1(2),1(6),0(5)
    check(S.mass_select(s, 0.5, sinks=1, recent=1).tolist() == [0, 1, 3, 7], "mass 0.5: 4+3 >= 5.5")
    check(S.mass_select(s, 7 / 11, sinks=1, recent=1).tolist() == [0, 1, 3, 7], "mass reached exactly")
    check(S.mass_select(s, 0.7, sinks=1, recent=1).tolist() == [0, 1, 3, 4, 7], "mass 0.7")
    check(S.mass_select(s, 10 / 11 - 1e-9, sinks=1, recent=1).tolist() == [0, 1, 2, 3, 4, 7],
          "mass ties -> lower position (2 before 6)")
    check(S.mass_select(s, 0.0, sinks=1, recent=1).tolist() == [0, 7], "mass 0 keeps only protected")
    check(S.mass_select(s, 2.0, sinks=1, recent=1).tolist() == list(range(8)), "mass > 1 keeps all")
    for bad in (-1.0, np.nan):
        s2 = s.copy()
        s2[3] = bad
        try:
            S.mass_select(s2, 0.5, sinks=1, recent=1)
            check(False, "mass: %r score must raise" % bad)
        except ValueError:
            pass
    s3 = s.copy()
    s3[0] = -5.0                                     # a protected negative score is not an error
    check(S.mass_select(s3, 0.5, sinks=1, recent=1).tolist() == [0, 1, 3, 7], "protected negative ok")


def test_mass_group():
    """mass at scope layer / model and over chunks (S2'), by hand: total 15 over the layer"""
    s = np.array([[[4.0, 3.0, 2.0, 1.0], [5.0, 0.0, 0.0, 0.0]]])
    kept = lambda k: [a.tolist() for a in k[0]]
    check(kept(S.mass_group(s, 0.5, scope="layer")) == [[0], [0]], "layer: 5 + 4 >= 7.5 of 15")
    check(kept(S.mass_group(s, 0.5, scope="head")) == [[0, 1], [0]], "head: 4 + 3 >= 5, 5 >= 2.5")
    check(kept(S.mass_group(s, 0.5, scope="model")) == [[0], [0]], "model = layer with one layer")
    check(kept(S.mass_group(s, 0.5, scope="layer", chunk=2)) == [[0, 1], [0, 1]],
          "chunks: (4,3) mean 3.5 then (5,0) mean 2.5: 7 + 5 >= 7.5")
    check(kept(S.mass_group(s, 0.5, n_keep=1, scope="layer", chunk=2)) == [[0, 1], []],
          "chunks under a layer budget of 2: the second chunk does not fit")
    check(kept(S.mass_group(s, 0.5, scope="layer", chunk=2, sinks=1)) == [[0, 1, 2, 3], [0, 1]],
          "a chunk with a sink is protected; the rest: (2,1) 3 of 3 >= 0.5, (0,0) not needed")
    check(kept(S.mass_group(s, 0.5, scope="layer", chunk=3, sinks=1)) == [[0, 1, 2, 3], [0, 1, 2]],
          "chunk 3: the protected first chunks; the shorter last ones (1) and (0) total 1: 1 >= 0.5")
    s4 = s.copy()
    s4[0, 1, 2] = -1.0
    try:
        S.mass_group(s4, 0.5, scope="layer")
        check(False, "mass_group: a negative score must raise")
    except ValueError:
        pass


def test_keep_count():
    """S7 keep counts, by hand: floored, clamped to 0..n, not a number raises; a group's budget is
    the sum of its heads' counts"""
    check(S.keep_count(2.7, 5) == 2 and S.keep_count(-0.5, 5) == 0 and S.keep_count(9, 5) == 5,
          "keep_count: floor 2.7 -> 2, -0.5 -> 0, 9 -> n = 5")
    for v in (math.nan, math.inf, -math.inf):
        try:
            S.keep_count(v, 5)
            check(False, "keep_count(%r) must raise" % v)
        except ValueError:
            pass
    check(S.keep_ratio(40, budget=10) == 0.75 and S.keep_ratio(40, budget=90) == 0.0 and
          S.keep_ratio(40, ratio=0.5) == 0.5, "keep_ratio: 1 - min(B, n) / n")
    s = np.array([[[4.0, 3.0, 2.0, 1.0], [5.0, 0.5, 0.25, 0.0]]])
    kept = lambda k: [a.tolist() for a in k[0]]
    check(kept(S.mass_group(s, 1.0, n_keep=np.array([[1, 2]]), scope="layer")) == [[0, 1], [0]],
          "mass at scope layer under counts 1 + 2: the layer's best three")
    check(kept(S.mass_group(s, 1.0, n_keep=np.array([[1, 2]]), scope="head")) == [[0], [0, 1]],
          "mass at scope head: each head its own count")
    check([k.tolist() for k in S.threshold_group(s, 0.4, np.array([[0, 3]]), scope="layer")[0]] ==
          [[0, 1], [0]], "threshold at scope layer under counts 0 + 3: 5, 4, 3 of the layer")


def test_floor_bruteforce():
    rng = np.random.default_rng(1)
    for case in range(30):
        H, n = int(rng.integers(1, 5)), int(rng.integers(5, 30))
        nk = int(rng.integers(1, n + 1))
        alpha = float(rng.choice([0.0, 0.2, 0.5, 1.0]))
        s = rng.standard_normal((H, n))
        kept = S.floor_select(s, nk, alpha)
        fl = int(math.floor(alpha * nk))
        check(sum(len(k) for k in kept) == H * nk, "floor: layer budget spent (case %d)" % case)
        for h in range(H):
            own = set(np.argsort(-s[h])[:fl].tolist())
            check(own <= set(kept[h].tolist()), "floor: each head keeps its own top (case %d)" % case)
        # the rest is one ranking: every dropped pair scores below every non-floor kept pair
        floor_pairs = {(h, t) for h in range(H) for t in np.argsort(-s[h])[:fl].tolist()}
        kept_rest = [s[h, t] for h in range(H) for t in kept[h] if (h, t) not in floor_pairs]
        dropped = [s[h, t] for h in range(H) for t in range(n) if t not in set(kept[h].tolist())]
        if kept_rest and dropped:
            check(min(kept_rest) > max(dropped), "floor: one layer-wide ranking (case %d)" % case)
        if alpha == 1.0:
            check(all(len(k) == nk for k in kept), "floor alpha=1 is per-head top-k")


def test_prefixkv():
    rng = np.random.default_rng(2)
    L, n = 6, 60
    Sc = rng.uniform(0, 1, (L, n)) ** 3
    counts, p = S.prefixkv_bisect(Sc, 0.4 * L * n, 5)
    check(abs(int(counts.sum()) - 0.4 * L * n) < 5, "bisection within 5 of the target (%d)" % counts.sum())
    # literal count at the returned p
    for l in range(L):
        srt = sorted(Sc[l], reverse=True)
        tot, acc, idx = sum(srt), 0.0, None
        cdf = np.cumsum(np.array(srt) / tot)
        idx = next(i for i in range(n) if cdf[i] >= p)
        check(counts[l] == max(n - idx - 1 - 5, 0), "prefix count of layer %d" % l)
    forget = S.prefixkv_forget(Sc, 0.4)
    check(forget.sum() <= 0.4 * L * n and forget.sum() > 0.4 * L * n - L, "scaled counts truncate")
    kept = S.prefixkv_select(Sc[0], int(forget[0]))
    check(kept[:4].tolist() == [0, 1, 2, 3] and kept[-1] == n - 1 and kept.size == n - forget[0],
          "first 4 + last kept, forget evicted")
    mid = [t for t in range(4, n - 1) if t not in set(kept.tolist())]
    check(max(Sc[0][mid]) < min(Sc[0][[t for t in kept if 4 <= t < n - 1]]), "lowest scores evicted")
    fr = S.prefixkv_fractions([Sc, Sc[::-1]], 0.4)
    sel, fg = S.prefixkv_online(Sc, fr)
    check(all(s.size == n - f for s, f in zip(sel, fg)), "online fractions")


def test_dynamickv():
    rng = np.random.default_rng(3)
    L, H, n, w, B = 8, 2, 80, 8, 24
    sc = rng.uniform(0, 1, (L, H, n - w))
    kept, b = S.dynamickv(sc, B, w, radio_max=10)
    check(all(k.size == b[l] + w for l in range(L) for k in kept[l]), "each layer keeps b_l + window")
    check(sum(b) <= (B - w) * L + 0, "budgets within (B - w) L (%s)" % b)
    for l in range(L):
        for h in range(H):
            top = sorted(range(n - w), key=lambda t: (-sc[l, h, t], t))[:b[l]]
            check(kept[l][h].tolist() == sorted(top) + list(range(n - w, n)), "top-b_l + window (l%d h%d)" % (l, h))


def test_criticalkv_stage():
    rng = np.random.default_rng(4)
    H, G, n, d, hid = 2, 2, 30, 8, 16
    s = rng.uniform(0, 1, (H, n))
    V = rng.standard_normal((H, n, d))
    Wo = rng.standard_normal((hid, H * G * d))
    kept = S.criticalkv(s, V, Wo, G, 0.5)
    k1 = int(0.5 * n * 0.5)
    for h in range(H):
        check(set(np.argsort(-s[h])[:k1].tolist()) <= set(kept[h].tolist()), "stage 1 kept")
    # |W_o v|_1 by loops
    W = Wo.T.reshape(H * G, d, hid)
    for h in range(H):
        for t in (0, 7):
            val = sum(sum(abs(sum(V[h, t, i] * W[h * G + g, i, j] for i in range(d))) for j in range(hid))
                      for g in range(G)) / G
            check(abs(val - S.wo_l1(V, Wo, G)[h, t]) < 1e-9 * max(1, val), "W_o L1 norm")


def test_gated_window():
    rng = np.random.default_rng(5)
    n, d, steps = 40, 8, 60
    X = rng.standard_normal((n + steps, d))
    w = rng.standard_normal(d) * 0.5
    b, u, W, tau = -0.2, 0.8, 6, 0.5
    g_all, _ = S.gated_scan(X, w, b, u)
    dec = S.GatedWindowDecoder(X[:n], w, b, u, W, tau)
    for s in range(steps):
        kept = dec.step(X[n + s])
        exp = S.gated_window_keep(g_all[:n + s + 1], W, tau).tolist()
        check(kept == exp, "decode step %d = prefill over the same tokens" % s)
    # the recurrence by hand
    h = 0.0
    for t in range(5):
        h = 1 / (1 + math.exp(-(float(X[t] @ w) + b + u * h)))
        check(abs(h - g_all[t]) < 1e-12, "gate recurrence t=%d" % t)


def test_lagkv_short_and_chunkkv_fill():
    K = np.zeros((1, 10, 4))
    s = S.lagkv_scores(K, K, n_sink=4, lag=8)
    check(np.allclose(s[0], [1, 1, 1, 1, 0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6]), "LagKV short ramp")
    sc = np.array([[5, 5, 0, 0, 1, 1, 9]], dtype=float)
    check(S.chunkkv_fill(sc, 5, chunk=2).tolist() == [0, 1, 4, 5, 6], "chunk fill: partial chunk fits")
    check(S.chunkkv_fill(sc, 4, chunk=2).tolist() == [0, 1, 6], "chunk fill skips a misfit")


def test_head_classes():
    hs = np.array([[0.5, 0.1, 0.9], [0.3, 0.1, 0.7]])
    m = S.duo_classes(hs, 0.5)
    check(m.tolist() == [[False, True, False], [True, True, False]], "Duo: 3 lowest (tie lower index)")
    keep = S.duo_keep(20, m, 2, 4)
    check(keep[0][1].tolist() == [0, 1, 16, 17, 18, 19] and keep[0][0].size == 20, "Duo keep")
    r = S.razor_classes(np.arange(20).reshape(4, 5), np.zeros((4, 5)), 0.15, 0.0)
    check(r.sum() == 3 and r[3, 4] and r[3, 3] and r[3, 2], "Razor top 15% induction heads")
    check(S.razor_recent(1000, 64, 5) == 200 and S.razor_recent(100, 64, 5) == 64, "Razor recent")


def test_select_topk_scopes():
    """kvref.select_topk (chunks, scopes) against its definition's consequences: chunk 1 is a
    sort; greedy fill = nothing dropped fits in what is left and every kept chunk ranked below a
    dropped one is shorter; protected chunks first; per-group budgets."""
    import kvref
    rng = np.random.default_rng(8)
    for case in range(60):
        L, H, n = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(3, 30))
        chunk = int(rng.choice([1, 2, 3, 5, 8]))
        sinks, recent = int(rng.integers(0, 3)), int(rng.integers(0, 4))
        scope = str(rng.choice(["head", "layer", "model"]))
        counts = [int(rng.integers(0, n + 1)) for _ in range(L)]
        s = rng.standard_normal((L, H, n))
        kept = kvref.select_topk(s, counts, sinks, recent, chunk, scope)
        groups = kvref._groups(L, H, scope)
        for grp in groups:
            want = sum(counts[l] for (l, h) in grp)
            cands = []
            for (l, h) in grp:
                ks = set(kept[l][h].tolist())
                for t0 in range(0, n, chunk):
                    t1 = min(t0 + chunk, n)
                    inside = [t in ks for t in range(t0, t1)]
                    check(all(inside) or not any(inside), "whole chunks only (case %d)" % case)
                    prot = t0 < sinks or t1 > n - recent
                    key = ((0, t0, h, l) if t0 < sinks else (1, -t0, h, l)) if prot else \
                        (2, -s[l, h, t0:t1].mean(), t0, h, l)
                    cands.append((key, t1 - t0, all(inside)))
            cands.sort()
            got = sum(ln for _, ln, k in cands if k)
            check(got <= want, "within the group budget (case %d)" % case)
            for i, (_, ln, k) in enumerate(cands):
                if not k:
                    check(ln > want - got, "a dropped chunk does not fit (case %d)" % case)
                    for _, ln2, k2 in cands[i + 1:]:
                        if k2:
                            check(ln2 < ln, "kept below a dropped chunk is shorter (case %d)" % case)
        if chunk == 1 and scope == "head" and sinks == 0 and recent == 0:
            for l in range(L):
                for h in range(H):
                    exp = np.sort(np.argsort(-s[l, h], kind="stable")[:counts[l]])
                    check(np.array_equal(kept[l][h], exp), "chunk 1 = per-head top-k (case %d)" % case)


# ----------------------------------------------------------------- kvpress comparisons

def kvpress_available():
    try:
        import torch  # noqa: F401
        import kvpress  # noqa: F401
        return True
    except Exception as e:  # noqa: BLE001
        print("SKIP kvpress comparisons: torch/kvpress do not import (%s)" % (type(e).__name__,))
        return False


def fixed(scores):
    from kvpress.presses.scorer_press import ScorerPress

    class Fixed(ScorerPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            return scores.clone()
    return Fixed()


def masked_to_kept(mod, H, n):
    b, h, t = (x.numpy() for x in mod.masked_key_indices)
    drop = [set() for _ in range(H)]
    for hh, tt in zip(h, t):
        drop[int(hh)].add(int(tt))
    return [np.array([x for x in range(n) if x not in drop[hh]]) for hh in range(H)]


def index_keys(torch, H, n, d):
    k = torch.zeros(1, H, n, d)
    k[..., 0] = torch.arange(n, dtype=torch.float32)
    return k


def gathered(k_out):
    return [np.sort(k_out[0, h, :, 0].numpy().astype(np.int64)) for h in range(k_out.shape[1])]


def tally(name, ok, total, note=""):
    TALLY.append("kvpress %s: %d/%d cases agree%s" % (name, ok, total, note))
    print(TALLY[-1])


def test_kvpress_adakv():
    import torch
    from kvpress.presses.adakv_press import AdaKVPress
    ok = 0
    for c in range(25):
        rng = np.random.default_rng(300 + c)
        H, n = int(rng.integers(2, 6)), int(rng.integers(8, 90))
        r = float(rng.choice([0.25, 0.5, 0.75, 0.9]))
        sc = rng.standard_normal((H, n)).astype(np.float32)
        press = AdaKVPress(press=fixed(torch.tensor(sc)[None]), alpha_safeguard=0.2)
        press.compression_ratio = r
        mod = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="sdpa"), head_dim=4)
        press.compress(mod, None, torch.zeros(1, H, n, 4), torch.zeros(1, H, n, 4), None, {})
        got = masked_to_kept(mod, H, n)
        exp = S.floor_select(sc.astype(np.float64), S.kvpress_n_kept(n, r), 0.2, kvpress_min1=True)
        same = all(np.array_equal(a, b) for a, b in zip(got, exp))
        ok += same
        check(same, "AdaKVPress case %d (H=%d n=%d r=%g)" % (c, H, n, r))
    tally("AdaKVPress (alpha 0.2)", ok, 25)


def wo_module(torch, H, G, d, hidden, Wo):
    cfg = types.SimpleNamespace(num_attention_heads=H * G, head_dim=d, hidden_size=hidden,
                                _attn_implementation="sdpa")
    return types.SimpleNamespace(config=cfg, head_dim=d, num_key_value_groups=G,
                                 o_proj=types.SimpleNamespace(weight=torch.tensor(Wo)))


def test_kvpress_criticalkv():
    import torch
    from kvpress.presses.criticalkv_press import CriticalAdaKVPress, CriticalKVPress
    ok = oka = 0
    N = 20
    for c in range(N):
        rng = np.random.default_rng(400 + c)
        H, G, d = int(rng.integers(1, 4)), int(rng.choice([1, 2, 4])), int(rng.choice([8, 16]))
        n, hid = int(rng.integers(10, 70)), 32
        r = float(rng.choice([0.25, 0.5, 0.75]))
        sc = rng.uniform(0, 1, (H, n)).astype(np.float32)
        V = rng.standard_normal((H, n, d)).astype(np.float32)
        Wo = (rng.standard_normal((hid, H * G * d)) * 0.3).astype(np.float32)
        mod = wo_module(torch, H, G, d, hid, Wo)
        press = CriticalKVPress(fixed(torch.tensor(sc)[None]))
        press.compression_ratio = r
        k_out, _ = press.compress(mod, None, index_keys(torch, H, n, d), torch.tensor(V)[None], None, {})
        exp = S.criticalkv(sc.astype(np.float64), V.astype(np.float64), Wo.astype(np.float64), G, r)
        same = all(np.array_equal(a, b) for a, b in zip(gathered(k_out), exp))
        ok += same
        check(same, "CriticalKVPress case %d (H=%d G=%d n=%d r=%g)" % (c, H, G, n, r))
        pa = CriticalAdaKVPress(press=fixed(torch.tensor(sc)[None]))
        pa.compression_ratio = r
        pa.compress(mod, None, torch.zeros(1, H, n, d), torch.tensor(V)[None], None, {})
        got = masked_to_kept(mod, H, n)
        exp = S.critical_adakv(sc.astype(np.float64), V.astype(np.float64), Wo.astype(np.float64), G, r)
        same = all(np.array_equal(a, b) for a, b in zip(got, exp))
        oka += same
        check(same, "CriticalAdaKVPress case %d (H=%d G=%d n=%d r=%g)" % (c, H, G, n, r))
    tally("CriticalKVPress", ok, N)
    tally("CriticalAdaKVPress", oka, N)


def test_kvpress_chunkkv():
    import torch
    from kvpress.presses.chunkkv_press import ChunkKVPress
    ok = differ_fill = off_budget = 0
    N = 25
    for c in range(N):
        rng = np.random.default_rng(500 + c)
        H, n = int(rng.integers(1, 4)), int(rng.integers(5, 130))
        ch = int(rng.choice([3, 7, 20]))
        r = float(rng.choice([0.25, 0.5, 0.75]))
        sc = rng.standard_normal((H, n)).astype(np.float32)
        press = ChunkKVPress(press=fixed(torch.tensor(sc)[None]), chunk_length=ch)
        press.compression_ratio = r
        mod = types.SimpleNamespace(head_dim=4)
        k_out, _ = press.compress(mod, None, index_keys(torch, H, n, 4), torch.zeros(1, H, n, 4), None, {})
        got = gathered(k_out)
        exp = S.chunkkv_kvpress(sc.astype(np.float64), r, ch)
        exp = exp if isinstance(exp, list) else [exp] * H
        same = all(np.array_equal(a, b) for a, b in zip(got, exp))
        ok += same
        check(same, "ChunkKVPress case %d (H=%d n=%d chunk=%d r=%g)" % (c, H, n, ch, r))
        fill = S.chunkkv_fill(sc.astype(np.float64), int(n * (1 - r)), ch)
        differ_fill += not np.array_equal(fill, exp[0])
        off_budget += exp[0].size != max(1, int(n * (1 - r)))
    tally("ChunkKVPress", ok, N, " (kvpress keeps a token count other than n_keep in %d of them; "
          "kvcc's budget-filling chunk rule keeps another set in %d)" % (off_budget, differ_fill))


def test_kvpress_lagkv():
    import torch
    from kvpress.presses.lagkv_press import LagKVPress
    ok = ties = 0
    N = 20
    for c in range(N):
        rng = np.random.default_rng(600 + c)
        H, d = int(rng.integers(1, 4)), int(rng.choice([8, 32]))
        lag, sink = int(rng.choice([4, 8, 16])), 4
        n = int(rng.integers(sink + 1, sink + 7 * lag))
        r = float(rng.choice([0.25, 0.5]))
        K = rng.standard_normal((H, n, d)).astype(np.float32)
        V = rng.standard_normal((H, n, d)).astype(np.float32)
        press = LagKVPress(compression_ratio=r, n_sink=sink, lag_size=lag)
        sc = press.score(None, None, torch.tensor(K)[None], torch.tensor(V)[None], None, {})[0]
        exp = S.lagkv_scores(K, V, sink, lag)
        same = np.allclose(sc.numpy(), exp, rtol=0, atol=1e-6)
        # kept sets as ScorerPress.compress takes them (topk of the press's scores), compared
        # only where the cut is not inside a tie (ranks repeat across chunks; sinks/tail all 1)
        nk = S.kvpress_n_kept(n, r)
        for h in range(H):
            srt = np.sort(exp[h])[::-1]
            if nk < n and srt[nk - 1] == srt[nk]:
                ties += 1
                continue
            got = np.sort(sc[h].topk(nk).indices.numpy())
            same = same and np.array_equal(got, S.topk(exp[h], nk))
        ok += same
        check(same, "LagKVPress case %d (H=%d n=%d lag=%d)" % (c, H, n, lag))
    tally("LagKVPress", ok, N, " (scores within 1e-6; kept sets exact, %d heads skipped: cut in a tie)"
          % ties)


def test_kvpress_expected_attention():
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding
    from kvpress.presses.expected_attention_press import ExpectedAttentionPress
    ok, worst = 0, 0.0
    N = 12
    torch.manual_seed(0)
    for c in range(N):
        rng = np.random.default_rng(700 + c)
        H, G, d = int(rng.integers(1, 3)), int(rng.choice([1, 2])), int(rng.choice([8, 16]))
        n, hid = int(rng.integers(12, 60)), 32
        r = float(rng.choice([0.25, 0.5, 0.75]))
        cfg = LlamaConfig(hidden_size=hid, num_attention_heads=H * G, num_key_value_heads=H, head_dim=d,
                          intermediate_size=64, num_hidden_layers=1, max_position_embeddings=4096)
        cfg._attn_implementation = "sdpa"
        mod = LlamaAttention(cfg, 0).double()
        mod.rotary_emb = LlamaRotaryEmbedding(cfg)
        hs = torch.tensor(rng.standard_normal((1, n, hid)))
        K = rng.standard_normal((H, n, d))
        V = rng.standard_normal((H, n, d))
        cov = bool(c % 3 != 2)
        press = ExpectedAttentionPress(compression_ratio=r, n_future_positions=int(rng.choice([16, 512])),
                                       use_covariance=cov, epsilon=float(rng.choice([0.0, 0.01])))
        with torch.no_grad():
            sc = press.score(mod, hs, torch.tensor(K)[None], torch.tensor(V)[None], None, {})[0].numpy()
            Wq = mod.q_proj.weight.numpy()
        Qpre = (hs[0].numpy() @ Wq.T).reshape(n, H * G, d).transpose(1, 0, 2)
        mu, cv = S.ea_query_stats(Qpre, press.n_sink)
        exp = S.ea_scores(K, V, mu, cv, n, press.n_future_positions, press.n_sink, use_cov=cov,
                          eps=press.epsilon)
        nk = S.kvpress_n_kept(n, r)
        worst = max(worst, float(np.max(np.abs(sc - exp) / np.abs(exp))))
        same = np.allclose(sc, exp, rtol=1e-5, atol=0) and all(
            np.array_equal(np.sort(np.argsort(-sc[h], kind="stable")[:nk]), S.topk(exp[h], nk)) for h in range(H))
        ok += same
        check(same, "ExpectedAttentionPress case %d (H=%d G=%d n=%d cov=%s)" % (c, H, G, n, cov))
    tally("ExpectedAttentionPress", ok, N, " (float64 module, RoPE tables in float32: scores within "
          "rel %.1e, kept sets exact)" % worst)


def main():
    tests = [test_threshold, test_mass, test_mass_group, test_keep_count, test_floor_bruteforce, test_prefixkv, test_dynamickv,
             test_criticalkv_stage, test_gated_window, test_lagkv_short_and_chunkkv_fill,
             test_head_classes, test_select_topk_scopes]
    if kvpress_available():
        tests += [test_kvpress_adakv, test_kvpress_criticalkv, test_kvpress_chunkkv,
                  test_kvpress_lagkv, test_kvpress_expected_attention]
    for t in tests:
        n0 = len(FAILS)
        t()
        print("%s %s" % ("ok    " if len(FAILS) == n0 else "FAIL  ", t.__name__))
    if FAILS:
        print("test_selref: %d failures" % len(FAILS))
        return 1
    print("test_selref: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
