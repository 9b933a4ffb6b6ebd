//! storage_bf16.cuh: kv_st and kv_f for bfloat16 storage (the high half of an f32); kv_tost rounds
//! an f32 to it (nearest even; a NaN stays a quiet NaN), as the x86 merge update does.
typedef unsigned short kv_st;
__device__ __forceinline__ float kv_f(kv_st x) { return __uint_as_float((unsigned)x << 16); }
__device__ __forceinline__ kv_st kv_tost(float x) {
	const unsigned u = __float_as_uint(x);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (kv_st)((u | 0x00400000u) >> 16);
	return (kv_st)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
