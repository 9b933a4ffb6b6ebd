-- PrefixKV's in-prompt variant (THU-MIG/PrefixKV prefixkv.py, its profiling path): the
-- per-layer budgets come from this prompt's own scores. Every (layer, head) sorts its
-- scores, normalizes and accumulates them; one prefix mass p shared by the whole model
-- is bisected until the tokens past each prefix add up (within 5) to the tokens to
-- evict, n * ratio per head; the per-head counts are scaled to that total and truncated.
-- Then each head evicts that many lowest-scoring tokens of [4, n - 1). kvcc counts per
-- (layer, head), where the code counts per layer: with a score shared by the heads of a
-- layer (as here) only the tolerance differs (5 tokens over L H rows instead of L).
local kv = require "kvcc"
local P = kv.params { start = 4, protect = 1 }

return kv.policy "prefixkv_bisect" {
  obs = kv.all,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    return a:sum("obs"):mean("group"):mean("head")
  end,
  select = kv.topk { keep_first = P.start, keep_recent = P.protect, schedule = kv.prefix { tol = 5 } },
}
