local kv = require "kvcc"
local P = kv.params { c = 4 }
return kv.policy "x" {
  score = function(x) return x.t end,
  select = kv.topk {},
  merge = kv.summary { rows = P.c },
}
