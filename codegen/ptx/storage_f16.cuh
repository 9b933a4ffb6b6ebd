//! storage_f16.cuh: kv_st and kv_f for IEEE half storage (exact conversion, subnormals
//! and inf/NaN included, without cuda_fp16.h: NVRTC runs without headers); kv_tost rounds an f32
//! to half (nearest even, subnormals, overflow to inf), as the x86 merge update does.
typedef unsigned short kv_st;
__device__ __forceinline__ float kv_f(kv_st x) {
	const unsigned s = ((unsigned)x & 0x8000u) << 16, e = ((unsigned)x >> 10) & 0x1fu, m = (unsigned)x & 0x3ffu;
	if (e == 0) { const float f = (float)m * 5.9604644775390625e-8f; return s ? -f : f; }
	if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));
	return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
}
__device__ __forceinline__ kv_st kv_tost(float x) {
	const unsigned u = __float_as_uint(x), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
	if (a > 0x7f800000u) return (kv_st)(s | 0x7e00u | ((a >> 13) & 0x3ffu));
	if (a >= 0x477ff000u) return (kv_st)(s | 0x7c00u);           /* >= 65520: inf */
	if (a < 0x38800000u)                                          /* below 2^-14: subnormal */
		return (kv_st)(s | (unsigned)rintf(__uint_as_float(a) * 16777216.f));
	const unsigned r = a - 0x38000000u;                           /* exponent rebiased */
	return (kv_st)(s | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
}
