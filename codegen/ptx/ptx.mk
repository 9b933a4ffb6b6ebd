# codegen/ptx/ (GPU backend: KIR → CUDA C → NVRTC → PTX/CUBIN), runtime/cuda.c
# (CUDA driver loaded with dlopen). Included by the top Makefile. Its tests are
# tests/emu (emulated matrix) and tests/gpu (NVRTC, ptxas, the API, the device).

PTXOBJ += codegen/ptx/gen.o codegen/ptx/nvrtc.o
RTOBJ  += runtime/cuda.o runtime/gpu.o
$(B)/runtime/gpu.o: CFLAGS += $(LLVM_CFLAGS)
