# tests/cache: the compile cache — every key component, corrupt and truncated entries,
# locks, concurrent writers (cache.c) — and the same through `kvcc compile -v`
# (cache_cli.sh).
#
#   make check-cache

$(B)/cache_tests: $(B)/tests/cache/cache.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

check-cache: $(B)/cache_tests $(B)/kvcc
	$(B)/cache_tests
	tests/cache/cache_cli.sh $(B)/kvcc $(abspath $(B))/cache-cli-test

.PHONY: check-cache
