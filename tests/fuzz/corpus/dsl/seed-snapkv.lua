-- SnapKV (Li et al., 2024), as kvpress's SnapKVPress computes it.
-- The last `window` prompt queries vote for earlier tokens: their causal
-- attention, averaged over the window, smoothed by an average pool, then
-- averaged over the query heads that share this KV head (GQA).
-- The window itself is always kept.
local kv = require "kvcc"
local P = kv.params { window = 64, kernel = 5 }

return kv.policy "snapkv" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- [group, obs, token]
    local s = a:mean("obs")                                         -- [group, token]
    -- kvpress pools over the tokens before the window only: zero the window
    -- so that it acts as the pool's zero padding
    s = kv.where(x.t:lt(x.n - P.window), s, 0)
    return kv.avgpool(s, P.kernel):mean("group")                    -- [token]
  end,
  select = kv.topk { keep_recent = P.window },
}
