-- Test policy: the cumulative-mass rule (kv.mass) on the key norms, sinks 2, window 3; p and
-- the cap from params (goldens: tests/oracle/gen_select.py, selref.mass_select).
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 2, window = 3 }

return kv.policy "mass_head" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.window },
}
