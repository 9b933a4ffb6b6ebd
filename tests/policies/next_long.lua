-- Test policy (issue 12, session 9): merge next (CaM's rule) where one kept row absorbs a long
-- chain of evicted rows: the score prefers early positions, so the top-k keeps a prefix and the
-- recent window, and every evicted row between them has the recent window's first row among its
-- m targets. On CUDA a warp per kept row takes the absorbed rows 32 at a time (several batches
-- here) and its lanes the channels (codegen/ptx/mpos.c nextbody). Oracle: the interpreter.
local kv = require "kvcc"
local P = kv.params { recent = 4, m = 3 }

return kv.policy "next_long" {
  score = function(x) return -x.pos end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.next_kept {
    m = P.m,
    weight = function(e, k, m) return (e.V:dot(k.V, "chan") / 64):exp() / m.ntargets end,
    -- reads the kept row that the update then writes (CUDA: a warp barrier between the two)
    self_weight = function(k, m) return 1 + k.V:dot(k.V, "chan") / 128 end,
  },
}
