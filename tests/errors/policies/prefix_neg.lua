-- PrefixKV's bisection needs scores >= 0
local kv = require "kvcc"
return kv.policy "prefix_neg" { score = function(x) return -x.t end, select = kv.topk { schedule = kv.prefix {} } }
