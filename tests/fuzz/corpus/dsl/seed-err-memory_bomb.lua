local kv = require "kvcc"
local t = {}
for i = 1, 1e9 do t[i] = string.rep("x", 64) .. i end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
