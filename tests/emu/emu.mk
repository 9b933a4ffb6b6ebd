# tests/emu: the emulated GPU differential matrix — the generated CUDA C of every
# policy in the manifest's emu matrix compiled as C++ against cuda_emu.h (threads as
# fibers, warp intrinsics emulated) and run against the reference interpreter — and
# the tensor-core helpers alone (mma_unit.cpp, on generated snapkv sources).
#
#   make check-emu        a twelfth of the matrix: every 12th spec of each policy, rotating so
#                         that each spec runs for some policy (make check's time budget)
#   make check-emu-full   every policy × dtype × head_dim × group (make check-full)
#   make check-emu-stage  the score kernels' K tile pipeline (GPU config st2 / st3, doc/gpu.md) on
#                         tiled policies (check-emu-stage-full: more policies, every spec)
#   make check-emu-paged  batched and paged caches (tests/emu/emu_paged.c; in make check: every
#                         3rd policy of the manifest; check-emu-paged-full: every policy)

$(B)/emu_diff: $(B)/tests/emu/emu_diff.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

# batched and paged caches (issue 14): every emu policy at two specs, batches of 1-8 sequences
# in contiguous, batched and paged layouts (identity, freed pages, guards, append, bad tables)
$(B)/emu_paged: $(B)/tests/emu/emu_paged.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

check-emu-paged: $(B)/emu_paged
	$(B)/emu_paged $(B) --every 3

check-emu-paged-full: $(B)/emu_paged
	$(B)/emu_paged $(B)

# the tensor-core unit test includes generated sources (bf16 and f16, head_dim 32)
$(B)/mma/%.cu: $(B)/kvcc
	@mkdir -p $(dir $@)
	$(B)/kvcc dev cuda policies/snapkv.lua --dtype $* --head-dim 32 --gen-only --emit-cuda $@ >/dev/null

$(B)/mma_unit: tests/emu/mma_unit.cpp tests/emu/cuda_emu.h $(B)/mma/bf16.cu $(B)/mma/f16.cu
	$(CXX) -std=c++17 -O1 -Wall -Wextra -Werror -Wno-unused-function -DKV_NT=32 -DKV_SQ=16 -DKV_SK=16 \
	  -I. -I$(B)/mma -o $@ $<

# nearest_long at one spec with 32 threads (KV_MSP 32: n = 129 evicts several scatter tiles of
# one target, so a cursor that does not advance fails it; ~1.5 s CPU; session 10)
check-emu: $(B)/emu_diff $(B)/mma_unit
	$(B)/mma_unit
	$(B)/emu_diff $(B) --every 12
	$(B)/emu_diff $(B) --only nearest_long --spec 2 --gpu-config nt32

check-emu-full: $(B)/emu_diff $(B)/mma_unit
	$(B)/mma_unit
	$(B)/emu_diff $(B)

# K tiles in 2 / 3 shared buffers (KV_ST; under KV_EMU the copy is synchronous, the buffer
# indexing the same): 16-token tiles (n = 37, 61, 129: 3, 4, 9 tiles, the last partial) and
# 64-token tiles (37, 61: less than one tile; 129: 3 tiles, the last one token); every 4th / 8th
# spec covers the f32 FMA path and the f16 / bf16 mma path (bf16 d96: mma, f32 d96: FMA)
STAGE_POINTS = st2 st3 st3,sk64 st2,sq32,sk24
check-emu-stage: $(B)/emu_diff
	$(B)/emu_diff $(B) --only snapkv --every 4 --gpu-config st2
	$(B)/emu_diff $(B) --only snapkv --every 8 --gpu-config st3,sk64

check-emu-stage-full: $(B)/emu_diff
	set -e; for p in snapkv observed_attention pyramidkv tova; do for c in $(STAGE_POINTS); do \
	  $(B)/emu_diff $(B) --only $$p --gpu-config $$c; done; done

CHECK_MORE += check-emu-paged check-emu-stage
CHECK_FULL += check-emu-full check-emu-paged-full check-emu-stage-full
CHECK_FULL_OMIT += check-emu check-emu-paged check-emu-stage

.PRECIOUS: $(B)/mma/%.cu
.PHONY: check-emu check-emu-full check-emu-paged check-emu-paged-full check-emu-stage check-emu-stage-full
