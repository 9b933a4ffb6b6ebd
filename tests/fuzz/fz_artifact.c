/*
** Fuzz the artifact loader, two ways, picked by the input's first byte.
**
** 'D' + bytes: a CPU descriptor (runtime/artifact.h: KaHdr, params, states,
** instructions, strings). The harness gives it the hash the loader expects (a
** mutated descriptor that passed the file checksum, as a compiler bug would
** make) and runs the loader's descriptor check, kr_checkdesc; what the check
** accepts is then walked as the runtime walks it (names, instruction records),
** so that ASan sees any read the check let through. Seeds: descseed.c
** (make fuzz-descseeds), the descriptors of shipped policies compiled by kvcc.
**
** Anything else: the bytes as a policy.so file, through kvcc_open and the
** queries a caller makes on an open policy. kvcc_open reads the whole file and
** checks its checksum trailer before dlopen maps anything (issue 10), so a
** mutated file is refused before the dynamic loader sees it.
*/
#include <stdlib.h>
#include <string.h>
#include "kvcc.h"
#include "runtime/rt.h"
#include "tests/fuzz/fuzz.h"

static void walkdesc(const KaHdr *h)
{
	const char *str = (const char *)h + h->str;
	const KaParam *par = (const KaParam *)((const char *)h + h->par);
	const KaState *st = (const KaState *)((const char *)h + h->st);
	const KaIns *in = (const KaIns *)((const char *)h + h->ins);
	volatile size_t sum = strlen(str + h->name) + strlen(str + h->src);
	for (int i = 0; i < h->npar; i++)
		sum += strlen(str + par[i].name);
	for (int i = 0; i < h->nst; i++)
		sum += strlen(str + st[i].name);
	for (int i = 0; i < h->nins; i++)
		sum += (size_t)in[i].what + in[i].axes + (size_t)in[i].store;
	sum += (size_t)in[h->score].axes;
	(void)sum;
}

static void fuzzdesc(const uint8_t *data, size_t size)
{
	if (size < sizeof(KaHdr) || size > (1u << 20))
		return;
	KaHdr *h = malloc(size);       /* malloc's alignment, as the loader's mapped blob */
	if (!h)
		return;
	memcpy(h, data, size);
	h->size = (uint32_t)size;      /* the hash covers the blob's own bytes, never more */
	kvcc_artifact a;
	memset(&a, 0, sizeof a);
	a.desc = h;
	a.desc_hash = ka_fnv(h, size, 0);
	const char *why;
	if (kr_checkdesc(&a, &why) == 0)
		walkdesc(h);
	free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 1 && data[0] == 'D') {
		fuzzdesc(data + 1, size - 1);
		return 0;
	}
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
