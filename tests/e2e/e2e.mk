# tests/e2e: end to end on the shipped checkpoint (stories260K) through libkvcc: the README's
# reference numbers with libkvcc's decode attention, `kvcc eval` against the numpy oracle
# tests/oracle/eval_ref.py, generation with a compressed cache, argument errors.
#
#   make check-e2e

check-e2e: $(B)/kvcc $(B)/llama
	tests/e2e/run.sh $(B) $(PYTHON) $(SHARED)/data

.PHONY: check-e2e
