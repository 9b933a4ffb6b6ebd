-- ChunkKV (Liu et al., 2025) over SnapKV, as kvpress's ChunkKVPress(SnapKVPress,
-- chunk_length = 20): tokens are kept in whole chunks of 20, ranked by the mean over
-- the chunk of the score summed over the heads (here the mean over heads: the same
-- order), so every head of a layer keeps the same chunks.
-- Budget (decided, doc/dsl.md "Selection"): kvcc's chunk rule fills n_keep with whole
-- chunks, best first, a shorter last chunk filling in when a full one no longer fits;
-- kvpress keeps max(1, floor(#chunks (1 - r))) chunks whatever their token count (it
-- misses n_keep in 17 of 25 random cases, tests/oracle/README.md). The window is kept
-- (kvpress gives it the largest score instead).
local kv = require "kvcc"
local P = kv.params { window = 64, kernel = 5, chunk = 20 }

return kv.policy "chunkkv" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group"):mean("head")     -- shared by the layer's heads
  end,
  select = kv.topk { keep_recent = P.window, chunk = P.chunk },
}
