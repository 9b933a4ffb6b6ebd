-- Test policy (issue 12): summary rows under the threshold rule (scope head): the sum of the
-- key as the score with NaN at every token index 29 m + 5 (never kept unless protected), sinks 1,
-- window 3, tau from a param; what a head evicts (below tau, or over its budget) is summarized
-- by 2 k-means rows (2 Lloyd iterations). The rows come out of the head's budget: over it,
-- n_keep - 2 ordinary rows at most; under it, a head that evicts keeps at most n - 2 of them
-- (its best candidates), so the 2 rows take the place of evicted ones even when only one token
-- is below tau (tests/diff/diff.c: a very low tau in some cases under the budget).
local kv = require "kvcc"
local P = kv.params { tau = 0.5, sinks = 1, window = 3 }

return kv.policy "summary_threshold" {
  score = function(x)
    local nan = kv.where((x.t - (x.t / 29):floor() * 29):eq(5), 0 / 0, 0)
    return x.K:sum("chan") + nan
  end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.window },
  merge = kv.summary { rows = 2, iters = 2 },
}
