/*
** The unit test runner: one SRunner over every suite in SUITES.
**
** To add a suite, write tests/unit/test_<area>.c exporting
** `Suite *<area>_suite(void)` and add one line `X(<area>)` to SUITES below;
** unit.mk builds every .c file of tests/unit, so nothing else changes.
**
** Check's own variables pick what runs: CK_RUN_SUITE=parse,
** CK_RUN_CASE=errors, CK_VERBOSITY=verbose. Tests run in forked children
** (a crash fails one test, not the run) unless CK_FORK=no, which is set
** for you when a debugger is attached.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/unit.h"

#define SUITES(X) \
	X(lex) \
	X(parse) \
	X(verify) \
	X(passes) \
	X(policies) \
	X(plan) \
	X(sandbox) \
	X(merge) \
	X(chains) \
	X(ptxjoin)

#define DECLARE(area) Suite *area##_suite(void);
SUITES(DECLARE)
#undef DECLARE

/* Is a debugger (ptrace) attached? Then forking would lose breakpoints. */
static int traced(void)
{
	FILE *fp = fopen("/proc/self/status", "r");
	char line[256];
	int pid = 0;
	if (!fp)
		return 0;
	while (fgets(line, sizeof line, fp))
		if (strncmp(line, "TracerPid:", 10) == 0)
			pid = atoi(line + 10);
	fclose(fp);
	return pid != 0;
}

int main(void)
{
	SRunner *sr = srunner_create(NULL);
#define ADD(area) srunner_add_suite(sr, area##_suite());
	SUITES(ADD)
#undef ADD
	if (traced() && !getenv("CK_FORK"))
		srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
