local kv = require "kvcc"
-- a __gc added to the expressions' metatable would give every later one a finalizer
getmetatable(kv.exp(1)).__gc = function() kv.params { late = 1 } end
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
