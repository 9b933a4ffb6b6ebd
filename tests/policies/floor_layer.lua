-- Test policy: AdaKV's floor (kv.topk scope "layer", floor alpha) with sinks and a recent
-- window, on a plain per-token score (the sum of the key's channels). Each head first keeps
-- its own top floor(alpha n_keep), protected tokens first; the rest of the layer budget goes
-- to one ranking over the layer (goldens: tests/oracle/gen_select.py, selref.floor_select).
local kv = require "kvcc"
local P = kv.params { alpha = 0.5, sinks = 2, window = 3 }

return kv.policy "floor_layer" {
  score = function(x) return x.K:sum("chan") end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.window, scope = "layer", floor = P.alpha },
}
