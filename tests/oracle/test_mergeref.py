#!/usr/bin/env python3
"""Self-test of mergeref (the merge oracle): each rule checked against a literal loop of the
reference code it follows (LOOK-M's scatter-means, KVCache-Factory's weighted merge), against
properties that hold by construction (simultaneity, ties, count bias = duplicated tokens, the
online mean = the batch mean), decode runs of >= 50 steps checked by invariants, and, when torch
and kvpress import, against kvpress 0.5.5's MergingPress and CAMPress on random tensors
(otherwise those print SKIP).  Exit status non-zero on failure."""

import math
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mergeref as M  # noqa: E402

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("not ok -", what)


def allclose(a, b, tol=1e-12):
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                       rtol=tol, atol=tol)


def rand_head(seed, n=29, d=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)), rng


def split(rng, n, n_keep):
    kept = np.sort(rng.choice(n, n_keep, replace=False))
    return kept, np.setdiff1d(np.arange(n), kept)


# ----------------------------------------------------------------- literal reference loops

def bf_nearest(K, kept, ev):
    """argmax cosine, first (lowest position) maximum, plain loops."""
    out = []
    for e in ev:
        best, bj = -math.inf, -1
        for j, k in enumerate(kept):
            num = sum(K[e][i] * K[k][i] for i in range(K.shape[1]))
            den = math.sqrt(sum(x * x for x in K[e])) * math.sqrt(sum(x * x for x in K[k]))
            c = num / max(den, 1e-8)
            if c > best:
                best, bj = c, j
        out.append((bj, best))
    return out


def test_lookm_literal():
    """LOOK-M code: avg = scatter_reduce(mean, include_self) of the evicted rows into the target;
    pivot = the same of (e + target) / 2 (DESIGN: w_k = |A(k)| + 2, w_e = 1)."""
    for seed in range(6):
        K, V, rng = rand_head(seed)
        kept, ev = split(rng, K.shape[0], 12)
        nn_ = bf_nearest(K, kept, ev)
        tgt = np.array([j for j, _ in nn_])
        tgt2, ms = M.nearest_targets(K, kept, ev)
        check(np.array_equal(tgt, tgt2), "nearest targets (seed %d)" % seed)
        check(allclose([s for _, s in nn_], ms), "max similarities (seed %d)" % seed)
        for rule in ("average", "pivot"):
            wk, we = M.weights(rule, K, V, kept, ev, tgt2, ms)
            got = M.merge_update(V, kept, ev, tgt2, wk, we)
            for j, k in enumerate(kept):
                members = [e for i, e in enumerate(ev) if tgt[i] == j]
                if rule == "average":
                    src = [V[e] for e in members]
                else:
                    src = [(V[e] + V[k]) / 2 for e in members]
                exp = (V[k] + sum(src, np.zeros(V.shape[1]))) / (1 + len(src))
                check(allclose(got[j], exp), "LOOK-M %s row %d (seed %d)" % (rule, j, seed))


def test_factory_weighted_literal():
    """KVCache-Factory merge='weighted': w = clamp((cos + 1)/2, 1e-6); r <- (r + sum w e) / (1 + sum w)."""
    K, V, rng = rand_head(11)
    kept, ev = split(rng, K.shape[0], 10)
    tgt, ms = M.nearest_targets(K, kept, ev)
    wk, we = M.weights("factory", K, V, kept, ev, tgt, ms)
    got = M.merge_update(K, kept, ev, tgt, wk, we)
    for j, k in enumerate(kept):
        num, den = K[k].copy(), 1.0
        for i, e in enumerate(ev):
            if tgt[i] == j:
                w = max((ms[i] + 1) / 2, 1e-6)
                num += w * K[e]
                den += w
        check(allclose(got[j], num / den), "factory weighted row %d" % j)


