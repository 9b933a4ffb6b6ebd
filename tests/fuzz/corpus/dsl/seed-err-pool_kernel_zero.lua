local kv = require "kvcc"
return kv.policy "x" { score = function(x) return kv.avgpool(x.K:norm("chan"), 0) end, select = kv.topk {} }
