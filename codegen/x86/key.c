/*
** Targets (native, x86-64-v3, x86-64-v4, scalar), the CPU features of a compile (runtime/cpu.h:
** cpuid, the same table the runtime checks) and the compile cache's key (DESIGN §6).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include "codegen/x86/x86.h"
#include "compiler/interp.h"
#include "runtime/cpu.h"

const char *kx_targetname(int t)
{
	switch (t) {
	case KVCC_TARGET_V3: return "x86-64-v3";
	case KVCC_TARGET_V4: return "x86-64-v4";
	case KVCC_TARGET_SCALAR: return "scalar";
	}
	return "native";
}

int kx_targetbyname(const char *s)
{
	if (!strcmp(s, "native")) return KVCC_TARGET_NATIVE;
	if (!strcmp(s, "x86-64-v3") || !strcmp(s, "avx2")) return KVCC_TARGET_V3;
	if (!strcmp(s, "x86-64-v4") || !strcmp(s, "avx512")) return KVCC_TARGET_V4;
	if (!strcmp(s, "scalar")) return KVCC_TARGET_SCALAR;
	return -1;
}

char *kx_hostfeatures(void)
{
	char buf[1024];
	return strdup(kr_cpu_names(kr_cpu_host(), buf, sizeof buf));
}

/* x86-64 microarchitecture levels (the psABI's; what LLVM's x86-64-v3 / -v4 CPUs enable) */
static const char *const V3FEAT = "avx,avx2,bmi,bmi2,cx16,f16c,fma,lzcnt,movbe,popcnt,sahf,sse3,sse4.1,sse4.2,ssse3,xsave,crc32";
static const char *const V4FEAT = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,evex512";

uint64_t kx_cpumask(const kvcc_spec *s, const char *host)
{
	switch (s->target) {
	case KVCC_TARGET_SCALAR: return 0;
	case KVCC_TARGET_V3: return kr_cpu_parse(V3FEAT);
	case KVCC_TARGET_V4: return kr_cpu_parse(V3FEAT) | kr_cpu_parse(V4FEAT);
	}
	return kr_cpu_parse(host);
}

static int hasfeat(const char *fs, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = fs; (p = strstr(p, name)); p += n)
		if (p > fs && p[-1] == '+' && (p[n] == ',' || p[n] == 0))
			return 1;
	return 0;
}

/* The attn_score Q·K tile uses vdpbf16ps: bf16 storage, native target with avx512bf16, 16 lanes
** (KVCC_BF16DOT=0 turns it off, e.g. to compare; it is part of the compile-cache key). */
int kx_bf16dot(const kvcc_spec *s, const char *fs, int W)
{
	const char *e = getenv("KVCC_BF16DOT");
	return s->dtype == KVCC_BF16 && s->target == KVCC_TARGET_NATIVE && W == 16 && hasfeat(fs, "avx512bf16") &&
	       !(e && !strcmp(e, "0"));
}

int kx_amx(const kvcc_spec *s, const char *fs, int W)
{
	return s->dtype == KVCC_BF16 && s->target == KVCC_TARGET_NATIVE && W == 16 && s->head_dim % 32 == 0 &&
	       hasfeat(fs, "amx-tile") && hasfeat(fs, "amx-bf16");
}

int kx_amx3(const kvcc_spec *s, const char *fs, int W)
{
	return s->dtype == KVCC_F32 && s->target == KVCC_TARGET_NATIVE && W == 16 && s->head_dim % 32 == 0 &&
	       hasfeat(fs, "amx-tile") && hasfeat(fs, "amx-bf16");
}

int kx_vecwidth(const kvcc_spec *s, const char *fs)
{
	int v4 = hasfeat(fs, "avx512f") && hasfeat(fs, "avx512bw") && hasfeat(fs, "avx512vl") &&
	         hasfeat(fs, "avx512dq") && hasfeat(fs, "evex512");
	int v3 = hasfeat(fs, "avx2") && hasfeat(fs, "fma") && hasfeat(fs, "f16c");
	switch (s->target) {
	case KVCC_TARGET_SCALAR: return 1;
	case KVCC_TARGET_V3: return v3 ? 8 : 0;
	case KVCC_TARGET_V4: return v4 ? (s->head_dim % 16 == 0 ? 16 : 8) : 0;
	}
	return v4 ? (s->head_dim % 16 == 0 ? 16 : 8) : v3 ? 8 : 1;
}