def test_simultaneous_and_ties():
    K, V, rng = rand_head(3)
    kept, ev = split(rng, K.shape[0], 9)
    tgt, ms = M.nearest_targets(K, kept, ev)
    wk, we = M.weights("pivot", K, V, kept, ev, tgt, ms)
    a = M.merge_update(K, kept, ev, tgt, wk, we)
    perm = rng.permutation(ev.size)
    b = M.merge_update(K, kept, ev[perm], tgt[perm], wk, we[perm])
    check(allclose(a, b), "merge does not depend on the visiting order")
    # ties: two kept rows with the same key -> the lower position wins
    K2 = K.copy()
    K2[kept[5]] = K2[kept[2]] * 3.0                 # same direction: equal cosine
    K2[ev[0]] = K2[kept[2]] + 1e-3 * K2[kept[7]]
    t2, _ = M.nearest_targets(K2, kept, ev)
    check(t2[0] == 2, "cosine tie -> lower position (got %d)" % t2[0])
    # threshold: nothing reaches 1.5, everything reaches -1.5
    t3, _ = M.nearest_targets(K, kept, ev, threshold=1.5)
    t4, _ = M.nearest_targets(K, kept, ev, threshold=-1.5)
    check((t3 == -1).all() and (t4 >= 0).all(), "similarity threshold")
    # a dropped token leaves its would-be target unchanged
    wk, we = M.weights("average", K, V, kept, ev, t3, ms)
    check(allclose(M.merge_update(K, kept, ev, t3, wk, we), K[kept]), "no target -> unchanged rows")
    # counts add up
    _, _, ck = M.merge(K, V, kept, ev, tgt, *M.weights("average", K, V, kept, ev, tgt, ms))
    check(ck.sum() == K.shape[0], "member counts add up to n")


def test_next_and_pivot_targets():
    kept = np.array([0, 3, 4, 9, 12])
    ev = np.array([1, 2, 5, 10, 13])
    tg = M.next_kept_targets(kept, ev, 2)
    check([t.tolist() for t in tg] == [[1, 2], [1, 2], [3, 4], [4], []], "CaM next-m targets")
    # runs: tokens 0..5 one direction, 6..9 another
    K = np.zeros((10, 2))
    K[:6, 0], K[6:, 1] = 1.0, 1.0
    K[3, 0] = 2.0                                      # same direction, still one run
    rid = M.run_ids(K, 0.9)
    check(rid.tolist() == [0] * 6 + [1] * 4, "KVMerger runs")
    scores = np.array([5, 1, 2, 9, 3, 4, 1, 2, 8, 3], dtype=float)
    kept = np.array([0, 3, 8])
    ev = np.setdiff1d(np.arange(10), kept)
    rank = M.selection_rank(scores)
    t = M.pivot_targets(K, kept, ev, rank, 0.9)
    check(t.tolist() == [1, 1, 1, 1, 2, 2, 2], "KVMerger pivot = best-ranked kept token of the run")
    K[6:, 1], K[6:, 0] = 1.0, -5.0
    K[8] = [0.0, 1.0]                                  # run 6..7 has no kept token now? (8 breaks)
    t = M.pivot_targets(K, kept, ev, rank, 0.9)
    check(t[ev.tolist().index(6)] == -1, "run without a kept token -> dropped")


def test_protected_order():
    s = np.arange(12, dtype=float)                     # the newest tokens score best
    kept = M.topk_keep(s, 4, sinks=2, recent=5)
    check(kept.tolist() == [0, 1, 10, 11], "below the protected set: sinks, then newest recent")
    kept = M.topk_keep(s, 9, sinks=2, recent=5)
    check(kept.tolist() == [0, 1, 5, 6, 7, 8, 9, 10, 11], "protected then scores")


def bf_kmeans(X, Vx, init, iters):
    C = len(init)
    cent = [X[i].copy() for i in init]
    vc = [Vx[i].copy() for i in init]
    for _ in range(iters):
        asg = []
        for x in X:
            d = [sum((x[k] - c[k]) ** 2 for k in range(len(x))) for c in cent]
            asg.append(min(range(C), key=lambda j: (d[j], j)))
        for j in range(C):
            mem = [i for i in range(len(X)) if asg[i] == j]
            if mem:
                cent[j] = sum((X[i] for i in mem), np.zeros(X.shape[1])) / len(mem)
                vc[j] = sum((Vx[i] for i in mem), np.zeros(Vx.shape[1])) / len(mem)
    return np.array(cent), np.array(vc), asg


