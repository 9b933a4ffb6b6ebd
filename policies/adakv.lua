-- AdaKV (Feng et al., 2024) over SnapKV, as kvpress's AdaKVPress(SnapKVPress,
-- alpha_safeguard = 0.2): the heads of a layer share the layer's budget (the sum
-- of their n_keep) in one ranking, so informative heads keep more; each head
-- first keeps its own top floor(alpha * n_keep) (the safeguard). The window is
-- kept. kvpress takes max(1, floor(alpha * n_keep)) and keeps the window by
-- giving it the largest score; the sets differ only when alpha * n_keep < 1.
local kv = require "kvcc"
local P = kv.params { window = 64, kernel = 5, alpha = 0.2 }

return kv.policy "adakv" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- [group, obs, token]
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)   -- pool the prefix only
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window, scope = "layer", floor = P.alpha },
}
