local kv = require "kvcc"
local spec = { score = function(x) return x.t end, select = kv.topk {} }
kv.policy "a" (spec)
return kv.policy "b" (spec)
