-- Test policy (issue 13, session 12): keep_value.lua's kind of keep count under a layer's shared
-- budget (x86 selectkeep's group, CUDA kv_select_grp, which writes its records at the start of
-- each instance's workspace: the rows kv_count reduces lie past them, codegen/ptx/keep.c
-- kp_keepbufs): each head counts frac times its n_keep scaled by the flatness of its value
-- norms (mean / max, in (0, 1]) and by the share of its tokens whose attention-free key sum is
-- positive, plus its head index; the heads compete in one layer ranking, the recent window
-- protected. The interpreter is the reference (diff and emu full matrices; keep_value.lua has
-- the numpy goldens).
local kv = require "kvcc"
local P = kv.params { frac = 1.5, recent = 2 }

return kv.policy "keep_value_layer" {
  score = function(x) return x.K:sum("chan"):abs() end,
  select = kv.topk { keep_recent = P.recent, scope = "layer",
    keep = function(x)
      local vn = x.V:norm("chan")
      local pos = x.K:sum("chan"):gt(0):mean("token")
      -- an empty head (emu's empty-head cases) has no mean: it counts its head index only
      return kv.where(x.n:gt(0), x.nkeep * P.frac * vn:mean("token") / vn:max("token") * (pos + 0.5), 0) + x.head
    end },
}
