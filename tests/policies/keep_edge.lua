-- Test policy (issue 13): a select keep count that reaches every part of the generated count
-- (codegen/x86/keep.c, codegen/ptx/keep.c): x.nkeep, x.layer, x.head, x.ratio, a param, a
-- [layer, head] weight, a reduction over a weight's out axis with the out index, and values
-- that the clamp floors (fractions), lifts to 0 (negative) and cuts to n (above n).
local kv = require "kvcc"
local P = kv.params { off = 0.5 }
local W = kv.weights { kw = { "layer", "head" }, ko = { "head", 6 } }

return kv.policy "keep_edge" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk { keep_first = 2,
    keep = function(x)
      local m = kv.where(x.out:lt(4), W.ko, 0):mean("out")         -- the out axis (size 6)
      return x.nkeep * (W.kw / 4 + 1) + m * x.layer - x.head * x.ratio + P.off
    end },
}
