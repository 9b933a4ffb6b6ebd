/* file.h - opening the model library's input files (checkpoint, tokenizer, evaluation
 * texts) without waiting on them: a FIFO or a socket (whose open or read can block
 * forever) and a directory are errors, as in kvcc's own file reading (compiler/diag.c). */
#ifndef KVCC_LIB_LLAMA_FILE_H
#define KVCC_LIB_LLAMA_FILE_H

#include <stdio.h>

/* The file at path open for reading ("rb"), or NULL with "PATH: cannot ..." in err. */
FILE *llama_fopen(const char *path, char *err, size_t errlen);

#endif
