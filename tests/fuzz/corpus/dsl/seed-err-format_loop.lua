local kv = require "kvcc"
local f = string.rep("%%", 1e6)
while true do local s = string.format(f) end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
