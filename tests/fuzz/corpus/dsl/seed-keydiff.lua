-- KeyDiff (Park et al., 2025): keep the keys least similar to the average
-- key direction.
local kv = require "kvcc"

return kv.policy "keydiff" {
  score = function(x)
    -- unit keys as F.normalize: the norm floored at 1e-12, so an all-zero key
    -- is a zero vector, not NaN (which would poison the whole head's anchor)
    local anchor = (x.K / x.K:norm("chan"):max(1e-12)):mean("token")   -- [chan]
    return -kv.cosine(x.K, anchor, "chan")
  end,
  select = kv.topk {},
}
