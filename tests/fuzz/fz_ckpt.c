/*
** Fuzz the llama2.c checkpoint reader (examples/llama/model.c): a header and
** weights that load must run: a cache of 6 rows, five forward steps (token
** ids from the input's last bytes, one of them past the vocabulary), the
** last step with the cache full. Seeds: tiny well-formed checkpoints, the
** shipped one truncated.
*/
#include <string.h>
#include "examples/llama/model.h"
#include "tests/fuzz/fuzz.h"

#define MAXFLOATS (1u << 20)   /* larger models load but take too long per exec */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_file(data, size);
	if (!path)
		return 0;
	LlamaModel m;
	char err[512];
	if (llama_model_load(&m, path, err, sizeof err) != 0) {
		if (!err[0] || !memchr(err, 0, sizeof err))
			fz_bug("checkpoint rejected without a message", NULL);
		return 0;
	}
	LlamaState s;
	if (m.n_floats <= MAXFLOATS && llama_state_init(&s, &m, 6, 0) == 0) {
		for (int i = 0; i < 7; i++) {
			int tok = size > 0 ? data[size - 1 - (size_t)i % size] : 0;
			if (i == 3)
				tok = m.cfg.vocab_size;   /* out of range: an error, not a read */
			llama_forward(&s, tok % (m.cfg.vocab_size + 1), i);
		}
		llama_state_free(&s);
	}
	llama_model_free(&m);
	return 0;
}
