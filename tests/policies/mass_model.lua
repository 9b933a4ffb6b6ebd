-- Test policy: the cumulative-mass rule (kv.mass) at scope model: the unprotected key norms of a
-- model are normalized by their sum, the shortest prefix of them (best first; ties lower layer,
-- head, position) reaching p is kept with the protected tokens, then at most the model's budget
-- (the sum of its heads' n_keep), best first; sinks 2, window 3, p from a param (goldens:
-- tests/oracle/gen_select.py, selref.mass_group).
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 2, window = 3 }

return kv.policy "mass_model" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.window, scope = "model" },
}
