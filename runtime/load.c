/*
** The loader: kvcc_open dlopens a policy.so, finds its kvcc_artifact and checks
** what matters for running it — the magic, the ABI (the entry points' signatures),
** the descriptor blob's format, size and hash, every section inside the blob, the
** specialization, and the CPU features the kernels use against the host's (cpuid).
** Nothing else: not the compiler's build or version (informational), not the
** environment, and no KIR — the descriptor says everything the run paths need.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include "runtime/rt.h"
#include "runtime/cpu.h"

KVCC_API void kvcc_close(kvcc_policy *p)
{
	if (!p)
		return;
	if (p->dl)
		dlclose(p->dl);
	free(p);
}

/* a NUL-terminated string at offset o of the string table (inside the blob) */
static int strok(const KaHdr *h, uint32_t o) { return h->str + (size_t)o < h->size && memchr((const char *)h + h->str + o, 0, h->size - h->str - o); }

static int refok(const KaRef *r, int npar) { return r->kind >= KA_NONE && r->kind <= KA_ALL && (r->kind != KA_PAR || (r->idx >= 0 && r->idx < npar)); }

/* A section of n records of size rs at offset off: inside the blob, aligned. */
static int secok(const KaHdr *h, uint32_t off, size_t n, size_t rs) { return off % 8 == 0 && off >= sizeof *h && off <= h->size && n * rs <= h->size - off; }

/* The descriptor: its layout, its references and the specialization; 0 or a message in why. */
static int checkdesc(const kvcc_artifact *a, const char **why)
{
	const KaHdr *h = a->desc;
	*why = "corrupted descriptor";
	if (!h || memcmp(h->magic, KA_MAGIC, sizeof h->magic) != 0)
		return *why = "not a kvcc descriptor (bad magic)", -1;
	if (h->format != KA_FORMAT)
		return *why = "descriptor format differs from this runtime's", -1;
	if (h->size < sizeof *h || h->size > (1u << 30) || ka_fnv(h, h->size, 0) != a->desc_hash)
		return *why = "corrupted artifact (descriptor hash mismatch)", -1;
	if (h->nins < 1 || h->nins > (1 << 20) || h->npar < 0 || h->npar > 4096 || h->nst < 0 || h->nst > 4096 ||
	    !secok(h, h->par, (size_t)h->npar, sizeof(KaParam)) || !secok(h, h->st, (size_t)h->nst, sizeof(KaState)) ||
	    !secok(h, h->ins, (size_t)h->nins, sizeof(KaIns)) || h->str < sizeof *h || h->str >= h->size ||
	    !strok(h, h->name) || !strok(h, h->src) || !memchr(h->version, 0, sizeof h->version))
		return -1;
	if (!refok(&h->every, h->npar) || !refok(&h->obs, h->npar) || !refok(&h->keep_first, h->npar) ||
	    !refok(&h->keep_recent, h->npar) || !refok(&h->chunk, h->npar) || h->scope < KA_SCOPE_HEAD ||
	    h->scope > KA_SCOPE_MODEL || h->score < 0 || h->score >= h->nins || h->fsoft >= h->nins)
		return -1;
	const KaParam *par = (const KaParam *)((const char *)h + h->par);
	const KaState *st = (const KaState *)((const char *)h + h->st);
	const KaIns *in = (const KaIns *)((const char *)h + h->ins);
	for (int i = 0; i < h->npar; i++)
		if (!strok(h, par[i].name))
			return -1;
	for (int i = 0; i < h->nst; i++)
		if (!strok(h, st[i].name))
			return -1;
	for (int i = 0; i < h->nins; i++) {
		int w = in[i].what;
		if (in[i].axes > 15 || w > KA_HMEAN || (w == KA_LOOP && (in[i].arg < i || in[i].arg >= h->nins)) ||
		    (w == KA_HMEAN && (in[i].arg < 0 || in[i].arg >= i || !(in[in[i].arg].store & KA_SARENA))) ||
		    ((w == KA_ATTN_SUM || w == KA_ATTN_MEAN || w == KA_HMEAN) && !(in[i].store & KA_SARENA)))
			return -1;
	}
	if (!(in[h->score].store & KA_SARENA) || in[h->score].axes != 4)
		return -1;
	if (h->dtype < KVCC_F32 || h->dtype > KVCC_BF16 || h->head_dim < 8 || h->head_dim > 256 || h->head_dim % 8 ||
	    h->group < 1 || h->group > 8 || h->target < KVCC_TARGET_NATIVE || h->target > KVCC_TARGET_SCALAR ||
	    (h->vec_width != 1 && h->vec_width != 8 && h->vec_width != 16) || h->head_dim % h->vec_width)
		return *why = "bad specialization in the descriptor", -1;
	return 0;
}

