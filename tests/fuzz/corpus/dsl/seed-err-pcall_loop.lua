local kv = require "kvcc"
-- the instruction limit cannot be caught: pcall re-raises it
while true do pcall(function() while true do end end) end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
