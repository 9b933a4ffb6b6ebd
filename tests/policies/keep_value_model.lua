-- Test policy (issue 13, session 12): a keep count read from [token] values under the model's
-- shared budget (x86 selectkeep's one group, CUDA kv_select_grp on one block): each head counts
-- frac times its n_keep scaled by min / max of its value norms, plus its positions' spread per
-- token (x.pos, max − min over n), plus its layer index; every head of every layer competes in
-- one ranking, the recent window protected. The interpreter is the reference (diff and emu full
-- matrices; keep_value.lua has the numpy goldens).
local kv = require "kvcc"
local P = kv.params { frac = 2, recent = 2 }

-- an empty head (emu's empty-head cases) has no norms: it counts its layer index only
local function count(x)
  local vn, span = x.V:norm("chan"), x.pos:max("token") - x.pos:min("token")
  return kv.where(x.n:gt(0), x.nkeep * P.frac * vn:min("token") / vn:max("token") + span / x.n, 0) + x.layer
end

return kv.policy "keep_value_model" {
  score = function(x) return x.K:sum("chan"):abs() end,
  select = kv.topk { keep_recent = P.recent, scope = "model", keep = count },
}
