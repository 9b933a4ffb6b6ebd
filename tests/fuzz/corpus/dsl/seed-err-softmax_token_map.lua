local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return kv.softmax(x.K:norm("chan"), "token") end,
  select = kv.topk {},
}
