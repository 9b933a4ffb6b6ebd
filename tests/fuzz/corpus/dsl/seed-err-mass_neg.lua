-- mass over a score that is negative: a run-time error (DESIGN: mass needs scores >= 0)
local kv = require "kvcc"
return kv.policy "mass_neg" { score = function(x) return -x.t end, select = kv.mass { p = 0.5 } }