void kx_keyfill(KxKey *k, const char *kir, const char *version, const char *features, int dtype, int head_dim,
                int group, int target, int vec_width)
{
	unsigned maj = 0, mi = 0, pa = 0;
	LLVMGetVersion(&maj, &mi, &pa);
	snprintf(k->llvm, sizeof k->llvm, "%u.%u", maj, mi);
	char *tri = LLVMGetDefaultTargetTriple();
	snprintf(k->triple, sizeof k->triple, "%s", tri);
	LLVMDisposeMessage(tri);
	/* KVCC_BF16DOT=0 and KVCC_MERGE_AMX=0 (issue 12: no f32 merge similarity on AMX) change the code */
	static const char *opts[4] = { KX_OPTIONS, KX_OPTIONS ",nobf16dot", KX_OPTIONS ",nomamx3",
	                               KX_OPTIONS ",nobf16dot,nomamx3" };
	const char *e1 = getenv("KVCC_BF16DOT"), *e2 = getenv("KVCC_MERGE_AMX");
	k->kir = kir, k->version = version, k->features = features, k->build = KX_BUILD;
	k->options = opts[(e1 && !strcmp(e1, "0")) + 2 * (e2 && !strcmp(e2, "0"))];
	k->dtype = dtype, k->head_dim = head_dim, k->group = group, k->target = target, k->vec_width = vec_width;
	k->abi = KVCC_ABI;
}

static uint64_t fnvs(const char *s, uint64_t h) { return ki_fnv(s, strlen(s), h); }

uint64_t kx_keyhash(const KxKey *k)
{
	char buf[200];
	uint64_t h = fnvs(k->kir, 0xcbf29ce484222325ull);
	h = fnvs(k->version, h);
	h = fnvs(k->features, h);
	snprintf(buf, sizeof buf, "llvm%s|%s|dt%d|d%d|g%d|t%d|w%d|abi%d|%s|%s|%zu", k->llvm, k->triple, k->dtype,
	         k->head_dim, k->group, k->target, k->vec_width, k->abi, k->options, k->build, sizeof(kvcc_artifact));
	return fnvs(buf, h);
}

void kx_keydesc(const KxKey *k, char *buf, size_t n)
{
	char build[64];
	snprintf(build, sizeof build, "%s", k->build);
	for (char *c = build; *c; c++)
		if (*c == ' ')
			*c = '_';
	snprintf(buf, n, "kir=%016llx version=%s build=%s llvm=%s triple=%s features=%016llx dtype=%s head_dim=%d "
	         "group=%d target=%s width=%d abi=%d options=%s",
	         (unsigned long long)fnvs(k->kir, 0xcbf29ce484222325ull), k->version, build, k->llvm, k->triple,
	         (unsigned long long)fnvs(k->features, 0xcbf29ce484222325ull), ki_dtypename(k->dtype), k->head_dim,
	         k->group, kx_targetname(k->target), k->vec_width, k->abi, k->options);
}

uint64_t kx_key(const char *kir, const char *version, const char *features, int dtype, int head_dim,
                int group, int target, int vec_width)
{
	KxKey k;
	kx_keyfill(&k, kir, version, features, dtype, head_dim, group, target, vec_width);
	return kx_keyhash(&k);
}

int kx_speckey(const KiFn *f, const kvcc_spec *spec, KxKey *k, char **kir, char **host)
{
	*kir = NULL;
	*host = kx_hostfeatures();
	if (!*host)
		return -1;
	int W = kx_vecwidth(spec, *host);
	if (!W)
		return -1;
	*kir = ki_print(f);
	if (!*kir)
		return -1;
	kx_keyfill(k, *kir, KVCC_VERSION, spec->target == KVCC_TARGET_NATIVE ? *host : kx_targetname(spec->target),
	           spec->dtype, spec->head_dim, spec->group, spec->target, W);
	return 0;
}