def test_kmeans():
    K, V, rng = rand_head(5, n=41, d=4)
    pos = np.arange(100, 141)
    ev = np.sort(rng.choice(41, 23, replace=False))
    C, iters = 4, 3
    init = M.kmeans_init(ev, C)
    check(init.tolist() == [ev[0], ev[5], ev[11], ev[17]], "k-means init floor(i|E|/C)")
    Kc, Vc, pc, cnt, members = M.kmeans_summary(K, V, pos, ev, C, iters)
    bk, bv, asg = bf_kmeans(K[ev], V[ev], [int(np.searchsorted(ev, i)) for i in init], iters)
    check(allclose(Kc, bk) and allclose(Vc, bv), "Lloyd centroids (keys, values)")
    for j in range(C):
        mem = ev[[i for i in range(ev.size) if asg[i] == j]]
        check(members[j].tolist() == mem.tolist(), "members of cluster %d" % j)
        check(cnt[j] == mem.size and pc[j] == pos[mem].max(), "count and position of cluster %d" % j)
    # an empty cluster keeps its centroid: two identical init points, the tie goes to the lower
    K2 = K.copy()
    K2[ev[5]] = K2[ev[0]]
    V2 = V.copy()
    Kc2, Vc2, pc2, cnt2, mem2 = M.kmeans_summary(K2, V2, pos, ev, C, 1)
    check(cnt2[1] == 0 and allclose(Kc2[1], K2[ev[5]]) and allclose(Vc2[1], V2[ev[5]])
          and pc2[1] == pos[ev[5]], "empty cluster keeps centroid, init position, count 0")


def test_summary_group():
    """M12 by hand: a group of two heads, C = 2, no protected tokens.  Head 0 holds 6 tokens with
    count 5 (over it), head 1 holds 4 with count 4 (under it; its third token the worst of the
    group): the group keeps (5-2) + (4-2) = 5 tokens, head 0 at most 6-2, head 1 at most 4-2.
    Counting head 1 whole and without the caps (the rule before M12) the group kept 7: head 1's
    three best and head 0's four best, and head 1 held 3 + 2 summary rows > its 4.  With M12 head
    1 keeps its best 2 (its third best passed over) and head 0 its best 3: they hold 4 and 5."""
    rng = np.random.default_rng(3)
    K = [rng.normal(size=(6, 4)), rng.normal(size=(4, 4))]
    V = [rng.normal(size=(6, 4)), rng.normal(size=(4, 4))]
    s = [np.array([0.1, 0.6, 0.2, 0.5, 0.3, 0.4]), np.array([0.9, 0.8, 0.05, 0.7])]
    R = M.summary_group(K, V, s, [6, 4], [5, 4], 2, 1)
    check(R[1][0].tolist() == [0, 1], "M12 head under its count: its best n - C (the cap)")
    check(R[0][0].tolist() == [1, 3, 5], "M12 head over its count: the rest of the group's budget")
    held = [R[j][0].size + (2 if R[j][2] is not None else 0) for j in range(2)]
    check(held == [5, 4], "M12 no head holds more than it held, the group its budget (9)")
    R = M.summary_group(K, V, s, [6, 4], [6, 4], 2, 1)
    check(all(R[j][0].size == n and R[j][2] is None for j, n in enumerate([6, 4])), "M12 none over: all kept")
    R = M.summary_group(K, V, s, [6, 0], [5, 0], 2, 1)
    check(R[0][0].tolist() == [1, 3, 5] and R[1][0].size == 0, "M12 an empty head takes no part")
    try:
        M.summary_group(K, V, s, [6, 1], [5, 1], 2, 1)
        check(False, "M12 a head under its count holding fewer than C rows is an error")
    except ValueError:
        pass


