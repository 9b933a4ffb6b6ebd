-- CriticalKV (Feng et al., 2025) over SnapKV, as kvpress's CriticalKVPress: two stages.
-- Stage 1 keeps the best half of the budget by SnapKV's score (kvpress: at least one
-- token); stage 2 ranks the rest by the score times the value's effect on the output,
-- (s + eps) * mean over the query heads of |W_o v|_1 (W_o: the layer's output
-- projection, [out, head, group, chan] as the checkpoint stores o_proj.weight).
-- The window is kept (and counts in stage 1, as kvpress's largest window score does).
-- Stage 1's size is floor(nkeep * first) with nkeep the kept count (an integer, exact in f32
-- kernels and under a budget); kvpress's int((1 - ratio) * n * first) is the same for
-- first = 0.5 (floor(floor(y) / 2) = floor(y / 2)) and can be one more for other values.
local kv = require "kvcc"
local P = kv.params { window = 64, kernel = 5, eps = 1e-4, first = 0.5 }
local W = kv.weights { wo = { "layer", "out", "head", "group", "chan" } }

return kv.policy "criticalkv" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    local s = kv.avgpool(kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0), P.kernel):mean("group")
    local win = x.t:ge(x.n - P.window)
    local k1 = (x.nkeep * P.first):floor():max(1)                    -- kvpress: int(...), >= 1
    local first = (-kv.where(win, math.huge, s)):rank("token"):lt(k1)  -- stage 1: the top k1
    local l1 = x.V:dot(W.wo, "chan"):abs():sum("out"):mean("group")   -- mean_G |W_o v|_1
    return kv.where(first, math.huge, (s + P.eps) * l1)
  end,
  select = kv.topk { keep_recent = P.window },
}
