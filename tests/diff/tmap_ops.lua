-- Differential test policy (not shipped): every elementwise op of the generated token_map loops
-- (tmap) on [token] and [group, token] values, with constants, params, scalars, x.t and x.pos.
local kv = require "kvcc"
local P = kv.params { window = 8, alpha = 0.5, p = 1.5 }

return kv.policy "tmap_ops" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):mean("obs")   -- [group, token]
    local k = x.K:norm("chan")                                                      -- [token]
    local u = (a * P.alpha + k:log():abs()):sqrt() ^ P.p                           -- [group, token]
    local v = kv.where(x.t:lt(x.n - P.window), u:max(k:exp() * 0.01), -(u:min(1)))
    local w = v + x.t:le(3) + x.t:eq(5) * 2 + x.t:ne(7) - x.pos / x.n + x.t:gt(9) - x.t:ge(11) / 3
    return w:mean("group") + (k - 1):max(0):min(0.5)
  end,
  select = kv.topk { keep_recent = P.window },
}
