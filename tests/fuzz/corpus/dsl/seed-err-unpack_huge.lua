local kv = require "kvcc"
-- each call pushes 900,000 values: one VM instruction, a lot of work
while true do local n = select("#", table.unpack({}, 1, 9e5)) end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
