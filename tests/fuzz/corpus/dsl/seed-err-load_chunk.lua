local kv = require "kvcc"
local f = load("return 1")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
