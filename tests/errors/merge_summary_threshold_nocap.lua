local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.threshold { tau = 1, scope = "layer", cap = false },
  merge = kv.summary { rows = 2 },
}
