local kv = require "kvcc"
-- string.rep's copying is counted: a loop of big reps ends at the instruction limit
local e = string.rep("", 1e15)        -- no work: an empty result at once
while true do local s = ("ab"):rep(1e6) end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
