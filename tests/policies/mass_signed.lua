-- Test policy (not shipped): select mass over scores of either sign — a run-time error with the
-- (layer, head, token) of the first negative unprotected score (tests/lib/api_misuse.c).
local kv = require "kvcc"

return kv.policy "mass_signed" {
  score = function(x) return x.K:sum("chan") end,
  select = kv.mass { p = 0.5, keep_recent = 2 },
}
