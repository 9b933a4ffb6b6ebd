# codegen/ptx/ (GPU backend: KIR → CUDA C → NVRTC → PTX/CUBIN), runtime/cuda.c
# (CUDA driver loaded with dlopen), tests/gpu/ (emulated differential matrix,
# NVRTC + ptxas compile checks). Included by the top Makefile.
#
#   make check-ptx   every policy's CUDA C through NVRTC and ptxas for sm_80, sm_90
#                    (a SKIP line when NVRTC is absent)
#   make check-emu   the differential matrix through tests/gpu/cuda_emu.h on the CPU
#                    (generated CUDA C compiled as C++ with g++), the emulated
#                    tensor-core mma alone (tests/gpu/mma_unit.cpp), plus the
#                    no-driver error path of runtime/cuda.c
#   make check-gpu   the differential matrix on a real device through the GPU API
#                    (kvcc_compile_so_gpu, kvcc_gpu_plan_create, kvcc_gpu_compress), or "SKIP: no GPU"
#   make bench-gpu   SnapKV on the GPU (tests/gpu/bench_gpu.c), or "SKIP: no GPU"

PTXOBJ += codegen/ptx/gen.o codegen/ptx/nvrtc.o codegen/ptx/blob.o
RTOBJ  += runtime/cuda.o runtime/gpu.o
$(B)/codegen/ptx/blob.o: CFLAGS += $(LLVM_CFLAGS)

$(B)/kvcc-ptx: $(B)/codegen/ptx/main.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/emu_diff: $(B)/tests/gpu/emu_diff.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/gpu_nodrv: $(B)/tests/gpu/nodrv.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/gpu_api: $(B)/tests/gpu/api.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

all: $(B)/kvcc-ptx

# the tensor-core unit test includes generated sources (bf16 and f16, head_dim 32)
$(B)/mma/%.cu: $(B)/kvcc-ptx
	@mkdir -p $(dir $@)
	$(B)/kvcc-ptx policies/snapkv.lua --dtype $* --head-dim 32 --gen-only --emit-src $@ >/dev/null

$(B)/mma_unit: tests/gpu/mma_unit.cpp tests/gpu/cuda_emu.h $(B)/mma/bf16.cu $(B)/mma/f16.cu
	$(CXX) -std=c++17 -O1 -Wall -Wextra -Werror -Wno-unused-function -DKV_NT=32 -DKV_SQ=16 -DKV_SK=16 \
	  -I. -I$(B)/mma -o $@ $<

check-ptx: $(B)/kvcc-ptx
	tests/gpu/check_ptx.sh $(B)

check-emu: $(B)/emu_diff $(B)/gpu_nodrv $(B)/gpu_api $(B)/kvcc $(B)/mma_unit
	$(B)/mma_unit
	KVCC_LIBCUDA=/nonexistent/libcuda.so.1 $(B)/gpu_nodrv
	KVCC_LIBCUDA=/nonexistent/libcuda.so.1 $(B)/gpu_api $(B)
	tests/gpu/cli.sh $(B)
	$(B)/emu_diff $(B)

$(B)/bench_gpu: $(B)/tests/gpu/bench_gpu.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# SnapKV n = 32768 / 131072 on the GPU vs a D2D copy and kvpress (SKIP without a GPU)
bench-gpu: $(B)/bench_gpu
	$(B)/bench_gpu $(B)

check-gpu: $(B)/emu_diff
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  KVCC_CACHE_DIR=$(abspath $(B))/gpu-cache $(B)/emu_diff $(B) --device; \
	else echo "SKIP: no GPU (nvidia-smi absent or finds no device)"; fi

CHECK_MORE += check-ptx check-emu
.PRECIOUS: $(B)/mma/%.cu
.PHONY: check-ptx check-emu check-gpu bench-gpu
