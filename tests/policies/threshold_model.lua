-- Test policy: the threshold rule at scope model without the cap: every candidate of the model
-- is kept (the protected tokens, and the others whose score reaches tau); sinks 1, window 2,
-- tau from a param (goldens: tests/oracle/gen_select.py, selref.threshold_group).
local kv = require "kvcc"
local P = kv.params { tau = 0.5, sinks = 1, window = 2 }

return kv.policy "threshold_model" {
  score = function(x) return x.K:sum("chan") end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.window, scope = "model", cap = false },
}
