#!/usr/bin/env python3
"""Independent numpy reference for decode-time policies (H2O accumulated
attention), written from the published method: at every decode step each
cached token's running total grows by the attention it receives from the
step's queries, summed over the query heads that share its KV head (H2O,
Zhang et al. 2023; the LOOK-M H2OKVCache_LayerWise accumulation). Then the
tokens with the largest totals are kept, the last `recent` always.

usage: decode_ref.py OUTDIR   -- appends cases to OUTDIR/cases.txt
"""
import os
import sys

import numpy as np


def h2o(K, dq, recent, ratio=None, budget=None):
    """K [L,H,n,d]; dq [S,L,H,G,d]. Returns scores [L,H,n] and kept [L,H,n_keep]."""
    L, H, n, d = K.shape
    acc = np.zeros((L, H, n))
    for s in range(dq.shape[0]):
        for l in range(L):
            for h in range(H):
                logits = dq[s, l, h].astype(np.float64) @ K[l, h].astype(np.float64).T / np.sqrt(d)
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                acc[l, h] += p.sum(axis=0)
    n_keep = min(budget, n) if budget is not None else int(n * (1.0 - ratio))
    kept = np.zeros((L, H, n_keep), dtype=np.int32)
    for l in range(L):
        for h in range(H):
            key = acc[l, h].copy()
            key[n - recent:] = np.inf                       # protected
            order = sorted(range(n), key=lambda t: (-key[t], t))  # ties: lower position
            kept[l, h] = np.sort(order[:n_keep])
    return acc, kept


def main(out):
    lines = []
    for i, (d, G, n, S, recent, ratio) in enumerate([(8, 2, 41, 5, 4, 0.5), (64, 1, 67, 3, 8, 0.25),
                                                      (128, 4, 33, 7, 2, 0.75), (64, 2, 129, 4, 16, 0.5)]):
        rng = np.random.default_rng(1000 + i)
        L, H = 2, 2
        while True:
            K = rng.standard_normal((L, H, n, d)).astype(np.float32)
            V = rng.standard_normal((L, H, n, d)).astype(np.float32)
            dq = (2 * rng.standard_normal((S, L, H, G, d))).astype(np.float32)
            acc, kept = h2o(K, dq, recent, ratio=ratio)
            # reject boundary near-ties among unprotected tokens
            ok = True
            for l in range(L):
                for h in range(H):
                    s = np.sort(acc[l, h, :n - recent])[::-1]
                    k = kept.shape[2] - recent
                    if 0 < k < len(s) and abs(s[k - 1] - s[k]) < 1e-4 * max(abs(s[k - 1]), 1e-30):
                        ok = False
            if ok:
                break
        name = f"h2o__decode{i}_d{d}_g{G}_n{n}_s{S}.npz"
        idx = kept
        np.savez(os.path.join(out, name), K=K, V=V, dq=dq, ratio=np.float64(ratio),
                 **{"param.recent": np.float64(recent), "expect.scores": acc, "expect.kept": idx,
                    "expect.K": np.take_along_axis(K, idx[..., None].astype(np.int64), axis=2),
                    "expect.V": np.take_along_axis(V, idx[..., None].astype(np.int64), axis=2)})
        lines.append(f"h2o {name}\n")
    with open(os.path.join(out, "cases.txt"), "a") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main(sys.argv[1])
