local kv = require "kvcc"
return kv.policy "p" { score = function(x) return x.t end, select = kv.topk { floor = 0.2 } }
