//! tile.cuh: kv_stage, staging rows of Q or K into the score tiles in shared memory;
//! pasted after tile_mma.cuh or tile_fma.cuh, which define kv_qk and KV_DP.
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
