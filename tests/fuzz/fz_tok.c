/*
** Fuzz the llama2.c tokenizer reader (lib/llama/tokenizer.c): a file
** that loads must encode (a fixed text with multi-byte UTF-8, control bytes
** and the input's own bytes) and decode every id it produced, and every
** piece id. Seeds: tok512.bin and small hand-made vocabularies.
*/
#include <stdlib.h>
#include <string.h>
#include "lib/llama/tokenizer.h"
#include "tests/fuzz/fuzz.h"

static void encode(const LlamaTokenizer *t, const char *s, size_t len)
{
	int *ids = malloc(llama_tok_max_ids(len) * sizeof *ids);
	if (!ids)
		return;
	int n = llama_tok_encode(t, s, len, 1, ids);
	if (n > (int)llama_tok_max_ids(len))
		fz_bug("tokenizer: encode wrote more ids than llama_tok_max_ids", NULL);
	for (int i = 0; i < n; i++) {
		if (ids[i] < 0 || (ids[i] >= t->vocab_size && ids[i] != LLAMA_TOK_BOS))
			fz_bug("tokenizer: encode produced an id outside the vocabulary", NULL);
		size_t pl;
		const char *p = llama_tok_piece(t, i ? ids[i - 1] : -1, ids[i], &pl);
		volatile char c = pl ? p[pl - 1] : 0;
		(void)c;
	}
	free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_file(data, size);
	if (!path)
		return 0;
	LlamaTokenizer t;
	char err[512];
	if (llama_tok_load(&t, path, err, sizeof err) != 0) {
		if (!err[0])
			fz_bug("tokenizer rejected without a message", NULL);
		return 0;
	}
	static const char text[] = "Once upon a time, Lily saw a \xc3\xbc \xf0\x9d\x84\x9e cat.\n\x01\xff\x80 <0x41>";
	encode(&t, text, sizeof text - 1);
	encode(&t, (const char *)data, size < 256 ? size : 256);
	for (int i = -1; i <= t.vocab_size; i++) {
		size_t pl;
		const char *p = llama_tok_piece(&t, LLAMA_TOK_BOS, i, &pl);
		volatile char c = pl ? p[pl - 1] : 0;
		(void)c;
		if (i >= 0 && i < t.vocab_size && llama_tok_lookup(&t, t.pieces[i], (size_t)t.lens[i]) < 0)
			fz_bug("tokenizer: a piece is not found by its own bytes", NULL);
	}
	llama_tok_free(&t);
	return 0;
}
