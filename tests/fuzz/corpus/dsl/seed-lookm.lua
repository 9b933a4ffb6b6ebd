-- LOOK-M (Wan et al., 2024; SUSTechBruce/LOOK-M modify_llama.py) at prefill.
-- H2O's heavy hitters: the attention every token receives from the prompt's
-- queries (summed over the queries, averaged over the query heads of its KV
-- head); the first `sinks` and the last `recent` tokens are always kept. Every
-- evicted token is folded into its nearest kept token by cosine of keys, keys
-- and values, all at once from the rows before merging:
--   pivot = 0  LOOK-M's average merge: the scatter-mean of the kept row and
--              the rows it absorbs (every weight 1)
--   pivot = 1  LOOK-M's pivot merge: each evicted row first averaged with its
--              target, then the scatter-mean, which weighs the target |A(k)| + 2
-- (The weighted variant, with its similarity filter, is lookm_weighted.lua.)
local kv = require "kvcc"
local P = kv.params { sinks = 4, recent = 8, pivot = 0 }

return kv.policy "lookm" {
  obs = kv.all,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- causal [group, obs, token]
    return a:sum("obs"):mean("group")
  end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.recent },
  merge = kv.nearest {
    self_weight = function(k, m) return 1 + P.pivot * (m.absorbed + 1) end,
  },
}
