-- RazorAttention (Tang et al., 2024) for its non-retrieval heads: the first
-- `sinks` tokens and the newest ones are kept, and everything evicted becomes one
-- compensation token (the mean of the evicted keys and values, counted in the
-- budget), which decode attention weighs by its member count (log(count) added to
-- its logit). Retrieval heads keep everything in the paper; head classes arrive
-- with per-head tables (weights), so until then every head follows this rule.
local kv = require "kvcc"
local P = kv.params { sinks = 4 }

return kv.policy "razor" {
  score = function(x) return x.t end,                       -- newest first
  select = kv.topk { keep_first = P.sinks },
  merge = kv.summary { rows = 1, count_bias = true },
}
