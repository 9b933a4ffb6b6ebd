//! storage_bf16.cuh: kv_st and kv_f for bfloat16 storage (the high half of an f32).
typedef unsigned short kv_st;
__device__ __forceinline__ float kv_f(kv_st x) { return __uint_as_float((unsigned)x << 16); }
