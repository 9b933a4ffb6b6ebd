local kv = require "kvcc"
-- a kvcc error caught by pcall: later Lua errors keep their position
local ok = pcall(kv.params, { ["not a name"] = 1 })
local t = nil
t.x = ok
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
