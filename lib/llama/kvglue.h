/* kvglue.h - what the llama model's users (examples/llama, `kvcc eval`) need from libkvcc:
 * loading a policy for the model's shape, the runtime's decode attention as a LlamaLayerFn,
 * and observation queries in kvcc_obs's layout.
 *
 * Decode attention and per-token state (kvcc_append, kvcc_decode_layer, kvcc_state_count,
 * kvcc_policy_when) are used when this libkvcc has them (the build defines
 * LLAMA_KVCC_DECODE when include/kvcc.h declares kvcc_decode_layer); without them the
 * model's own reference attention runs on the same kvcc_cache and decode policies are
 * refused by the compiler. */
#ifndef KVCC_LIB_LLAMA_KVGLUE_H
#define KVCC_LIB_LLAMA_KVGLUE_H

#include "kvcc.h"
#include "model.h"

/* 1 when this build runs attention through libkvcc (kvcc_append + kvcc_decode_layer). */
int llama_kvcc_has_decode(void);

/* Loads a policy for the model: POLICY.so through kvcc_open (its specialization must be f32,
 * the model's head_dim and group), anything else (.lua, .kir) compiled in process with
 * kvcc_compile_file for {f32, head_dim, group, native}.  Returns 0, or a KVCC_E* code with
 * the message (libkvcc's, e.g. "policy.lua:3:5: error: ...") in err. */
int llama_policy_load(const char *path, const LlamaConfig *cfg, kvcc_policy **out, char *err,
                      size_t errlen);

/* A policy that is only planned, never run (score x.t, keep everything): what plain decode
 * attention through libkvcc plans with when no compression policy is in use.  Compiled in
 * process from $TMPDIR/kvcc-llama-attend-UID.lua (rewritten, left in place: one name, one
 * compile-cache entry).  Returns 0 or a KVCC_E* code with a message in err. */
int llama_plain_policy(const LlamaConfig *cfg, kvcc_policy **out, char *err, size_t errlen);

/* 1 when the policy compresses during decoding (when = kvcc.decode{every = N}; *every = N),
 * 0 when after prefill (*every = 0). */
int llama_policy_is_decode(const kvcc_policy *p, int *every);
/* Per-token state tensors of the policy (0 without decode support). */
int llama_policy_nstate(const kvcc_policy *p);

/* Param values: the policy's defaults, then each "name=value" of sets[0..n-1] whose name
 * the policy has.  vals must hold kvcc_param_count(p) values.  Returns 0, or -1 with a
 * message in err when a value is not a number. */
int llama_policy_params(const kvcc_policy *p, const char *const *sets, int n, double *vals,
                        char *err, size_t errlen);

/* LlamaLayerFn over libkvcc: kvcc_append of the layer's k, v at pos, then
 * kvcc_decode_layer of q (which also runs the policy's observe hook, e.g. H2O's
 * accumulation).  user: the kvcc_plan of the cache's layout.  Returns KVCC_EUNSUPPORTED
 * when this libkvcc has no decode attention. */
int llama_kvcc_layer(void *plan, LlamaCache *c, int layer, const float *q, const float *k,
                     const float *v, int pos, float *out);

/* Observation queries in kvcc_obs's layout [layers][kv_heads][group][nobs][head_dim] from a
 * capture that holds positions 0..count-1 (obs->start == 0): the last nobs of them.  Q must
 * hold layers * n_heads * nobs * head_dim floats; qpos receives their positions.  Returns
 * 0, or -1 when fewer than nobs positions were captured. */
int llama_obs_pack(const LlamaObs *obs, int nobs, float *Q, int32_t *qpos);

#endif
