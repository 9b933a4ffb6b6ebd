//! prelude.cuh: the start of every generated program (codegen/ptx/kernels.c pastes it
//! first): tunable sizes (the NVRTC options -DKV_NT ... override them), device error
//! codes, the float helpers the generated expressions call (kv_max, kv_rmax, warp
//! reductions, online softmax), and kv_rand, the counter-based generator of ki_rand.
//! Lines starting with //! (these) are left out of the generated CUDA C (embed.c).
/* kvcc generated CUDA C — do not edit. Compiles with NVRTC (no headers) and,
** for tests, with a host C++ compiler against tests/emu/cuda_emu.h. */
#ifndef KV_NT
#define KV_NT 256
#endif
#ifndef KV_TT
#define KV_TT 16
#endif
#ifndef KV_SQ
#define KV_SQ 64
#endif
#ifndef KV_SK
#define KV_SK 64
#endif
#ifndef KV_ST
#define KV_ST 1   /* K tile buffers of the score kernels (pipeline stages; tile.cuh) */
#endif
#define KV_NW (KV_NT / 32)
/* which kernels this program holds (issue 13: compile time): 0 all; 1 the decode kernels and
** kv_paged; 2 the score and select kernels. codegen/ptx/compile.c compiles parts 1 and 2 as two
** NVRTC programs on two threads and joins their PTX (kp_ptx_join) */
#ifndef KV_PART
#define KV_PART 0
#endif
/* before a loop NVVM must keep rolled (one copy of its body: compile time, issue 13);
** the emulator (tests/emu/cuda_emu.h) defines it empty */
#ifndef KV_ROLLED
#define KV_ROLLED _Pragma("unroll 1")
#endif
/* at most two copies of the loop's body (kv_tabmax in paged.cuh: rolled, ptxas spills on sm_80) */
#ifndef KV_UNROLL2
#define KV_UNROLL2 _Pragma("unroll 2")
#endif
#ifndef KV_DYNSMEM
#define KV_DYNSMEM(nm) extern __shared__ __align__(16) unsigned char nm[]
#endif
/* the launch's dynamic shared memory in bytes: the select kernel's staging rows follow from it,
** so its CUDA C is the same for every arch (one NVVM run for sm_80 and sm_90, issue 13);
** the emulator defines its own */
#ifndef KV_DSMEM_BYTES
static __device__ __forceinline__ unsigned kv_dsmem_bytes(void)
{
	unsigned r;
	asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
	return r;
}
#define KV_DSMEM_BYTES() kv_dsmem_bytes()
#endif
#define KVG_EPOOL 1
#define KVG_ESELECT 2
#define KVG_EHMEAN 3
#define KVG_ECHUNK 4
#define KVG_EMASS 5
#define KVG_EFLOOR 7
#define KVG_ESEG 8
#define KVG_ESUM 9
#define KVG_EMNEXT 10
#define KVG_ESCHED 11
#define KVG_EKEEP 12
__device__ __forceinline__ float kv_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ float kv_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float kv_max(float a, float b) { return (a != a || b != b) ? kv_nan() : a > b ? a : b; }
__device__ __forceinline__ float kv_min(float a, float b) { return (a != a || b != b) ? kv_nan() : a < b ? a : b; }
__device__ __forceinline__ float kv_rmax(float acc, float v) { return (v != v || v > acc) ? v : acc; }
__device__ __forceinline__ float kv_rmin(float acc, float v) { return (v != v || v < acc) ? v : acc; }
/* srank's order (interp.c rankless): a before b ascending, NaN above every number, ties by position */
__device__ __forceinline__ int kv_rankless(float a, int ta, float b, int tb) {
	const int na = a != a, nb = b != b;
	if (na != nb) return nb;
	if (!na && a != b) return a < b;
	return ta < tb;
}
__device__ __forceinline__ float kv_wsum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float kv_wmax(float v) {
	for (int o = 16; o > 0; o >>= 1) v = kv_max(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
__device__ __forceinline__ float kv_wmin(float v) {
	for (int o = 16; o > 0; o >>= 1) v = kv_min(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
/* online softmax: add one logit to (m, s); combine two partial states */
__device__ __forceinline__ void kv_smx_add(float &m, float &s, float v) {
	/* -inf adds exp(-inf - m) = 0 (also while m is -inf: the reference's sum of an all -inf slice
	** is NaN and this one 0, both give probabilities 0) */
	if (v > m) { s = s * expf(m - v) + 1.f; m = v; } else if (v != -kv_inf()) s += expf(v - m);
}
__device__ __forceinline__ void kv_smx_comb(float &m, float &s, float m2, float s2) {
	const float M = m > m2 ? m : m2;
	const float a = s > 0.f ? s * expf(m - M) : s, b = s2 > 0.f ? s2 * expf(m2 - M) : s2;
	m = M; s = a + b;
}
__device__ __forceinline__ void kv_wsmx(float &m, float &s) {
	for (int o = 16; o > 0; o >>= 1) {
		const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
		kv_smx_comb(m, s, m2, s2);
	}
}
__device__ __forceinline__ void kv_seterr(int *err, int code) { if (err) atomicCAS(err, 0, code); }
/* ki_rand (compiler/interp.c): counter-based, identical on every backend */
__device__ __forceinline__ float kv_rand(double seed, int l, int h, int pos) {
	const unsigned long long c = ((unsigned long long)l << 40) ^ ((unsigned long long)h << 24) ^ (unsigned long long)(long long)pos;
	const unsigned long long s = fabs(seed) < 9223372036854775808.0 ? (unsigned long long)(long long)seed : 0ull;
	unsigned long long z = s + c * 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z = z ^ (z >> 31);
	return (float)(z >> 40) * (1.f / 16777216.f);
}
