/*
** cpu.h — the x86 CPU features kvcc knows, read with cpuid (and xgetbv for the
** register state the OS saves). Shared by the compiler, which compiles for a
** feature set (native: the host's, from this table only, so generated code can use
** nothing the runtime cannot check) and records it in the artifact as a bit mask,
** and the runtime, which refuses an artifact whose mask is not a subset of the host's.
** Names are LLVM's feature names. Header-only: both libraries inline it.
*/
#ifndef KVCC_CPU_H
#define KVCC_CPU_H

#include <stdint.h>
#include <string.h>
#include <cpuid.h>

/* name, cpuid leaf, subleaf, register (0 eax 1 ebx 2 ecx 3 edx), bit, register state the OS
** must save (0 none, 1 ymm, 2 zmm, 3 AMX tile state: XCR0 bits 17-18); leaf 0 marks a feature derived from another (below).
** The row number is the feature's bit in a mask: append only. */
#define KR_CPU_FEATURES(X) \
	X("sse3",            1,          0, 2,  0, 0) \
	X("ssse3",           1,          0, 2,  9, 0) \
	X("fma",             1,          0, 2, 12, 1) \
	X("cx16",            1,          0, 2, 13, 0) \
	X("sse4.1",          1,          0, 2, 19, 0) \
	X("sse4.2",          1,          0, 2, 20, 0) \
	X("movbe",           1,          0, 2, 22, 0) \
	X("popcnt",          1,          0, 2, 23, 0) \
	X("aes",             1,          0, 2, 25, 0) \
	X("xsave",           1,          0, 2, 26, 0) \
	X("avx",             1,          0, 2, 28, 1) \
	X("f16c",            1,          0, 2, 29, 1) \
	X("rdrnd",           1,          0, 2, 30, 0) \
	X("pclmul",          1,          0, 2,  1, 0) \
	X("bmi",             7,          0, 1,  3, 0) \
	X("avx2",            7,          0, 1,  5, 1) \
	X("bmi2",            7,          0, 1,  8, 0) \
	X("avx512f",         7,          0, 1, 16, 2) \
	X("avx512dq",        7,          0, 1, 17, 2) \
	X("rdseed",          7,          0, 1, 18, 0) \
	X("adx",             7,          0, 1, 19, 0) \
	X("avx512ifma",      7,          0, 1, 21, 2) \
	X("avx512cd",        7,          0, 1, 28, 2) \
	X("sha",             7,          0, 1, 29, 0) \
	X("avx512bw",        7,          0, 1, 30, 2) \
	X("avx512vl",        7,          0, 1, 31, 2) \
	X("avx512vbmi",      7,          0, 2,  1, 2) \
	X("avx512vbmi2",     7,          0, 2,  6, 2) \
	X("gfni",            7,          0, 2,  8, 0) \
	X("vaes",            7,          0, 2,  9, 1) \
	X("vpclmulqdq",      7,          0, 2, 10, 1) \
	X("avx512vnni",      7,          0, 2, 11, 2) \
	X("avx512bitalg",    7,          0, 2, 12, 2) \
	X("avx512vpopcntdq", 7,          0, 2, 14, 2) \
	X("avx512fp16",      7,          0, 3, 23, 2) \
	X("avxvnni",         7,          1, 0,  4, 1) \
	X("avx512bf16",      7,          1, 0,  5, 2) \
	X("lzcnt",           0x80000001, 0, 2,  5, 0) \
	X("sahf",            0x80000001, 0, 2,  0, 0) \
	X("prfchw",          0x80000001, 0, 2,  8, 0) \
	X("sse4a",           0x80000001, 0, 2,  6, 0) \
	X("xsaveopt",        0xd,        1, 0,  0, 0) \
	X("xsavec",          0xd,        1, 0,  1, 0) \
	X("xsaves",          0xd,        1, 0,  3, 0) \
	X("evex512",         0,          0, 0,  0, 2) /* 512-bit AVX-512: with avx512f */ \
	X("crc32",           0,          0, 0,  0, 0) /* with sse4.2 */ \
	X("amx-tile",        7,          0, 3, 24, 3) /* AMX: the process must also ask Linux for */ \
	X("amx-bf16",        7,          0, 3, 22, 3) /* the tile data (kr_amx_enable) */

typedef struct KrCpuFeat {
	const char *name;
	unsigned leaf, sub, reg, bit, os;
} KrCpuFeat;

#define KR_CPU_ROW(n, l, s, r, b, o) { n, l, s, r, b, o },
static const KrCpuFeat kr_cpu_feats[] = { KR_CPU_FEATURES(KR_CPU_ROW) };
#undef KR_CPU_ROW
enum { KR_CPU_NFEAT = sizeof kr_cpu_feats / sizeof kr_cpu_feats[0] };
_Static_assert(KR_CPU_NFEAT <= 63, "CPU feature masks are 64 bits (bit 63: kr_cpu_host's memo)");

/* the bit of feature `name`, or -1 */
static inline int kr_cpu_bit(const char *name, size_t len)
{
	for (int i = 0; i < KR_CPU_NFEAT; i++)
		if (strlen(kr_cpu_feats[i].name) == len && !memcmp(kr_cpu_feats[i].name, name, len))
			return i;
	return -1;
}

