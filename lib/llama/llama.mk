# lib/llama: the llama model library (llama2.c checkpoints and tokenizer, the forward pass
# with its KV cache in libkvcc's layout, evaluation texts, the glue to libkvcc's policies
# and decode attention), used by `kvcc eval` (tools/eval.c) and examples/llama. A static
# archive: both link it. Included by the top Makefile.
#
# LLAMA_KVCC_DECODE is defined when include/kvcc.h declares decode attention
# (kvcc_decode_layer, kvcc_append, kvcc_state_count, kvcc_policy_when and
# kvcc_cache.state); without it the model attends with its own reference code on the
# same kvcc_cache.

LLAMAOBJ = $(addprefix $(B)/lib/llama/,tokenizer.o model.o stories.o kvglue.o file.o batch.o)
LLAMA_DECODE := $(shell grep -q 'kvcc_decode_layer' include/kvcc.h 2>/dev/null && echo -DLLAMA_KVCC_DECODE)

$(LLAMAOBJ) $(B)/examples/llama/main.o $(B)/examples/llama/batch.o $(B)/tools/eval.o $(B)/tools/calibrate.o: CFLAGS += $(LLAMA_DECODE)

$(B)/libllama.a: $(LLAMAOBJ)
	rm -f $@
	ar rcs $@ $^

# kvcc eval runs the model
$(B)/kvcc: $(B)/tools/eval.o $(B)/tools/calibrate.o $(B)/libllama.a
