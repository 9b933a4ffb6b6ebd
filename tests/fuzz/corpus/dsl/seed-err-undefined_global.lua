local kv = require "kvcc"
return kv.policy "x" { score = function(x) return x.t * windw end, select = kv.topk {} }
