local kv = require "kvcc"
local mt = getmetatable("")
mt.__index = function() return os end
return kv.policy "x" { score = function(x) return ("a").execute end, select = kv.topk {} }
