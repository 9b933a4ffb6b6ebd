/*
** The fixed CUDA code of the GPU backend: the .cuh files of codegen/ptx as C strings,
** written at build time by codegen/ptx/embed.c into $(B)/codegen/ptx/cuh.c.
** kernels.c pastes them into every generated program; the order and what
** each needs before it are in each .cuh file's //! lines.
*/
#ifndef KVCC_PTX_CUH_H
#define KVCC_PTX_CUH_H

extern const char kp_cuh_prelude[];       /* sizes, error codes, float and warp helpers, kv_rand */
extern const char kp_cuh_storage_f32[];   /* kv_st, kv_f per storage dtype */
extern const char kp_cuh_storage_f16[];
extern const char kp_cuh_storage_bf16[];
extern const char kp_cuh_select[];        /* kv_qpos, block scan, chunk keys, kv_topk */
extern const char kp_cuh_select_grp[];    /* select scopes layer / model */
extern const char kp_cuh_sched[];         /* the prefix / dynamic budget schedules (kv_sched) */
extern const char kp_cuh_tile_mma[];      /* score tiles: Q·Kᵀ on tensor cores */
extern const char kp_cuh_tile_fma[];      /* score tiles: Q·Kᵀ with f32 FMA */
extern const char kp_cuh_tile[];          /* score tiles: staging */
extern const char kp_cuh_decode[];        /* split-KV decode attention */
extern const char kp_cuh_paged[];         /* paged and batched caches: rows, table checks, freed pages */

#endif
