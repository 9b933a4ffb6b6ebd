local kv = require "kvcc"
-- a finalizer would run after the evaluation, outside every budget
local t = setmetatable({}, { __gc = function() while true do end end })
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
