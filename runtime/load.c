/*
** The loader: kvcc_open dlopens a policy.so, finds its kvcc_artifact and checks
** what matters for running it — the magic, the ABI (the entry points' signatures),
** the descriptor blob's format, size and hash, every section inside the blob, the
** specialization, and the CPU features the kernels use against the host's (cpuid).
** Nothing else: not the compiler's build or version (informational), not the
** environment, and no KIR — the descriptor says everything the run paths need.
** Before dlopen maps anything the whole file is read and its checksum trailer checked
** (artifact.h), and the exact path is opened (never a library search).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include "runtime/rt.h"
#include "runtime/cpu.h"

/* Drop one reference (kvcc_close's, or a plan's): the last one unloads the policy. */
void kr_policy_unref(kvcc_policy *p)
{
	if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (p->dl)
		dlclose(p->dl);
	free(p);
}

/* The caller's handle goes; plans made from it keep the policy loaded until they are destroyed. */
KVCC_API void kvcc_close(kvcc_policy *p) { kr_policy_unref(p); }

/* a NUL-terminated string at offset o of the string table (inside the blob) */
static int strok(const KaHdr *h, uint32_t o) { return h->str + (size_t)o < h->size && memchr((const char *)h + h->str + o, 0, h->size - h->str - o); }

static int refok(const KaRef *r, int npar) { return r->kind >= KA_NONE && r->kind <= KA_ALL && (r->kind != KA_PAR || (r->idx >= 0 && r->idx < npar)); }

/* A section of n records of size rs at offset off: inside the blob, aligned. */
static int secok(const KaHdr *h, uint32_t off, size_t n, size_t rs) { return off % 8 == 0 && off >= sizeof *h && off <= h->size && n * rs <= h->size - off; }

/* The descriptor: its layout, its references and the specialization; 0 or a message in why.
** (tests/fuzz/fz_artifact.c calls it on mutated descriptors.) */
int kr_checkdesc(const kvcc_artifact *a, const char **why)
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
	if (!refok(&h->tau, h->npar) || !refok(&h->mass, h->npar) || !refok(&h->floor, h->npar) ||
	    (h->floor.kind != KA_NONE && (h->scope != KA_SCOPE_LAYER || h->selkind != KA_SEL_TOPK)))
		return -1;
	if (h->cnt < -1 || h->cnt >= h->nst || (h->cbias && h->cnt < 0))
		return -1;
	if (h->mtau < -1 || h->mtau >= h->nst || (h->mthr == KA_TEMA) != (h->mtau >= 0) ||
	    (h->mtau >= 0 && (h->merge != KA_MNEAREST || !refok(&h->mbeta, h->npar))) ||
	    (h->merge == KA_MNEXT && !refok(&h->mnext, h->npar)))
		return -1;
	if (h->sched < KA_SCH_NONE || h->sched > KA_SCH_DYNAMIC || !refok(&h->sa, h->npar) || !refok(&h->sb, h->npar) ||
	    (h->sched >= KA_SCH_PREFIX && (h->selkind != KA_SEL_TOPK || h->floor.kind != KA_NONE)))
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
		if (in[i].axes > 31 || ((in[i].axes & 16) && in[i].store) || w > KA_HMEAN || (w == KA_LOOP && (in[i].arg < i || in[i].arg >= h->nins)) ||
		    (w == KA_HMEAN && (in[i].arg < 0 || in[i].arg >= i || !(in[in[i].arg].store & KA_SARENA))) ||
		    ((w == KA_ATTN_SUM || w == KA_ATTN_MEAN || w == KA_HMEAN) && !(in[i].store & KA_SARENA)))
			return -1;
	}
	if (!(in[h->score].store & KA_SARENA) || in[h->score].axes != 4)
		return -1;
	if (h->nw < 0 || h->nw > 32 || h->wout < 0 || !secok(h, h->wt, (size_t)h->nw, sizeof(KaWeight)) || h->selkind < KA_SEL_TOPK ||
	    h->selkind > KA_SEL_MASS || !refok(&h->tau, h->npar) ||
	    !refok(&h->mass, h->npar))
		return -1;
	const KaWeight *wt = (const KaWeight *)((const char *)h + h->wt);
	for (int i = 0; i < h->nw; i++) {
		if (!strok(h, wt[i].name) || wt[i].ndim < 1 || wt[i].ndim > 6)
			return -1;
		for (int j = 0; j < wt[i].ndim; j++)
			if (wt[i].ax[j] > KA_WOUT)
				return -1;
	}
	if (h->dtype < KVCC_F32 || h->dtype > KVCC_BF16 || h->head_dim < 8 || h->head_dim > 256 || h->head_dim % 8 ||
	    h->group < 1 || h->group > 8 || h->target < KVCC_TARGET_NATIVE || h->target > KVCC_TARGET_SCALAR ||
	    (h->vec_width != 1 && h->vec_width != 8 && h->vec_width != 16) || h->head_dim % h->vec_width)
		return *why = "bad specialization in the descriptor", -1;
	for (int k = 0; k < KA_NBUCKET; k++)
		if (h->dtasks[k] < 0 || h->dtasks[k] > 8 || h->dmin[k] < 0 || h->dmin[k] > 65536 || h->dmin[k] % 16)
			return *why = "bad decode split in the descriptor", -1;
	if (!memchr(h->config, 0, sizeof h->config))
		return *why = "bad config string in the descriptor", -1;
	if (h->merge == KA_MSUMMARY && (h->srows < 1 || h->srows > 4096 || h->siters < 0 || h->siters > 1000000 ||
	                                h->cnt < 0 || h->sflag != h->nst - 1 || h->cnt != h->nst - 2))
		return *why = "bad summary rows in the descriptor", -1;
	if (h->merge != KA_MSUMMARY && (h->srows || h->sflag != -1))
		return *why = "bad summary rows in the descriptor", -1;
	if (h->nvar < 0 || h->nvar > KA_NBUCKET)
		return *why = "bad per-bucket variants in the descriptor", -1;
	for (int k = 0; k < KA_NBUCKET; k++)
		if (h->cvar[k] < 0 || h->cvar[k] > h->nvar)
			return *why = "bad per-bucket variants in the descriptor", -1;
	if (h->merge < KA_MDROP || h->merge > KA_MNEXT || (h->mflags & ~(KA_MKEYS | KA_MVALUES | KA_MSUM)) ||
	    h->mthr < KA_TNONE || h->mthr > KA_TEMA || h->nes < 0 || h->nks < 0 || h->nes > h->nins || h->nks > h->nins)
		return *why = "bad merge rule in the descriptor", -1;
	return 0;
}

