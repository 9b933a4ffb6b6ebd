-- Differential test policy (not shipped): the generated token_map loops beyond elementwise
-- chains — reductions over group, over chan of K / V rows (storage dtype) and over token,
-- avg/max pools (windows wider than the cache too), leaves (x.pos, rand) and scalars.
local kv = require "kvcc"
local P = kv.params { kernel = 5, wide = 301, seed = 11 }

return kv.policy "tmap_red" {
  obs = 4,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):mean("obs")          -- [group, token]
    local g = a:sum("group") + a:max("group") - a:min("group") * 0.5 + a:mean("group")  -- [token]
    local k = x.K:norm("chan")
    local c = kv.cosine(x.K, x.V, "chan") + x.V:max("chan") - x.V:min("chan") + x.V:mean("chan") + x.K:sum("chan")
    local anchor = x.V:mean("token")                                                      -- [chan]
    local s = x.K:dot(anchor, "chan") / anchor:norm("chan") + k:mean("token") - k:max("token") + k:min("token") / x.n
    local p = kv.avgpool(a, P.kernel) + kv.maxpool(a * x.G, 3) + kv.avgpool(k, P.wide) + kv.maxpool(c, P.wide)
    local r = kv.random(P.seed) * 1e-3 + x.pos / x.n * 1e-3
            + (x.layer + x.head * 2 + x.nlayers + x.nheads + x.d + x.nobs) * 1e-4
    return (g + p):mean("group") + c + s + r + (k - k:sum("token") / x.n):max(0)
  end,
  select = kv.topk { keep_recent = 2 },
}
