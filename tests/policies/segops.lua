-- Differential test policy (not shipped): the segment ops (sum, mean, max, min and rank over
-- token segments) and shift along token in generated code (the x86 token_map loops, the CUDA
-- score kernels), on [token] values (from K / V rows, x.t) and [group, token] ones (the
-- observation attention), with sizes and starts from params (a start past n, a chunk that
-- reaches n: one segment) and shifts both ways with and without a fill value.
local kv = require "kvcc"
local P = kv.params { window = 4, chunk = 5, start = 3, lag = 4, big = 1000 }

return kv.policy "segops" {
  score = function(x)
    local k = x.K:mean("chan") + x.V:max("chan") * 0.5              -- [token]
    local seg = { chunk = P.chunk, start = P.start }
    local s = k:sum("token", seg) * 0.25 + k:max("token", seg) - k:min("token", seg) * 0.5
            + k:mean("token", { chunk = P.big }) * 0.3 + k:rank("token", seg) * 0.01
            + k:rank("token") * 0.001 + k:min("token", { chunk = 2, start = P.big }) * 0.2
    local sh = k:shift("token", P.lag) + k:shift("token", -2, 0.75) * 0.5
             + (x.t * 0.1):shift("token", 1, -1) * 0.01
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):mean("obs")   -- [group, token]
    local g = (a:max("token", seg) + a:shift("token", -1) + a:rank("token", { chunk = 3 }) * 0.1):mean("group")
    return s + sh * 0.3 + g + k
  end,
  select = kv.topk { keep_recent = P.window },
}
