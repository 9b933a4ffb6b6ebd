local kv = require "kvcc"
local s = string.rep("kvcc", 1e9)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
