-- TOVA (Oren et al., 2024) at prefill, as kvpress's TOVAPress: the attention
-- of the last query, averaged over all query heads of the layer, so every KV
-- head of a layer keeps the same tokens. The last token is always kept.
local kv = require "kvcc"
local P = kv.params { window = 1 }

return kv.policy "tova" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- [group, obs, token]
    return a:mean("obs"):mean("group"):mean("head")                 -- same for all heads
  end,
  select = kv.topk { keep_recent = P.window },
}
