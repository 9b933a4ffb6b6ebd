local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) local k = x.K:norm("chan"); return k - k:std("token") end,
  select = kv.topk {},
}
