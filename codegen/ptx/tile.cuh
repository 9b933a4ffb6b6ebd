//! tile.cuh: kv_stage, staging rows of Q or K into the score tiles in shared memory;
//! pasted after tile_mma.cuh or tile_fma.cuh, which define kv_qk and KV_DP. With KV_ST > 1
//! stages the K tiles go to KV_ST buffers with cp.async (kv_stagek_async, expr.c tile_open).
/* rows [0, cnt) of src (row stride ld) into dst[rows][KV_DP]; rows past cnt are zero */
__device__ __forceinline__ void kv_stage(kv_qk *dst, int rows, const kv_st *src, long long ld, int cnt) {
	for (int r = threadIdx.x >> 5; r < rows; r += KV_NW) {   /* a warp per row */
		const kv_st *const s = src + r * ld;
		kv_qk *const d = dst + r * KV_DP;
		for (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = r < cnt ? kv_qkcvt(s[c]) : (kv_qk)0;
	}
}
/* rows t0 .. t0+cnt-1 of an instance (base Kb, page table Tb or NULL) into dst[rows][KV_DP] */
__device__ __forceinline__ void kv_stagek(kv_qk *dst, int rows, const KvgArgs &a, const kv_st *Kb, const int *Tb,
                                          long long t0, int cnt) {
	for (int r = threadIdx.x >> 5; r < rows; r += KV_NW) {   /* a warp per row */
		const kv_st *const s = r < cnt ? Kb + kv_roff(a, Tb, t0 + r) : Kb;
		kv_qk *const d = dst + r * KV_DP;
		for (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = r < cnt ? kv_qkcvt(s[c]) : (kv_qk)0;
	}
}
/* the pipeline (KV_ST > 1): tile t+KV_ST-1 is copied into its buffer while tile t is used.
** cp.async (sm_80+): 16-byte copies of a row that needs no conversion and is 16-byte aligned
** (cp.async.cg), else 4-byte ones of 4-byte elements (cp.async.ca: f32 rows, odd KV_DP);
** commit_group after each tile, wait_group KV_ST-1 before a tile is used (this thread's copies
** of it landed; the barrier before kv_logits publishes every thread's). Below sm_80, at KV_ST 1
** and for rows that need a conversion (f16 / bf16 on the FMA path) the copy is kv_stagek's
** synchronous one: the same buffers, the same indexing. Under
** KV_EMU at KV_ST > 1 the emulator's kv_emu_cp stands for cp.async: the bytes land at the thread's
** wait_group (tests/emu/cuda_emu.h), so the emulated matrix checks the waits too. */
#define KV_CPN (KV_ST - 1)   /* a wait leaves the newest KV_ST-1 groups in flight (PTX and emulator) */
#if KV_ST > 1 && !defined(KV_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define KV_ASYNC 1
__device__ __forceinline__ unsigned kv_sa(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void kv_cpcommit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void kv_cpwait() { asm volatile("cp.async.wait_group %0;" ::"n"(KV_CPN) : "memory"); }
#elif KV_ST > 1 && defined(KV_EMU)
#define KV_ASYNC 1
__device__ __forceinline__ void kv_cpcommit() { kv_emu_cp_commit(); }
__device__ __forceinline__ void kv_cpwait() { kv_emu_cp_wait(KV_CPN); }
#else
__device__ __forceinline__ void kv_cpcommit() {}
__device__ __forceinline__ void kv_cpwait() {}
#endif
__device__ __forceinline__ void kv_stagek_async(kv_qk *dst, int rows, const KvgArgs &a, const kv_st *Kb, const int *Tb,
                                                long long t0, int cnt) {
#ifdef KV_ASYNC
	if (sizeof(kv_st) == sizeof(kv_qk)) {   /* a raw copy: mma operands, f32 FMA */
		enum { V = 16 / sizeof(kv_st) };
		for (int r = threadIdx.x >> 5; r < rows; r += KV_NW) {   /* a warp per row */
			kv_qk *const d = dst + r * KV_DP;
			if (r >= cnt) {
				for (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = (kv_qk)0;
				continue;
			}
			const kv_st *const s = Kb + kv_roff(a, Tb, t0 + r);
#ifdef KV_EMU
			for (int c = threadIdx.x & 31; c < KV_D; c += 32) kv_emu_cp(d + c, s + c, (int)sizeof(kv_st));
			(void)V;
#else
			if (KV_D % V == 0 && KV_DP % V == 0 && ((unsigned long long)s & 15) == 0 && (kv_sa(d) & 15) == 0)
				for (int c = (threadIdx.x & 31) * V; c < KV_D; c += 32 * V)
					asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(kv_sa(d + c)), "l"(s + c) : "memory");
			else if (sizeof(kv_st) == 4)
				for (int c = threadIdx.x & 31; c < KV_D; c += 32)
					asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(kv_sa(d + c)), "l"(s + c) : "memory");
			else
				for (int c = threadIdx.x & 31; c < KV_D; c += 32) d[c] = kv_qkcvt(s[c]);
#endif
		}
		return;
	}
#endif
	kv_stagek(dst, rows, a, Kb, Tb, t0, cnt);
}
