local kv = require "kvcc"
return kv.policy "p" { score = function(x) return x.K:std("token", { chunk = 4 }):sum("chan") end, select = kv.topk {} }
