#!/usr/bin/env python3
"""The binding on torch CPU tensors (project venv): float32 and bfloat16 (which numpy lacks)
compressed in place — the same data pointer, the same result as the numpy path on the same
values —, any DLPack producer, decode attention on tensors, and bad tensors raising with a
message."""
import os
import sys

import numpy as np
import torch

from harness import POLICIES, Suite

import kvcc

S = Suite("test_torch")


class OnlyDLPack:
    """An object that exposes its memory through DLPack only (no numpy, no data_ptr)."""

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, *a, **kw):
        return self.t.__dlpack__(*a, **kw)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def same_as_numpy(dtype):
    g = torch.Generator().manual_seed(5)
    L, H, G, n, d, O = 2, 4, 2, 64, 16, 8
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    K = torch.randn(L, H, n, d, generator=g).to(tdt)
    V = torch.randn(L, H, n, d, generator=g).to(tdt)
    Q = torch.randn(L, H, G, O, d, generator=g).to(tdt)
    if dtype == "bf16":
        Kn, Vn, Qn = (x.view(torch.int16).numpy().view(np.uint16).copy() for x in (K, V, Q))
    else:
        Kn, Vn, Qn = (x.numpy().copy() for x in (K, V, Q))
    pol = kvcc.compile(os.path.join(POLICIES, "snapkv.lua"), dtype=dtype, head_dim=d, group=G)
    pk, pv = K.data_ptr(), V.data_ptr()
    ct = pol.compress(K, V, Q, ratio=0.5, window=O)
    cn = pol.compress(Kn, Vn, Qn, ratio=0.5, window=O)
    same = all(np.array_equal(ct.kept(l, h), cn.kept(l, h)) for l in range(L) for h in range(H))
    m = int(np.asarray(ct.lengths).max())
    kt = K[:, :, :m].contiguous().view(torch.int16).numpy() if dtype == "bf16" else K[:, :, :m].numpy()
    kn = Kn[:, :, :m].view(np.int16) if dtype == "bf16" else Kn[:, :, :m]
    S.check("torch %s tensors in place = numpy path" % dtype,
            same and K.data_ptr() == pk and V.data_ptr() == pv and np.array_equal(kt, kn) and
            np.asarray(ct.lengths).tolist() == [[32] * H] * L,
            "kept sets %s, data_ptr unchanged %s" % ("equal" if same else "differ", K.data_ptr() == pk))
    # DLPack-only objects
    K2 = torch.randn(L, H, n, d, generator=g).to(tdt)
    V2 = K2.clone()
    K3, V3 = K2.clone(), V2.clone()
    c2 = pol.compress(OnlyDLPack(K2), OnlyDLPack(V2), OnlyDLPack(Q), ratio=0.5, window=O)
    c3 = pol.compress(K3, V3, Q, ratio=0.5, window=O)
    S.check("DLPack-only objects (%s)" % dtype, torch.equal(K2, K3) and
            all(np.array_equal(c2.kept(l, h), c3.kept(l, h)) for l in range(L) for h in range(H)))


def decode_on_tensors():
    pol = kvcc.compile(os.path.join(POLICIES, "knorm.lua"), dtype="bf16", head_dim=8, group=2)
    K = torch.randn(1, 2, 10, 8).to(torch.bfloat16)
    V = torch.randn(1, 2, 10, 8).to(torch.bfloat16)
    lens = torch.zeros(1, 2, dtype=torch.int32)
    cache = kvcc.Cache(K, V, lengths=lens)
    plan = pol.plan(cache)
    for t in range(5):
        plan.append(cache, 0, torch.randn(2, 8).to(torch.bfloat16), torch.randn(2, 8).to(torch.bfloat16), t)
    q = torch.randn(2, 2, 8)
    out = torch.empty(2, 2, 8)
    plan.decode_layer(cache, 0, q, out)
    k, v = K[0, :, :5].float(), V[0, :, :5].float()
    qr = q.to(torch.bfloat16).float()
    p = torch.softmax(torch.einsum("hgd,htd->hgt", qr, k) / 8 ** 0.5, -1)
    ref = torch.einsum("hgt,htd->hgd", p, v)
    S.check("append + decode_layer on torch tensors", lens.tolist() == [[5, 5]] and
            float((out - ref).abs().max()) < 1e-5, "lengths %s, max |diff| %.2e" % (lens.tolist(),
                                                                                 float((out - ref).abs().max())))


def bad_tensors():
    pol = kvcc.compile(os.path.join(POLICIES, "snapkv.lua"), dtype="f32", head_dim=8, group=2)
    K = torch.randn(1, 2, 32, 8)
    Q = torch.randn(1, 2, 2, 4, 8)
    S.raises("torch float64", TypeError, r"K: element type torch.float64", pol.compress, K.double(), K.double(), Q,
             ratio=0.5, window=4)
    S.raises("torch transposed (head_dim not innermost)", ValueError, r"head_dim axis must be contiguous",
             pol.compress, K.transpose(2, 3).contiguous().transpose(2, 3), K.clone(), Q, ratio=0.5, window=4)
    S.raises("torch Q non-contiguous", ValueError, r"Q: not contiguous", pol.compress, K.clone(), K.clone(),
             Q.transpose(3, 4).contiguous().transpose(3, 4), ratio=0.5, window=4)
    S.raises("torch bf16 K for an f32 policy", ValueError, r"stores bf16 rows", pol.compress,
             K.bfloat16(), K.bfloat16(), Q.bfloat16(), ratio=0.5, window=4)
    S.raises("a meta tensor (not CPU memory)", ValueError, r"a meta tensor", pol.compress,
             torch.empty(1, 2, 32, 8, device="meta"), K, Q, ratio=0.5, window=4)
    S.raises("torch int64 lengths", TypeError, r"lengths: element type torch.int64",
             pol.compress, K.clone(), K.clone(), Q, lengths=torch.full((1, 2), 32), ratio=0.5, window=4)


def main():
    torch.set_num_threads(1)
    os.environ.setdefault("KVCC_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "..", "..", "build", "py-cache"))
    for dt in ("f32", "bf16"):
        S.run("same_as_numpy " + dt, same_as_numpy, dt)
    S.run("decode", decode_on_tensors)
    S.run("bad tensors", bad_tensors)
    return S.done()


if __name__ == "__main__":
    sys.exit(main())
