-- Test policy (issue 12, session 9): merge runs with a threshold below every cosine, so every held row is in one
-- run: the whole sequence folds into its one pivot (the kept row ranked first by the
-- selection: a sink). On CUDA the run spans several tiles of held rows (the pivot's segmented
-- scan, codegen/ptx/mpos.c) and the pivot absorbs every evicted row (the update of one target
-- over a long segment). Oracle: the interpreter (diff, emu).
local kv = require "kvcc"
local P = kv.params { sinks = 2, recent = 4 }

return kv.policy "runs_long" {
  obs = 4,
  score = function(x)
    return kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):sum("obs"):mean("group")
  end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.recent },
  merge = kv.runs {
    threshold = -2,                          -- below every cosine: one run
    weight = function(e, k) return (e.K:dot(k.K, "chan") / 64):exp() end,
  },
}
