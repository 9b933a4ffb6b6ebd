#!/usr/bin/env python3
"""Case files that `kvcc run` must refuse: a golden case (tests/oracle/gen_golden.py) with one
array changed.  Each run must exit with status 1 and print one line holding the expected text --
never fall back to a default (a budget of 1e30 or NaN silently became the ratio), never run on
the wrong observation queries, never report a misleading cause.
usage: run_cases.py KVCC GOLDEN_DIR"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import gen_golden  # noqa: E402

kvcc, gold = sys.argv[1:3]


def case(name):
    z = np.load(os.path.join(gold, name))
    return {k: z[k] for k in z.files if not k.startswith("expect.")}


snap = "snapkv__d8_g1_n37_w8_r25.npz"
tova = "tova__d8_g1_n37_r25.npz"


def edit(base, **kw):
    a = case(base)
    for k, v in kw.items():
        if v is None:
            a.pop(k, None)
        else:
            a[k] = v
    return a


dq = np.zeros((2,) + case(snap)["Q"].shape[:3] + (case(snap)["Q"].shape[4],), dtype=np.float32)
CASES = [
    ("budget 1e30", "snapkv", edit(snap, ratio=None, budget=np.array(1e30)), "'budget' must be a 0-d integer"),
    ("budget NaN", "snapkv", edit(snap, ratio=None, budget=np.array(np.nan)), "'budget' must be a 0-d integer"),
    ("budget -3", "snapkv", edit(snap, ratio=None, budget=np.array(-3)), "'budget' must be a 0-d integer"),
    ("budget 2.5", "snapkv", edit(snap, ratio=None, budget=np.array(2.5)), "'budget' must be a 0-d integer"),
    ("budget array", "snapkv", edit(snap, ratio=None, budget=np.array([4, 5])), "got an array"),
    ("ratio NaN", "snapkv", edit(snap, ratio=np.array(np.nan)), "'ratio' must be a 0-d number in [0, 1)"),
    ("ratio 1", "snapkv", edit(snap, ratio=np.array(1.0)), "'ratio' must be a 0-d number in [0, 1)"),
    ("dq with a prefill policy", "snapkv", edit(snap, dq=dq), "policy 'snapkv' is a prefill policy"),
    ("Q fewer rows than obs", "tova", edit(tova, **{"param.window": np.array(4.0)}),
     "policy 'tova' reads 4 observation queries (its obs), but Q has fewer rows (1)"),
    ("no Q", "snapkv", edit(snap, Q=None, qpos=None), "but the case has no Q"),
]
passed = failed = 0
path = os.path.join(gold, "bad_case.npz")
for what, policy, arrays, want in CASES:
    gen_golden.write_npz(path, arrays)
    p = subprocess.run([kvcc, "run", "policies/%s.lua" % policy, "--inputs", path],
                       capture_output=True, timeout=60)
    err = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode == 1 and len(err) == 1 and want in err[0] and not p.stdout:
        passed += 1
    else:
        print("FAIL %s: status %d, stderr %r (want %r)" % (what, p.returncode, err[:3], want))
        failed += 1
print("kvcc run refusals: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
