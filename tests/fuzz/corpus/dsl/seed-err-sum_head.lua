local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan"):sum("head") end,
  select = kv.topk {},
}