def test_summary_threshold():
    """M11 by hand: one head, n = 8, sinks 1, recent 1, tau 0, C = 2 (scores chosen so that the
    candidate set and the caps are known)."""
    rng = np.random.default_rng(7)
    K = rng.normal(size=(1, 1, 8, 4))
    V = rng.normal(size=(1, 1, 8, 4))
    s = np.array([[[-5.0, 3.0, -1.0, 2.0, 1.0, 4.0, np.nan, -2.0]]])
    # under the budget (n_keep 8), tokens 2 and 6 below tau: at most n - 2 = 6 of the 6 candidates
    R = M.summary_threshold(K, V, s, 0.0, 2, 1, 8, 1, 1)
    check(R["kept"][0][0].tolist() == [0, 1, 3, 4, 5, 7], "M11 under the budget, two below tau")
    check(R["summary"][0][0] is not None and R["summary"][0][0][3].sum() == 2, "M11 two rows from two")
    # one below tau only (token 6 NaN; token 2 raised): n - 2 = 6 of the 7 candidates, the lowest goes
    s2 = s.copy()
    s2[0, 0, 2] = 0.5
    R = M.summary_threshold(K, V, s2, 0.0, 2, 1, 8, 1, 1)
    check(R["kept"][0][0].tolist() == [0, 1, 3, 4, 5, 7], "M11 under the budget, one below tau: room for 2 rows")
    # every token a candidate under the budget: all kept, no summary rows
    s3 = np.where(np.isnan(s), 9.0, np.abs(s))
    R = M.summary_threshold(K, V, s3, 0.0, 2, 1, 8, 1, 1)
    check(R["kept"][0][0].size == 8 and R["summary"][0][0] is None, "M11 nothing below tau: no rows")
    # over the budget (n_keep 5): at most 3 candidates, protected first
    R = M.summary_threshold(K, V, s, 0.0, 2, 1, 5, 1, 1)
    check(R["kept"][0][0].tolist() == [0, 5, 7], "M11 over the budget: n_keep - C")


def test_summary_mass():
    """M13 by hand: one head, n = 8, sinks 1, recent 1, C = 2; the unprotected scores 1..6 sum
    to 21 (tokens 1..6 hold 3, 6, 1, 5, 2, 4)."""
    rng = np.random.default_rng(8)
    K = rng.normal(size=(1, 1, 8, 4))
    V = rng.normal(size=(1, 1, 8, 4))
    s = np.array([[[9.0, 3.0, 6.0, 1.0, 5.0, 2.0, 4.0, 9.0]]])
    # p = 0.9: 6 + 5 + 4 + 3 = 18 < 18.9, + 2 = 20 >= 18.9: token 3 (score 1) left out; under the
    # budget (n_keep 8): at most n - 2 = 6, so token 5 (score 2) goes too
    R = M.summary_mass(K, V, s, 0.9, 2, 1, 8, 1, 1)
    check(R["kept"][0][0].tolist() == [0, 1, 2, 4, 6, 7], "M13 under the budget, one past the prefix")
    check(R["summary"][0][0] is not None and R["summary"][0][0][3].sum() == 2, "M13 two rows from two")
    # p = 0.5: 6 + 5 = 11 >= 10.5: the prefix is tokens 2, 4; n - 2 does not bind
    R = M.summary_mass(K, V, s, 0.5, 2, 1, 8, 1, 1)
    check(R["kept"][0][0].tolist() == [0, 2, 4, 7], "M13 under the budget, the prefix binds")
    # p = 1: every token in the prefix: all kept, no summary rows
    R = M.summary_mass(K, V, s, 1.0, 2, 1, 8, 1, 1)
    check(R["kept"][0][0].size == 8 and R["summary"][0][0] is None, "M13 the whole prefix: no rows")
    # over the budget (n_keep 5): at most 3 of the candidates, protected first
    R = M.summary_mass(K, V, s, 0.9, 2, 1, 5, 1, 1)
    check(R["kept"][0][0].tolist() == [0, 2, 7], "M13 over the budget: n_keep - C")
    try:
        M.summary_mass(K[:, :, :1], V[:, :, :1], s[:, :, :1], 0.0, 2, 1, 8, 0, 0)   # p = 0: no prefix
        check(False, "M13 a head that evicts holding fewer than C rows is an error")
    except ValueError:
        pass


