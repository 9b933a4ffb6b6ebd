local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.t end,
  select = kv.topk {},
  merge = kv.nearest { self_weight = function(k, m) return m.sim + 1 end },
}
