-- SnapKV's selection (snapkv.lua) with the evicted tokens folded into their
-- nearest kept token (cosine of keys, the window included) instead of dropped:
-- the scatter-mean of each kept row and the rows it absorbs, keys and values.
-- Beside snapkv.lua it shows what merging buys (doc/eval.md).
local kv = require "kvcc"
local P = kv.params { window = 64, kernel = 5 }

return kv.policy "snapkv_merge" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- [group, obs, token]
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window },
  merge = kv.nearest {},
}
