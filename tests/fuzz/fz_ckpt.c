/*
** Fuzz the llama2.c checkpoint reader (lib/llama/model.c): a header and
** weights that load must run: a cache of 6 rows, seven forward steps (token
** ids from the input's last bytes, one of them past the vocabulary), the
** last ones with the cache full. Seeds: tiny well-formed checkpoints, the
** shipped one truncated.
**
** The reader wants the exact file size its header implies, which random
** mutations almost never keep: when the input's first byte is odd, the rest
** is a checkpoint whose weights are cut or zero-padded to the size its header
** asks for (up to 1 MiB), so that the fuzzer explores headers past the size
** check; when even, the rest goes to the reader as it is.
*/
#include <stdlib.h>
#include <string.h>
#include "lib/llama/model.h"
#include "tests/fuzz/fuzz.h"

#define MAXBYTES (1u << 20)

static uint64_t rd(const uint8_t *p) { return (uint64_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24); }

/* the file size the header asks for, or 0 when implausible */
static size_t wanted(const uint8_t *h)
{
	int64_t d[7];
	for (int k = 0; k < 7; k++)
		d[k] = (int32_t)rd(h + 4 * k);
	int64_t D = d[0], F = d[1], L = d[2], H = d[3], KV = d[4], V = d[5] < 0 ? -d[5] : d[5], S = d[6];
	if (D <= 0 || D > 4096 || F <= 0 || F > 4096 || L <= 0 || L > 64 || H <= 0 || KV <= 0 || V <= 0 ||
	    V > 4096 || S <= 0 || S > 4096 || D % H || H % KV)
		return 0;
	int64_t hd = D / H, n = V * D + L * D + 2 * L * D * D + 2 * L * KV * hd * D + L * D + 3 * L * F * D + D +
	                        S * hd + (d[5] < 0 ? V * D : 0);
	return 28 + 4 * (uint64_t)n <= MAXBYTES ? (size_t)(28 + 4 * n) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1, want;
	uint8_t *fixed = NULL;
	if ((data[0] & 1) && n >= 28 && (want = wanted(p)) != 0 && (fixed = calloc(want, 1))) {
		memcpy(fixed, p, n < want ? n : want);
		p = fixed, n = want;
	}
	const char *path = fz_file(p, n);
	free(fixed);
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
	if (llama_state_init(&s, &m, 6, 0) == 0) {
		for (int i = 0; i < 7; i++) {
			int tok = data[size - 1 - (size_t)i % size];
			if (i == 3)
				tok = m.cfg.vocab_size;   /* out of range: an error, not a read */
			llama_forward(&s, tok % (m.cfg.vocab_size + 1), i);
		}
		llama_state_free(&s);
	}
	llama_model_free(&m);
	return 0;
}
