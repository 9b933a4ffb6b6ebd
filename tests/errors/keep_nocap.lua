local kv = require "kvcc"
return kv.policy "x" { score = function(x) return x.t end, select = kv.mass { p = 0.5, cap = false, keep = function(x) return 4 end } }
