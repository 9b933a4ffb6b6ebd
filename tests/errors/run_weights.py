#!/usr/bin/env python3
"""run_weights.py KVCC WORKDIR -- diagnostics of `kvcc run` with policy weights and the
selection rules' run-time checks (issue 13): each case is a policy, a case file (weights as
weight.NAME, or a --weights file) and the exact one-line message kvcc must print with exit
status 1; then the good case must pass.  A wrong shape, a missing weight, a non-finite value,
two out sizes, a bad weights file, mass over negative scores, a NaN / ±inf keep count (tests/lib/api_misuse.c
checks the compiled path's words are the same), the prefix
schedule over negative scores, a bad segment size."""

import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import gen_golden as G  # noqa: E402

L, H, GG, n, d = 2, 2, 2, 20, 8


def base():
    rng = np.random.default_rng(0)
    return {"K": rng.standard_normal((L, H, n, d)).astype(np.float32),
            "V": rng.standard_normal((L, H, n, d)).astype(np.float32),
            "Q": rng.standard_normal((L, H, GG, 4, d)).astype(np.float32), "ratio": np.array(0.5)}


def gate(**kw):
    a = base()
    a["weight.gate_w"] = np.full((L, H, d), 0.1)
    a["weight.gate_b"] = np.zeros((L, H))
    a["weight.gate_u"] = np.ones((L, H))
    a.update(kw)
    return a


def without(a, key):
    a = dict(a)
    del a[key]
    return a


W = "policies/gated_window.lua"
GW = "policies/gated_window.lua:11:"
CASES = [
    ("good", W, gate(), [], None),
    ("missing", W, without(gate(), "weight.gate_u"), [],
     GW + "1: error: weight 'gate_u' is missing (the policy declares it; give it by name, e.g. kvcc run --weights FILE.npz)"),
    ("shape", W, gate(**{"weight.gate_w": np.zeros((L, H, d + 1))}), [],
     GW + "24: error: weight 'gate_w' has shape (2, 2, 9), the policy declares (layer 2, head 2, chan 8)"),
    ("ndim", W, gate(**{"weight.gate_b": np.zeros((L,))}), [],
     GW + "62: error: weight 'gate_b' has shape (2), the policy declares (layer 2, head 2)"),
    ("nan", W, gate(**{"weight.gate_u": np.array([[1.0, np.nan], [1.0, 1.0]])}), [],
     GW + "1: error: weight 'gate_u' holds nan at flat index 1 (weights must be finite)"),
    ("inf", W, gate(**{"weight.gate_b": np.array([[0, 0], [np.inf, 0]])}), [],
     GW + "62: error: weight 'gate_b' holds inf at flat index 2 (weights must be finite)"),
    ("string", W, gate(**{"weight.gate_b": np.array("x")}), [],
     "CASE: error: weight 'gate_b' must be a numeric array"),
    ("twice", W, gate(), ["--weights", "WFILE"], "CASE: error: weight 'gate_w' given twice"),
    ("nofile", W, gate(), ["--weights", "/nonexistent/w.npz"], None),
    ("outsizes", "tests/errors/policies/two_out.lua",
     dict(base(), **{"weight.a": np.zeros((L, 3)), "weight.b": np.zeros((4, H))}), [],
     "tests/errors/policies/two_out.lua:3:48: error: weight 'b' has shape (4, 2), the policy declares (out 3, head 2)"),
    ("mass_negative", "tests/errors/policies/mass_neg.lua", base(), [],
     "tests/errors/policies/mass_neg.lua:3:19: error: select: mass needs scores >= 0, (layer 0, head 0) has -1 at token 1"),
    ("keep_nan", "tests/errors/policies/keep_nan.lua", base(), [],
     "tests/errors/policies/keep_nan.lua:4:15: error: select: the keep count of (layer 0, head 0) is nan"),
    ("keep_inf", "tests/errors/policies/keep_inf.lua", base(), [],
     "tests/errors/policies/keep_inf.lua:5:15: error: select: the keep count of (layer 0, head 1) is inf"),
    ("keep_neginf", "tests/errors/policies/keep_inf.lua", base(), ["--param", "s=-1"],
     "tests/errors/policies/keep_inf.lua:5:15: error: select: the keep count of (layer 0, head 1) is -inf"),
    ("prefix_negative", "tests/errors/policies/prefix_neg.lua", base(), [],
     "tests/errors/policies/prefix_neg.lua:3:82: error: select: the prefix schedule needs finite scores >= 0, (layer 0, head 0) has -1 at token 1"),
    ("prefix_iters", "tests/errors/policies/prefix_iters_param.lua", base(), ["--param", "it=1e30"],
     "tests/errors/policies/prefix_iters_param.lua:4:83: error: select: the prefix schedule needs a tol in 0..1e9 and iters an integer in 0..1e4 (got 5, 1e+30)"),
    ("prefix_tol", "tests/errors/policies/prefix_iters_param.lua", base(), ["--param", "tol=nan"],
     "tests/errors/policies/prefix_iters_param.lua:4:83: error: select: the prefix schedule needs a tol in 0..1e9 and iters an integer in 0..1e4 (got nan, 200)"),
    ("prefix_tol_negative", "tests/errors/policies/prefix_tol.lua", base(), ["--param", "tol=-1"],
     "tests/errors/policies/prefix_tol.lua:4:81: error: select: the prefix schedule needs a tol in 0..1e9 and iters an integer in 0..1e4 (got -1, 200)"),
    ("dynamic_rmax_negative", "tests/errors/policies/dynamic_rmax.lua", base(), ["--param", "rmax=-1"],
     "tests/errors/policies/dynamic_rmax.lua:5:83: error: select: the dynamic schedule needs a ratio_max >= 0 and every >= 1 (got -1, 4)"),
    ("prefix_params_ok", "tests/errors/policies/prefix_iters_param.lua", base(), ["--param", "it=3"], None),
    ("segment", "tests/errors/policies/seg_param.lua", base(), ["--param", "c=2.5"],
     "tests/errors/policies/seg_param.lua:4:63: error: the segment size must be an integer in 1..inf, got 2.5"),
]


def main(argv):
    kvcc, work = argv[1], argv[2]
    os.makedirs(work, exist_ok=True)
    wfile = os.path.join(work, "w.npz")
    G.write_npz(wfile, {"gate_w": np.zeros((L, H, d))})
    ok = bad = 0
    for name, pol, arrays, extra, want in CASES:
        case = os.path.join(work, name + ".npz")
        G.write_npz(case, arrays)
        extra = [wfile if x == "WFILE" else x for x in extra]
        p = subprocess.run([kvcc, "run", pol, "--inputs", case, "--out", os.path.join(work, name + ".out.npz")]
                           + extra, capture_output=True, text=True, timeout=60)
        err = p.stderr.strip().replace(case, "CASE")
        if want is None and name == "nofile":
            good = p.returncode == 1 and len(err.splitlines()) == 1 and "/nonexistent/w.npz" in err
        elif want is None:
            good = p.returncode == 0 and not err
        else:
            good = p.returncode == 1 and err == want
        if good:
            ok += 1
        else:
            bad += 1
            print("FAIL %s: status %d\n  want: %s\n  got:  %s" % (name, p.returncode, want, err))
    print("weights and selection diagnostics: %d passed, %d failed" % (ok, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
