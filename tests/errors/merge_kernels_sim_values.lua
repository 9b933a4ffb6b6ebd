local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.topk {},
  merge = kv.nearest { sim = function(e, k) return e.V:dot(k.V, "chan") end },
}
