-- PrefixKV (Wang et al., 2025), online, as THU-MIG/PrefixKV's prefixkv.py: a token's
-- score is the attention every prompt query gives it, averaged over all heads of the
-- layer (the layer's heads keep the same tokens). Each layer evicts its own fraction
-- f_l of the context, round(f_l n) lowest-scoring tokens of [4, n - 1); the first 4 and
-- the last token are kept. The fractions come from calibration (kvcc calibrate: the
-- in-prompt bisection of prefixkv_bisect.lua averaged over calibration texts) as a
-- table `frac` [layer, 99] over the ratios 0.01 .. 0.99; the runtime ratio picks the
-- nearest row (ratio 0 evicts nothing).
local kv = require "kvcc"
local P = kv.params { start = 4, protect = 1 }
local W = kv.weights { frac = { "layer", 99 } }

return kv.policy "prefixkv" {
  obs = kv.all,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    return a:sum("obs"):mean("group"):mean("head")
  end,
  select = kv.topk { keep_first = P.start, keep_recent = P.protect,
    keep = function(x)
      local row = (x.ratio * 100):round() - 1                      -- the ratio's row, -1 for 0
      local f = kv.where(x.out:eq(row), W.frac, 0):sum("out")      -- f_l at that ratio
      return x.n - (f * x.n):round()                               -- numpy's round: half to even
    end },
}
