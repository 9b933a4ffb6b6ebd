#!/bin/sh
# python/check.sh MODE B PYTHON VENV DATA — the Python tiers (see python/python.mk).
#   MODE fast (`make check-python`, part of `make check`): the numpy half only —
#      the binding vs the interpreter and `python -m kvcc`, with PYTHON (numpy, nothing else) —
#      then one SKIP line naming the command that runs the other half;
#   MODE full (`make check-python-full`, part of `make check-full`): the numpy half, then
#      python/setup-venv VENV (torch, transformers, kvpress; a SKIP that says why when it cannot
#      be made), then in VENV: torch tensors, the Hugging Face model, KvccPress vs kvpress and vs
#      kvcc eval over all 70 stories, pip install ./python and the README example.
set -e
MODE=$1 B=$2 PY=$3 VENV=$4 DATA=$5
[ -n "$PY" ] || { echo "check-python: FAILED: no python3 with numpy (scripts/install-deps installs python3-numpy)"; exit 1; }
export KVCC_BUILD_DIR=$(cd "$B" && pwd) KVCC_DATA=$DATA KVCC_CACHE_DIR=$(cd "$B" && pwd)/py-cache
export KVCC_TORCH_THREADS=${KVCC_TORCH_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fail=0 skipped=
"$PY" python/tests/test_binding.py || fail=1
"$PY" python/tests/test_cli.py || fail=1
if [ "$MODE" = fast ]; then
	echo "SKIP check-python torch/transformers/kvpress half (torch tensors, the Hugging Face model, KvccPress vs kvpress and kvcc eval, pip install): run make check-python-full (part of make check-full; makes $VENV, ~6 GB, the first time)"
	[ $fail = 0 ] && echo "check-python: passed (numpy half)" || { echo "check-python: FAILED"; exit 1; }
	exit 0
fi
if PYTHON=$PY python/setup-venv "$VENV" >"$B/py-venv.log" 2>&1; then
	tail -1 "$B/py-venv.log"
	for t in test_torch test_model test_press test_install; do
		PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error KVCC_PY_FULL=1 "$VENV/bin/python" python/tests/$t.py || fail=1
	done
else
	echo "SKIP check-python-full torch/transformers/kvpress tests: python/setup-venv could not make $VENV:"
	sed 's/^/  /' "$B/py-venv.log" | tail -5
	skipped=" (numpy half only: the torch half was SKIPPED, see above)"
fi
[ $fail = 0 ] && echo "check-python-full: passed$skipped" || { echo "check-python-full: FAILED"; exit 1; }
