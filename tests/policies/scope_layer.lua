-- GPU test policy (tests/emu/emu_diff.c): the heads of a layer share its budget,
-- with sinks, a recent window, chunks (param) and PyramidKV's per-layer budgets.
local kv = require "kvcc"
local P = kv.params { recent = 4, chunk = 1 }

return kv.policy "scope_layer" {
  score = function(x) return -x.K:sum("chan") end,
  select = kv.topk { keep_first = 2, keep_recent = P.recent, scope = "layer", chunk = P.chunk,
                     schedule = kv.pyramid { beta = 2 } },
}
