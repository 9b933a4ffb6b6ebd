-- Test policy (issue 13, session 10): a select keep count that reads the cache through the
-- score: reductions over token of the score itself (sum, max, mean, min; compiler/keep.c
-- ki_keeptok), which the kernels hold before selection. Each head keeps frac times its key
-- norms' "effective count" (sum / max) plus a spread term, floored and clamped to 0..n; the
-- sinks are protected (goldens: tests/oracle/gen_select.py p_keep_score, selref S7).
local kv = require "kvcc"
local P = kv.params { frac = 0.6, spread = 4, sinks = 2 }

local function score(x) return x.K:norm("chan") end

return kv.policy "keep_score" {
  score = score,
  select = kv.topk { keep_first = P.sinks,
    keep = function(x)
      local s = score(x)
      return s:sum("token") / s:max("token") * P.frac + (s:mean("token") - s:min("token")) * P.spread
    end },
}
