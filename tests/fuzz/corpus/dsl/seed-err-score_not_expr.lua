local kv = require "kvcc"
return kv.policy "x" { score = function(x) return "high" end, select = kv.topk {} }
