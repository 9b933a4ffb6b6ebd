-- Test policy: SnapKV's score with the attention probabilities taken from x.lse (the log-sum-exp
-- of each observation query's causal attention, which the caller passes) instead of a softmax:
-- exp(q·k·scale − lse) (not causally masked: only the tokens before the window, which every
-- observation query sees, are scored). KvccPress computes lse itself; the kept sets must be SnapKV's.
local kv = require "kvcc"
local P = kv.params { window = 16, kernel = 5 }

return kv.policy "snapkv_lse" {
  score = function(x)
    local a = kv.exp(x.Q:dot(x.K, "chan") * x.scale - x.lse)
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window },
}
