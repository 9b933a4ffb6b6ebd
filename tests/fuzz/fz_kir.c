/*
** Fuzz the KIR text form: bytes → lexer/parser → verifier → the pipeline of
** pipeline.c (passes, print/parse round trips, plan, interpreter, CUDA C).
** Seeds: every shipped policy dumped raw and after the passes.
*/
#include <stdlib.h>
#include "compiler/ir.h"
#include "compiler/lex.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fz_text(data, size);
	if (!text)
		return 0;
	KiErr e = { 0 };
	KiFn *f = ki_parsen(text, size, "fuzz.kir", &e);
	free(text);
	if (f && ki_verify(f, &e) == 0)
		fz_pipeline(f);
	ki_free(f);
	return 0;
}
