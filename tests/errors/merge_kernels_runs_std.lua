local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.topk {},
  merge = kv.runs { threshold = 0.5, weight = function(e, k) return e.K:std("chan") end },
}
