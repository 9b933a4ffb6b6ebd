-- DuoAttention (Xiao et al., 2025) head classes, as kvpress's DuoAttentionPress: the
-- round(L H h) heads with the lowest retrieval scores are streaming heads and keep only
-- `sink` + `recent` tokens; the others (retrieval heads) keep everything. The scores
-- come from calibration (kvcc calibrate: echo/induction attention on repeated random
-- tokens); the weight `duo_rank` [layer, head] is a head's rank by that score (0 = most
-- streaming-like, ties by lower layer, head). h is head_ratio, or the runtime ratio when
-- head_ratio < 0 (so kvcc eval's rows sweep it; the memory saved is lower than h).
local kv = require "kvcc"
local P = kv.params { sink = 4, recent = 32, head_ratio = -1 }
local W = kv.weights { duo_rank = { "layer", "head" } }

return kv.policy "duo" {
  score = function(x)
    local h = kv.where(P.head_ratio:lt(0), x.ratio, P.head_ratio)
    local streaming = W.duo_rank:lt((x.nlayers * x.nheads * h):round())
    return kv.where(streaming, 0, 1)                               -- 1: keep every token
  end,
  select = kv.threshold { tau = 0.5, keep_first = P.sink, keep_recent = P.recent, cap = false },
}
