local kv = require "kvcc"
local W = kv.weights { w = { "layer", "token" } }
return kv.policy "p" { score = function(x) return x.K:dot(W.w, "chan") end, select = kv.topk {} }
