local kv = require "kvcc"
local P = kv.params { window = 4 }
return kv.policy "p" {
  score = function(x) return x.Q:shift("obs", 1):dot(x.K, "chan"):mean("obs"):mean("group") end,
  select = kv.topk {},
}
