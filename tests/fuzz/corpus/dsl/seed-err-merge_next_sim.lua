local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.t end,
  select = kv.topk {},
  merge = kv.next_kept { m = 4, weight = function(e, k, m) return m.sim end },
}
