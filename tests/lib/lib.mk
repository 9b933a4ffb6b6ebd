# tests/lib: the library split (issue 11, DESIGN §2) — what libkvcc_rt and libkvcc link and
# export, examples/compress on the runtime alone (deps.sh) — and two builds of this checkout
# loading each other's policy.so (twice.sh: the load check ignores the compiler's build).
#
#   make check-lib       both
#   make check-deps      deps.sh alone
#   make check-twice     twice.sh alone (about 10 s: the second build compiles the runtime,
#                        the compiler and the example again)

check-deps: $(B)/libkvcc_rt.so $(B)/libkvcc.so $(B)/compress
	tests/lib/deps.sh $(B)

check-twice: $(B)/kvcc $(B)/compress
	tests/lib/twice.sh $(B)

# issue 13 (session 11): the x86 kernels on two threads give the same machine code as one module
# (about 2 s CPU)
check-split: $(B)/kvcc $(B)/compress
	tests/lib/split.sh $(B)

check-lib: check-deps check-twice check-api check-split

.PHONY: check-lib check-deps check-twice check-split

# api_misuse.c: the C API used wrongly and damaged artifacts (issue 10); check-san runs it
# under ASan + UBSan
$(B)/api_misuse: $(B)/tests/lib/api_misuse.o $(B)/libkvcc.so $(B)/libkvcc_rt.so
	$(CC) $(SAN) -o $@ $< -L$(B) -lkvcc -lkvcc_rt -Wl,-rpath,'$$ORIGIN' -lpthread

check-api: $(B)/api_misuse
	$(B)/api_misuse $(abspath $(B))/api-misuse-test

.PHONY: check-api
