local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.topk {},
  merge = kv.nearest { weight = function(e, k, m) return m.x.K:norm("chan") + m.sim end },
}
