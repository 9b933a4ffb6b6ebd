local kv = require "kvcc"
-- the param limit counts every kvcc.params call
for i = 1, 70 do kv.params { ["p" .. i] = i } end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
