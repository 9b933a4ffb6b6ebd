# tests/diff: the differential matrix (compiled x86 kernels vs the interpreter, compress and
# decode), the allocation-free run path and the compile cache (C and CLI). Included by the top
# Makefile.
#
#   make check-diff

$(B)/diff_tests: $(B)/tests/diff/diff.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/decode_tests: $(B)/tests/diff/decode.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/cache_tests: $(B)/tests/diff/cache.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# defines malloc & co. itself (counting): not with a sanitizer's allocator (SAN builds skip it)
$(B)/noalloc_tests: $(B)/tests/diff/noalloc.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# the tests compile into a private, emptied cache (cold builds every run)
check-diff: $(B)/diff_tests $(B)/decode_tests $(B)/cache_tests $(B)/noalloc_tests $(B)/kvcc
	rm -rf $(B)/test-cache
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/diff_tests
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/decode_tests
	$(if $(SAN),@echo "SKIP noalloc_tests: a sanitizer owns the allocator",KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/noalloc_tests)
	$(B)/cache_tests
	tests/diff/cache_cli.sh $(B)/kvcc $(abspath $(B))/cache-cli-test

CHECK_MORE += check-diff
.PHONY: check-diff
