local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.Q:dot(x.K, "chan"):mean("obs"):mean("group") end,
  select = kv.topk {},
}
