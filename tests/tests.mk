# tests/: the tiers of `make check`, one folder and one target each (tests/README.md).
# Each tests/<tier>/<tier>.mk defines its target; this list runs them, cheap tiers first.
# Fragments elsewhere add more to CHECK_MORE (check-kirdoc, check-example, check-llama,
# check-python), to CHECK_LAST (check-python-torch, started after all others: it waits for the venv
# whose install CHECK_START began in the background) and, for `make check-full` only, to
# CHECK_FULL (check-python-full, which replaces the CHECK_FULL_OMIT tiers it includes).
# check-san (the top Makefile) reruns the fast tiers under ASan + UBSan in build-asan/.

CHECK_TIERS = check-unit check-ir check-golden check-errors check-diff check-paged check-cache check-lib check-gpu-api \
              check-ptx check-emu check-e2e check-fuzz check-oom check-san
