-- Test policy (issue 13): select keep with the threshold rule: the keep count (a scalar per
-- (layer, head), here different per head and layer) is the cap in place of n_keep — the best
-- min(count, candidates >= tau) tokens, protected first (doc/dsl.md, the keep paragraph).
local kv = require "kvcc"
local P = kv.params { tau = 0, sinks = 1, window = 2 }

return kv.policy "threshold_keep" {
  score = function(x) return x.K:sum("chan") end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.window,
    keep = function(x) return x.nkeep * (x.head + 1) / 3 + x.layer end },
}
