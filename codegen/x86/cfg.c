/*
** The tuning config of the x86 kernels (x86.h KxConfig; doc/tune.md): parsing, resolving a
** config for one spec on this host, and its canonical string. A resolved config has every field
** concrete; the all-zero config resolves to the fixed kernels' values (score block 6 queries ×
** 4 vectors on 16 lanes, 6 × 2 on 8, 4 × 4 scalar; bf16 dot products where the target has them
** (not on a host with AMX: there a Q·K without the AMX tile defaults to converted f32 FMAs);
** no prefetch (64 tokens on a host with AMX); 11-bit radix digits; decode split about two tasks per thread, chunks >= 256;
** AMX tiles for bf16 Q·K where kx_amx allows them, written ",amx1" at the end of the string, which
** a config without AMX leaves out).
** Fields out of range are an error (the driver then builds the default); fields the target
** cannot honour (512-bit lanes on an AVX2 target, bf16 dot products without avx512bf16, AMX
** without amx-tile/amx-bf16 in the CPU and the OS) are
** clamped to what it has, so any config applies to any spec.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/x86/x86.h"

static int setall(int *v, const char *s, char **end)
{
	for (int k = 0; k < KX_NBUCKET; k++) {
		v[k] = (int)strtol(s, end, 10);
		if (*end == s)
			return -1;
		if (**end != '.') {
			for (int r = k + 1; r < KX_NBUCKET; r++)
				v[r] = v[k];
			return 0;
		}
		s = *end + 1;
	}
	return **end == '.' ? -1 : 0;
}

int kx_cfgparse(const char *s, KxConfig *c, char *why, size_t wn)
{
	memset(c, 0, sizeof *c);
	if (!s || !*s || !strcmp(s, "default"))
		return 0;
	static const struct { const char *name; size_t off; int multi; } F[] = {
		{ "qb", offsetof(KxConfig, qb), 0 },       { "nv", offsetof(KxConfig, nv), 0 },
		{ "w", offsetof(KxConfig, width), 0 },     { "dot", offsetof(KxConfig, nodot), 0 },
		{ "pf", offsetof(KxConfig, pf), 0 },       { "rb", offsetof(KxConfig, rbits), 0 },
		{ "dt", offsetof(KxConfig, dtasks), 1 },   { "dm", offsetof(KxConfig, dmin), 1 },
		{ "amx", offsetof(KxConfig, noamx), 0 },
	};
	const char *p = s;
	while (*p) {
		size_t n = strcspn(p, "=0123456789");
		int k = -1;
		for (int i = 0; i < (int)(sizeof F / sizeof F[0]); i++)
			if (strlen(F[i].name) == n && !strncmp(p, F[i].name, n))
				k = i;
		if (k < 0) {
			snprintf(why, wn, "unknown config field '%.*s' (qb, nv, w, dot, pf, rb, dt, dm, amx)", (int)n, p);
			return -1;
		}
		p += n + (p[n] == '=');
		int *dst = (int *)((char *)c + F[k].off);
		char *end;
		if (F[k].multi ? setall(dst, p, &end) : (*dst = (int)strtol(p, &end, 10), end == p ? -1 : 0)) {
			snprintf(why, wn, "config field '%s' needs a number", F[k].name);
			return -1;
		}
		if (k == 3)   /* dot1 → use it (nodot -1: said so), dot0 → nodot 1; 0: the host's default */
			c->nodot = *dst == 0 ? 1 : -1;
		if (k == 4)   /* pf0 → none (-1: said so; 0 is the host's default), a negative distance → out of range */
			c->pf = *dst == 0 ? -1 : *dst < 0 ? -2 : *dst;
		if (k == 8)   /* amx1 → use it where allowed (noamx 0), amx0 → noamx 1 */
			c->noamx = *dst == 0 ? 1 : 0;
		p = end;
		if (*p == ',')
			p++;
		else if (*p) {
			snprintf(why, wn, "config: unexpected '%c' after '%s'", *p, F[k].name);
			return -1;
		}
	}
	return 0;
}

