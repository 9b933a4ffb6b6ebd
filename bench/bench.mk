# bench/: `make bench` (a program, not a test; not part of make check).
#   make bench         build/kvcc-bench → bench/results/<cpu>.md and .json (the merge section included)
#   make bench-merge   the merge stage: snapkv_merge vs snapkv and vs PyTorch (BENCH_VENV=/work/venv)
#   make bench-paged   build/kvcc-bench-paged: paged / batched vs contiguous ratios (issue 14)
#   make bench-proto   builds bench/amx_tokmajor.c and bench/mf32_amx3.c (sessions 9 / 10's AMX
#                      prototypes; not run: they need AMX)
# The bench programs find libkvcc / libkvcc_rt next to themselves (rpath $ORIGIN): they run from
# the build folder, or a copy of it, without LD_LIBRARY_PATH.
#   bench/setup        the optional kvpress/torch comparison venv (build/bench-venv)
# The comparison's venv: build/bench-venv when it has torch and kvpress, else the project venv
# that make check's python tier makes ($(PY_VENV), python/python.mk) when it has them.

$(B)/kvcc-bench: $(B)/bench/bench.o $(B)/libkvcc.so
	$(CC) -o $@ $(B)/bench/bench.o -L$(B) -lkvcc -lkvcc_rt -Wl,-rpath,'$$ORIGIN' -lpthread -lm

BENCH_VENV_PICK = for v in $(B)/bench-venv $(PY_VENV); do [ -x $$v/bin/python ] && \
	$$v/bin/python -c 'import torch, kvpress' 2>/dev/null && { echo $$v; exit 0; }; done; echo $(B)/bench-venv

bench: $(B)/kvcc-bench $(B)/kvcc
	$(B)/kvcc-bench --kvcc $(B)/kvcc --venv "$$($(BENCH_VENV_PICK))"

.PHONY: bench

# the merge stage (issue 12): nearest-kept merge after SnapKV vs drop and vs PyTorch (merge_torch.py)
bench-merge: $(B)/kvcc-bench
	$(B)/kvcc-bench --merge $(if $(BENCH_VENV),--venv $(BENCH_VENV))

.PHONY: bench-merge

# paged and batched caches vs contiguous (issue 14): build/kvcc-bench-paged, prints the ratios
$(B)/kvcc-bench-paged: $(B)/bench/paged.o $(B)/libkvcc.so
	$(CC) -o $@ $(B)/bench/paged.o -L$(B) -lkvcc -lkvcc_rt -Wl,-rpath,'$$ORIGIN' -lpthread -lm

bench-paged: $(B)/kvcc-bench-paged
	$(B)/kvcc-bench-paged

.PHONY: bench-paged

# bench/amx_tokmajor.c: session 9's standalone hand-written AMX token-major score-phase prototype
# (runtime/STATUS.md "wt-amx9"; not part of kvcc). Built, not run (it needs AMX), so that it
# cannot rot silently; not part of make all.
$(B)/amx_tokmajor: bench/amx_tokmajor.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -march=sapphirerapids -o $@ $< -lm

# bench/mf32_amx3.c: session 10's standalone f32-merge similarity on AMX by bf16x3 products
# (runtime/STATUS.md "wt-mf3210", doc/merge-f32-amx.md); built the same way, not run
$(B)/mf32_amx3: bench/mf32_amx3.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -march=sapphirerapids -o $@ $< -lm

bench-proto: $(B)/amx_tokmajor $(B)/mf32_amx3

.PHONY: bench-proto
