-- two weights whose free out axes disagree (a wrong weights file)
local kv = require "kvcc"
local W = kv.weights { a = { "layer", "out" }, b = { "out", "head" } }
return kv.policy "two_out" { score = function(x) return x.t + W.a:sum("out") + W.b:sum("out") end, select = kv.topk {} }
