#!/usr/bin/env python3
"""calib_ref.py KVCC WORKDIR -- `kvcc calibrate` against an independent numpy computation on
the shipped model (llama_ref.Model, float64; the C model runs in float32):

  induction, echo   the attention of the second copy of repeated random tokens (the same
                    xorshift64* tokens) to the token after / at the previous occurrence
  razor, duo_rank,  derived from kvcc's own induction / echo exactly as documented
  headkv
  mu, cf            the mean and covariance of the pre-RoPE queries (positions >= 4) of the
                    calibration texts (the inverse of the README's RoPE)
  frac              PrefixKV's fractions: selref.prefixkv_forget on the layer scores, averaged
  gate_*            the gate's fit redone here (labels: attention above uniform from the later
                    queries; Newton on the L2-penalized logistic loss)
  wo                the checkpoint's output projections

Tolerances come from float32 vs float64 (stated per check).  Prints one line per check and
exits 1 when one fails.
"""
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as LR  # noqa: E402
import selref as S  # noqa: E402

STORIES = "60:64"
TRIALS, REPEAT, SEED, SINKS = 3, 16, 7, 4
FAILS = []


def check(ok, what):
    print("%s %s" % ("PASS" if ok else "FAIL", what))
    if not ok:
        FAILS.append(what)


def xorshift(seed):
    s = seed & 0xFFFFFFFFFFFFFFFF
    M = 0xFFFFFFFFFFFFFFFF
    while True:
        s ^= s >> 12
        s ^= (s << 25) & M
        s ^= s >> 27
        yield (s * 0x2545F4914F6CDD1D) & M


def attention(q, k, G):
    """q [Hq, T, hd], k [H, T, hd] post-RoPE -> causal A [Hq, T, T]."""
    Hq, T, hd = q.shape
    A = np.einsum("htd,hsd->hts", q, np.repeat(k, G, axis=0)) / math.sqrt(hd)
    A = np.where(np.tril(np.ones((T, T), dtype=bool))[None], A, -np.inf)
    A = np.exp(A - A.max(axis=2, keepdims=True))
    return A / A.sum(axis=2, keepdims=True)


def forward(m, ids):
    r = m.prefill(ids)
    L, G = m.n_layers, m.G
    q = r["q"]                                              # [L, Hq, T, hd]
    return [attention(q[l], r["k"][l], G) for l in range(L)], r


def unrope(m, q, pos):
    """q [..., T, hd] post-RoPE at positions pos -> pre-RoPE (adjacent pairs)."""
    ang = np.asarray(pos, dtype=np.float64)[:, None] * m.inv_freq[None, :]
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = q[..., 0::2], q[..., 1::2]
    out = np.empty_like(q)
    out[..., 0::2] = x0 * c + x1 * s
    out[..., 1::2] = -x0 * s + x1 * c
    return out


def logistic(X, y, lam=1e-2, iters=30):
    p = X.shape[1]
    th = np.zeros(p)
    pen = np.full(p, lam)
    pen[-1] = 1e-9
    for _ in range(iters):
        z = X @ th
        pr = 1 / (1 + np.exp(-z))
        w = pr * (1 - pr) + 1e-9
        g = X.T @ (y - pr) - np.where(np.arange(p) < p - 1, lam * th, 0)
        Hm = (X * w[:, None]).T @ X + np.diag(pen)
        step = np.linalg.solve(Hm, g)
        th += step
        if np.abs(step).sum() < 1e-10:
            break
    return th


