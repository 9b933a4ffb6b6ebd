#!/bin/sh
# python/check.sh MODE B PYTHON VENV DATA — the Python tiers (see python/python.mk).
#   MODE numpy (`make check-python`, in `make check`): the binding vs the interpreter,
#      `python -m kvcc` and kvcc.GpuPlan on the fake CUDA driver, with PYTHON (numpy, nothing else);
#   MODE torch (`make check-python-torch`, the last tier of `make check`): python/setup-venv
#      VENV (torch, transformers, kvpress from PyPI; `make check` started it in the background
#      before its C tiers, so this mostly waits for it; a SKIP that says why when it cannot be
#      made — never a pass), then in VENV: torch tensors, the Hugging Face model, KvccPress vs
#      kvpress's presses and vs kvcc eval (stories 0-5), pip install ./python and the README
#      example — two test programs at a time (one torch thread each);
#   MODE full (`make check-python-full`, in `make check-full`): both, kvcc eval on all 70 stories.
set -e
MODE=$1 B=$2 PY=$3 VENV=$4 DATA=$5
export KVCC_BUILD_DIR=$(cd "$B" && pwd) KVCC_DATA=$DATA KVCC_CACHE_DIR=$(cd "$B" && pwd)/py-cache
export KVCC_TORCH_THREADS=${KVCC_TORCH_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fail=0
if [ "$MODE" != torch ]; then
	[ -n "$PY" ] || { echo "check-python: FAILED: no python3 with numpy (scripts/install-deps installs python3-numpy)"; exit 1; }
	"$PY" python/tests/test_binding.py || fail=1
	"$PY" python/tests/test_cli.py || fail=1
	"$PY" python/tests/test_gpu.py || fail=1
	if [ "$MODE" = numpy ]; then
		[ $fail = 0 ] && echo "check-python: passed (numpy half; the torch half is check-python-torch)" ||
			{ echo "check-python: FAILED"; exit 1; }
		exit 0
	fi
fi
name=check-python-$MODE
rm -f "$B/py-torch.skipped"
t0=$(date +%s)
# wait for the background install of this make check (its lock), then reuse its verdict: when it
# could not make the venv, trying again here would only add pip's network timeouts to make check
mkdir -p "$(dirname "$VENV")"
flock "$VENV.lock" true 2>/dev/null || :
if [ -f "$B/py-venv.log" ] && grep -q "^python/setup-venv: \(pip could not\|cannot\|.* does not import\)" "$B/py-venv.log"; then
	cp "$B/py-venv.log" "$B/py-venv.now.log"
	ok=
elif PYTHON=${PY:-python3} python/setup-venv "$VENV" >"$B/py-venv.now.log" 2>&1; then ok=1; else ok=; fi
if [ -f "$B/py-venv.log" ]; then          # the background install that make check started
	echo "$name: the background install (python/setup-venv --background, $B/py-venv.log):"
	grep -v DEPRECATION "$B/py-venv.log" | sed 's/^/  /'
	mv "$B/py-venv.log" "$B/py-venv.last.log"
fi
if [ -z "$ok" ]; then
	echo "SKIP $name: the torch/transformers/kvpress tests (torch tensors, the Hugging Face model, KvccPress vs kvpress and kvcc eval, pip install ./python) did NOT run: python/setup-venv could not make $VENV:"
	sed 's/^/  /' "$B/py-venv.now.log" | tail -5
	echo "$name: SKIPPED (not passed)"
	echo "$name" >"$B/py-torch.skipped"
	exit 0
fi
echo "$name: $(tail -1 "$B/py-venv.now.log") (waited $(( $(date +%s) - t0 )) s here)"
full=0
[ "$MODE" = full ] && full=1
run() {   # run TEST...: one after another, output to $B/py-TEST.out; 1 when one fails
	r=0
	for t; do
		PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error KVCC_PY_FULL=$full "$VENV/bin/python" \
			python/tests/$t.py >"$B/py-$t.out" 2>&1 || r=1
	done
	return $r
}
t0=$(date +%s)
run test_press & p1=$!
run test_torch test_model test_install & p2=$!
wait $p1 || fail=1
wait $p2 || fail=1
for t in test_torch test_model test_press test_install; do cat "$B/py-$t.out"; done
echo "$name: the torch tests took $(( $(date +%s) - t0 )) s"
[ $fail = 0 ] && echo "$name: passed" || { echo "$name: FAILED"; exit 1; }
