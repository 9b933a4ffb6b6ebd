"""python -m kvcc ARGS… — the kvcc command line, exactly (``kvcc --help``).

It execs the ``kvcc`` binary of the libraries in use ($KVCC_BIN, else the one bundled by
``pip install ./python`` or the build tree's, else ``kvcc`` on PATH): same arguments, output
and exit status. The binary, not a Python re-implementation, so that the two can never differ.
"""
import os
import sys

from ._lib import kvcc_binary


def main() -> int:
    exe = kvcc_binary()
    if not exe:
        sys.stderr.write("python -m kvcc: no kvcc command found (set KVCC_BIN, install kvcc, or "
                         "pip install ./python from a built tree)\n")
        return 127
    os.execv(exe, [exe] + sys.argv[1:])
    return 127


if __name__ == "__main__":
    sys.exit(main())
