local kv = require "kvcc"
local f = io.open("/etc/passwd")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
