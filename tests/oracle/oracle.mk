# tests/oracle: self-tests of the numpy oracles (seconds; no kvcc needed). The kvpress
# comparisons inside them run only where torch and kvpress import (else they print SKIP):
#   make check-oracle PYTHON=/path/to/venv/python
#
#   make check-oracle   the mergeref and selref self-tests (check-golden runs kvref's)

check-oracle:
	$(PYTHON) tests/oracle/test_mergeref.py
	$(PYTHON) tests/oracle/test_selref.py

CHECK_MORE += check-oracle
.PHONY: check-oracle

# kvpress itself on the issue-13 policies through kvcc (kvcc run): AdaKV, ChunkKV, CriticalKV
# (over SnapKV), LagKV, Expected Attention; kept sets exact. Needs torch + kvpress (~40 s):
#   make check-kvpress-select PYTHON=/work/venv/bin/python    (SKIP without them)
check-kvpress-select: $(B)/kvcc
	$(PYTHON) tests/oracle/kvpress_select.py $(B)/kvcc $(B)/kvpress-select

.PHONY: check-kvpress-select

# kvcc calibrate on the shipped model against numpy (llama_ref.Model, selref): head scores,
# query statistics, PrefixKV fractions, the gate fit, W_o (~10 s)
check-calibrate: $(B)/kvcc
	KVCC_DATA=$(SHARED)/data $(PYTHON) tests/oracle/calib_ref.py $(B)/kvcc $(B)/calibrate

CHECK_MORE += check-calibrate
.PHONY: check-calibrate