def test_summary_floor():
    """M14 by hand: a layer of two heads, n = 8, no protected tokens, C = 2, alpha = 0.5; head 0
    scores 10..17 (all above head 1's 0..7)."""
    rng = np.random.default_rng(9)
    K = rng.normal(size=(2, 8, 4))
    V = rng.normal(size=(2, 8, 4))
    s = np.array([np.arange(10.0, 18.0), np.arange(8.0)])
    # n_keep 6 each: floors 3 (1 ordinary each: head 0 token 7, head 1 token 7); the rest
    # 2 * (6 - 2) - 2 = 6 goes to head 0's best (tokens 6 .. 2, 5 of them up to its cap n - 2 = 6
    # with token 7) and then head 1's next (token 6)
    out = M.summary_floor(K, V, s, [8, 8], [6, 6], 0.5, 2, 1)
    check(out[0][0].tolist() == [2, 3, 4, 5, 6, 7], "M14 head 0: floor + the ranking up to its cap")
    check(out[1][0].tolist() == [6, 7], "M14 head 1: its floor, then what the cap of head 0 left")
    # alpha 0 (no floor) and a floor at or below C are met by the C summary rows: M12's result
    # (summary_group), tokens and rows; by hand: 2 * (6 - 2) = 8 go to head 0's best 6 (its cap)
    # then head 1's best 2
    for a in (0.0, 0.3, 0.4):           # floors 0, 1, 2 = C
        out = M.summary_floor(K, V, s, [8, 8], [6, 6], a, 2, 1)
        ref = M.summary_group(K, V, s, [8, 8], [6, 6], 2, 1)
        check(out[0][0].tolist() == [2, 3, 4, 5, 6, 7] and out[1][0].tolist() == [6, 7],
              "M14 floor %g <= C: no error, the ranking alone" % a)
        check(all(o[0].tolist() == r[0].tolist() and allclose(o[2][0], r[2][0]) and allclose(o[2][1], r[2][1])
                  for o, r in zip(out, ref)), "M14 floor %g <= C equals M12 (summary_group)" % a)
    # a small budget (n_keep 2 = C, alpha 0.2 the adakv default): floor 0, each head keeps no
    # ordinary row beyond the ranking's 0 and builds its 2 rows
    out = M.summary_floor(K, V, s, [8, 8], [2, 2], 0.2, 2, 1)
    check(all(o[0].size == 0 and o[2] is not None for o in out), "M14 n_keep = C: only the summary rows")
    # no head over its count: everything kept, no rows
    out = M.summary_floor(K, V, s, [8, 8], [8, 8], 0.5, 2, 1)
    check(all(o[0].size == 8 and o[2] is None for o in out), "M14 nothing over the count: all kept")
    # alpha 1: each head keeps its own best n_keep - 2 (the layer's ranking gets nothing)
    out = M.summary_floor(K, V, s, [8, 8], [6, 6], 1.0, 2, 1)
    check(out[0][0].tolist() == [4, 5, 6, 7] and out[1][0].tolist() == [4, 5, 6, 7], "M14 alpha 1: per head")


def test_summary_threshold_group():
    """M15 by hand: two heads of 6 tokens, no protected ones, C = 2, tau 0, counts 6 (no head
    over its count)."""
    rng = np.random.default_rng(10)
    K = rng.normal(size=(2, 6, 4))
    V = rng.normal(size=(2, 6, 4))
    s = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.5], [9.0, 8.0, 7.0, 6.0, -1.0, 6.5]])
    # head 1's token 4 is below tau: the group evicts; 2 * (6 - 2) = 8 kept, each head at most 4:
    # head 1 takes 9, 8, 7, 6.5 (its cap), head 0 its best 4
    out = M.summary_threshold_group(K, V, s, [6, 6], [6, 6], 0.0, 2, 1)
    check(out[0][0].tolist() == [0, 1, 2, 3] and out[1][0].tolist() == [0, 1, 2, 5], "M15 caps n - C")
    check(all(o[2] is not None for o in out), "M15 every head of an evicting group builds its rows")
    # nothing below tau, no head over: all kept
    out = M.summary_threshold_group(K, V, np.abs(s), [6, 6], [6, 6], 0.0, 2, 1)
    check(all(o[0].size == 6 and o[2] is None for o in out), "M15 nothing evicted: all kept")


