-- Test policy (issue 13, session 12): a select keep count that reads the cache through [token]
-- values other than the score (compiler/keep.c ki_keeptok / ki_keepvals): the kernels compute
-- them with the score's token values and reduce them over token before selection. Each head
-- keeps frac · n · mean / max of its value norms, plus `above` per token whose key norm is over
-- the head's mean key norm (a count of tokens: an elementwise [token] row), plus spread times
-- the key norms' standard deviation, plus span times the positions' range (x.pos), floored and
-- clamped to 0..n; the sinks are protected (goldens: tests/oracle/gen_select.py p_keep_value).
local kv = require "kvcc"
local P = kv.params { frac = 0.5, above = 0.25, spread = 2, span = 0.05, sinks = 2 }

local function score(x) return x.K:norm("chan") end

return kv.policy "keep_value" {
  score = score,
  select = kv.topk { keep_first = P.sinks,
    keep = function(x)
      local vn, s = x.V:norm("chan"), score(x)
      return P.frac * x.n * vn:mean("token") / vn:max("token") + s:gt(s:mean("token")):sum("token") * P.above
        + s:std("token") * P.spread + (x.pos:max("token") - x.pos:min("token")) * P.span
    end },
}
