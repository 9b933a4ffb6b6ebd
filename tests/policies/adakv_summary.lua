-- Test policy (issue 12): AdaKV's floor (kv.topk scope "layer", floor alpha) with summary rows:
-- the heads of a layer share its budget; in a layer that evicts (a head over its count), each
-- head first keeps its own floor(alpha n_keep) rows, its 2 summary rows included (a floor at or
-- below 2 is met by them), i.e. its best max(floor - 2, 0) ordinary rows, protected first; the rest
-- of the layer's ordinary budget (sum of n_keep - 2) goes to one ranking over the layer, each
-- head at most n - 2 (M12); what a head evicts is summarized by 2 k-means rows (2 Lloyd
-- iterations). Golden: tests/oracle/mergeref.py summary_floor (M14).
local kv = require "kvcc"
local P = kv.params { alpha = 0.5, sinks = 2, window = 3 }

return kv.policy "adakv_summary" {
  -- the key's sum over its norm, lower by 1 per head index: the later heads of a layer rank
  -- below the first, so the floors decide what they keep
  score = function(x) return x.K:sum("chan") / x.K:norm("chan") - x.head end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.window, scope = "layer", floor = P.alpha },
  merge = kv.summary { rows = 2, iters = 2 },
}
