-- a keep count that is not a number
local kv = require "kvcc"
return kv.policy "keep_nan" { score = function(x) return x.t end,
  select = kv.topk { keep = function(x) return x.n * 0 / 0 end } }
