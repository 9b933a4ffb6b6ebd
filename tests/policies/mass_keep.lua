-- Test policy (issue 13): select keep with the mass rule at scope layer: the group's cap is the
-- sum of its heads' keep counts in place of their n_keep (doc/dsl.md, the keep paragraph).
local kv = require "kvcc"
local P = kv.params { p = 0.8, sinks = 2, window = 3 }

return kv.policy "mass_keep" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.window, scope = "layer",
    keep = function(x) return x.nkeep / (x.head + 1) + 2 end },
}
