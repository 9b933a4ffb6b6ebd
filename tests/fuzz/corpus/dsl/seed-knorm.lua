-- KNorm (Devoto et al., 2024): keys with a small L2 norm tend to receive
-- high attention, so keep the lowest-norm keys.
local kv = require "kvcc"

return kv.policy "knorm" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk {},
}
