local kv = require "kvcc"
local n = 0
while true do n = n + 1 end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