/* one kvcc_artifact (the main one or a per-bucket variant): magic, ABI, entry points, descriptor,
** CPU features; 0 or the error set */
static int checkart(const kvcc_artifact *a, const char *path)
{
	if (a->magic != KVCC_MAGIC)
		return kr_seterr(KVCC_EARTIFACT, "%s: not a kvcc artifact (bad magic)", path);
	if (a->abi != KVCC_ABI || a->size != sizeof(kvcc_artifact))
		return kr_seterr(KVCC_EARTIFACT, "%s: artifact ABI %u (size %u), this libkvcc_rt has ABI %d", path, a->abi,
		                 a->size, KVCC_ABI);
	if (!a->qk || !a->cvt || !a->decode || !a->probs || !a->qkt || !a->sstat || !a->sacc || !a->selkeys || !a->topk ||
	    !a->keepidx || !a->compact || !a->tmap || !a->ckeys || !a->kcount || !a->ckeepidx || !a->nkeep || !a->ascale ||
	    !a->hmean || !a->observe || !a->qround || !a->tfilter || !a->mtotal || !a->ksum ||
	    !a->kfloor || !a->decodeb || !a->sstate || !a->sacce || !a->mstore || !a->mrow || !a->keepn || !a->ctfilter ||
	    !a->schedcnt || !a->cmass || !a->kcut || !a->msimx)
		return kr_seterr(KVCC_EARTIFACT, "%s: corrupted artifact descriptor (entry points)", path);
	const char *why;
	if (kr_checkdesc(a, &why) != 0)
		return kr_seterr(KVCC_EARTIFACT, "%s: %s", path, why);
	const KaHdr *h = a->desc;
	if (h->merge == KA_MNEAREST && (!a->mscal || !a->mbest || !a->mpair || !a->mupd))
		return kr_seterr(KVCC_EARTIFACT, "%s: corrupted artifact descriptor (merge entry points)", path);
	uint64_t miss = h->cpu & ~kr_cpu_host();
	if (miss) {
		char names[300];
		return kr_seterr(KVCC_ESPEC, "%s: compiled for CPU features this host lacks: %s", path,
		                 kr_cpu_names(miss, names, sizeof names));
	}
	return 0;
}

