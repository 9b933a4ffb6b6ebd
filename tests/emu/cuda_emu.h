/*
** cuda_emu.h — run kvcc's generated CUDA C on the CPU (C++, g++), for tests.
**
** Model: a grid's blocks run one after another; a block's threads run as
** cooperative fibers (ucontext) on one OS thread, so plain read-modify-write
** is atomic. __syncthreads() is a barrier between the block's fibers;
** warp shuffles/ballots are barriers between the 32 lanes of a warp that
** exchange values; __shared__ is `static` (one copy, reused block after block,
** like per-block storage); dynamic shared memory is a zeroed buffer per block.
** Misuse is reported, never hidden: a barrier some threads of the block (or
** lanes of the warp) never reach, a partial warp mask, a block size that is
** not a multiple of 32 → the launch fails with a message.
**
** Only what kvcc's generator emits is provided; a construct it starts using
** that is missing here fails to compile, and so fails the test.
**
** KV_EMU is defined: the generated prelude then calls kv_emu_mma for the
** tensor-core mma.m16n8k16 instead of its inline PTX (see kv_emu_mma below).
*/
#ifndef KVCC_CUDA_EMU_H
#define KVCC_CUDA_EMU_H

#include <ucontext.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define KV_DYNSMEM(nm) unsigned char *const nm = kv_emu::dsmem
#define KV_DSMEM_BYTES() ((unsigned)kv_emu::dsmem_n)
#define KV_EMU 1
#define KV_ROLLED                 /* _Pragma("unroll 1") for NVRTC (prelude.cuh) */
#define KV_UNROLL2                /* _Pragma("unroll 2") for NVRTC (prelude.cuh) */

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };

namespace kv_emu {

enum { RUN, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
	ucontext_t ctx;
	int state;
	void *stack;
};

static ucontext_t sched;
static Fiber *fib;
static int nth, cur;
static unsigned char *dsmem;
static size_t dsmem_n;   /* the launch's dynamic shared memory (KV_DSMEM_BYTES) */
static char errmsg[256];
static int failed;
static void (*body)(void);
static union Slot { unsigned u; float f; int i; } *xch;
static struct MmaSlot { unsigned a[4], b[2]; float c[4]; } *mmx;
static const size_t STACK = 256 * 1024;
/* cp.async (kv_emu_cp below): each thread's copies not landed yet, and its committed groups */
struct CpPend { unsigned char *dst; unsigned char v[16]; int n; long grp; };
static std::vector<CpPend> cpq[1024];
static long cpgrp[1024];

} // namespace kv_emu

static uint3 threadIdx, blockIdx, blockDim, gridDim;

