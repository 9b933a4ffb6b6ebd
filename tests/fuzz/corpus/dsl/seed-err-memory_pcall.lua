local kv = require "kvcc"
-- the memory limit cannot be caught either, and is not blamed on a later error
local ok = pcall(function() local t = {} for i = 1, 1e9 do t[i] = {} end end)
local s = 0
for i = 1, 1e5 do s = s + i end
local t = nil
t.x = ok
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
