# tests/errors: diagnostics — small bad policies, each with its expected
# file:line:col message (expect.tsv) — and the robustness of `kvcc run` on damaged
# .npz inputs, and where `kvcc run --out` writes.
#
#   make check-errors

check-errors: $(B)/kvcc
	tests/errors/run.sh $(B)/kvcc
	@mkdir -p $(B)/npz-fuzz
	$(PYTHON) tests/oracle/gen_golden.py $(B)/npz-fuzz >/dev/null
	$(PYTHON) tests/errors/npz_fuzz.py $(B)/kvcc policies/snapkv.lua \
	  $(B)/npz-fuzz/$$(grep '^snapkv ' $(B)/npz-fuzz/cases.txt | head -1 | cut -d' ' -f2) $(B)/npz-fuzz
	$(PYTHON) tests/errors/run_cases.py $(B)/kvcc $(B)/npz-fuzz
	$(PYTHON) tests/errors/run_output.py $(B)/kvcc $(B)/npz-fuzz

.PHONY: check-errors

# kvcc run with policy weights and the selection rules' run-time checks (issue 13)
check-errors-weights: $(B)/kvcc
	$(PYTHON) tests/errors/run_weights.py $(B)/kvcc $(B)/errors-weights

check-errors: check-errors-weights
.PHONY: check-errors-weights