namespace kv_emu {

static void fail(const char *m)
{
	if (!failed)
		snprintf(errmsg, sizeof errmsg, "%s", m);
	failed = 1;
}

static void yield(int st)
{
	fib[cur].state = st;
	swapcontext(&fib[cur].ctx, &sched);
	if (failed) {                     /* the block is being abandoned */
		fib[cur].state = DONE;
		swapcontext(&fib[cur].ctx, &sched);
	}
}

static void entry(void)
{
	body();
	fib[cur].state = DONE;
}

/* release barriers whose participants are all waiting; 0 when none could */
static int release(void)
{
	int any = 0, nwait = 0, ndone = 0, nblock = 0;
	for (int i = 0; i < nth; i++) {
		nwait += fib[i].state != DONE;
		ndone += fib[i].state == DONE;
		nblock += fib[i].state == WAIT_BLOCK;
	}
	if (nblock && nblock == nwait) {
		if (ndone) {
			fail("__syncthreads() not reached by every thread of the block (some exited)");
			return 0;
		}
		for (int i = 0; i < nth; i++)
			fib[i].state = RUN;
		return 1;
	}
	for (int w = 0; w < nth / 32; w++) {
		int wait = 0, done = 0;
		for (int i = w * 32; i < w * 32 + 32; i++)
			wait += fib[i].state == WAIT_WARP, done += fib[i].state == DONE;
		if (wait && wait + done == 32) {
			if (done) {
				fail("warp-synchronous operation with exited lanes");
				return 0;
			}
			for (int i = w * 32; i < w * 32 + 32; i++)
				fib[i].state = RUN;
			any = 1;
		}
	}
	return any;
}

template <class A> struct Call {
	static void (*fn)(A);
	static const A *args;
	static void run(void) { fn(*args); }
};
template <class A> void (*Call<A>::fn)(A);
template <class A> const A *Call<A>::args;

/* run one block to completion; -1 on misuse */
static int runblock(void)
{
	for (int i = 0; i < nth; i++)     /* a block starts with no copy in flight */
		cpq[i].clear(), cpgrp[i] = 0;
	for (int i = 0; i < nth; i++) {
		getcontext(&fib[i].ctx);
		fib[i].ctx.uc_stack.ss_sp = fib[i].stack;
		fib[i].ctx.uc_stack.ss_size = STACK;
		fib[i].ctx.uc_link = &sched;
		makecontext(&fib[i].ctx, entry, 0);
		fib[i].state = RUN;
	}
	for (;;) {
		int ran = 0, alive = 0;
		for (int i = 0; i < nth; i++) {
			if (fib[i].state != RUN)
				continue;
			cur = i;
			threadIdx.x = (unsigned)i, threadIdx.y = threadIdx.z = 0;
			swapcontext(&sched, &fib[i].ctx);
			ran = 1;
		}
		for (int i = 0; i < nth; i++)
			alive += fib[i].state != DONE;
		if (!alive)
			return failed ? -1 : 0;
		if (!ran && !release()) {
			if (!failed)
				fail("deadlock: threads wait at different barriers");
			/* let every fiber unwind to DONE */
			for (int i = 0; i < nth; i++)
				if (fib[i].state != DONE) {
					cur = i;
					swapcontext(&sched, &fib[i].ctx);
				}
			return -1;
		}
	}
}

} // namespace kv_emu

/* Launch fn<<<dim3(grid, grid_y), block, dsmem>>>(*args); blocks in x-major order.
** 0, or -1 with kv_emu_error(). */
template <class A>
static int kv_emu_launch(void (*fn)(A), unsigned grid, unsigned block, size_t dsm, const A *args, unsigned grid_y = 1)
{
	using namespace kv_emu;
	failed = 0, errmsg[0] = 0;
	if (block == 0 || block % 32 || block > 1024) {
		fail("block size must be a positive multiple of 32 up to 1024");
		return -1;
	}
	nth = (int)block;
	fib = (Fiber *)calloc((size_t)nth, sizeof *fib);
	xch = (Slot *)calloc((size_t)nth, sizeof *xch);
	mmx = (MmaSlot *)calloc((size_t)nth, sizeof *mmx);
	dsmem = (unsigned char *)calloc(dsm + 16, 1);
	dsmem_n = dsm;
	int rc = fib && xch && mmx && dsmem ? 0 : -1;
	for (int i = 0; rc == 0 && i < nth; i++)
		if (!(fib[i].stack = malloc(STACK)))
			rc = -1;
	Call<A>::fn = fn, Call<A>::args = args, body = Call<A>::run;
	blockDim.x = block, blockDim.y = blockDim.z = 1;
	gridDim.x = grid, gridDim.y = grid_y, gridDim.z = 1;
	for (unsigned b = 0; rc == 0 && b < grid * grid_y; b++) {
		blockIdx.x = b % grid, blockIdx.y = b / grid, blockIdx.z = 0;
		memset(dsmem, 0, dsm + 16);
		rc = runblock();
	}
	for (int i = 0; fib && i < nth; i++)
		free(fib[i].stack);
	free(fib), free(xch), free(mmx), free(dsmem);
	fib = NULL, xch = NULL, mmx = NULL, dsmem = NULL;
	return rc;
}

static inline const char *kv_emu_error(void) { return kv_emu::errmsg; }

