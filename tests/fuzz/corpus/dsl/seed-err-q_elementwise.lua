local kv = require "kvcc"
-- the kernels hold the observation queries for the Q·K tile only
local P = kv.params { window = 4 }
return kv.policy "x" {
  score = function(x) return -x.K:norm("chan") + x.Q:sum("chan"):mean("obs"):mean("group") end,
  select = kv.topk {},
}
