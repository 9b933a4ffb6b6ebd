-- RazorAttention (Tang et al., 2025). Retrieval heads (kvcc calibrate's weight `razor`
-- [layer, head], 1 for a retrieval head: the top 15% by induction score and the top 1%
-- by echo score on repeated random tokens) keep everything. Every other head keeps the
-- first `sinks` tokens and a recent window, and what it evicts becomes one compensation
-- token (the mean of the evicted keys and values, counted in the budget), which decode
-- attention weighs by its member count (log(count) added to its logit). The window is
-- max(S0, n_keep - sinks - 1): the paper's max(S0, n / C) with C from the runtime ratio,
-- one row of the budget going to the compensation token.
local kv = require "kvcc"
local P = kv.params { sinks = 4, S0 = 16 }
local W = kv.weights { razor = { "layer", "head" } }

return kv.policy "razor" {
  score = function(x) return x.t end,                       -- newest first
  select = kv.topk { keep_first = P.sinks,
    keep = function(x)                                      -- rows kept before the merge
      return kv.where(W.razor:gt(0.5), x.n, x.nkeep:max(P.sinks + P.S0 + 1))
    end },
  merge = kv.summary { rows = 1, count_bias = true },
}
