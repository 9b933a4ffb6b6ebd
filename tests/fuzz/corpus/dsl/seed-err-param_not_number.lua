local kv = require "kvcc"
local P = kv.params { window = "wide" }
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk { keep_recent = P.window } }
