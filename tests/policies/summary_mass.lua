-- Test policy (issue 12): summary rows under the cumulative-mass rule (scope head): each head's
-- unprotected tokens rank by their key norm, the shortest prefix of them reaching p of the head's
-- total is kept with the protected ones (sinks 1, window 3), at most the head's budget; what the
-- head evicts (past its prefix, or over its budget) is summarized by 2 k-means rows (2 Lloyd
-- iterations). The rows come out of the head's budget: over it, n_keep - 2 ordinary rows at most;
-- under it, a head whose prefix leaves rows out keeps at most n - 2 of them (its best), so the 2
-- rows take the place of evicted ones even when only one token goes (tests/oracle/mergeref.py
-- summary_mass, M13; a p near 1 in the golden cases under the budget).
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 1, window = 3 }

return kv.policy "summary_mass" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.window },
  merge = kv.summary { rows = 2, iters = 2 },
}
