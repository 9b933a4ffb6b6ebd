local kv = require "kvcc"
local t = nil
local y = t.field
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
