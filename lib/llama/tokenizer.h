/* tokenizer.h - llama2.c-format tokenizer (tok512.bin): load, encode, decode.
 *
 * File format (little-endian): int32 max_token_length, then one record per token:
 * float32 score, int32 len, len raw bytes (no terminator).  The vocabulary size is the
 * number of records.  See ../shared/data/README.md section 2. */
#ifndef KVCC_LIB_LLAMA_TOKENIZER_H
#define KVCC_LIB_LLAMA_TOKENIZER_H

#include <stddef.h>

#define LLAMA_TOK_UNK 0
#define LLAMA_TOK_BOS 1
#define LLAMA_TOK_EOS 2

typedef struct {
    int vocab_size;
    int max_token_length;
    char **pieces;      /* [vocab_size], each NUL-terminated for convenience */
    int *lens;          /* [vocab_size] byte length of each piece */
    float *scores;      /* [vocab_size] */
    int *sorted;        /* token ids sorted by (piece bytes, id), for lookups */
    int byte_base;      /* id of <0x00>, or -1 when the vocabulary has no byte tokens */
    unsigned char raw_bytes[256]; /* raw_bytes[b] == b: what <0xNN> pieces decode to */
} LlamaTokenizer;

/* Loads a tokenizer file.  Returns 0, or -1 with a message in err. */
int llama_tok_load(LlamaTokenizer *t, const char *path, char *err, size_t errlen);
void llama_tok_free(LlamaTokenizer *t);

/* Id of the piece with exactly these bytes (lowest id if duplicated), or -1. */
int llama_tok_lookup(const LlamaTokenizer *t, const char *s, size_t len);

/* Upper bound of the number of ids encode produces for a text of len bytes. */
size_t llama_tok_max_ids(size_t len);

/* Encodes text (len bytes) as llama2.c does: " " prefix piece when the text is non-empty,
 * one piece per UTF-8 code point (byte fallback <0xNN> = id NN+byte_base otherwise), then
 * repeated merges of the adjacent pair whose concatenation is a piece with the highest
 * score (leftmost on ties); BOS first when bos != 0.  out must hold
 * llama_tok_max_ids(len) ids.  Returns the number of ids, or -1 (a code point with no
 * piece and no byte tokens in the vocabulary). */
int llama_tok_encode(const LlamaTokenizer *t, const char *text, size_t len, int bos, int *out);

/* Bytes of token tok when it follows prev (prev < 0: none): the leading space of the first
 * piece after BOS is dropped and <0xNN> pieces are one raw byte.  Sets *len. BOS and EOS
 * decode to nothing. */
const char *llama_tok_piece(const LlamaTokenizer *t, int prev, int tok, size_t *len);

#endif
