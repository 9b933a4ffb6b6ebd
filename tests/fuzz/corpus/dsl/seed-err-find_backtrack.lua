local kv = require "kvcc"
-- exponential backtracking inside one string.find call
local s = string.rep("a", 5000)
local i = s:find(string.rep("a*", 20) .. "b")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
