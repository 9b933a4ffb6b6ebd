#!/usr/bin/env python3
"""The LOOK-M-style nearest-kept merge the PyTorch way, on the inputs bench.c wrote (raw
little-endian f32), for `make bench`'s merge comparison.

usage: merge_torch.py DIR N DTYPE HEADS DIM THREADS REPS [--out]

DIR holds K.f32, V.f32 [H][n][d] (kvcc's layout, values already rounded to DTYPE) and
kept.i32 [H][n_keep] (the kept indices kvcc's selection chose, ascending). Per head, as
LOOK-M's modify_llama.py and kvpress's MergingPress do it: normalize the keys, the
[evicted x kept] cosine matrix as one matmul (materialized: |E| x |S| floats per head),
argmax over the kept tokens, scatter_reduce(mean, include_self) of the evicted keys and
values into their targets, then the kept rows gathered (compaction). One head at a time,
so the matrix is 1 GiB at n = 32768 in f32 (all heads at once, as MergingPress batches them,
would be 8 GiB). Prints one JSON line: median / min seconds of the whole merge (similarity,
argmax, scatter, gather) over REPS runs, and the median CPU seconds (process time, all threads). With --out, writes Kout.f32, Vout.f32 [H][n_keep][d]
(f32) into DIR so that bench.c can compare the rows with kvcc's.
"""
import json
import os
import sys
import time

import numpy as np
import torch


def merge_head(K, V, kept, evicted):
    """K, V [n, d] (dtype of the cache); kept, evicted: index tensors. Returns the merged
    kept rows (K', V') [n_keep, d] in the cache's dtype."""
    Kf = K.float()
    Kn = Kf / Kf.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    sim = Kn[evicted] @ Kn[kept].T                        # [E, S]
    tgt = sim.argmax(dim=-1)                              # first maximum: lower position
    Kk, Vk = K[kept].float(), V[kept].float()
    idx = tgt[:, None].expand(-1, K.shape[1])
    Kk = Kk.scatter_reduce(0, idx, K[evicted].float(), reduce="mean", include_self=True)
    Vk = Vk.scatter_reduce(0, idx, V[evicted].float(), reduce="mean", include_self=True)
    return Kk.to(K.dtype), Vk.to(V.dtype)


def main():
    d, n, dt, H, D, th, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    write = "--out" in sys.argv[8:]
    torch.set_num_threads(th)
    tdt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dt]
    K = torch.from_numpy(np.fromfile(os.path.join(d, "K.f32"), dtype=np.float32).reshape(H, n, D)).to(tdt)
    V = torch.from_numpy(np.fromfile(os.path.join(d, "V.f32"), dtype=np.float32).reshape(H, n, D)).to(tdt)
    kept = torch.from_numpy(np.fromfile(os.path.join(d, "kept.i32"), dtype=np.int32).reshape(H, -1).astype(np.int64))
    evicted = []
    for h in range(H):
        mask = torch.ones(n, dtype=torch.bool)
        mask[kept[h]] = False
        evicted.append(torch.nonzero(mask).squeeze(1))
    times, cpu, out = [], [], None
    with torch.no_grad():
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            out = [merge_head(K[h], V[h], kept[h], evicted[h]) for h in range(H)]
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    if write:
        np.stack([o[0].float().numpy() for o in out]).astype(np.float32).tofile(os.path.join(d, "Kout.f32"))
        np.stack([o[1].float().numpy() for o in out]).astype(np.float32).tofile(os.path.join(d, "Vout.f32"))
    times.sort()
    cpu.sort()
    print(json.dumps({"median": times[len(times) // 2], "min": times[0], "cpu_median": cpu[len(cpu) // 2],
                      "threads": th,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
