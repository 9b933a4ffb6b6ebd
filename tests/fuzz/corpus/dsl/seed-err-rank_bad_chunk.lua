local kv = require "kvcc"
return kv.policy "p" { score = function(x) return x.t:rank("token", { chunk = 0 }) end, select = kv.topk {} }
