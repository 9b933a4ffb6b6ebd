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

check-lib: check-deps check-twice

.PHONY: check-lib check-deps check-twice
