#!/usr/bin/env python3
"""Where `kvcc run --out OUT.npz` writes (issue 10's file items, for the .npz writer of tools/npz.c):
a regular file is replaced whole (through a new temporary file and a rename); a path that is
not a regular file (a device, here through a symlink to /dev/null) is written into, never
replaced; a path so long that a fixed buffer would cut its temporary name never touches the file
that the cut name names; a directory, a FIFO without a reader and a missing directory are one
error line, at once.
usage: run_output.py KVCC GOLDEN_DIR"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

kvcc, gold = os.path.abspath(sys.argv[1]), sys.argv[2]
case = os.path.join(gold, "snapkv__d8_g1_n37_w8_r25.npz")
passed = failed = 0


def run(out, cwd=None):
    p = subprocess.run([kvcc, "run", os.path.abspath("policies/snapkv.lua"), "--inputs", os.path.abspath(case),
                        "--out", out], capture_output=True, timeout=30, cwd=cwd)
    return p.returncode, p.stderr.decode(errors="replace").strip().splitlines()


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL %s %s" % (what, detail))


tmp = tempfile.mkdtemp(prefix="kvcc-out.")
try:
    # a regular file: replaced by the result, nothing left behind
    out = os.path.join(tmp, "out.npz")
    open(out, "w").write("old")
    rc, err = run(out)
    check("regular file", rc == 0 and not err and "scores" in np.load(out).files, (rc, err))
    check("no temporary left", os.listdir(tmp) == ["out.npz"], os.listdir(tmp))
    # a symlink to a device: written through, the link (and the device) stay
    link = os.path.join(tmp, "null.npz")
    os.symlink("/dev/null", link)
    rc, err = run(link)
    check("device through a symlink", rc == 0 and not err and os.path.islink(link) and
          os.readlink(link) == "/dev/null", (rc, err, os.path.islink(link)))
    # a path of 4091 characters ("./" repeated, then o.npz): "%s.tmp%ld" in a 4096-byte
    # buffer became "o.npz.tmp", an existing file that was overwritten, then renamed away
    victim = os.path.join(tmp, "o.npz.tmp")
    open(victim, "w").write("precious")
    rc, err = run("./" * 2043 + "o.npz", cwd=tmp)
    check("long path", os.path.exists(victim) and open(victim).read() == "precious", (rc, err))
    # errors: one line, status 1, at once
    os.mkdir(os.path.join(tmp, "dir.npz"))
    os.mkfifo(os.path.join(tmp, "fifo.npz"))
    for name in ("dir.npz", "fifo.npz", "nodir/x.npz"):
        rc, err = run(os.path.join(tmp, name))
        check(name, rc == 1 and len(err) == 1 and "error: cannot write" in err[0], (rc, err))
finally:
    shutil.rmtree(tmp)
print("kvcc run --out: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
