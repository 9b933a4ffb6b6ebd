local kv = require "kvcc"
-- %b() scans to the end from every start: quadratic in a 1e6-char subject
local s = string.rep("(", 1e6)
local i = string.find(s, "%b()")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
