//! tile_mma.cuh: Q·Kᵀ of a score tile on tensor cores (mma.m16n8k16, f16/bf16 storage,
//! head_dim a multiple of 16). kernels.c defines KV_MMA_T (the PTX operand type, "f16"
//! or "bf16") and KV_MMA_BF16 (1 for bf16: the emulator's operand format) before it;
//! both are undefined at the end (a test translation unit holds many generated programs).
//! Under KV_EMU (tests/emu/cuda_emu.h) the mma is emulated on the CPU.
/* Q·Kᵀ on tensor cores: mma.m16n8k16, storage-precision operands, f32 accumulation */
enum { KV_DP = KV_D + 8 };   /* row pad: 4 banks per row, conflict-free fragment loads */
typedef kv_st kv_qk;
__device__ __forceinline__ kv_qk kv_qkcvt(kv_st x) { return x; }
#ifdef KV_EMU
__device__ __forceinline__ unsigned kv_u32(const kv_st *p) { return (unsigned)p[0] | (unsigned)p[1] << 16; }
__device__ __forceinline__ void kv_mma(float d[4], const unsigned a[4], const unsigned b[2]) { kv_emu_mma(KV_MMA_BF16, d, a, b); }
#define KV_UNROLL2
#else
/* two k-steps per iteration: a full unroll makes ptxas spill (NVRTC 13.0, sm_90) */
#define KV_UNROLL2 _Pragma("unroll 2")
__device__ __forceinline__ unsigned kv_u32(const kv_st *p) { return *(const unsigned *)p; }
/* d = a·b + d for one 16x8 block, the whole warp */
__device__ __forceinline__ void kv_mma(float d[4], const unsigned a[4], const unsigned b[2]) {
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." KV_MMA_T "." KV_MMA_T ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
/* fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"):
** g = lane >> 2, t = lane & 3, two elements per register, lower column/k first.
**   A 16x16 (rows: queries): a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8), a3 (g+8, 2t+8)
**   B 16x8 (k x token; a K row is a column, k contiguous): b0 (2t, g), b1 (2t+8, g)
**   C/D 16x8 f32: c0, c1 (g, 2t and 2t+1), c2, c3 (g+8, 2t and 2t+1) */
__device__ __forceinline__ void kv_frag_a(const kv_qk *s, unsigned a[4]) {
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	a[0] = kv_u32(s + g * KV_DP + 2 * t);
	a[1] = kv_u32(s + (g + 8) * KV_DP + 2 * t);
	a[2] = kv_u32(s + g * KV_DP + 2 * t + 8);
	a[3] = kv_u32(s + (g + 8) * KV_DP + 2 * t + 8);
}
__device__ __forceinline__ void kv_frag_b(const kv_qk *s, unsigned b[2]) {
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	b[0] = kv_u32(s + g * KV_DP + 2 * t);
	b[1] = kv_u32(s + g * KV_DP + 2 * t + 8);
}
__device__ __forceinline__ void kv_frag_c(float *S, int ld, const float c[4]) {
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	S[g * ld + 2 * t] = c[0];
	S[g * ld + 2 * t + 1] = c[1];
	S[(g + 8) * ld + 2 * t] = c[2];
	S[(g + 8) * ld + 2 * t + 1] = c[3];
}
/* S[r][j] = Q[r]·K[j], r < rows, j < cols: a warp per 16x8 block of S, KV_D / 16 mma each */
__device__ __forceinline__ void kv_logits(float *S, const kv_qk *sq, const kv_qk *sk, int rows, int cols) {
	const int nb = (cols + 7) >> 3, nblk = ((rows + 15) >> 4) * nb;
	for (int b = threadIdx.x >> 5; b < nblk; b += KV_NW) {
		const int m0 = b / nb * 16, n0 = (b - b / nb * nb) * 8;
		float c[4] = { 0.f, 0.f, 0.f, 0.f };
		KV_UNROLL2
		for (int k0 = 0; k0 < KV_D; k0 += 16) {
			unsigned A[4], B[2];
			kv_frag_a(sq + m0 * KV_DP + k0, A);
			kv_frag_b(sk + n0 * KV_DP + k0, B);
			kv_mma(c, A, B);
		}
		kv_frag_c(S + m0 * KV_SK + n0, KV_SK, c);
	}
}
#undef KV_MMA_T
#undef KV_MMA_BF16
