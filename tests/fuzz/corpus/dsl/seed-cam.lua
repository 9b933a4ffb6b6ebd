-- CaM (Zhang et al., 2024), the merge rule of kvpress's CAMPress at prefill: the
-- tokens with the least attention from the last `window` queries (averaged over
-- the KV heads of the layer, so every head evicts the same tokens) are evicted,
-- and each evicted token e adds its value to the next m kept tokens:
--   v_k += mask_e v_e / (number of e's targets),
--   mask_e ~ Bernoulli(p), p = clamp(A_e / mean of A over e's targets, 0, 1)
-- with A the attention of this head. Keys are untouched. The draw is kvcc.random
-- (seeded, the same on every backend) where kvpress draws torch.bernoulli.
local kv = require "kvcc"
local P = kv.params { window = 16, m = 4, seed = 0 }

local function attention(x)                 -- [token]: summed over the window, mean over the group
  return kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):sum("obs"):mean("group")
end

return kv.policy "cam" {
  score = function(x) return attention(x):mean("head") end,
  select = kv.topk {},
  merge = kv.next_kept {
    m = P.m, keys = false, update = "sum",
    weight = function(e, k, m)
      local A = attention(m.x)
      local p = e:at(A) / m:tmean(A)
      p = kv.where(p:eq(p), p, 0):max(0):min(1)            -- NaN -> 0, inf -> 1
      return kv.where(e:at(kv.random(P.seed)):lt(p), 1, 0) / m.ntargets
    end,
  },
}
