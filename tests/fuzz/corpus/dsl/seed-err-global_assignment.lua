local kv = require "kvcc"
window = 64
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