/* --- device functions ------------------------------------------------------------ */

static inline void __syncthreads(void) { kv_emu::yield(kv_emu::WAIT_BLOCK); }

static inline void kv_emu_fullmask(unsigned m)
{
	if (m != 0xffffffffu)
		kv_emu::fail("partial warp masks are not emulated");
}

static inline unsigned kv_emu_xchg(unsigned v, int src)
{
	using namespace kv_emu;
	int me = cur, base = me & ~31;
	xch[me].u = v;
	yield(WAIT_WARP);                       /* every lane has written */
	unsigned r = xch[base + (src & 31)].u;
	yield(WAIT_WARP);                       /* every lane has read */
	return r;
}

/* a warp barrier: every lane of the warp reaches it (memory: fibers share it at once) */
static inline void __syncwarp(unsigned m = 0xffffffffu)
{
	kv_emu_fullmask(m);
	kv_emu::yield(kv_emu::WAIT_WARP);
}

static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline long long __double_as_longlong(double d) { long long u; memcpy(&u, &d, 8); return u; }
static inline double __longlong_as_double(long long u) { double d; memcpy(&d, &u, 8); return d; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }

static inline float __shfl_xor_sync(unsigned m, float v, int lm)
{
	kv_emu_fullmask(m);
	return __uint_as_float(kv_emu_xchg(__float_as_uint(v), (kv_emu::cur & 31) ^ lm));
}
static inline int __shfl_xor_sync(unsigned m, int v, int lm)
{
	kv_emu_fullmask(m);
	return (int)kv_emu_xchg((unsigned)v, (kv_emu::cur & 31) ^ lm);
}
static inline float __shfl_sync(unsigned m, float v, int src)
{
	kv_emu_fullmask(m);
	return __uint_as_float(kv_emu_xchg(__float_as_uint(v), src));
}
static inline unsigned __ballot_sync(unsigned m, int pred)
{
	using namespace kv_emu;
	kv_emu_fullmask(m);
	int me = cur, base = me & ~31;
	xch[me].u = pred != 0;
	yield(WAIT_WARP);
	unsigned b = 0;
	for (int i = 0; i < 32; i++)
		b |= (xch[base + i].u ? 1u : 0u) << i;
	yield(WAIT_WARP);
	return b;
}
static inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
static inline int __all_sync(unsigned m, int pred) { return __ballot_sync(m, pred) == 0xffffffffu; }

/* fibers never interleave between two yields: plain RMW is atomic */
static inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline int atomicAdd(int *p, int v) { int o = *p; *p = o + v; return o; }
static inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }
static inline double atomicAdd(double *p, double v) { double o = *p; *p = o + v; return o; }
static inline int atomicCAS(int *p, int cmp, int v) { int o = *p; if (o == cmp) *p = v; return o; }
static inline unsigned atomicMax(unsigned *p, unsigned v) { unsigned o = *p; if (v > o) *p = v; return o; }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { unsigned long long o = *p; *p = o + v; return o; }
static inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v) { unsigned long long o = *p; if (v > o) *p = v; return o; }
static inline int atomicMax(int *p, int v) { int o = *p; if (v > o) *p = v; return o; }

/* --- mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 ---------------
** A warp-collective: every lane hands in its registers a[4], b[2], c[4] (= d on entry);
** the warp's fragments are gathered into A (16x16), B (16x8), C (16x8) by the layout of
** the PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type":
**   groupID = laneid >> 2, threadID_in_group = laneid % 4; elements low to high, two
**   per 32-bit register (a0..a7 in a[0..3], b0..b3 in b[0..1]), the lower one in bits 0-15;
**   A: row = groupID for ai, 0 <= i < 2 || 4 <= i < 6, else groupID + 8;
**      col = threadID_in_group * 2 + (i & 1), plus 8 for i >= 4
**   B: row = threadID_in_group * 2 + (i & 1), plus 8 for i >= 2;  col = groupID
**   C/D: row = groupID for c0, c1, else groupID + 8;  col = threadID_in_group * 2 + (i & 1)
** then D = A·B + C (f32, k in order) and each lane gets its d[4] by the C layout. */
static inline float kv_emu_half(unsigned h, int bf16)
{
	if (bf16)
		return __uint_as_float(h << 16);
	const int e = (int)(h >> 10) & 31, m = (int)(h & 1023);
	const float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
	return (h & 0x8000u) ? -v : v;
}