def test_count_bias():
    """ToMe property: a row standing for c identical tokens, with bias log c, attends exactly as
    the c copies would."""
    rng = np.random.default_rng(9)
    K = rng.standard_normal((6, 8))
    V = rng.standard_normal((6, 8))
    q = rng.standard_normal(8)
    Kd = np.vstack([K, K[2], K[2], K[4]])
    Vd = np.vstack([V, V[2], V[2], V[4]])
    o1, _ = M.decode_attention(q, Kd, Vd)
    o2, _ = M.decode_attention(q, K, V, counts=[1, 1, 3, 1, 2, 1], bias=True)
    check(allclose(o1, o2), "count bias equals duplicated tokens")
    o3, _ = M.decode_attention(q, K, V, counts=[1, 1, 3, 1, 2, 1], bias=False)
    check(not allclose(o1, o3, 1e-6), "without the bias the output differs")


def decode_inputs(seed, n=24, d=8, G=2, steps=60):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n + steps, d))
    V = rng.standard_normal((n + steps, d))
    qs = rng.standard_normal((steps, G, d)) * 1.5
    return K, V, qs


def test_decode_runs():
    """>= 50 decode steps per rule; invariants after every step."""
    n, steps, B, R = 24, 60, 16, 4
    K, V, qs = decode_inputs(1, n, steps=steps)
    pos = np.arange(n + steps)
    # drop / nearest (average, d2o with EMA) / summary C=1 / summary C=3
    for rule, kw in (("drop", {}), ("nearest", {"weight": "average"}),
                     ("nearest", {"weight": "d2o", "ema_beta": 0.7}),
                     ("summary1", {}), ("summary3", {})):
        C = {"summary1": 1, "summary3": 3}.get(rule, 0)
        keep0 = np.arange(n - (B - C), n)
        summary = None
        ev0 = np.arange(0, n - (B - C))
        if C == 1:
            k, v, p, c = M.mean_summary(K, V, pos, ev0)
            summary = (k[None], v[None], np.array([p]), np.array([c]), np.zeros(1))
        elif C == 3:
            Kc, Vc, pc, cnt, _ = M.kmeans_summary(K, V, pos, ev0, 3, 2)
            summary = (Kc, Vc, pc, cnt, np.zeros(3))
        dc = M.DecodeCache(K[keep0], V[keep0], pos[keep0], np.zeros(keep0.size), summary=summary,
                           budget=B, recent=R, rule="summary" if C else rule, **kw)
        evicted_all = list(ev0)
        for s in range(steps):
            before = set(dc.pos.tolist())
            out = dc.step(K[n + s], V[n + s], n + s, qs[s])
            Kr, Vr, pr, cr = dc.rows()
            check(Kr.shape[0] <= B, "%s: rows within budget at step %d" % (rule, s))
            check(np.all(np.diff(dc.pos) > 0), "%s: ordinary rows stay in position order" % rule)
            check(n + s in dc.pos.tolist(), "%s: the newest token is kept (recent)" % rule)
            check(out.shape == (qs.shape[1], K.shape[1]), "%s: one output per query" % rule)
            gone = (before | {n + s}) - set(dc.pos.tolist())
            evicted_all += sorted(gone)
            if rule == "nearest" and "ema_beta" not in kw:
                check(cr.sum() == n + s + 1 - (n - (B - C)), "%s: counts add up (step %d)" % (rule, s))
            if C:
                check(cr.sum() == n + s + 1, "%s: counts add up (step %d)" % (rule, s))
        if C == 1:
            ev = np.array(evicted_all)
            check(allclose(dc.summary[0][0], K[ev].mean(axis=0), 1e-10) and
                  allclose(dc.summary[1][0], V[ev].mean(axis=0), 1e-10) and
                  dc.summary[2][0] == ev.max(), "C=1 online mean = mean of every evicted token")
        if rule == "drop":
            check(sorted(evicted_all + dc.pos.tolist()) == list(range(n + steps)), "drop: a partition")


