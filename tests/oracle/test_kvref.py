#!/usr/bin/env python3
"""Self-test of the oracle: properties checked by brute force (plain Python loops and
integers, independent of kvref's vectorised code).  Exit status non-zero on failure."""

import math
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kvref  # noqa: E402
import gen_golden  # noqa: E402

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("not ok -", what)


def close(a, b, tol=1e-12):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


# ----------------------------------------------------------------- brute-force helpers

def bf_attention(q, keys, qp, pos):
    """softmax over visible tokens of one query (lists of floats)."""
    d = len(q)
    logits = []
    for t, k in enumerate(keys):
        if pos[t] <= qp:
            logits.append(sum(q[i] * k[i] for i in range(d)) / math.sqrt(d))
        else:
            logits.append(None)
    m = max(x for x in logits if x is not None)
    e = [0.0 if x is None else math.exp(x - m) for x in logits]
    s = sum(e)
    return [x / s for x in e]


def bf_select(scores, protected, n_keep, sinks=None):
    """sinks first (lower position first), then the protected window newest first, then
    higher score, lower position (DESIGN section 3)"""
    n = len(scores)
    sinks = sinks or [False] * n
    order = sorted(range(n), key=lambda t: (0, t) if sinks[t] else (1, -t) if protected[t]
                   else (2, -scores[t], t))
    return sorted(order[:n_keep])


