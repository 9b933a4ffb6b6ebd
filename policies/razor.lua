-- RazorAttention (Tang et al., 2025) head classes: retrieval heads (the top 15% by
-- induction score and the top 1% by echo score on repeated random tokens; kvcc
-- calibrate's weight `razor` [layer, head], 1 for a retrieval head) keep everything;
-- the others keep `sinks` + a recent window of max(S0, n_keep - sinks) tokens (the
-- paper's max(S0, n / C) with C from the runtime ratio). Not here yet: the paper's
-- compensation token (the mean of the dropped rows, a merge rule of issue 12).
local kv = require "kvcc"
local P = kv.params { sinks = 4, S0 = 16 }
local W = kv.weights { razor = { "layer", "head" } }

return kv.policy "razor" {
  score = function(x)
    local recent = (x.nkeep - P.sinks):max(P.S0)
    return kv.where(W.razor:gt(0.5), 1, x.t:ge(x.n - recent))
  end,
  select = kv.threshold { tau = 0.5, keep_first = P.sinks, cap = false },
}
