local kv = require "kvcc"
-- Lua shortens long chunk names; the position must survive
local t = nil
t.x = 1
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
