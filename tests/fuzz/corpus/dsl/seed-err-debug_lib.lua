local kv = require "kvcc"
debug.sethook()
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
