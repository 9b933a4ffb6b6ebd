#!/usr/bin/env python3
"""python -m kvcc mirrors the kvcc command: same output and exit status (it execs the binary)."""
import os
import subprocess
import sys
import tempfile

from harness import KVCC, POLICIES, ROOT, Suite

S = Suite("test_cli")


def both(args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    a = subprocess.run([sys.executable, "-m", "kvcc"] + args, capture_output=True, text=True, env=env)
    b = subprocess.run([KVCC] + args, capture_output=True, text=True)
    return a, b


def main():
    for args in (["--version"], ["--help"], ["dump", os.path.join(POLICIES, "snapkv.lua")]):
        a, b = both(args)
        S.check("python -m kvcc %s" % " ".join(args[:1]), (a.returncode, a.stdout, a.stderr) ==
                (b.returncode, b.stdout, b.stderr) and a.returncode == 0, "exit %d" % a.returncode)
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.lua")
        with open(bad, "w") as f:
            f.write('local kv = require "kvcc"\nreturn kv.policy "b" { score = function(x) return x.Q + 1 end,\n'
                    '  select = kv.topk {} }\n')
        a, b = both(["check", bad])
        S.check("python -m kvcc check BAD.lua: the same file:line:col error and status",
                a.returncode == b.returncode != 0 and a.stderr == b.stderr and (bad + ":2:") in a.stderr,
                "exit %d: %s" % (a.returncode, a.stderr.strip()))
    return S.done()


if __name__ == "__main__":
    sys.exit(main())
