local kv = require "kvcc"
return kv.policy "x" { scroe = function(x) return x.t end, select = kv.topk {} }