def bf_splitmix_u(seed, layer, head, pos):
    M = (1 << 64) - 1
    c = ((layer << 40) ^ (head << 24) ^ pos) & M
    z = (seed + c * 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    z ^= z >> 31
    return (z >> 40) / float(1 << 24)


def tiny(seed, L, H, G, n, d, O):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((L, H, n, d)) * rng.uniform(0.5, 2.0, size=(L, H, n, 1))
    V = rng.standard_normal((L, H, n, d))
    Q = 1.5 * rng.standard_normal((L, H, G, O, d))
    return (kvref.round_storage(K), kvref.round_storage(V), kvref.round_storage(Q))


# ----------------------------------------------------------------- tests

def test_rng():
    # SplitMix64 (Vigna) from state 0: outputs 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4,
    # 0x06C45D188009454F -- with seed 0, layer 0, head 0 the counter is the position.
    u = kvref.random_u(0, 0, 0, np.arange(4))
    check(u[0] == 0.0, "rng u(0,0,0,0) == 0")
    check(u[1] == 0xE220A8 / 2.0 ** 24, "rng u(0,0,0,1) == 0xE220A8/2^24")
    check(u[2] == 0x6E789E / 2.0 ** 24, "rng u(0,0,0,2) == 0x6E789E/2^24")
    check(u[3] == 0x06C45D / 2.0 ** 24, "rng u(0,0,0,3) == 0x06C45D/2^24")
    for seed, l, h, p in [(0, 1, 0, 0), (12345, 3, 7, 1000), (987654321, 31, 15, 131071),
                          (-3, 2, 1, 5), (-(1 << 62), 1, 1, 1)]:
        check(kvref.random_u(seed, l, h, p) == bf_splitmix_u(seed, l, h, p),
              "rng vectorised == integer loop for %r" % ((seed, l, h, p),))
    # the seed rule: a double truncated toward zero; NaN and |seed| >= 2^63 count as 0
    for seed, want in [(-5.7, -5), (5.99, 5), (float("nan"), 0), (float("-inf"), 0), (1e30, 0),
                       (2.0 ** 63, 0), (-(2.0 ** 63), 0), (2.0 ** 62, 1 << 62)]:
        check(kvref.random_u(seed, 1, 2, 3) == bf_splitmix_u(want, 1, 2, 3),
              "rng seed %r counts as %d" % (seed, want))
    # through compress: the score of (l, h, t) uses pos[t]
    K, V, Q = tiny(1, 2, 3, 1, 9, 4, 0)
    pos = np.array([0, 3, 4, 10, 11, 12, 50, 51, 90])
    r = kvref.compress("random", K, V, Q, params={"seed": 77}, ratio=0.5, pos=pos)
    ok = all(r["scores"][l, h, t] == bf_splitmix_u(77, l, h, int(pos[t]))
             for l in range(2) for h in range(3) for t in range(9))
    check(ok, "random scores use (seed, layer, head, pos[t])")


def test_n_keep():
    cases = [((37, 0.25, None), 27), ((37, 0.5, None), 18), ((37, 0.75, None), 9),
             ((61, 0.5, None), 30), ((257, 0.5, None), 128), ((129, 0.75, None), 32),
             ((37, None, 100), 37), ((37, None, 5), 5), ((37, None, 0), 0), ((10, 0.0, None), 10)]
    for (n, r, b), want in cases:
        got = kvref.n_keep_uniform(n, ratio=r, budget=b)
        check(got == want, "n_keep(n=%d, r=%r, B=%r) = %d, want %d" % (n, r, b, got, want))


def test_pyramid_budgets():
    # by hand: n=257, w=64, r=.5: T-w=128.5, m=6.425, M=250.575 >= 193 -> M=193, m=64,
    # steps = 129/3 = 43
    check(kvref.pyramid_budgets(257, 4, 64, 20, ratio=0.5) == [193, 150, 107, 64],
          "pyramid n=257 w=64 r=.5")
    # n=37 w=8 r=.25: T-w=27.75 -> M=29, m=26.5, steps=2.5/3; layer 3 = 26.5 -> 26 (half-even)
    check(kvref.pyramid_budgets(37, 4, 8, 20, ratio=0.25) == [29, 28, 27, 26],
          "pyramid n=37 w=8 r=.25 (round half to even)")
    # fallback (m > M after clamping): round(61 * .75) = round(45.75) = 46
    check(kvref.pyramid_budgets(61, 4, 16, 20, ratio=0.25) == [46] * 4, "pyramid fallback round")
    # fallback (m < window): round(129 * .25) = 32
    check(kvref.pyramid_budgets(129, 4, 8, 20, ratio=0.75) == [32] * 4, "pyramid fallback m<w")
    # budget form: n(1-r) replaced by B
    check(kvref.pyramid_budgets(129, 4, 16, 20, budget=80) == [113, 91, 69, 47], "pyramid budget 80")
    check(kvref.pyramid_budgets(129, 4, 16, 20, budget=64) == [64] * 4, "pyramid budget fallback")
    check(kvref.pyramid_budgets(129, 4, 16, 20, budget=1000) == [129] * 4, "pyramid budget >= n")
    check(kvref.pyramid_budgets(100, 4, 8, 20, ratio=0.0) == [100] * 4, "pyramid ratio 0")
    # sums: the mean layer budget is n(1-r) up to rounding, every layer >= window
    for n in (37, 61, 129, 257, 1000, 4096):
        for w in (8, 16, 64):
            if n <= w:
                continue
            for r in (0.1, 0.25, 0.5, 0.75, 0.9):
                for L in (2, 4, 32):
                    b = kvref.pyramid_budgets(n, L, w, 20, ratio=r)
                    fallback = len(set(b)) == 1 and b[0] == round(n * (1 - r))
                    check(abs(sum(b) - L * n * (1 - r)) <= L / 2 + 1e-9,
                          "pyramid sum n=%d w=%d r=%r L=%d: %s" % (n, w, r, L, b))
                    check(all(x <= n for x in b), "pyramid <= n")
                    if not fallback:
                        check(all(b[i] >= b[i + 1] for i in range(L - 1)) and b[-1] >= w,
                              "pyramid monotone and >= window n=%d w=%d r=%r L=%d: %s"
                              % (n, w, r, L, b))


def test_snapkv_bruteforce():
    L, H, G, n, d, w, k = 2, 2, 2, 13, 5, 4, 3
    K, V, Q = tiny(2, L, H, G, n, d, w)
    for pos in (np.arange(n), 100 + 3 * np.arange(n)):
        qpos = pos[n - w:]
        for ratio in (0.25, 0.5):
            r = kvref.compress("snapkv", K, V, Q, params={"window": w, "kernel": k}, ratio=ratio,
                               pos=pos, qpos=qpos)
            Kl, Ql = K.astype(float).tolist(), Q.astype(float).tolist()
            pre = n - w
            nk = int(n * (1 - ratio))
            for l in range(L):
                for h in range(H):
                    s = [0.0] * pre
                    for g in range(G):
                        rows = [bf_attention(Ql[l][h][g][o], Kl[l][h], int(qpos[o]), pos)
                                for o in range(w)]
                        mean_o = [sum(rows[o][t] for o in range(w)) / w for t in range(pre)]
                        for t in range(pre):
                            acc = 0.0
                            for j in range(t - k // 2, t + k // 2 + 1):
                                if 0 <= j < pre:
                                    acc += mean_o[j]
                            s[t] += acc / k / G
                    for t in range(n):
                        got = r["scores"][l, h, t]
                        if t < pre:
                            check(close(got, s[t]), "snapkv score l=%d h=%d t=%d" % (l, h, t))
                        else:
                            check(math.isnan(got), "snapkv window score is NaN")
                    prot = [t >= pre for t in range(n)]
                    want = bf_select(s + [0.0] * w, prot, nk)
                    check(r["kept"][l, h].tolist() == want, "snapkv kept l=%d h=%d" % (l, h))
                    check(np.array_equal(r["K_out"][l, h], K[l, h, want]), "snapkv K rows")
                    check(np.array_equal(r["V_out"][l, h], V[l, h, want]), "snapkv V rows")


def test_tova_bruteforce():
    L, H, G, n, d = 2, 2, 3, 11, 4
    K, V, Q = tiny(3, L, H, G, n, d, 1)
    r = kvref.compress("tova", K, V, Q, ratio=0.5)
    Kl, Ql = K.astype(float).tolist(), Q.astype(float).tolist()
    for l in range(L):
        s = [0.0] * (n - 1)
        for h in range(H):
            for g in range(G):
                a = bf_attention(Ql[l][h][g][0], Kl[l][h], n - 1, list(range(n)))
                for t in range(n - 1):
                    s[t] += a[t] / (H * G)
        for h in range(H):
            check(all(close(r["scores"][l, h, t], s[t]) for t in range(n - 1)), "tova scores")
            check(math.isnan(r["scores"][l, h, n - 1]), "tova last score NaN")
            want = bf_select(s + [0.0], [False] * (n - 1) + [True], n // 2)
            check(r["kept"][l, h].tolist() == want, "tova kept")


def test_observed_bruteforce():
    L, H, G, n, d = 1, 2, 2, 9, 3
    K, V, Q = tiny(4, L, H, G, n, d, n)
    r = kvref.compress("observed_attention", K, V, Q, budget=4)
    Kl, Ql = K.astype(float).tolist(), Q.astype(float).tolist()
    for h in range(H):
        s = [0.0] * n
        for g in range(G):
            rows = [bf_attention(Ql[0][h][g][o], Kl[0][h], o, list(range(n))) for o in range(n)]
            for t in range(n):
                s[t] += sum(rows[o][t] for o in range(n)) / (n - t) / G
        check(all(close(r["scores"][0, h, t], s[t]) for t in range(n)), "observed scores")
        check(r["kept"][0, h].tolist() == bf_select(s, [False] * n, 4), "observed kept")


def test_knorm_keydiff_bruteforce():
    L, H, n, d = 1, 2, 10, 6
    K, V, Q = tiny(5, L, H, 1, n, d, 0)
    rk = kvref.compress("knorm", K, V, Q, ratio=0.5)
    rd = kvref.compress("keydiff", K, V, Q, ratio=0.5)
    for h in range(H):
        keys = K[0, h].astype(float).tolist()
        norms = [math.sqrt(sum(x * x for x in k)) for k in keys]
        check(all(close(rk["scores"][0, h, t], -norms[t]) for t in range(n)), "knorm scores")
        anchor = [sum(keys[t][i] / norms[t] for t in range(n)) / n for i in range(d)]
        an = math.sqrt(sum(x * x for x in anchor))
        s = [-sum(keys[t][i] * anchor[i] for i in range(d)) / (norms[t] * an) for t in range(n)]
        check(all(close(rd["scores"][0, h, t], s[t]) for t in range(n)), "keydiff scores")
        check(rd["kept"][0, h].tolist() == bf_select(s, [False] * n, 5), "keydiff kept")


def test_ties_and_protection():
    # knorm: tokens 2 and 5 have identical norms and sit at the boundary: lower position wins
    n, d = 8, 2
    K = np.zeros((1, 1, n, d), dtype=np.float32)
    K[0, 0, :, 0] = [1.0, 5.0, 3.0, 0.5, 6.0, 3.0, 0.25, 7.0]
    V = np.arange(n * d, dtype=np.float32).reshape(1, 1, n, d)
    Q = np.zeros((1, 1, 1, 0, d), dtype=np.float32)
    r = kvref.compress("knorm", K, V, Q, budget=4)   # keep 0.25, 0.5, 1.0 and one of the 3.0s
    check(r["kept"][0, 0].tolist() == [0, 2, 3, 6], "tie -> lower position (got %s)"
          % r["kept"][0, 0].tolist())
    check(r["margin"] == 0.0, "tie gives margin 0")
    # snapkv with fewer kept tokens than the window: the newest tokens of the window
    K2, V2, Q2 = tiny(6, 1, 1, 1, 12, 4, 6)
    r2 = kvref.compress("snapkv", K2, V2, Q2, params={"window": 6, "kernel": 5}, budget=3)
    check(r2["kept"][0, 0].tolist() == [9, 10, 11], "budget below the window: newest kept")
    # sinks and a window, budget below both: sinks first (lower position first), then newest
    s = np.array([5.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0])
    sk = np.array([True, True, True] + [False] * 5)
    pr = sk | (np.arange(8) >= 5)
    for nk, want in ((2, [0, 1]), (4, [0, 1, 2, 7]), (5, [0, 1, 2, 6, 7]),
                     (7, [0, 1, 2, 4, 5, 6, 7])):
        got = kvref.select(s, pr, nk, sinks=sk).tolist()
        check(got == want and got == bf_select(s.tolist(), pr.tolist(), nk, sk.tolist()),
              "sinks then newest, budget %d: %s" % (nk, got))
    r3 = kvref.compress("snapkv", K2, V2, Q2, params={"window": 6, "kernel": 5}, budget=8)
    check(r3["kept"][0, 0][-6:].tolist() == list(range(6, 12)), "window always kept")
    # streaming_llm: first sinks + most recent n_keep - sinks
    K3, V3, Q3 = tiny(7, 1, 2, 1, 20, 4, 0)
    r4 = kvref.compress("streaming_llm", K3, V3, Q3, ratio=0.5)
    check(r4["kept"][0, 1].tolist() == [0, 1, 2, 3] + list(range(14, 20)), "streaming_llm")
    r5 = kvref.compress("streaming_llm", K3, V3, Q3, params={"sinks": 2}, budget=3)
    check(r5["kept"][0, 0].tolist() == [0, 1, 19], "streaming_llm sinks=2 budget=3")
    check(np.isnan(r5["scores"]).all(), "streaming_llm scores NaN")


def test_storage_rounding():
    x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -2.0 - 2.0 ** -7, 1.0 + 2.0 ** -8 + 2.0 ** -20],
                 dtype=np.float32)
    want = [1.0, 1.0 + 2.0 ** -6, -2.0, 1.0 + 2.0 ** -7]
    check(kvref.round_storage(x, "bf16").tolist() == want, "bf16 round to nearest even")
    y = np.array([1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11], dtype=np.float32)
    check(kvref.round_storage(y, "f16").tolist() == [1.0, 1.0 + 2.0 ** -9], "f16 RNE")


def test_golden_roundtrip():
    """Generate a few golden cases, feed compare.py a kvcc-format result made from them."""
    with tempfile.TemporaryDirectory() as tmp:
        want = {"pyramidkv__d8_g1_n37_w8_r25", "snapkv__d8_g1_n37_w8_r25", "knorm__d8_g2_n61_b20",
                "streaming_llm__d8_g2_n61_b20"}
        picks = [c for c in gen_golden.CASES if "%s__%s" % c[:2] in want]
        check(len(picks) == len(want), "round-trip cases exist")
        for case in picks:
            fname, arrays, res, _ = gen_golden.build_case(case)
            check(res["margin"] >= gen_golden.MIN_MARGIN, "golden margin " + fname)
            cpath = os.path.join(tmp, fname)
            gen_golden.write_npz(cpath, arrays)
            z = np.load(cpath)
            check(set(z.files) == set(arrays), "npz keys round-trip")
            L, H = z["K"].shape[:2]
            out = {"scores": np.nan_to_num(z["expect.scores"], nan=123.0)}
            for l in range(L):
                kl = z["expect.kept.%d" % l] if "expect.kept.%d" % l in z.files else z["expect.kept"][l]
                Kl = z["expect.K.%d" % l] if "expect.K.%d" % l in z.files else z["expect.K"][l]
                Vl = z["expect.V.%d" % l] if "expect.V.%d" % l in z.files else z["expect.V"][l]
                for h in range(H):
                    out["kept.%d.%d" % (l, h)] = kl[h].astype(np.int32)
                    out["K.%d.%d" % (l, h)] = Kl[h].astype(np.float32)
                    out["V.%d.%d" % (l, h)] = Vl[h].astype(np.float32)
            rpath = os.path.join(tmp, "res.npz")
            np.savez(rpath, **out)
            cmp = [sys.executable, os.path.join(HERE, "compare.py"), cpath, rpath]
            p = subprocess.run(cmp, capture_output=True, text=True)
            check(p.returncode == 0 and p.stdout.startswith("PASS"), "compare PASS " + p.stdout)
            scored = np.argwhere(~np.isnan(z["expect.scores"][0, 0]))
            if scored.size:
                bad = dict(out)
                s = bad["scores"].copy()
                s[0, 0, int(scored[0][0])] *= 1 + 1e-5
                bad["scores"] = s
                np.savez(rpath, **bad)
                p = subprocess.run(cmp, capture_output=True, text=True)
                check(p.returncode == 1 and "score l=0 h=0" in p.stdout, "compare FAIL on score")
            bad = dict(out)
            k = bad["kept.0.1"].copy()
            k[-1] = min(set(range(z["K"].shape[2])) - set(k.tolist()))   # swap in a dropped token
            bad["kept.0.1"] = np.sort(k)
            np.savez(rpath, **bad)
            p = subprocess.run(cmp, capture_output=True, text=True)
            check(p.returncode == 1 and "kept l=0 h=1" in p.stdout, "compare FAIL on kept " + p.stdout)


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    for t in tests:
        before = len(FAILS)
        t()
        print("%s %s" % ("ok    " if len(FAILS) == before else "FAILED", t.__name__))
    if FAILS:
        print("test_kvref: %d check(s) failed" % len(FAILS))
        return 1
    print("test_kvref: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
