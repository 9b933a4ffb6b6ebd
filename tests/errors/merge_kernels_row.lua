local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.topk {},
  merge = kv.nearest { weight = function(e, k, m) return e.score end },
}
