-- KeyDiff (Park et al., 2025): keep the keys least similar to the average
-- key direction.
local kv = require "kvcc"

return kv.policy "keydiff" {
  score = function(x)
    local anchor = (x.K / x.K:norm("chan")):mean("token")   -- [chan]
    return -kv.cosine(x.K, anchor, "chan")
  end,
  select = kv.topk {},
}
