#!/usr/bin/env python3
"""Malformed inputs to `kvcc run`: truncations and byte flips of a valid case
file. Each run must end with status 0 (the damage hit only data) or 1 with
exactly one error line — never a crash, a hang or a multi-line dump.
usage: npz_fuzz.py KVCC POLICY CASE.npz WORKDIR"""
import os
import random
import subprocess
import sys

kvcc, policy, case, work = sys.argv[1:5]
data = open(case, "rb").read()
rng = random.Random(7)
variants = [("truncated@%d" % k, data[:k]) for k in sorted({0, 1, 4, 22, 30, 100, len(data) // 2, len(data) - 23, len(data) - 1})]
for i in range(120):
    b = bytearray(data)
    for _ in range(rng.choice([1, 2, 8])):
        # most damage near headers and the directory, where parsing happens
        pos = rng.choice([rng.randrange(0, 200), rng.randrange(len(b) - 400, len(b)), rng.randrange(len(b))])
        b[pos] = rng.randrange(256)
    variants.append(("flip%d" % i, bytes(b)))
variants.append(("garbage", bytes(rng.randrange(256) for _ in range(5000))))
passed = failed = 0
path = os.path.join(work, "fuzz.npz")
for name, blob in variants:
    open(path, "wb").write(blob)
    try:
        p = subprocess.run([kvcc, "run", policy, "--inputs", path], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        print("FAIL %s: hang" % name)
        failed += 1
        continue
    err = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode == 0 or (p.returncode == 1 and len(err) == 1 and "error:" in err[0]):
        passed += 1
    else:
        print("FAIL %s: status %d, stderr %r" % (name, p.returncode, err[:3]))
        failed += 1
print("npz robustness: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
