-- kv.prefix's iters from a param: a run-time value is checked before the bisection uses it
local kv = require "kvcc"
local P = kv.params { it = 200, tol = 5 }
return kv.policy "prefix_iters" { score = function(x) return x.t end, select = kv.topk { schedule = kv.prefix { iters = P.it, tol = P.tol } } }
