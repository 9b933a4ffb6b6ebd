# runtime/ (libkvcc), codegen/x86/ (LLVM 19 C API), compiler/plan.c, tests/diff,
# examples/compress.c. Included by the top Makefile.
#
#   make check-diff      differential matrix: compiled x86 kernels vs the interpreter (compress
#                        and decode), allocation-free run path, compile-cache tests (C and CLI)
#   make check-example   examples/compress.c against a freshly compiled snapkv.so

IROBJ  += compiler/plan.o
X86OBJ += codegen/x86/x86.o
RTOBJ  += runtime/rt.o runtime/pool.o runtime/cache.o
LLVM_LIBS_USED = $(LLVM_LIBS)

$(B)/codegen/x86/x86.o: CFLAGS += $(LLVM_CFLAGS)
$(B)/runtime/rt.o: CFLAGS += $(LLVM_CFLAGS)

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

$(B)/compress: $(B)/examples/compress.o $(B)/libkvcc.so
	$(CC) -o $@ $(B)/examples/compress.o -L$(B) -lkvcc -Wl,-rpath,$(abspath $(B)) $(SAN) -lm

check-example: $(B)/compress $(B)/kvcc
	$(B)/kvcc compile policies/snapkv.lua -o $(B)/snapkv.so --dtype bf16 --head-dim 128 --group 4
	$(B)/compress $(B)/snapkv.so

CHECK_MORE += check-diff check-example
.PHONY: check-diff check-example
