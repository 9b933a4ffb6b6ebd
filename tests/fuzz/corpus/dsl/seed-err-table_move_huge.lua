local kv = require "kvcc"
local t = table.move({}, 1, 1e15, 1)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
