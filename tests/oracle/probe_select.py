#!/usr/bin/env python3
"""probe_select.py KVCC WORKDIR -- the selection rules where kvcc's interpreter and the oracle
(kvref.select_topk, written from DESIGN.md section 3 and doc/dsl.md) once parted; the golden
cases avoid these inputs, so check-golden runs the probes too.  Prints one line per probe,
"SAME name" or "DIFFER name: interpreter ... oracle ...", and exits 1 if any differs.

  protected_order  budget below the protected set: DESIGN keeps sinks first (lower position
                   first), then the newest recent tokens; the probe gives the recent tokens the
                   best scores, so a score order among protected tokens shows.
  tie_heads        scope model, exact score ties between heads at different positions: doc/dsl.md
                   breaks them towards the lower layer, then the lower head, the lower position.
  nan_heads        scope model, NaN scores (inf - inf keys) on two heads, budget splitting them:
                   NaN ranks last, ties as above.
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden  # noqa: E402
import kvref  # noqa: E402


def run(kvcc, lua, case, work, name):
    path = os.path.join(work, name + ".npz")
    gen_golden.write_npz(path, case)
    out = os.path.join(work, name + ".result.npz")
    subprocess.run([kvcc, "run", lua, "--inputs", path, "--out", out], check=True)
    with np.load(out) as r:
        L, H = case["K"].shape[:2]
        return [[r["kept.%d.%d" % (l, h)].astype(np.int64).tolist() for h in range(H)]
                for l in range(L)]


def case_arrays(K, budget, params):
    a = {"K": K.astype(np.float32), "V": np.zeros_like(K, dtype=np.float32),
         "budget": np.array(budget, dtype=np.int64), "dtype": np.array("f32")}
    for k, v in params.items():
        a["param." + k] = np.array(v, dtype=np.float64)
    return a


def probes():
    rng = np.random.default_rng(7)
    # protected_order: chunk_head (score -|k|), sinks 2, window 5, chunk 1, budget 4 < 7
    n, d = 16, 8
    K = rng.standard_normal((1, 1, n, d)) + 3.0
    K[0, 0, n - 5:] *= 0.01                       # recent tokens: tiny norms, best scores
    yield ("protected_order", "tests/policies/chunk_head", K, 4, {"chunk": 1},
           dict(sinks=2, recent=5, chunk=1, scope="head"))
    # tie_heads: chunk_model (score sum k), scope model, no sinks/window, chunk 1;
    # head 1 = head 0 reversed in token order, head 2 far below; 9 of 3*8 kept -> one tie split
    n = 8
    vals = np.array([8.0, 1.0, 3.0, 5.0, 2.0, 7.0, 4.0, 6.0])   # value 4 (5th best) at t=6
    K = np.zeros((1, 3, n, 1))
    K[0, 0, :, 0] = vals
    K[0, 1, :, 0] = vals[::-1]
    K[0, 2, :, 0] = -100.0 - np.arange(n)
    yield ("tie_heads", "tests/policies/chunk_model", K, 3, {"chunk": 1, "sinks": 0, "window": 0},
           dict(sinks=0, recent=0, chunk=1, scope="model"))
    # nan_heads: heads 0 and 1 all NaN (a key holding +inf and -inf), head 2 finite, budget
    # per head 6 -> 18 kept: head 2's 8, then 10 of the 16 NaN tokens
    K = np.zeros((1, 3, n, 2))
    K[0, 0:2, :, 0], K[0, 0:2, :, 1] = np.inf, -np.inf
    K[0, 2, :, 0] = np.arange(n)
    yield ("nan_heads", "tests/policies/chunk_model", K, 6, {"chunk": 1, "sinks": 0, "window": 0},
           dict(sinks=0, recent=0, chunk=1, scope="model"))


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: probe_select.py KVCC WORKDIR\n")
        return 2
    kvcc, work = argv[1], argv[2]
    os.makedirs(work, exist_ok=True)
    bad = 0
    for name, lua, K, budget, params, sel in probes():
        got = run(kvcc, lua + ".lua", case_arrays(K, budget, params), work, name)
        L, H, n, _ = K.shape
        with np.errstate(invalid="ignore"):
            scores = kvref._topk_scores("ksum" if "model" in lua else "neg_knorm", K, None, None, None)
        exp = kvref.select_topk(scores, [budget] * L, **sel)
        exp = [[exp[l][h].tolist() for h in range(H)] for l in range(L)]
        if got == exp:
            print("SAME %s" % name)
        else:
            print("DIFFER %s: interpreter %s oracle %s" % (name, got, exp))
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
