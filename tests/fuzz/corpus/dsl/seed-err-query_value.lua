local kv = require "kvcc"
return kv.policy "x" {
  obs = 8,
  score = function(x) return x.K:dot(x.Q:mean("obs"):mean("group"), "chan") end,
  select = kv.topk {},
}
