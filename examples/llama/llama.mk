# examples/llama: llama2.c-checkpoint inference with a KV cache in kvcc's layout.
# Included by the top Makefile (which defines B, CC, CFLAGS, SAN, SHARED, PYTHON).
#
#   make $(B)/llama      the program
#   make check-llama     its checks against data/README.md and the numpy oracle

LLAMA_OBJ = $(addprefix $(B)/examples/llama/,tokenizer.o model.o main.o)

$(B)/llama: $(LLAMA_OBJ)
	$(CC) -o $@ $^ $(SAN) -lm

check-llama: $(B)/llama
	LLAMA=$(B)/llama DATA=$(SHARED)/data PYTHON=$(PYTHON) sh examples/llama/check.sh

CHECK_MORE += check-llama
.PHONY: check-llama
