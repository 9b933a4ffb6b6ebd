-- GPU test policy (tests/emu/emu_diff.c): one ranking over every (layer, head), with a
-- sink, a recent window and chunks (param).
local kv = require "kvcc"
local P = kv.params { recent = 3, chunk = 3 }

return kv.policy "scope_model" {
  score = function(x) return x.K:sum("chan") end,
  select = kv.topk { keep_first = 1, keep_recent = P.recent, scope = "model", chunk = P.chunk },
}
