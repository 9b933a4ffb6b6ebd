local kv = require "kvcc"
-- the handler of an ordinary error runs under the limit
xpcall(function() error("first") end, function(m)
  while true do end
end)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
