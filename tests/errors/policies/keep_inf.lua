-- a keep count that is infinite at head 1 (s / 0; --param s=-1: -inf), finite at head 0
local kv = require "kvcc"
local P = kv.params { s = 1 }
return kv.policy "keep_inf" { score = function(x) return x.t end,
  select = kv.topk { keep = function(x) return P.s / (x.head - 1) end } }
