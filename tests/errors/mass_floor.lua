local kv = require "kvcc"
return kv.policy "p" { score = function(x) return x.t end, select = kv.mass { p = 0.9, floor = 0.2 } }
