"""A few lines of test harness shared by python/tests/*.py: PASS/FAIL lines, a summary, the
exit status; SKIP with a reason, never a silent pass."""
import os
import sys
import time
import traceback

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
DATA = os.environ.get("KVCC_DATA") or os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
BUILD = os.environ.get("KVCC_BUILD_DIR") or os.path.join(ROOT, "build")
KVCC = os.path.join(BUILD, "kvcc")
POLICIES = os.path.join(ROOT, "policies")


class Suite:
    def __init__(self, name):
        self.name, self.passed, self.failed, self.skipped, self.t0 = name, 0, 0, 0, time.time()

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)
        return ok

    def skip(self, name, why):
        self.skipped += 1
        print("SKIP %s: %s" % (name, why), flush=True)

    def run(self, name, fn, *a, **kw):
        """Runs fn; an exception is a FAIL with its traceback's last line."""
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.check(name, False, "%s: %s" % (type(e).__name__, e))
            return None

    def raises(self, name, exc, pattern, fn, *a, **kw):
        """PASS when fn raises exc with `pattern` (a regex) in its message."""
        import re
        try:
            fn(*a, **kw)
        except exc as e:
            return self.check(name, re.search(pattern, str(e)) is not None, "%s: %s" % (type(e).__name__, e))
        except Exception as e:  # noqa: BLE001
            return self.check(name, False, "raised %s: %s, expected %s" % (type(e).__name__, e, exc.__name__))
        return self.check(name, False, "did not raise %s" % exc.__name__)

    def done(self):
        print("%s: %d passed, %d failed, %d skipped (%.1f s)" % (self.name, self.passed, self.failed,
                                                                self.skipped, time.time() - self.t0), flush=True)
        return 1 if self.failed else 0
