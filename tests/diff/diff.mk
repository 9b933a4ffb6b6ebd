# tests/diff: the x86 differential matrix — compiled kernels (codegen/x86) against the
# reference interpreter, for compress (diff.c) and decode (decode.c) — and the
# allocation-free run path (noalloc.c).
#
#   make check-diff        (the policy matrix sampled: a quarter of diff_tests' cases, a quarter of
#                          decode_tests'; the other targets one dtype each; check-diff-full: all)

$(B)/diff_tests: $(B)/tests/diff/diff.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/decode_tests: $(B)/tests/diff/decode.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# defines malloc & co. itself (counting): not with a sanitizer's allocator (SAN builds skip it)
$(B)/noalloc_tests: $(B)/tests/diff/noalloc.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# 1, 2 and 4 threads give identical results (threads.c)
$(B)/threads_tests: $(B)/tests/diff/threads.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# issue 12 (session 10): the f32 merge similarity on AMX leaves the cache as the FMA path does (mamx3.c)
$(B)/mamx3_tests: $(B)/tests/diff/mamx3.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# the tests compile into a private, emptied cache (cold builds every run)
check-diff: $(B)/diff_tests $(B)/decode_tests $(B)/noalloc_tests $(B)/threads_tests $(B)/mamx3_tests
	rm -rf $(B)/test-cache
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/diff_tests --every 4
	# merge nearest without msimx (the AMX qkt + mbest tiles; about 8 s CPU cold)
	KVCC_MSIMX=0 KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/diff_tests "snapkv_merge bf16"
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/decode_tests --every 4
	$(if $(SAN),@echo "SKIP noalloc_tests: a sanitizer owns the allocator",KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/noalloc_tests)
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/threads_tests
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/mamx3_tests

# every case of the policy matrix (make check-full)
check-diff-full: $(B)/diff_tests $(B)/decode_tests $(B)/noalloc_tests $(B)/threads_tests $(B)/mamx3_tests
	rm -rf $(B)/test-cache
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/diff_tests
	KVCC_MSIMX=0 KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/diff_tests "snapkv_merge bf16"
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/decode_tests
	$(if $(SAN),@echo "SKIP noalloc_tests: a sanitizer owns the allocator",KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/noalloc_tests)
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/threads_tests
	KVCC_CACHE_DIR=$(abspath $(B))/test-cache $(B)/mamx3_tests

CHECK_FULL += check-diff-full
CHECK_FULL_OMIT += check-diff

.PHONY: check-diff check-diff-full
