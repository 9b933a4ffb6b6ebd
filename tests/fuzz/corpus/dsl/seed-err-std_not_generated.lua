local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:std("chan") end,
  select = kv.topk {},
}
