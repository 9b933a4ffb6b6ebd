-- Differential test policy (not shipped): generated token_map loops on both sides of the
-- cross-head barrier (hmean): a K-row reduction before it, a pool and a token reduction after.
local kv = require "kvcc"

return kv.policy "tmap_hmean" {
  score = function(x)
    local k = x.K:norm("chan"):mean("head")
    return kv.avgpool(k, 3) - k:max("token") + x.t * 1e-3
  end,
  select = kv.topk {},
}