def test_online_kmeans_step():
    rng = np.random.default_rng(4)
    Kc = rng.standard_normal((3, 4))
    Vc = rng.standard_normal((3, 4))
    pc, cnt = np.array([5, 9, 7]), np.array([2.0, 3.0, 1.0])
    Kx, Vx = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    px, cx = np.array([11, 12, 13, 14, 15]), np.ones(5)
    K2, V2, p2, c2, a = M.online_update(Kc, Vc, pc, cnt, Kx, Vx, px, cx)
    for j in range(3):
        m = a == j
        exp = (cnt[j] * Kc[j] + Kx[m].sum(axis=0)) / (cnt[j] + m.sum())
        check(allclose(K2[j], exp), "online running mean, cluster %d" % j)
        check(c2[j] == cnt[j] + m.sum() and p2[j] == max([pc[j]] + px[m].tolist()),
              "online count / position, cluster %d" % j)
    # order independence of a batch of evicted tokens
    perm = rng.permutation(5)
    K3, _, _, _, _ = M.online_update(Kc, Vc, pc, cnt, Kx[perm], Vx[perm], px[perm], cx[perm])
    check(allclose(K2, K3), "online update is simultaneous")


def test_policies_smoke():
    rng = np.random.default_rng(2)
    L, H, n, d, G, O = 2, 2, 37, 8, 2, 8
    K, V = rng.standard_normal((L, H, n, d)), rng.standard_normal((L, H, n, d))
    Q = rng.standard_normal((L, H, G, O, d))
    for name, R, C in (("lookm-average", M.lookm(K, V, Q, "average", ratio=0.5), 0),
                       ("lookm-pivot", M.lookm(K, V, Q, "pivot", ratio=0.5), 0),
                       ("lookm-weighted", M.lookm(K, V, Q, "weighted", ratio=0.5), 0),
                       ("snapkv_merge", M.snapkv_merge(K, V, Q, ratio=0.5, window=8), 0),
                       ("kvmerger", M.kvmerger(K, V, Q, ratio=0.5), 0),
                       ("d2o", M.d2o_prefill(K, V, Q, ratio=0.5), 0),
                       ("razor", M.razor(K, V, ratio=0.5), 1),
                       ("kmeans", M.kmeans_prefill(K, V, Q, C=3, ratio=0.5), 3)):
        for l in range(L):
            for h in range(H):
                nrows = R["K"][l][h].shape[0] + (C if R["summary"][l][h] is not None else 0)
                check(nrows == int(n * 0.5), "%s: %d rows = n_keep (l%d h%d)" % (name, nrows, l, h))


# ----------------------------------------------------------------- kvpress comparisons

def kvpress_available():
    try:
        import torch  # noqa: F401
        import kvpress  # noqa: F401
        return True
    except Exception as e:  # noqa: BLE001
        print("SKIP kvpress comparisons: torch/kvpress do not import (%s)" % (type(e).__name__,))
        return False


