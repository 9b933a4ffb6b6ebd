local kv = require "kvcc"
local t = setmetatable({}, { __len = function() return 2^31 - 2 end, __index = function() return 0 end })
table.sort(t)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
