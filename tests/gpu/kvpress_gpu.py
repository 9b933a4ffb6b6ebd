#!/usr/bin/env python3
"""kvpress's SnapKVPress with torch on the GPU (make bench-gpu), random bf16 inputs.

usage: kvpress_gpu.py N HEADS GROUP DIM WINDOW RATIO REPS
Prints one JSON line: median/min milliseconds of press.compress (CUDA-synchronized), or
{"skipped": why} when torch has no CUDA device or kvpress is missing.
"""
import json
import sys
import time


def main():
    n, H, G, D, W = map(int, sys.argv[1:6])
    ratio, reps = float(sys.argv[6]), int(sys.argv[7])
    try:
        import torch
        from torch import nn
        from kvpress import SnapKVPress
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"skipped": f"import: {e}"}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch.cuda.is_available() is False"}))
        return
    dev, dt = "cuda", torch.bfloat16
    K = torch.rand(1, H, n, D, device=dev, dtype=dt) * 2 - 1
    V = torch.rand(1, H, n, D, device=dev, dtype=dt) * 2 - 1
    q = torch.rand(1, W, H * G * D, device=dev, dtype=dt) * 4 - 2

    class Cfg:
        num_attention_heads = H * G
        num_key_value_heads = H

    class QProj(nn.Module):
        def forward(self, x):
            return q

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.config, self.head_dim, self.layer_idx = Cfg(), D, 0
            self.q_proj = QProj()

    press = SnapKVPress(compression_ratio=ratio, window_size=W, kernel_size=5)  # as bench/kvpress_bench.py
    hidden = torch.zeros(1, n, 1, device=dev, dtype=dt)
    cos = torch.ones(1, n, D, device=dev, dtype=dt)
    sin = torch.zeros(1, n, D, device=dev, dtype=dt)
    times = []
    torch.set_grad_enabled(False)
    for i in range(reps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        press.compress(Attn(), hidden, K, V, None, {"position_embeddings": (cos, sin)})
        torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
