# runtime/ (libkvcc), codegen/x86/ (LLVM 19 C API), compiler/plan.c, examples/compress.c.
# Included by the top Makefile. Their tests: tests/diff (x86 differential matrix),
# tests/cache (compile cache).
#
#   make check-example   examples/compress.c against a freshly compiled snapkv.so

IROBJ  += compiler/plan.o compiler/support.o
X86OBJ += codegen/x86/x86.o
RTOBJ  += runtime/rt.o runtime/pool.o runtime/cache.o
LLVM_LIBS_USED = $(LLVM_LIBS)

$(B)/codegen/x86/x86.o: CFLAGS += $(LLVM_CFLAGS)
$(B)/runtime/rt.o: CFLAGS += $(LLVM_CFLAGS)

$(B)/compress: $(B)/examples/compress.o $(B)/libkvcc.so
	$(CC) -o $@ $(B)/examples/compress.o -L$(B) -lkvcc -Wl,-rpath,$(abspath $(B)) $(SAN) -lm

check-example: $(B)/compress $(B)/kvcc
	$(B)/kvcc compile policies/snapkv.lua -o $(B)/snapkv.so --dtype bf16 --head-dim 128 --group 4
	$(B)/compress $(B)/snapkv.so

CHECK_MORE += check-example
.PHONY: check-example