int kx_cfgresolve(const KxConfig *in, const kvcc_spec *spec, const char *host, KxConfig *o, char *why, size_t wn)
{
	KxConfig z = { 0 };
	if (!in)
		in = &z;
	int W0 = kx_vecwidth(spec, host);
	if (!W0) {
		snprintf(why, wn, "target %s needs CPU features this host lacks", kx_targetname(spec->target));
		return -1;
	}
#define RANGE(cond, ...) if (!(cond)) { snprintf(why, wn, __VA_ARGS__); return -1; }
	RANGE(in->qb >= 0 && in->qb <= 8, "config qb%d: query block must be 1..8", in->qb);
	RANGE(in->nv == 0 || in->nv == 1 || in->nv == 2 || in->nv == 4, "config nv%d: token vectors must be 1, 2 or 4", in->nv);
	RANGE(in->width == 0 || in->width == 1 || in->width == 8 || in->width == 16,
	      "config w%d: vector width must be 8 or 16 lanes (1: scalar)", in->width);
	RANGE(in->pf >= -1 && in->pf <= 1024, "config pf%d: prefetch distance must be 0..1024 tokens", in->pf);
	RANGE(in->rbits == 0 || (in->rbits >= 8 && in->rbits <= 12), "config rb%d: radix digit must be 8..12 bits", in->rbits);
	for (int k = 0; k < KX_NBUCKET; k++) {
		RANGE(in->dtasks[k] >= 0 && in->dtasks[k] <= 8, "config dt%d: decode tasks per thread must be 1..8", in->dtasks[k]);
		RANGE(in->dmin[k] == 0 || (in->dmin[k] >= 16 && in->dmin[k] <= 65536 && in->dmin[k] % 16 == 0),
		      "config dm%d: decode chunk must be a multiple of 16 in 16..65536", in->dmin[k]);
	}
#undef RANGE
	*o = *in;
	o->width = W0 == 1 || in->width == 1 ? W0 : in->width && in->width < W0 ? in->width : W0;
	int W = o->width;
	o->noamx = !kx_amx(spec, host, W) || in->noamx;
	/* issue 15, measured on an Intel Xeon with AMX (doc/tune.md "Defaults per host"): there
	** vdpbf16ps runs at half the FMA rate, so a bf16 Q·K that does not use the AMX tile defaults
	** to converted f32 FMAs (1.6-1.8x faster), and software prefetch 64 tokens ahead takes decode
	** attention from 43 / 53 % to 57-61 / 69-75 % of the read bandwidth (bf16 / f32) */
	kvcc_spec hs = { KVCC_BF16, 128, 1, KVCC_TARGET_NATIVE };
	int amxhost = kx_amx(&hs, host, 16);
	int host_dflt = amxhost && !in->resolved;   /* resolving a resolved config changes nothing */
	o->nodot = !kx_bf16dot(spec, host, W) || in->nodot > 0 || (in->nodot == 0 && host_dflt && o->noamx);
	o->pf = in->pf < 0 ? 0 : in->pf ? in->pf : host_dflt ? 64 : 0;
	o->resolved = 1;
	if (!o->qb)
		o->qb = !o->nodot ? 6 : W == 1 ? 4 : 6;
	if (!o->nv)
		o->nv = !o->nodot ? 4 : W == 8 ? 2 : 4;
	if (!o->rbits)
		o->rbits = 11;
	for (int k = 0; k < KX_NBUCKET; k++) {
		o->dtasks[k] = o->dtasks[k] ? o->dtasks[k] : 2;
		o->dmin[k] = o->dmin[k] ? o->dmin[k] : 256;
	}
	return 0;
}

void kx_cfgstr(const KxConfig *c, char *buf, size_t n)
{
	char dt[64] = "", dm[64] = "";
	for (int k = 0; k < KX_NBUCKET; k++) {
		snprintf(dt + strlen(dt), sizeof dt - strlen(dt), "%s%d", k ? "." : "", c->dtasks[k]);
		snprintf(dm + strlen(dm), sizeof dm - strlen(dm), "%s%d", k ? "." : "", c->dmin[k]);
	}
	snprintf(buf, n, "qb%d,nv%d,w%d,dot%d,pf%d,rb%d,dt%s,dm%s%s", c->qb, c->nv, c->width, !c->nodot, c->pf, c->rbits,
	         dt, dm, c->noamx ? "" : ",amx1");
}
