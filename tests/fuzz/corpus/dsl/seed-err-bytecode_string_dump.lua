local kv = require "kvcc"
local b = string.dump(function() end)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
