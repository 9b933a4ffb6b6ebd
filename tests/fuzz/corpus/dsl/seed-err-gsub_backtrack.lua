local kv = require "kvcc"
local s = string.rep("a", 3000)
local r = s:gsub("a-a-a-a-a-b", "")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