/* the per-bucket variants of p->a (issue 15, KaHdr.nvar / cvar): each exported, valid, the same
** policy and specialization (kir_hash, dtype, head_dim, group, target), without a table itself */
static int variants(kvcc_policy *p, const char *path)
{
	const KaHdr *h = p->a->desc;
	const kvcc_artifact *v[KA_NBUCKET + 1] = { p->a };
	p->famx = (h->flags & KA_FAMX) != 0;
	for (int k = 1; k <= h->nvar; k++) {
		char sym[40];
		snprintf(sym, sizeof sym, KVCC_VAR_SYMBOL, k);
		v[k] = dlsym(p->dl, sym);
		if (!v[k])
			return kr_seterr(KVCC_EARTIFACT, "%s: no %s symbol (per-bucket variant %d of %d)", path, sym, k, h->nvar);
		int rc = checkart(v[k], path);
		if (rc)
			return rc;
		const KaHdr *x = v[k]->desc;
		if (x->kir_hash != h->kir_hash || x->dtype != h->dtype || x->head_dim != h->head_dim || x->group != h->group ||
		    x->target != h->target || x->nvar != 0 || x->nins != h->nins || ((x->flags ^ h->flags) & ~(KA_FAMX | KA_FQBF16)))
			return kr_seterr(KVCC_EARTIFACT, "%s: per-bucket variant %d is not the same policy", path, k);
		p->famx |= (x->flags & KA_FAMX) != 0;
	}
	for (int b = 0; b < KA_NBUCKET; b++)
		p->bart[b] = v[h->cvar[b]];
	return 0;
}

static int validate(kvcc_policy *p, const char *path)
{
	const kvcc_artifact *a = p->a;
	int rc = checkart(a, path);
	if (rc)
		return rc;
	const KaHdr *h = a->desc;
	if ((rc = variants(p, path)) != 0)
		return rc;
	p->h = h;
	p->par = (const KaParam *)((const char *)h + h->par);
	p->st = (const KaState *)((const char *)h + h->st);
	p->ins = (const KaIns *)((const char *)h + h->ins);
	p->wt = (const KaWeight *)((const char *)h + h->wt);
	p->str = (const char *)h + h->str;
	p->name = p->str + h->name, p->src = p->str + h->src;
	p->kern = ka_kernels(h);     /* the run's kernels: the others are stubs (compress.c needk) */
	return 0;
}

/*
** The whole file, checked before anything maps it: a regular file (opened without blocking, so
** a FIFO is refused at once), an ELF image, and the checksum trailer kvcc compile wrote
** (artifact.h). 0, or the error code with the message set.
*/
static int verifyfile(const char *path)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return kr_seterr(KVCC_EIO, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return kr_seterr(KVCC_EARTIFACT, "%s: not a regular file", path);
	}
	if (st.st_size < 4 || st.st_size > (1ll << 31)) {
		close(fd);
		return kr_seterr(KVCC_EARTIFACT, "%s: not a kvcc artifact (%lld bytes)", path, (long long)st.st_size);
	}
	size_t n = (size_t)st.st_size, got = 0;
	unsigned char *buf = malloc(n);
	if (!buf) {
		close(fd);
		return kr_seterr(KVCC_ENOMEM, "out of memory");
	}
	while (got < n) {
		ssize_t k = read(fd, buf + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	int rc = 0;
	KaTrailer t;
	const char *why;
	if (got != n)
		rc = kr_seterr(KVCC_EIO, "%s: cannot read (%zu of %zu bytes)", path, got, n);
	else if (memcmp(buf, "\177ELF", 4) != 0)
		rc = kr_seterr(KVCC_EARTIFACT, "%s: not a shared object", path);
	else if (ka_trailer_check(buf, n, &t, &why) != 0)
		rc = kr_seterr(KVCC_EARTIFACT, "%s: %s", path, why);
	free(buf);
	return rc;
}

KVCC_API int kvcc_open(const char *path, kvcc_policy **out)
{
	if (!out)
		return kr_seterr(KVCC_EINVAL, "null argument");
	*out = NULL;
	if (!path)
		return kr_seterr(KVCC_EINVAL, "null argument");
	int rc = verifyfile(path);
	if (rc)
		return rc;
	kvcc_policy *p = calloc(1, sizeof *p);
	/* the exact path: a name without a slash is ./name, never a library search */
	size_t pl = strlen(path);
	char *dpath = malloc(pl + 3);
	if (!p || !dpath) {
		free(p), free(dpath);
		return kr_seterr(KVCC_ENOMEM, "out of memory");
	}
	snprintf(dpath, pl + 3, "%s%s", strchr(path, '/') ? "" : "./", path);
	p->refs = 1;
	p->dl = dlopen(dpath, RTLD_NOW | RTLD_LOCAL);
	free(dpath);
	if (!p->dl) {
		const char *m = dlerror();
		free(p);
		return kr_seterr(KVCC_EARTIFACT, "%s: cannot load: %s", path, m ? m : "?");
	}
	p->a = dlsym(p->dl, KVCC_DESC_SYMBOL);
	rc = p->a ? validate(p, path)
	          : kr_seterr(KVCC_EARTIFACT, "%s: no %s symbol: not a kvcc artifact", path, KVCC_DESC_SYMBOL);
	if (rc) {
		kvcc_close(p);
		return rc;
	}
	*out = p;
	return 0;
}
