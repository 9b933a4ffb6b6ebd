//! storage_f32.cuh: the storage type kv_st of K, V, Q and its conversion kv_f to f32,
//! for f32 storage (kernels.c pastes one storage_*.cuh after the KV_G / KV_D defines), and kv_tost,
//! an f32 rounded to the storage dtype (nearest even; the merge update writes rows with it).
typedef float kv_st;
__device__ __forceinline__ float kv_f(kv_st x) { return x; }
__device__ __forceinline__ kv_st kv_tost(float x) { return x; }
