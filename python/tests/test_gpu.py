#!/usr/bin/env python3
"""kvcc.GpuPlan, the binding of kvcc_gpu_plan_* (numpy only), without a GPU where it can.

The policy (policies/duo.lua: one weight, duo_rank [layer, head]) is compiled with its CUDA
kernels for sm_80 (NVRTC; SKIP saying why when NVRTC is absent). Then, each in a child process
because the runtime reads $KVCC_LIBCUDA once per process:

* no driver (KVCC_LIBCUDA=/nonexistent/...): creating the plan raises KvccError EUNSUPPORTED
  with the runtime's "CUDA driver not found" reason;
* the fake driver (build/libfakecuda.so, tests/gpu/fakecuda.c: device memory is host memory,
  launches run nothing and are counted): the image the plan picked; compress before the weight
  is refused naming the weight at its declaration, nothing launched; set_weight's refusals (an
  unknown name, a wrong shape, a wrong ndim, NaN) carry the CPU plan's message word for word and
  copy nothing; a good set_weight is one host-to-device copy; compress then launches kernels and
  check() passes; bad arguments raise ValueError. The kernels themselves are not run here
  (tests/emu does that); what the launches receive is tests/gpu/weights.c's part.

A real GPU is not used by this test (SKIP says so when the machine has no CUDA driver).

    python3 python/tests/test_gpu.py        (KVCC_BUILD_DIR=build)
"""
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np

from harness import BUILD, POLICIES, Suite

import kvcc

L, H, N, D, G = 2, 3, 32, 64, 2


def compiled():
    so = os.path.join(tempfile.mkdtemp(prefix="kvcc-pygpu-"), "duo.so")
    kvcc.compile(os.path.join(POLICIES, "duo.lua"), head_dim=D, group=G, gpu_archs="sm_80", out=so)
    return so


def child(mode, so):
    S = Suite("test_gpu[%s]" % mode)
    pol = kvcc.open(so)
    if mode == "nodrv":
        S.raises("no driver: GpuPlan raises KvccError EUNSUPPORTED with the reason", kvcc.KvccError,
                 r"CUDA driver not found.*nonexistent", kvcc.GpuPlan, pol, layers=L, kv_heads=H, capacity=N)
        return S.done()
    fake = ctypes.CDLL(os.environ["KVCC_LIBCUDA"])
    nlaunch = ctypes.c_int.in_dll(fake, "fake_nlaunch")
    nhtod = ctypes.c_int.in_dll(fake, "fake_nhtod")
    g = kvcc.GpuPlan(pol, layers=L, kv_heads=H, capacity=N, max_obs=4)
    S.check("the plan's image (fake device: compute capability 8.0)", g.image.startswith("cubin sm_80"), g.image)
    # device buffers: the fake driver's device memory is host memory, so numpy arrays serve
    rng = np.random.default_rng(3)
    K = rng.standard_normal((L, H, N, D)).astype(np.float32)
    V = rng.standard_normal((L, H, N, D)).astype(np.float32)
    Q = rng.standard_normal((L, H, G, 4, D)).astype(np.float32)
    lens = np.full((L, H), N, dtype=np.int32)
    pos = np.tile(np.arange(N, dtype=np.int32), (L, H, 1))
    dev = dict(K=K.ctypes.data, V=V.ctypes.data, lengths=lens.ctypes.data, pos=pos.ctypes.data, Q=Q.ctypes.data,
               nobs=4)
    l0 = nlaunch.value
    S.raises("compress before the weight: refused naming it at its declaration", kvcc.KvccError,
             r"duo\.lua:\d+:\d+: error: weight 'duo_rank' was not given", g.compress, ratio=0.5, **dev)
    S.check("nothing launched", nlaunch.value == l0, "%d launches" % (nlaunch.value - l0))
    # refusals: the CPU plan's message, nothing copied
    cpu = kvcc.Plan(pol, kvcc.Cache(K.copy(), V.copy()), max_obs=4)
    good = rng.random((L, H)).astype(np.float32)
    nan = good.copy()
    nan[1, 2] = np.nan
    h0 = nhtod.value
    for what, name, arr in [("an unknown name", "nosuch", good), ("a wrong shape", "duo_rank", good[:, :2]),
                            ("a wrong ndim", "duo_rank", good[None]), ("NaN", "duo_rank", nan)]:
        msgs = []
        for plan in (g, cpu):
            try:
                plan.set_weight(name, arr)
                msgs.append(None)
            except kvcc.KvccError as e:
                msgs.append(str(e))
        S.check("set_weight with %s: KvccError, the CPU plan's message" % what,
                msgs[0] is not None and msgs[0] == msgs[1], " | ".join(map(str, msgs)))
    S.check("the refusals copied nothing to the device", nhtod.value == h0, "%d copies" % (nhtod.value - h0))
    g.set_weight("duo_rank", good)
    S.check("set_weight: one host-to-device copy", nhtod.value == h0 + 1, "%d copies" % (nhtod.value - h0))
    g.compress(ratio=0.5, **dev)
    S.check("compress launches the kernels", nlaunch.value > l0, "%d launches" % (nlaunch.value - l0))
    S.run("check() after the launches (device error word 0)", g.check)
    S.raises("ratio and budget together: ValueError", ValueError, "exactly one", g.compress, ratio=0.5, budget=3,
             **dev)
    S.raises("Q without a valid nobs: ValueError", ValueError, "nobs", g.compress, ratio=0.5,
             **dict(dev, nobs=9))
    S.raises("no K: ValueError", ValueError, "required", g.compress, ratio=0.5, **dict(dev, K=0))
    g.close()
    S.raises("a closed plan: ValueError", ValueError, "closed", g.set_weight, "duo_rank", good)
    return S.done()


def main():
    if len(sys.argv) == 3:
        return child(sys.argv[1], sys.argv[2])
    S = Suite("test_gpu")
    try:
        so = compiled()
    except kvcc.KvccError as e:
        if "NVRTC" in str(e):
            S.skip("GpuPlan (every case)", "the policy's CUDA kernels need NVRTC: %s" % e)
            return S.done()
        raise
    fake = os.path.join(os.path.abspath(BUILD), "libfakecuda.so")
    rc = 0
    modes = [("nodrv", "/nonexistent/libcuda.so.1")]
    if os.path.exists(fake):
        modes.append(("fake", fake))
    else:
        S.skip("GpuPlan on the fake driver", "%s is not built (make check-gpu-api builds it)" % fake)
    for mode, lib in modes:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), mode, so],
                           env=dict(os.environ, KVCC_LIBCUDA=lib))
        S.check("child %s" % mode, r.returncode == 0, "exit %d" % r.returncode)
        rc |= r.returncode
    S.skip("GpuPlan on a real GPU", "not run by this test (no GPU here; doc/gpu.md says how the C tests do)")
    return S.done() or rc


if __name__ == "__main__":
    sys.exit(main())
