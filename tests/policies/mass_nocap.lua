-- Test policy: kv.mass without the runtime cap (cap = false): the kept count is the rule's.
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 2, window = 3 }

return kv.policy "mass_nocap" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.window, cap = false },
}
