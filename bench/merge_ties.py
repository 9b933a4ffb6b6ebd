#!/usr/bin/env python3
"""Why kvcc's and torch's merged keys differ (issue 12, the bench's bf16 n = 32768 point): an
arg-max tie or a bug. Reads a folder the merge bench kept (KVCC_BENCH_KEEP=1 kvcc-bench --merge
...: K.f32, V.f32 [H][n][d], kept.i32, torch's Kout.f32 / Vout.f32 and kvcc's Kkvcc.f32 /
Vkvcc.f32 [H][n_keep][d]).

usage: merge_ties.py DIR N DTYPE HEADS DIM [HEAD]   (HEAD: that head only)

Per head, independently of both implementations' code:
  - the cosine of every evicted x kept pair in float64 (exact inputs: the rows are DTYPE values),
    each evicted row's best and second best kept token (ties -> the lower index) and their gap;
  - torch's own targets: sim.argmax of the f32 matrix, computed as bench/merge_torch.py does;
  - the merge (mean with the target, in the order of the evicted positions) recomputed in float64
    from a target list and rounded to DTYPE, compared with kvcc's and torch's merged rows: a kept
    row that differs by more than TOL (relative, as the bench measures) has a different member set.
Prints, per head and in all, the rows whose float64 and torch f32 targets differ with their gaps,
the exact ties in float64 and in torch's f32, and which target list reproduces each output.
"""
import sys

import numpy as np
import torch

TOL = 2e-2     # a member more or less moves a merged row by ~|k_e - k_j| / (c + 1): O(0.1) here


