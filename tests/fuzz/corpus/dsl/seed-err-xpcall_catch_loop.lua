local kv = require "kvcc"
while true do
  xpcall(function() while true do end end, function(m) return m end)
end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
