local kv = require "kvcc"
-- control characters in a user string are printed escaped
local P = kv.params { window = 4 }
local w = P["win\27[2Jdow\t\r\127"]
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
