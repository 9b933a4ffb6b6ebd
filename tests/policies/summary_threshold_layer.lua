-- Test policy (issue 12): summary rows under the threshold rule at scope layer: the heads of a
-- layer share its budget (the sum of their counts); the candidates are the protected rows and
-- the others whose key sum is >= tau (NaN at every token index 29 m + 5: never one); a layer that evicts (a head over its count, or a row below
-- tau) keeps the sum of n_keep - 2 ordinary rows by its one ranking, each head at most n - 2
-- (M12's caps), so every head's 2 k-means rows (2 Lloyd iterations) come out of the layer's
-- budget and of what the head held (tests/oracle/mergeref.py summary_threshold_group, M15).
local kv = require "kvcc"
local P = kv.params { tau = 0.0, sinks = 1, window = 3 }

return kv.policy "summary_threshold_layer" {
  score = function(x)
    local nan = kv.where((x.t - (x.t / 29):floor() * 29):eq(5), 0 / 0, 0)
    return x.K:sum("chan") + nan
  end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.window, scope = "layer" },
  merge = kv.summary { rows = 2, iters = 2 },
}
