-- LOOK-M's weighted merge (WeightedMergeKVCache): the heavy hitters of lookm.lua,
-- and only the evicted tokens whose best cosine similarity to a kept token
-- reaches the mean of those similarities (over this head's evicted tokens)
-- are merged, weighted by that similarity:
--   K'_k = (K_k + sum sim_e K_e) / (1 + sum sim_e), the same for V.
-- LOOK-M's code divides by 1 + |A(k)| instead of 1 + sum sim_e and takes the
-- mean over all heads; this is the normalized, per-head form (tests/oracle/README.md).
local kv = require "kvcc"
local P = kv.params { sinks = 4, recent = 8 }

return kv.policy "lookm_weighted" {
  obs = kv.all,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    return a:sum("obs"):mean("group")
  end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.recent },
  merge = kv.nearest {
    threshold = kv.adaptive { beta = 0 },          -- the mean of the maximum similarities
    weight = function(e, k, m) return m.sim end,
  },
}
