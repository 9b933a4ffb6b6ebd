local kv = require "kvcc"
local W = kv.weights { w = { "layer", "head" } }
return kv.policy "p" { score = function(x) return x.t * W.v end, select = kv.topk {} }
