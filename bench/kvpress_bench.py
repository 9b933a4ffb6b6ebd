#!/usr/bin/env python3
"""kvpress's SnapKVPress on torch CPU, on the inputs bench.c wrote (raw little-endian f32).

usage: kvpress_bench.py DIR N DTYPE HEADS GROUP DIM WINDOW RATIO THREADS REPS
DIR holds K.f32, V.f32 [H][n][d] and Q.f32 [H][G][W][d] (kvcc's layout). Prints one JSON line:
median/min seconds of press.compress (score + topk + gather) and the kept indices' agreement
with DIR/kept.i32 ([H][n_keep] from kvcc, ascending) when present.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn


def main():
    d, n, dt, H, G, D, W, ratio, th, reps = sys.argv[1], *map(int, sys.argv[2:3]), sys.argv[3], *map(int, sys.argv[4:8]), float(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
    torch.set_num_threads(th)
    from kvpress import SnapKVPress
    import kvpress

    tdt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dt]
    K = torch.from_numpy(np.fromfile(os.path.join(d, "K.f32"), dtype=np.float32).reshape(1, H, n, D)).to(tdt)
    V = torch.from_numpy(np.fromfile(os.path.join(d, "V.f32"), dtype=np.float32).reshape(1, H, n, D)).to(tdt)
    Q = np.fromfile(os.path.join(d, "Q.f32"), dtype=np.float32).reshape(H, G, W, D)
    # query head h*G+g (repeat_kv) → [1, W, H*G*D] as q_proj would return it
    q = torch.from_numpy(Q.reshape(H * G, W, D).transpose(1, 0, 2).reshape(1, W, H * G * D).copy()).to(tdt)

    class Cfg:
        num_attention_heads = H * G
        num_key_value_heads = H

    class QProj(nn.Module):
        def forward(self, x):
            return q

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = Cfg()
            self.head_dim = D
            self.q_proj = QProj()
            self.layer_idx = 0

    module = Attn()
    hidden = torch.zeros(1, n, 1, dtype=tdt)
    cos = torch.ones(1, n, D, dtype=tdt)
    sin = torch.zeros(1, n, D, dtype=tdt)
    kwargs = {"position_embeddings": (cos, sin)}
    press = SnapKVPress(compression_ratio=ratio, window_size=W, kernel_size=5)
    times = []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            keys, values = press.compress(module, hidden, K, V, None, kwargs)
            times.append(time.perf_counter() - t0)
        scores = press.score(module, hidden, K, V, None, kwargs)
        n_keep = keys.shape[2]
        idx = scores.topk(n_keep, dim=-1).indices[0].sort(dim=-1).values.numpy()
    try:
        from importlib.metadata import version
        kver = version("kvpress")
    except Exception:
        kver = getattr(kvpress, "__version__", "?")
    out = {"kvpress": kver, "torch": torch.__version__, "threads": th,
           "median_s": float(np.median(times)), "min_s": float(np.min(times)), "n_keep": int(n_keep)}
    kp = os.path.join(d, "kept.i32")
    if os.path.exists(kp):
        ours = np.fromfile(kp, dtype=np.int32).reshape(H, -1)
        if ours.shape[1] == n_keep:
            agree = sum(len(np.intersect1d(ours[h], idx[h])) for h in range(H)) / (H * n_keep)
            out["kept_agreement"] = float(agree)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
