# examples/llama: llama2.c-checkpoint inference with its KV cache in libkvcc's layout, on
# the model library lib/llama. Included by the top Makefile (which defines B, CC, CFLAGS,
# SAN, SHARED, PYTHON).
#
#   make $(B)/llama      the program (links libllama.a and libkvcc.so)
#   make check-llama     its checks against data/README.md and the numpy oracle

# --weights reads .npz files with the kvcc tool's reader (tools/npz.c, compiler/diag.c's errors)
$(B)/llama: $(B)/examples/llama/main.o $(B)/examples/llama/batch.o $(B)/tools/npz.o $(B)/compiler/diag.o $(B)/libllama.a $(B)/libkvcc.so
	$(CC) -o $@ $(B)/examples/llama/main.o $(B)/examples/llama/batch.o $(B)/tools/npz.o $(B)/compiler/diag.o $(B)/libllama.a -L$(B) -lkvcc -lkvcc_rt -Wl,-rpath,$(abspath $(B)) $(SAN) -lm

check-llama: $(B)/llama $(B)/kvcc
	LLAMA=$(B)/llama KVCC=$(B)/kvcc DATA=$(SHARED)/data PYTHON=$(PYTHON) sh examples/llama/check.sh

CHECK_MORE += check-llama
DEMO_MORE  += $(B)/llama
.PHONY: check-llama
