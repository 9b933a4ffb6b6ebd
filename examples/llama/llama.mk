# examples/llama: llama2.c-checkpoint inference with its KV cache in libkvcc's layout, and
# the model side of `kvcc eval` (compiler/eval.c). Included by the top Makefile (which
# defines B, CC, CFLAGS, SAN, SHARED, PYTHON).
#
#   make $(B)/llama      the program (links libkvcc.so)
#   make check-llama     its checks against data/README.md and the numpy oracle
#
# LLAMA_KVCC_DECODE is defined when include/kvcc.h declares decode attention
# (kvcc_decode_layer, kvcc_append, kvcc_state_count, kvcc_policy_when and
# kvcc_cache.state); without it the example attends with its own reference code on the
# same kvcc_cache.

LLAMA_CORE = $(addprefix $(B)/examples/llama/,tokenizer.o model.o stories.o kvglue.o)
LLAMA_OBJ  = $(LLAMA_CORE) $(B)/examples/llama/main.o
LLAMA_DECODE := $(shell grep -q 'kvcc_decode_layer' include/kvcc.h 2>/dev/null && echo -DLLAMA_KVCC_DECODE)

$(LLAMA_OBJ) $(B)/compiler/eval.o: CFLAGS += $(LLAMA_DECODE)

# kvcc eval runs the model: the kvcc command links the example's core objects
$(B)/kvcc: $(B)/compiler/eval.o $(LLAMA_CORE)

$(B)/llama: $(LLAMA_OBJ) $(B)/libkvcc.so
	$(CC) -o $@ $(LLAMA_OBJ) -L$(B) -lkvcc -lkvcc_rt -Wl,-rpath,$(abspath $(B)) $(SAN) -lm

check-llama: $(B)/llama
	LLAMA=$(B)/llama DATA=$(SHARED)/data PYTHON=$(PYTHON) sh examples/llama/check.sh

CHECK_MORE += check-llama
DEMO_MORE  += $(B)/llama
.PHONY: check-llama