def rnd(x, dt):
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t.to({"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dt]).float().numpy()


def merged(K, kept, ev, tgt, dt):
    """the mean merge from the target list, float64, rounded to dt"""
    acc = K[kept].astype(np.float64).copy()
    cnt = np.ones(len(kept))
    np.add.at(acc, tgt, K[ev].astype(np.float64))
    np.add.at(cnt, tgt, 1)
    return rnd(acc / cnt[:, None], dt)


def bad_rows(X, R):
    return np.nonzero((np.abs(X - R) / np.maximum(1, np.abs(R))).max(axis=1) > TOL)[0]


def main():
    d, n, dt, H, D = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    K = np.fromfile(f"{d}/K.f32", dtype=np.float32).reshape(H, n, D)
    kept_all = np.fromfile(f"{d}/kept.i32", dtype=np.int32).reshape(H, -1)
    m = kept_all.shape[1]
    Kt = np.fromfile(f"{d}/Kout.f32", dtype=np.float32).reshape(H, m, D)
    Kk = np.fromfile(f"{d}/Kkvcc.f32", dtype=np.float32).reshape(H, m, D)
    V = np.fromfile(f"{d}/V.f32", dtype=np.float32).reshape(H, n, D)
    Vk = np.fromfile(f"{d}/Vkvcc.f32", dtype=np.float32).reshape(H, m, D)
    tot = dict(rows=0, flip=0, tie64=0, tie32=0, near=0, kvcc_bad=0, kvcc_bad_t=0, torch_bad=0, torch_bad_t=0)
    worst = (0.0, None)
    for h in ([int(sys.argv[6])] if len(sys.argv) > 6 else range(H)):
        kept = kept_all[h].astype(np.int64)
        mask = np.ones(n, bool)
        mask[kept] = False
        ev = np.nonzero(mask)[0]
        # torch's targets, exactly as bench/merge_torch.py computes them
        Kf = torch.from_numpy(K[h])
        Kn = Kf / Kf.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        with torch.no_grad():
            sim = Kn[torch.from_numpy(ev)] @ Kn[torch.from_numpy(kept)].T
            t32 = sim.argmax(dim=-1).numpy()
            top2 = sim.topk(2, dim=-1).values.numpy()
        del sim
        # float64: best, second best, gap (chunks of 1024 evicted rows)
        K64 = K[h].astype(np.float64)
        K64 /= np.linalg.norm(K64, axis=1, keepdims=True)
        S64, E64 = K64[kept], K64[ev]
        t64 = np.empty(len(ev), np.int64)
        s64 = np.empty(len(ev), np.int64)
        gap = np.empty(len(ev))
        tie64 = 0
        for i0 in range(0, len(ev), 1024):
            c = E64[i0:i0 + 1024] @ S64.T
            b = c.argmax(axis=1)
            bv = c[np.arange(len(b)), b]
            t64[i0:i0 + 1024] = b
            c[np.arange(len(b)), b] = -np.inf
            s64[i0:i0 + 1024] = c.argmax(axis=1)
            gap[i0:i0 + 1024] = bv - c.max(axis=1)
            tie64 += int((gap[i0:i0 + 1024] == 0).sum())
        flip = np.nonzero(t64 != t32)[0]
        tie32 = int((top2[:, 0] == top2[:, 1]).sum())
        near = int((gap < 1e-6).sum())
        R64, R32 = merged(K[h], kept, ev, t64, dt), merged(K[h], kept, ev, t32, dt)
        kb, kbt, tb, tbt = bad_rows(Kk[h], R64), bad_rows(Kk[h], R32), bad_rows(Kt[h], R64), bad_rows(Kt[h], R32)
        diff = (np.abs(Kk[h] - Kt[h]) / np.maximum(1, np.abs(Kt[h]))).max(axis=1)
        j = int(diff.argmax())
        if diff[j] > worst[0]:
            worst = (float(diff[j]), (h, j))
        print(f"head {h}: {len(ev)} evicted rows; float64 targets != torch f32 targets: {len(flip)} rows "
              f"{[(int(i), int(t64[i]), int(t32[i]), float(gap[i]), float(top2[i, 0] - top2[i, 1])) for i in flip]} "
              "(row, float64 target, torch target, float64 gap, torch f32 gap); "
              f"exact ties: float64 {tie64}, torch f32 {tie32}; float64 gap < 1e-6: {near}; "
              f"kept rows off the float64-target merge: kvcc {list(map(int, kb))}, torch {list(map(int, tb))}; "
              f"off the torch-target merge: kvcc {list(map(int, kbt))}, torch {list(map(int, tbt))}; "
              f"largest kvcc vs torch difference {diff[j]:.3g} at kept row {j}")
        if len(kb):
            # ties broken identically: the evicted rows whose two best kept tokens (float64) are both
            # among kvcc's differing rows, given their second best instead; kvcc's rows then match?
            bad = set(map(int, kb))
            for i in np.nonzero(np.isin(t64, kb) & np.isin(s64, kb))[0]:
                t2 = t64.copy()
                t2[i] = s64[i]
                e, a, c = K[h][ev[i]].astype(np.float64), K[h][kept[t64[i]]], K[h][kept[s64[i]]]
                f32 = [float(np.float32(np.dot(e.astype(np.float32), x.astype(np.float32))) /
                             (np.float32(np.linalg.norm(e.astype(np.float32))) * np.float32(np.linalg.norm(x))))
                       for x in (a, c)]
                c64 = [float(np.dot(e, x) / (np.linalg.norm(e) * np.linalg.norm(x))) for x in (a, c)]
                print(f"  evicted row {i} (position {ev[i]}): float64 cosine to kept {t64[i]} {c64[0]!r}, "
                      f"to kept {s64[i]} {c64[1]!r} (gap {gap[i]:.3g}; one f32 evaluation {f32[0]!r} vs "
                      f"{f32[1]!r}); with its target {s64[i]} instead, kvcc's rows off the merge: "
                      f"{list(map(int, bad_rows(Kk[h], merged(K[h], kept, ev, t2, dt))))}, "
                      f"V: {list(map(int, bad_rows(Vk[h], merged(V[h], kept, ev, t2, dt))))}")
        for k, v in (("rows", len(ev)), ("flip", len(flip)), ("tie64", tie64), ("tie32", tie32), ("near", near),
                     ("kvcc_bad", len(kb)), ("kvcc_bad_t", len(kbt)), ("torch_bad", len(tb)), ("torch_bad_t", len(tbt))):
            tot[k] += v
    print(f"all heads: {tot}; largest kvcc vs torch difference {worst[0]:.3g} at (head, kept row) {worst[1]}")


if __name__ == "__main__":
    main()
