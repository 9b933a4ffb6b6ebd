/*
** tests/fuzz: libFuzzer harnesses over kvcc's readers of untrusted bytes (the
** KIR parser, the DSL front end, the npz reader, the llama checkpoint and
** tokenizer readers, the artifact loader). Each fz_<name>.c defines
** LLVMFuzzerTestOneInput; linked with -fsanitize=fuzzer it is a fuzzer (make
** fuzz), linked with replay.c it runs the committed corpus
** tests/fuzz/corpus/<name>/ once (make check-fuzz), so check needs no clang.
**
** A harness returns 0 for any input; a bug is a crash, a sanitizer report,
** a leak, a hang or an abort() where an invariant the harness checks fails
** (the KIR print/parse round trip, say).
*/
#ifndef KVCC_FUZZ_H
#define KVCC_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The bytes as a file the readers can open by name: a memfd, reused and
** rewritten on every call, named "/proc/self/fd/N". NULL on failure. */
const char *fz_file(const uint8_t *data, size_t size);

/* data as a NUL-terminated copy (malloc'd; NULL on failure). */
char *fz_text(const uint8_t *data, size_t size);

/* An internal invariant broke: print and abort (a finding, not an input error). */
void fz_bug(const char *what, const char *detail) __attribute__((noreturn));

#endif
