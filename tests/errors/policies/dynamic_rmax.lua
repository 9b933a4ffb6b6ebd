-- DynamicKV's ratio_max from a param: a negative one is the schedule's run-time error (kvcc_schedcnt's
-- -4); unequal lengths over the (layer, head) instances are its -3
local kv = require "kvcc"
local P = kv.params { rmax = 2 }
return kv.policy "dynamic_rmax" { score = function(x) return x.t end, select = kv.topk { schedule = kv.dynamic { ratio_max = P.rmax } } }
