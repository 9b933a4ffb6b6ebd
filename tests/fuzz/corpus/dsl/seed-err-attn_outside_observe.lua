local kv = require "kvcc"
return kv.policy "x" { score = function(x) return x.attn:sum("group") end, select = kv.topk {} }
