/*
** Fuzz the artifact loader: kvcc_open on mutated policy.so bytes, then the
** queries a caller makes on an open policy. Written against the kvcc_open of
** this tree, which maps the file with dlopen before validating it: a damaged
** ELF image can still crash inside the dynamic loader (issue 10, the runtime
** rewrite verifies the whole file before mapping it). Until then this
** harness is fuzzed only briefly and its corpus holds inputs that are
** rejected before dlopen (not an ELF file) or load.
*/
#include <stdlib.h>
#include "kvcc.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fz_file(data, size);
	if (!path)
		return 0;
	kvcc_policy *p = NULL;
	if (kvcc_open(path, &p) != 0)
		return 0;
	kvcc_spec spec;
	kvcc_policy_spec(p, &spec);
	(void)kvcc_policy_name(p);
	for (int i = 0; i < kvcc_param_count(p); i++) {
		const char *name;
		double def;
		kvcc_param_info(p, i, &name, &def);
	}
	int obs;
	kvcc_policy_obs(p, NULL, &obs);
	kvcc_close(p);
	return 0;
}