def main(argv):
    kvcc, work = argv[1], argv[2]
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, "cal.npz")
    subprocess.run([kvcc, "calibrate", "--model", LR.MODEL_PATH, "--tokenizer", LR.TOK_PATH,
                    "--data", LR.STORIES_PATH, "--stories", STORIES, "--trials", str(TRIALS),
                    "--repeat", str(REPEAT), "--seed", str(SEED), "--sinks", str(SINKS), "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    W = dict(np.load(out))
    m, tok = LR.Model(), LR.Tokenizer()
    L, H, G, d, D = m.n_layers, m.n_kv_heads, m.G, m.hd, m.dim

    # 1. head scores on repeated random tokens
    gen = xorshift(SEED)
    ind, echo = np.zeros((L, H)), np.zeros((L, H))
    for _ in range(TRIALS):
        xs = [3 + int(next(gen) % (m.vocab_size - 3)) for _ in range(REPEAT)]
        ids = [LR.BOS] + xs + xs
        A, _ = forward(m, ids)
        for l in range(L):
            a = A[l].reshape(H, G, len(ids), len(ids)).mean(axis=1)
            for j in range(REPEAT):
                p = REPEAT + 1 + j
                ind[l] += a[:, p, 2 + j]
                echo[l] += a[:, p, 1 + j]
    ind /= TRIALS * REPEAT
    echo /= TRIALS * REPEAT
    for name, ref in (("induction", ind), ("echo", echo)):
        err = np.max(np.abs(W[name] - ref))
        check(err < 1e-4, "%s scores = numpy within 1e-4 (max |diff| %.2e)" % (name, err))
    razor = np.zeros(L * H)
    for x, p in ((W["induction"], 0.15), (W["echo"], 0.01)):
        razor[np.argsort(-x, axis=None, kind="stable")[:round(p * L * H)]] = 1
    check(np.array_equal(W["razor"].ravel(), razor), "razor = top 15%% induction | top 1%% echo (%d heads)"
          % int(razor.sum()))
    rank = np.empty(L * H)
    rank[np.argsort(W["induction"], axis=None, kind="stable")] = np.arange(L * H)
    check(np.array_equal(W["duo_rank"].ravel(), rank), "duo_rank = rank of the induction score")
    check(np.allclose(W["headkv"], W["induction"] / W["induction"].sum(), rtol=1e-12), "headkv normalized")

    # 2. the calibration texts
    stories = LR.load_stories()
    lo, hi = (int(x) for x in STORIES.split(":"))
    qs, qq, nq = np.zeros((L, H * G, d)), np.zeros((L, H * G, d, d)), 0
    frac, ntext = np.zeros((L, 99)), 0
    X = [[[] for _ in range(H)] for _ in range(L)]
    Y = [[[] for _ in range(H)] for _ in range(L)]
    for si in range(lo, hi):
        ids = LR.story_tokens(tok, stories[si], min(LR.MAX_TOKENS, m.seq_len))
        n = len(ids)
        A, r = forward(m, ids)
        qpre = unrope(m, r["q"], np.arange(n))             # [L, Hq, T, hd]
        sel = qpre[:, :, SINKS:]
        qs += sel.sum(axis=2)
        qq += np.einsum("lhti,lhtj->lhij", sel, sel)
        nq += n - SINKS
        Sl = np.array([A[l].mean(axis=0).sum(axis=0) for l in range(L)])   # [L, n]
        for ri in range(1, 100):
            frac[:, ri - 1] += S.prefixkv_forget(Sl, ri / 100.0) / n
        ntext += 1
        for l in range(L):
            a = A[l].reshape(H, G, n, n).mean(axis=1)               # [H, n(query), n(token)]
            vis = np.arange(1, n + 1)[:, None]                      # query i sees i + 1 tokens
            above = a * vis
            for h in range(H):
                prev = 1.0
                for t in range(1, n - 1):
                    lab = 1.0 if above[h, t + 1:, t].mean() >= 1 else 0.0
                    X[l][h].append(np.concatenate([r["k"][l, h, t], [prev, 1.0]]))
                    Y[l][h].append(lab)
                    prev = lab
    mu = qs / nq
    cov = qq / nq - np.einsum("lhi,lhj->lhij", mu, mu)
    cf = W["cf"].reshape(L, H * G, d, d)
    cov_c = np.einsum("lhij,lhkj->lhik", cf, cf)
    ridge = 1e-6 * np.einsum("lhii->lh", cov) / d
    cov_c = cov_c - ridge[..., None, None] * np.eye(d)
    e1 = np.max(np.abs(W["mu"].reshape(L, H * G, d) - mu)) / np.max(np.abs(mu))
    e2 = np.max(np.abs(cov_c - cov)) / np.max(np.abs(cov))
    check(e1 < 1e-4, "Expected Attention's query mean = numpy (rel %.2e < 1e-4)" % e1)
    check(e2 < 1e-4, "query covariance = cf cf^T - ridge (rel %.2e < 1e-4)" % e2)
    check(np.allclose(np.tril(cf), cf), "cf is lower triangular (a Cholesky factor)")
    frac /= ntext
    ef = np.abs(W["frac"] - frac)
    check(ef.mean() < 2e-3 and ef.max() < 0.02,
          "PrefixKV fractions = selref.prefixkv_forget averaged (mean |diff| %.1e, max %.1e; the "
          "bisection may cut one token elsewhere on f32 vs f64 scores)" % (ef.mean(), ef.max()))
    check(np.all(np.diff(W["frac"], axis=1) >= -0.02), "fractions grow with the ratio")
    worst, agree = 0.0, []
    for l in range(L):
        for h in range(H):
            Xa, ya = np.array(X[l][h]), np.array(Y[l][h])
            th = logistic(Xa, ya)
            got = np.concatenate([W["gate_w"][l, h], [W["gate_u"][l, h], W["gate_b"][l, h]]])
            worst = max(worst, np.max(np.abs(got - th)) / max(1.0, np.max(np.abs(th))))
            agree.append(np.mean(((Xa @ got) >= 0) == ((Xa @ th) >= 0)))
    check(worst < 1e-3 and min(agree) > 0.99,
          "gate fit = numpy's Newton fit (max rel diff %.2e < 1e-3; the two fits decide alike on %.1f%% "
          "of the tokens or more)" % (worst, 100 * min(agree)))
    wo = m.wo.reshape(L, D, H, G, d)
    check(np.array_equal(W["wo"], wo), "wo = the checkpoint's o_proj [layer, out, head, group, chan]")
    print("calib_ref: %d checks failed" % len(FAILS) if FAILS else "calib_ref: all passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
