-- Differential test policy (not shipped): weights in generated code (x86 token_map loops, CUDA
-- score kernels) — a scalar per (layer, head), [chan] and [group, chan] rows dotted with K and V,
-- a [group] factor, and a weight whose chan axis is not the last (strided reads).
local kv = require "kvcc"
local P = kv.params { window = 8 }
local W = kv.weights { wb = { "layer", "head" },
                       wk = { "layer", "head", "chan" },
                       wq = { "head", "group", "chan" },
                       wt = { "chan", "layer" },
                       wg = { "group", "layer", "head" } }

return kv.policy "wtest" {
  score = function(x)
    local a = x.K:dot(W.wk, "chan") + W.wb                          -- [token]
    local b = (x.V:dot(W.wq, "chan") * W.wg):mean("group")          -- [group, token] -> [token]
    local c = x.K:dot(W.wt, "chan"):abs()
    return a + b * 0.5 + c * 0.25
  end,
  select = kv.topk { keep_recent = P.window },
}
