local kv = require "kvcc"
-- __len says 1e15: insert at the front would shift that many elements
local t = setmetatable({}, { __len = function() return 1e15 end })
table.insert(t, 1, "x")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
