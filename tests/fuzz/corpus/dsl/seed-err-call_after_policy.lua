local kv = require "kvcc"
local p = kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
local late = kv.params { late = 1 }
return p
