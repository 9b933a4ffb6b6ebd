local kv = require "kvcc"
-- the handler of a limit error would run with hooks off: it is not run
xpcall(function() while true do end end, function(m) while true do end end)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
