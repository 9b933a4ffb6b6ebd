# tests/gpu: the GPU path. Without a device: every policy's CUDA C through NVRTC and
# ptxas (check-ptx; a SKIP line without NVRTC), the runtime's no-driver errors, the GPU
# API and `kvcc compile --gpu-arch` (check-gpu-api). With a device: the emulated
# matrix's cases on the GPU (check-gpu) and a benchmark (bench-gpu); "SKIP: no GPU"
# otherwise.
#
#   make check-ptx      NVRTC + ptxas for sm_80, sm_90 (two specs per policy; check-ptx-full: five)
#   make check-gpu-api  nodrv.c, api.c (KVCC_LIBCUDA pointed at nothing), weights.c (on the
#                       host-memory stand-in driver fakecuda.c), cli.sh
#   make check-gpu      tests/emu/emu_diff.c --device through the libkvcc GPU API
#   make bench-gpu      SnapKV n = 32768 / 131072 vs a D2D copy and kvpress

$(B)/gpu_nodrv: $(B)/tests/gpu/nodrv.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/gpu_api: $(B)/tests/gpu/api.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

$(B)/gpu_wts: $(B)/tests/gpu/weights.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# a stand-in for libcuda.so.1 on host memory (tests/gpu/fakecuda.c; gpu_wts)
$(B)/libfakecuda.so: tests/gpu/fakecuda.c runtime/artifact.h
	$(CC) $(CFLAGS) -shared -o $@ $<

# the machine code of two CUBINs, section by section (tests/gpu/ptxas_same.sh)
$(B)/cubin_cmp: tests/gpu/cubin_cmp.c
	$(CC) $(CFLAGS) -o $@ $<

$(B)/bench_gpu: $(B)/tests/gpu/bench_gpu.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# Under the sanitizers (make asan) the leak check is off for these runs: after NVRTC's longer
# compiles LeakSanitizer's exit-time walk of the dynamic TLS blocks crashes in its tracer thread
# ("Tracer caught signal 11", a bogus DTLS range), which is LSan's failure, not a leak. ASan and
# UBSan stay on; the CUDA generator's leaks are checked by check-oom (tests/fuzz/oom.c).
PTX_SAN_ENV = $(if $(SAN),ASAN_OPTIONS=detect_leaks=0)

check-ptx: $(B)/kvcc
	$(if $(SAN),@echo "check-ptx: ASan and UBSan on; leak check off (the LSan tracer crashes after NVRTC)")
	$(PTX_SAN_ENV) tests/gpu/check_ptx.sh $(B)

check-ptx-full: $(B)/kvcc $(B)/cubin_cmp
	$(PTX_SAN_ENV) tests/gpu/check_ptx.sh $(B) all
	$(PTX_SAN_ENV) tests/gpu/ptxas_same.sh $(B) all

CHECK_FULL += check-ptx-full
CHECK_FULL_OMIT += check-ptx

check-gpu-api: $(B)/gpu_nodrv $(B)/gpu_api $(B)/gpu_wts $(B)/libfakecuda.so $(B)/kvcc $(B)/cubin_cmp
	KVCC_LIBCUDA=/nonexistent/libcuda.so.1 $(B)/gpu_nodrv
	KVCC_LIBCUDA=/nonexistent/libcuda.so.1 $(B)/gpu_api $(B)
	KVCC_LIBCUDA=$(abspath $(B))/libfakecuda.so $(B)/gpu_wts $(B)
	tests/gpu/cli.sh $(B)
	tests/gpu/ptxas_same.sh $(B)

check-gpu: $(B)/emu_diff
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  KVCC_CACHE_DIR=$(abspath $(B))/gpu-cache $(B)/emu_diff $(B) --device; \
	else echo "SKIP: no GPU (nvidia-smi absent or finds no device)"; fi

bench-gpu: $(B)/bench_gpu
	$(B)/bench_gpu $(B)

.PHONY: check-ptx check-ptx-full check-gpu-api check-gpu bench-gpu
