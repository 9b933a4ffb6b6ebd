"""pip install ./python — the kvcc package, with kvcc's C libraries bundled from a build tree.

The package is pure Python (ctypes); it needs kvcc's shared libraries at run time. At install
time this copies them — libkvcc_rt.so and libkvcc.so when present (libkvcc.so alone before the
runtime/compiler split), the `kvcc` command (for `python -m kvcc`) and policies/*.lua — from
$KVCC_BUILD_DIR, else ../build (the build tree beside this folder), into kvcc/_libs/ and
kvcc/policies/ of the installed package. Without a build tree nothing is bundled and the
installed package looks in $KVCC_LIB_DIR and on the system loader path (make install). See
doc/python.md.
"""
import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithLibs(build_py):
    def run(self):
        super().run()
        build = os.environ.get("KVCC_BUILD_DIR") or os.path.join(HERE, "..", "build")
        libs = os.path.join(self.build_lib, "kvcc", "_libs")
        got = []
        for name in ("libkvcc_rt.so", "libkvcc.so", "kvcc"):
            src = os.path.join(build, name)
            if os.path.isfile(src):
                os.makedirs(libs, exist_ok=True)
                shutil.copy2(src, os.path.join(libs, name))
                got.append(name)
        pols = sorted(glob.glob(os.path.join(HERE, "..", "policies", "*.lua")))
        if pols:
            dst = os.path.join(self.build_lib, "kvcc", "policies")
            os.makedirs(dst, exist_ok=True)
            for p in pols:
                shutil.copy2(p, dst)
        print("kvcc setup.py: bundled %s from %s; %d policies"
              % (", ".join(got) or "no libraries", os.path.abspath(build), len(pols)))


setup(cmdclass={"build_py": BuildWithLibs})
