-- PrefixKV's tol from a param: a negative one is the schedule's run-time error (kvcc_schedcnt's -1)
local kv = require "kvcc"
local P = kv.params { tol = 5 }
return kv.policy "prefix_tol" { score = function(x) return x.t end, select = kv.topk { schedule = kv.prefix { tol = P.tol } } }
