# tests/tune: autotuning (doc/tune.md) — the tuning database through `kvcc tune` / `kvcc compile`
# (db.sh) and config points of the x86 kernels through the differential matrix (points.sh).
# Included by the top Makefile.
#
#   make check-tune-db       database: device / version mismatch, truncated / corrupted, concurrent
#                            writers, out-of-range configs (part of make check)
#   make check-tune-sample   a sample of config points through tests/diff (part of make check)
#   make check-tune          every score point the tuner can pick and every value of the other
#                            fields through tests/diff, every value of every GPU config field
#                            through the emulated GPU matrix (longer; not part of make check)
#   make check-tune-gpu      GPU config points through the emulated GPU matrix (tests/emu) and
#                            the static model through kvcc tune --gpu-only (gpu.sh; part of
#                            check-tune-sample)

check-tune-db: $(B)/kvcc
	tests/tune/db.sh $(B)/kvcc $(abspath $(B))/tune-db-test

check-tune-sample: $(B)/diff_tests $(B)/decode_tests check-tune-gpu
	tests/tune/points.sh $(B)/diff_tests $(B)/decode_tests $(abspath $(B))/tune-points-test

check-tune-gpu: $(B)/kvcc $(B)/emu_diff
	tests/tune/gpu.sh $(B)/kvcc $(B)/emu_diff $(B) $(abspath $(B))/tune-gpu-test

check-tune: $(B)/diff_tests $(B)/decode_tests $(B)/kvcc $(B)/emu_diff
	tests/tune/points.sh $(B)/diff_tests $(B)/decode_tests $(abspath $(B))/tune-points-test all
	tests/tune/gpu.sh $(B)/kvcc $(B)/emu_diff $(B) $(abspath $(B))/tune-gpu-test all

CHECK_MORE += check-tune-db check-tune-sample
.PHONY: check-tune-db check-tune-sample check-tune check-tune-gpu
