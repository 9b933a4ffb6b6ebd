local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.t end,
  select = kv.topk {},
  merge = kv.nearest { sim = function(e, k) return kv.softmax(e.K, "chan"):dot(k.K, "chan") end },
}
