-- Test policy (issue 13, session 10): keep_score.lua's cache-reading keep count under a layer's
-- shared budget (the sum of its heads' counts; x86 selectkeep's group, CUDA kv_select_grp): each
-- head counts frac times its n_keep scaled by its scores' mean / max and by their flatness
-- sum / (norm · sqrt(n)) (in (0, 1], Cauchy-Schwarz), plus its head index; the
-- heads then compete in one layer ranking, the recent window protected (an empty head: its index). The interpreter is the
-- reference (diff and emu full matrices; keep_score.lua has the numpy goldens).
local kv = require "kvcc"
local P = kv.params { frac = 1.2, recent = 2 }

local function score(x) return x.K:sum("chan"):abs() end

return kv.policy "keep_score_layer" {
  score = score,
  select = kv.topk { keep_recent = P.recent, scope = "layer",
    keep = function(x)
      local s = score(x)
      -- an empty head (emu's empty-head cases) has no mean: it counts its head index only
      local flat = s:sum("token") / (s:norm("token") * x.n:sqrt())
      return kv.where(x.n:gt(0), x.nkeep * P.frac * s:mean("token") / s:max("token") * flat, 0) + x.head
    end },
}
