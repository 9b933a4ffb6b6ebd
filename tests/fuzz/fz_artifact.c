/*
** Fuzz the artifact loader: kvcc_open on mutated policy.so bytes, then the
** queries a caller makes on an open policy. kvcc_open reads the whole file and
** checks its checksum trailer before dlopen maps anything (issue 10), so a
** mutated artifact is refused before the dynamic loader sees it; the corpus
** still holds only its first inputs (tests/lib/api_misuse.c covers truncations
** and byte flips of a real artifact).
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
