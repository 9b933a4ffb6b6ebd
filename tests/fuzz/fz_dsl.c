/*
** Fuzz the DSL front end: policy text → the Lua sandbox and builder → KIR →
** the pipeline of pipeline.c, through kd_loadfile (as kvcc reads a file). Short limits keep an exec fast (the sandbox
** enforces them; a hang here is a limit that does not hold). Seeds: the
** shipped policies and the diagnostics corpus of tests/errors.
*/
#include "dsl/dsl.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KdLimits lim = { .instructions = 200000, .memory = 8u << 20, .kir = 2000, .seconds = 2 };
	KiErr e = { 0 };
	const char *path = fz_file(data, size);
	if (!path)
		return 0;
	KiFn *f = kd_loadfile(path, &lim, &e);
	if (f)
		fz_pipeline(f);
	ki_free(f);
	return 0;
}
