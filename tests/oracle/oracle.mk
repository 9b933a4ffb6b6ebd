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
