local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.t end,
  select = kv.topk {},
  merge = kv.summary { rows = 0 },
}
