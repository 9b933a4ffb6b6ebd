local kv = require "kvcc"
local s = string.rep("a", 1e6)
for w in s:gmatch(".-b") do end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
