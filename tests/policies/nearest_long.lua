-- Test policy (issue 12, session 9): merge nearest where one kept row absorbs every evicted
-- row. The similarity ignores the evicted row (minus the kept row's squared key norm, plus 0 times the
-- cross dot: the tiled-product form), so every evicted row's nearest kept row is the one of the
-- smallest key norm: one target, hundreds of members at the longer sequences. On CUDA this is
-- the segments' stable scatter over many tiles of one target (codegen/ptx/merge.c `segments`)
-- and the update of one target over a long member list. Oracle: the interpreter (diff, emu).
local kv = require "kvcc"
local P = kv.params { recent = 4 }

return kv.policy "nearest_long" {
  obs = 4,
  score = function(x)
    return kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):sum("obs"):mean("group")
  end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.nearest {
    sim = function(e, k) return e.K:dot(k.K, "chan") * 0 - k.K:dot(k.K, "chan") end,
    threshold = -1e30,                        -- every evicted row merges
  },
}
