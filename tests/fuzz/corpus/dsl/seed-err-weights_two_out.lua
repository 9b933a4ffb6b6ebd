local kv = require "kvcc"
local W = kv.weights { w = { "layer", "out", 8 } }
return kv.policy "p" { score = function(x) return x.t end, select = kv.topk {} }
