//! storage_f16.cuh: kv_st and kv_f for IEEE half storage (exact conversion, subnormals
//! and inf/NaN included, without cuda_fp16.h: NVRTC runs without headers).
typedef unsigned short kv_st;
__device__ __forceinline__ float kv_f(kv_st x) {
	const unsigned s = ((unsigned)x & 0x8000u) << 16, e = ((unsigned)x >> 10) & 0x1fu, m = (unsigned)x & 0x3ffu;
	if (e == 0) { const float f = (float)m * 5.9604644775390625e-8f; return s ? -f : f; }
	if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));
	return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
}
