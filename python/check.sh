#!/bin/sh
# python/check.sh B PYTHON VENV DATA — `make check-python` (see python/python.mk).
#   1. the binding vs the interpreter and `python -m kvcc` (PYTHON: numpy only);
#   2. python/setup-venv VENV (torch, transformers, kvpress; a SKIP that says why when it
#      cannot be made);
#   3. in VENV: torch tensors, the Hugging Face model, KvccPress vs kvpress and vs kvcc eval,
#      pip install ./python and the README example.
set -e
B=$1 PY=$2 VENV=$3 DATA=$4
export KVCC_BUILD_DIR=$(cd "$B" && pwd) KVCC_DATA=$DATA KVCC_CACHE_DIR=$(cd "$B" && pwd)/py-cache
export KVCC_TORCH_THREADS=${KVCC_TORCH_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fail=0 skipped=
"$PY" python/tests/test_binding.py || fail=1
"$PY" python/tests/test_cli.py || fail=1
if PYTHON=$PY python/setup-venv "$VENV" >"$B/py-venv.log" 2>&1; then
	tail -1 "$B/py-venv.log"
	for t in test_torch test_model test_press test_install; do
		PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error "$VENV/bin/python" python/tests/$t.py || fail=1
	done
else
	echo "SKIP check-python torch/transformers/kvpress tests: python/setup-venv could not make $VENV:"
	sed 's/^/  /' "$B/py-venv.log" | tail -5
	skipped=" (numpy half only: the torch half was SKIPPED, see above)"
fi
[ $fail = 0 ] && echo "check-python: passed$skipped" || { echo "check-python: FAILED"; exit 1; }
