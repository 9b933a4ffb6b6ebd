local kv = require "kvcc"
return kv.policy "x" { score = function(x) return x.keys:norm("chan") end, select = kv.topk {} }
