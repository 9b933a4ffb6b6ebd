-- Test policy (issue 13, session 12): keep_value_layer.lua's keep count under the model's shared
-- budget (x86 selectkeep's one group, CUDA kv_select_grp on one block): each head counts frac times
-- its n_keep scaled by its value norms' flatness (mean / max) and by the share of its tokens whose
-- key sum is positive, plus its head index; every head of every layer competes in one ranking, the
-- recent window protected. The interpreter is the reference (diff and emu full matrices).
local kv = require "kvcc"
local P = kv.params { frac = 1.5, recent = 2 }

return kv.policy "keep_value_model" {
  score = function(x) return x.K:sum("chan"):abs() end,
  select = kv.topk { keep_recent = P.recent, scope = "model",
    keep = function(x)
      local vn = x.V:norm("chan")
      local pos = x.K:sum("chan"):gt(0):mean("token")
      -- an empty head (emu's empty-head cases) has no mean: it counts its head index only
      return kv.where(x.n:gt(0), x.nkeep * P.frac * vn:mean("token") / vn:max("token") * (pos + 0.5), 0) + x.head
    end },
}