def fixed_scorer(torch, scores):
    from kvpress.presses.scorer_press import ScorerPress

    class Fixed(ScorerPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            return scores.clone()
    return Fixed()


def test_kvpress_mergingpress():
    import torch
    from kvpress.presses.merging_press import MergingPress
    agree = total = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        H, n, d = 3, int(rng.integers(17, 70)), int(rng.choice([8, 64]))
        ratio = float(rng.choice([0.25, 0.5, 0.75]))
        thr = float(rng.choice([0.0, 0.1]))
        K = rng.standard_normal((H, n, d)).astype(np.float32)
        V = rng.standard_normal((H, n, d)).astype(np.float32)
        S = rng.standard_normal((H, n)).astype(np.float32)
        press = MergingPress(press=fixed_scorer(torch, torch.tensor(S)[None]), similarity_threshold=thr)
        press.compression_ratio = ratio
        mod = types.SimpleNamespace(head_dim=d)
        k_out, v_out = press.compress(mod, None, torch.tensor(K)[None], torch.tensor(V)[None], None, {})
        n_keep = max(1, int(n * (1 - ratio)))
        idx = torch.tensor(S).topk(n_keep, dim=-1).indices.numpy()
        order = np.argsort(idx, axis=1)
        kp_kept = np.take_along_axis(idx, order, 1)
        kp_v = np.take_along_axis(v_out[0].numpy(), order[..., None], 1)
        kept, Vo = M.mergingpress(K.astype(np.float64), V.astype(np.float64), S, n_keep, thr)
        ok = np.array_equal(kept, kp_kept) and np.allclose(Vo, kp_v, rtol=1e-5, atol=1e-5)
        total += 1
        agree += ok
        check(ok, "kvpress MergingPress case %d (n=%d d=%d r=%g thr=%g)" % (seed, n, d, ratio, thr))
    print("kvpress MergingPress: %d/%d cases agree (kept sets exact, values 1e-5)" % (agree, total))


def test_kvpress_campress():
    import torch
    from kvpress.presses.cam_press import CAMPress
    agree = total = 0
    real_bernoulli = torch.bernoulli
    try:
        for seed in range(20):
            rng = np.random.default_rng(200 + seed)
            H, d = 2, int(rng.choice([8, 64]))
            T = int(rng.integers(12, 40))
            n = T + int(rng.integers(3, 20))
            m, k = int(rng.choice([1, 4, 32])), int(rng.integers(1, n - T + 1))
            K = rng.standard_normal((H, n, d)).astype(np.float32)
            V = rng.standard_normal((H, n, d)).astype(np.float32)
            S = rng.standard_normal((H, n)).astype(np.float32)
            A = rng.uniform(0.0, 2.0, (H, n)).astype(np.float32)
            draw = "expect" if seed % 2 == 0 else "uniform"
            torch.bernoulli = (lambda p: p) if draw == "expect" else (lambda p: (p > 0.5).to(p.dtype))
            press = CAMPress(base_press=fixed_scorer(torch, torch.tensor(S)[None]), target_size=T,
                             merge_budget=m, compression_interval=1)
            press.layer_step_counts[0] = k
            press._running_attn_sum[0] = torch.tensor(A)[None].clone()
            mod = types.SimpleNamespace(layer_idx=0, head_dim=d)
            k_out, v_out = press.compress(mod, None, torch.tensor(K)[None], torch.tensor(V)[None].clone(),
                                          torch.tensor(A)[None], {})
            u = np.full((H, k), 0.5)
            kept, Ko, Vo = M.cam_kvpress(K.astype(np.float64), V.astype(np.float64), S.astype(np.float64),
                                         A.astype(np.float64), T, m, k, draw=draw, u=u)
            ok = (np.allclose(Ko, k_out[0].numpy(), rtol=0, atol=0) and
                  np.allclose(Vo, v_out[0].numpy(), rtol=1e-5, atol=1e-5) and kept.size == T)
            total += 1
            agree += ok
            check(ok, "kvpress CAMPress case %d (n=%d T=%d m=%d k=%d %s)" % (seed, n, T, m, k, draw))
    finally:
        torch.bernoulli = real_bernoulli
    print("kvpress CAMPress: %d/%d cases agree (keys exact, values 1e-5; Bernoulli replaced by "
          "its expectation or by p > 0.5)" % (agree, total))


def main():
    tests = [test_lookm_literal, test_factory_weighted_literal, test_simultaneous_and_ties,
             test_next_and_pivot_targets, test_protected_order, test_kmeans, test_summary_threshold, test_summary_mass, test_summary_group,
             test_summary_floor, test_summary_threshold_group,
             test_count_bias,
             test_decode_runs, test_online_kmeans_step, test_policies_smoke]
    if kvpress_available():
        tests += [test_kvpress_mergingpress, test_kvpress_campress]
    for t in tests:
        n0 = len(FAILS)
        t()
        print("%s %s" % ("ok    " if len(FAILS) == n0 else "FAIL  ", t.__name__))
    if FAILS:
        print("test_mergeref: %d failures" % len(FAILS))
        return 1
    print("test_mergeref: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
