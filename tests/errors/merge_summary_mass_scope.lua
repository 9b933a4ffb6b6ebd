local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = 0.9, scope = "layer" },
  merge = kv.summary { rows = 2 },
}
