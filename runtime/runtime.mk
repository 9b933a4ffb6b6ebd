# runtime/ (libkvcc_rt), codegen/x86/ (LLVM 19 C API), compiler/plan.c, the driver and the compile
# cache, examples/compress.c. Included by the top Makefile (which links the libraries). Their
# tests: tests/diff (x86 differential matrix), tests/cache (compile cache), tests/lib (the
# library split, two builds).
#
#   make check-example   examples/compress.c, linked with libkvcc_rt only, runs a policy.so that
#                        the kvcc command compiled

IROBJ  += compiler/plan.o compiler/support.o compiler/driver.o compiler/cache.o
X86OBJ += codegen/x86/key.o codegen/x86/kern.o codegen/x86/tmap.o codegen/x86/desc.o codegen/x86/emit.o codegen/x86/merge.o \
          codegen/x86/sel.o
RTOBJ  += runtime/api.o runtime/load.o runtime/compress.o runtime/merge.o runtime/summary.o runtime/paged.o runtime/decode.o runtime/pool.o \
          runtime/artifact.o runtime/weights.o
# issue 12, positional and run merges (merge runs: the pair evaluator mrow)
X86OBJ += codegen/x86/mpos.o codegen/x86/msimx.o
RTOBJ  += runtime/mpos.o
$(B)/codegen/x86/mpos.o $(B)/codegen/x86/msimx.o: CFLAGS += $(LLVM_CFLAGS)
# issue 13, select keep: the kept count of a (layer, head) generated in double (compiler/keep.c checks
# what the generators take; codegen/x86/keep.c kvcc_keepn, codegen/ptx/keep.c kv_count)
IROBJ  += compiler/keep.o
X86OBJ += codegen/x86/keep.o
$(B)/codegen/x86/keep.o: CFLAGS += $(LLVM_CFLAGS)
LLVM_LIBS_USED = $(LLVM_LIBS)

$(addprefix $(B)/codegen/x86/,key.o kern.o tmap.o emit.o merge.o sel.o): CFLAGS += $(LLVM_CFLAGS)
# key.o's compile time is the compiler build in the cache key (KX_BUILD): rebuilt whenever
# anything on the compile path changes (every generator, the compiler's passes, planners and
# support checks, the artifact layout): a development tree never reuses a stale cached artifact
$(B)/codegen/x86/key.o: $(wildcard codegen/x86/*.c codegen/x86/*.h codegen/ptx/*.c codegen/ptx/*.h codegen/ptx/*.cuh \
  compiler/*.c compiler/*.h compiler/*.re) runtime/artifact.h

# the example links the runtime only
$(B)/compress: $(B)/examples/compress.o $(B)/libkvcc_rt.so
	$(CC) -o $@ $(B)/examples/compress.o -L$(B) -lkvcc_rt -Wl,-rpath,$(abspath $(B)) $(SAN) -lm

check-example: $(B)/compress $(B)/kvcc
	$(B)/kvcc compile policies/snapkv.lua -o $(B)/snapkv.so --dtype bf16 --head-dim 128 --group 4
	$(B)/compress $(B)/snapkv.so

CHECK_MORE += check-example
.PHONY: check-example
# the prefix / dynamic schedules' counts generated (codegen/x86/sched.c kvcc_schedcnt; KVCC_ABI 17)
X86OBJ += codegen/x86/sched.o
# issue 12 (session 10): the f32 merge similarity on AMX (bf16x3 products, exact re-check)
X86OBJ += codegen/x86/mamx3.o
$(B)/codegen/x86/mamx3.o: CFLAGS += $(LLVM_CFLAGS)
$(B)/codegen/x86/sched.o: CFLAGS += $(LLVM_CFLAGS)
