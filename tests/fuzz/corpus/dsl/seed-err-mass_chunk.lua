-- (session 10) mass over chunks became valid; this seed stays an error: a chunk below 1
local kv = require "kvcc"
return kv.policy "p" { score = function(x) return x.t end, select = kv.mass { p = 0.9, chunk = 0 } }