/* The mask of a comma-separated list of names ("+avx2,+fma" or "avx2,fma"; unknown names are
** ignored). */
static inline uint64_t kr_cpu_parse(const char *s)
{
	uint64_t m = 0;
	while (s && *s) {
		s += *s == '+';
		size_t n = strcspn(s, ",");
		int b = kr_cpu_bit(s, n);
		if (b >= 0)
			m |= 1ull << b;
		s += n + (s[n] == ',');
	}
	return m;
}

/* The host's features (cpuid; AVX and AVX-512 only when the OS saves their registers). A cpuid
** traps to the hypervisor in a VM (tens of microseconds): each leaf is read once, and the mask
** once per process. */
static inline uint64_t kr_cpu_host(void)
{
	static uint64_t memo;                /* bit 63: computed (no feature uses it: <= 46 rows) */
	uint64_t m = __atomic_load_n(&memo, __ATOMIC_RELAXED);
	if (m >> 63)
		return m & ~(1ull << 63);
	unsigned max = __get_cpuid_max(0, 0), xmax = __get_cpuid_max(0x80000000u, 0);
	unsigned ymm = 0, zmm = 0, tile = 0;
	struct { unsigned leaf, sub, ok, r[4]; } seen[8];
	int ns = 0;
	m = 0;
	for (int i = 0; i < KR_CPU_NFEAT; i++) {
		const KrCpuFeat *f = &kr_cpu_feats[i];
		if (!f->leaf || (f->leaf >= 0x80000000u ? f->leaf > xmax : f->leaf > max))
			continue;
		int k = 0;
		while (k < ns && (seen[k].leaf != f->leaf || seen[k].sub != f->sub))
			k++;
		if (k == ns && ns < 8) {
			seen[k].leaf = f->leaf, seen[k].sub = f->sub;
			seen[k].ok = __get_cpuid_count(f->leaf, f->sub, &seen[k].r[0], &seen[k].r[1], &seen[k].r[2], &seen[k].r[3]);
			ns++;
		}
		if (k < ns && seen[k].ok && (seen[k].r[f->reg] >> f->bit & 1))
			m |= 1ull << i;
	}
	for (int k = 0; k < ns; k++)          /* leaf 1 ecx bit 27: OSXSAVE, then XCR0 */
		if (seen[k].leaf == 1 && seen[k].ok && (seen[k].r[2] >> 27 & 1)) {
			unsigned lo, hi;
			__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
			ymm = (lo & 6) == 6;
			zmm = ymm && (lo & 0xe0) == 0xe0;
			tile = (lo & 0x60000) == 0x60000;     /* XTILECFG, XTILEDATA */
		}
	for (int i = 0; i < KR_CPU_NFEAT; i++)
		if ((kr_cpu_feats[i].os == 1 && !ymm) || (kr_cpu_feats[i].os == 2 && !zmm) || (kr_cpu_feats[i].os == 3 && !tile))
			m &= ~(1ull << i);
	if (m >> kr_cpu_bit("avx512f", 7) & 1)
		m |= 1ull << kr_cpu_bit("evex512", 7);
	if (m >> kr_cpu_bit("sse4.2", 6) & 1)
		m |= 1ull << kr_cpu_bit("crc32", 5);
	__atomic_store_n(&memo, m | 1ull << 63, __ATOMIC_RELAXED);
	return m;
}

/* "+a,+b,..." of a mask, in table order, into buf (n bytes; truncated at a feature boundary) */
static inline const char *kr_cpu_names(uint64_t m, char *buf, size_t n)
{
	size_t k = 0;
	if (n)
		buf[0] = 0;
	for (int i = 0; i < KR_CPU_NFEAT; i++)
		if (m >> i & 1) {
			size_t l = strlen(kr_cpu_feats[i].name);
			if (k + l + 3 > n)
				break;
			if (k)
				buf[k++] = ',';
			buf[k++] = '+';
			memcpy(buf + k, kr_cpu_feats[i].name, l + 1);
			k += l;
		}
	return buf;
}

/* AMX tiles need the process's permission on Linux (arch_prctl ARCH_REQ_XCOMP_PERM for
** XFEATURE_XTILEDATA, once per process; every thread may then use them): 0, or -1 when the
** kernel refuses (or this is not Linux). The runtime asks at plan creation for an artifact whose
** kernels use AMX (KA_FAMX), the bench before its AMX peak. */
#if defined(__linux__)
#include <unistd.h>
#include <sys/syscall.h>
#endif
static inline int kr_amx_enable(void)
{
#if defined(__linux__) && defined(SYS_arch_prctl)
	static int done;                     /* 1 granted, -1 refused */
	int d = __atomic_load_n(&done, __ATOMIC_ACQUIRE);
	if (!d) {
		d = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0 ? 1 : -1;
		__atomic_store_n(&done, d, __ATOMIC_RELEASE);
	}
	return d > 0 ? 0 : -1;
#else
	return -1;
#endif
}

#endif
