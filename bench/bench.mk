# bench/: `make bench` (a program, not a test; not part of make check).
#   make bench         build/kvcc-bench → bench/results/<cpu>.md and .json
#   bench/setup        the optional kvpress/torch comparison venv (build/bench-venv)

$(B)/kvcc-bench: $(B)/bench/bench.o $(B)/libkvcc.so
	$(CC) -o $@ $(B)/bench/bench.o -L$(B) -lkvcc -lkvcc_rt -Wl,-rpath,$(abspath $(B)) -lpthread -lm

bench: $(B)/kvcc-bench
	$(B)/kvcc-bench

.PHONY: bench
