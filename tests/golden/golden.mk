# tests/golden: every policy of the manifest's golden matrix on the numpy oracle's cases
# (tests/oracle), run through the reference interpreter (`kvcc run`); the oracle's own
# self-test first, the selection probes (ties across heads, budget below the protected set) last.
#
#   make check-golden

check-golden: $(B)/kvcc
	$(PYTHON) tests/oracle/test_kvref.py
	tests/golden/run.sh $(B)/kvcc $(PYTHON) $(B)/golden
	$(PYTHON) tests/oracle/probe_select.py $(B)/kvcc $(B)/golden/probe

.PHONY: check-golden
