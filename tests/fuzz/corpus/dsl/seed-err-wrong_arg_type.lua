local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") * "two" end,
  select = kv.topk {},
}
