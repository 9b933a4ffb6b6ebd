-- Random eviction, a baseline. The numbers come from a counter-based
-- generator keyed by (seed, layer, head, position): every backend draws the
-- same ones.
local kv = require "kvcc"
local P = kv.params { seed = 0 }

return kv.policy "random" {
  score = function(x) return kv.random(P.seed) end,
  select = kv.topk {},
}
