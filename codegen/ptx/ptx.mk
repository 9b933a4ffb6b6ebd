# codegen/ptx/ (GPU backend: KIR → CUDA C → NVRTC → PTX/CUBIN), runtime/cuda.c
# (CUDA driver loaded with dlopen). Included by the top Makefile. Its tests are
# tests/emu (emulated matrix) and tests/gpu (NVRTC, ptxas, the API, the device).
#
# The fixed CUDA code lives in codegen/ptx/*.cuh; embed (a host tool) writes them as
# C strings into $(B)/codegen/ptx/cuh.c (declared in codegen/ptx/cuh.h).

PTXOBJ += codegen/ptx/expr.o codegen/ptx/kernels.o codegen/ptx/compile.o codegen/ptx/nvrtc.o \
          codegen/ptx/cuh.o codegen/ptx/blob.o codegen/ptx/merge.o codegen/ptx/summary.o codegen/ptx/mpos.o
RTOBJ  += runtime/cuda.o runtime/gpu.o
# issue 13: select keep's count (kv_count)
PTXOBJ += codegen/ptx/keep.o
$(B)/codegen/ptx/blob.o: CFLAGS += $(LLVM_CFLAGS)

PTXCUH = $(sort $(wildcard codegen/ptx/*.cuh))

$(B)/codegen/ptx/embed: codegen/ptx/embed.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -O2 -o $@ $<

$(B)/codegen/ptx/cuh.c: $(B)/codegen/ptx/embed $(PTXCUH)
	$(B)/codegen/ptx/embed $@ $(PTXCUH)

$(B)/codegen/ptx/cuh.o: $(B)/codegen/ptx/cuh.c codegen/ptx/cuh.h
	$(CC) $(CFLAGS) -c $< -o $@
