local kv = require "kvcc"
local function f(n) return f(n + 1) + 1 end
f(1)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
