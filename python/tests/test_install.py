#!/usr/bin/env python3
"""`pip install ./python` into the project venv, then, with the installed package (not the
source tree): where it found kvcc's libraries (bundled from the build tree into kvcc/_libs),
the shipped policies by name, and the README's example — a policy inside kvpress — run as
written from the repository root (its output, and doc/python.md showing the same)."""
import os
import re
import subprocess
import sys

from harness import BUILD, ROOT, Suite

S = Suite("test_install")


def run(code_or_args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KVCC_LIB_DIR", "KVCC_BUILD_DIR")}
    args = [sys.executable] + (["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args)
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, **kw)


def main():
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--force-reinstall", os.path.join(ROOT, "python")], capture_output=True, text=True,
                       env=dict(os.environ, KVCC_BUILD_DIR=BUILD))
    if not S.check("pip install ./python", r.returncode == 0, (r.stdout + r.stderr).strip()[-400:]):
        return S.done()
    r = run("import kvcc, os; l = kvcc._lib.libs(); print(kvcc.__file__); print(l.rt_path); "
            "print(kvcc.find_policy('snapkv')); print(kvcc.version())")
    out = r.stdout.split("\n")
    S.check("the installed package uses its bundled libraries", r.returncode == 0 and "site-packages" in out[0] and
            os.path.join("kvcc", "_libs", "libkvcc") in out[1] and "site-packages" in out[2],
            (r.stdout + r.stderr).strip()[-300:])
    readme = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(r"```python\n(.*?)```", readme, re.S)
    if not S.check("README has a python example", m is not None):
        return S.done()
    code = m.group(1)
    r = run(code, timeout=300)
    S.check("README example (%d lines) with the installed package" % code.count("\n"),
            r.returncode == 0 and re.search(r"32 tokens -> 16 rows per head", r.stdout) is not None,
            (r.stdout + r.stderr).strip()[-300:])
    doc = open(os.path.join(ROOT, "doc", "python.md")).read()
    S.check("doc/python.md shows the same example and its output", "```python\n" + code + "```" in doc and
            "`32 tokens -> 16 rows per head`" in doc)
    return S.done()


if __name__ == "__main__":
    sys.exit(main())
