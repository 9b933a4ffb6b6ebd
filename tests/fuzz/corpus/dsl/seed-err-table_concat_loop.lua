local kv = require "kvcc"
local t = {}
for i = 1, 1e5 do t[i] = "" end
while true do pcall(table.concat, t, "", 1, 2e5) end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
