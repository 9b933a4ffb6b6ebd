/*
** The policy manifest tests/policies.tsv, read by the C test programs (tests/diff/diff.c,
** decode.c, noalloc.c, tests/emu/emu_diff.c): the policies of a matrix in manifest
** order, with their files and the param values the matrix sweeps. Run from the
** repository root. A malformed manifest is a test failure, reported by the caller.
*/
#ifndef KVCC_TESTS_MANIFEST_H
#define KVCC_TESTS_MANIFEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MANIFEST_PATH "tests/policies.tsv"
#define MANIFEST_MAX 128                  /* a matrix and its -full extras together (session 10: 57 emu + 9
                                           emufull passed 64, and the appends below dropped the last ones) */
#define MANIFEST_MAXV 8

typedef struct MfPolicy {
	char name[64];
	char file[192];
	char oracle[32];
	char obs[32];
	char matrices[160];
	char param[32];             /* the swept param, or "" */
	double val[MANIFEST_MAXV];  /* its values */
	int nval;
} MfPolicy;

/* 1 when the comma-separated list `list` holds `word` */
static inline int mf_has(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; *p;) {
		size_t k = strcspn(p, ",");
		if (k == n && !strncmp(p, word, n))
			return 1;
		p += k;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* "NAME=V|V|..." or "-" into p->param, p->val; 0, or -1 when malformed */
static inline int mf_params(MfPolicy *p, const char *s)
{
	p->param[0] = 0, p->nval = 0;
	if (!strcmp(s, "-"))
		return 0;
	const char *eq = strchr(s, '=');
	if (!eq || eq == s || (size_t)(eq - s) >= sizeof p->param)
		return -1;
	memcpy(p->param, s, (size_t)(eq - s));
	p->param[eq - s] = 0;
	for (const char *v = eq + 1; *v;) {
		char *end;
		double x = strtod(v, &end);
		if (end == v || p->nval == MANIFEST_MAXV || (*end && *end != '|'))
			return -1;
		p->val[p->nval++] = x;
		v = *end ? end + 1 : end;
	}
	return p->nval ? 0 : -1;
}

/*
** The manifest's policies whose matrices include `matrix` (all of them for NULL), in
** manifest order, into out[max]. Returns the count, or -1 with a message in why.
*/
static inline int mf_read(const char *matrix, MfPolicy *out, int max, char *why, size_t whylen)
{
	FILE *fp = fopen(MANIFEST_PATH, "r");
	if (!fp) {
		snprintf(why, whylen, "cannot read %s (run from the repository root)", MANIFEST_PATH);
		return -1;
	}
	char line[1024];
	int n = 0, ln = 0;
	while (fgets(line, sizeof line, fp)) {
		ln++;
		if (line[0] == '#' || strspn(line, " \t\r\n") == strlen(line))
			continue;
		MfPolicy p;
		char params[128];
		memset(&p, 0, sizeof p);
		if (sscanf(line, "%63s %191s %31s %31s %159s %127s", p.name, p.file, p.oracle, p.obs, p.matrices,
		           params) != 6 || mf_params(&p, params) != 0) {
			snprintf(why, whylen, "%s:%d: expected name file oracle obs matrices params", MANIFEST_PATH, ln);
			fclose(fp);
			return -1;
		}
		if (matrix && !mf_has(p.matrices, matrix))
			continue;
		if (n == max) {
			snprintf(why, whylen, "%s: more than %d policies", MANIFEST_PATH, max);
			fclose(fp);
			return -1;
		}
		out[n++] = p;
	}
	fclose(fp);
	return n;
}

#endif