static int validate(kvcc_policy *p, const char *path)
{
	const kvcc_artifact *a = p->a;
	if (a->magic != KVCC_MAGIC)
		return kr_seterr(KVCC_EARTIFACT, "%s: not a kvcc artifact (bad magic)", path);
	if (a->abi != KVCC_ABI || a->size != sizeof(kvcc_artifact))
		return kr_seterr(KVCC_EARTIFACT, "%s: artifact ABI %u (size %u), this libkvcc_rt has ABI %d", path, a->abi,
		                 a->size, KVCC_ABI);
	if (!a->qk || !a->cvt || !a->decode || !a->probs || !a->qkt || !a->sstat || !a->sacc || !a->selkeys || !a->topk ||
	    !a->keepidx || !a->compact || !a->tmap || !a->ckeys || !a->kcount || !a->ckeepidx || !a->nkeep || !a->ascale ||
	    !a->hmean || !a->observe || !a->qround)
		return kr_seterr(KVCC_EARTIFACT, "%s: corrupted artifact descriptor (entry points)", path);
	const char *why;
	if (checkdesc(a, &why) != 0)
		return kr_seterr(KVCC_EARTIFACT, "%s: %s", path, why);
	const KaHdr *h = a->desc;
	uint64_t miss = h->cpu & ~kr_cpu_host();
	if (miss) {
		char names[300];
		return kr_seterr(KVCC_ESPEC, "%s: compiled for CPU features this host lacks: %s", path,
		                 kr_cpu_names(miss, names, sizeof names));
	}
	p->h = h;
	p->par = (const KaParam *)((const char *)h + h->par);
	p->st = (const KaState *)((const char *)h + h->st);
	p->ins = (const KaIns *)((const char *)h + h->ins);
	p->str = (const char *)h + h->str;
	p->name = p->str + h->name, p->src = p->str + h->src;
	return 0;
}

KVCC_API int kvcc_open(const char *path, kvcc_policy **out)
{
	if (!out)
		return kr_seterr(KVCC_EINVAL, "null argument");
	*out = NULL;
	if (!path)
		return kr_seterr(KVCC_EINVAL, "null argument");
	kvcc_policy *p = calloc(1, sizeof *p);
	if (!p)
		return kr_seterr(KVCC_ENOMEM, "out of memory");
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		free(p);
		return kr_seterr(KVCC_EIO, "%s: cannot open", path);
	}
	unsigned char hdr[4] = { 0 };
	size_t got = fread(hdr, 1, 4, fp);
	fclose(fp);
	if (got != 4 || memcmp(hdr, "\177ELF", 4) != 0) {
		free(p);
		return kr_seterr(KVCC_EARTIFACT, "%s: not a shared object", path);
	}
	p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!p->dl) {
		const char *m = dlerror();
		free(p);
		return kr_seterr(KVCC_EARTIFACT, "%s: cannot load: %s", path, m ? m : "?");
	}
	p->a = dlsym(p->dl, KVCC_DESC_SYMBOL);
	int rc = p->a ? validate(p, path)
	              : kr_seterr(KVCC_EARTIFACT, "%s: no %s symbol: not a kvcc artifact", path, KVCC_DESC_SYMBOL);
	if (rc) {
		kvcc_close(p);
		return rc;
	}
	*out = p;
	return 0;
}
