local kv = require "kvcc"
local ok = pcall(string.rep, "x", 1e8)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
