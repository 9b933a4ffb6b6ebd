//! tile_fma.cuh: Q·Kᵀ of a score tile with f32 FMA: f32 storage (tf32 tensor cores
//! would round the operands to 10 mantissa bits) and head_dims that are not a multiple
//! of 16. The alternative to tile_mma.cuh (kp_cuda_mma decides).
/* Q·Kᵀ with f32 FMA: operands converted once when staged */
enum { KV_DP = KV_D + 1 };   /* odd row stride: lanes on consecutive tokens hit distinct banks */
typedef float kv_qk;
__device__ __forceinline__ kv_qk kv_qkcvt(kv_st x) { return kv_f(x); }
/* S[r][j] = Q[r]·K[j], r < rows, j < cols: a thread per logit */
__device__ __forceinline__ void kv_logits(float *S, const kv_qk *sq, const kv_qk *sk, int rows, int cols) {
	for (int e = threadIdx.x; e < rows * KV_SK; e += KV_NT) {
		const int r = e / KV_SK, j = e - r * KV_SK;
		if (j >= cols) continue;
		float acc = 0.f;
		for (int c = 0; c < KV_D; c++) acc += sq[r * KV_DP + c] * sk[j * KV_DP + c];
		S[e] = acc;
	}
}
