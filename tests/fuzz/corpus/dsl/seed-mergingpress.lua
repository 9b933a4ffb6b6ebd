-- kvpress's MergingPress (0.5.5) around a key-norm scorer: the lowest-scoring tokens
-- (here the largest keys, KnormPress's rule) are evicted, and each evicted token's value is
-- folded into the kept token with the most similar key (each key normalized with a 1e-6
-- floor, as kvpress does) when that cosine reaches `threshold`, weighted by
--   w_e = max(cos, 0) |v_e| / (|v_e| + |v_k| + 1e-6),  w_k = 1;   keys are kept as they are.
local kv = require "kvcc"
local P = kv.params { threshold = 0 }

return kv.policy "mergingpress" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk {},
  merge = kv.nearest {
    sim = function(e, k)
      return e.K:dot(k.K, "chan") / (e.K:norm("chan"):max(1e-6) * k.K:norm("chan"):max(1e-6))
    end,
    threshold = P.threshold,
    weight = function(e, k, m)
      local ve, vk = e.V:norm("chan"), k.V:norm("chan")
      return m.sim:max(0) * ve / (ve + vk + 1e-6)
    end,
    keys = false,
  },
}