static inline void kv_emu_mma(int bf16, float d[4], const unsigned a[4], const unsigned b[2])
{
	using namespace kv_emu;
	const int me = cur, base = me & ~31, lane = me & 31;
	memcpy(mmx[me].a, a, sizeof mmx[me].a);
	memcpy(mmx[me].b, b, sizeof mmx[me].b);
	memcpy(mmx[me].c, d, sizeof mmx[me].c);
	yield(WAIT_WARP);                       /* every lane has handed in its fragments */
	float A[16][16], B[16][8], C[16][8];
	for (int l = 0; l < 32; l++) {
		const MmaSlot &s = mmx[base + l];
		const int gid = l >> 2, tig = l % 4;
		for (int i = 0; i < 8; i++) {
			const unsigned h = (s.a[i / 2] >> (16 * (i & 1))) & 0xffffu;
			A[(i < 2 || (i >= 4 && i < 6)) ? gid : gid + 8][tig * 2 + (i & 1) + (i >= 4 ? 8 : 0)] = kv_emu_half(h, bf16);
		}
		for (int i = 0; i < 4; i++) {
			const unsigned h = (s.b[i / 2] >> (16 * (i & 1))) & 0xffffu;
			B[tig * 2 + (i & 1) + (i >= 2 ? 8 : 0)][gid] = kv_emu_half(h, bf16);
		}
		for (int i = 0; i < 4; i++)
			C[i < 2 ? gid : gid + 8][tig * 2 + (i & 1)] = s.c[i];
	}
	const int gid = lane >> 2, tig = lane % 4;
	for (int i = 0; i < 4; i++) {
		const int r = i < 2 ? gid : gid + 8, c = tig * 2 + (i & 1);
		float acc = C[r][c];
		for (int k = 0; k < 16; k++)
			acc += A[r][k] * B[k][c];
		d[i] = acc;
	}
	yield(WAIT_WARP);                       /* every lane has read the fragments */
}

/* IEEE float and double ops without contraction (x86-64 SSE2, no FMA at the default -march) */
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
static inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
static inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
static inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
static inline double __ddiv_rn(double a, double b) { volatile double r = a / b; return r; }

/* cp.async (tile.cuh kv_stagek_async at KV_ST > 1): the source is read at the call, the bytes
** land in shared memory at the thread's cp.async.wait_group that covers the group, as late as the
** hardware may let them (a read of the buffer before that wait sees the old bytes: a missing or
** too weak wait fails the matrix); commit_group closes the thread's open group */
static inline void kv_emu_cp(void *dst, const void *src, int n)
{
	kv_emu::CpPend p;
	p.dst = (unsigned char *)dst, p.n = n > 16 ? 16 : n, p.grp = kv_emu::cpgrp[kv_emu::cur];
	memcpy(p.v, src, (size_t)p.n);
	kv_emu::cpq[kv_emu::cur].push_back(p);
}
static inline void kv_emu_cp_commit(void) { kv_emu::cpgrp[kv_emu::cur]++; }
static inline void kv_emu_cp_wait(int pending)
{
	std::vector<kv_emu::CpPend> &q = kv_emu::cpq[kv_emu::cur];
	const long upto = kv_emu::cpgrp[kv_emu::cur] - pending;   /* groups below this one complete */
	size_t k = 0;
	for (size_t i = 0; i < q.size(); i++)
		if (q[i].grp < upto)
			memcpy(q[i].dst, q[i].v, (size_t)q[i].n);
		else
			q[k++] = q[i];
	q.resize(k);
}

#endif
