-- Observed attention (H2O's heavy hitters at prefill, kvpress's
-- ObservedAttentionPress): the attention each token receives from every
-- prompt query, divided by the number of queries that can see it.
local kv = require "kvcc"

return kv.policy "observed_attention" {
  obs = kv.all,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- causal [group, obs, token]
    return (a:sum("obs") / (x.n - x.t)):mean("group")
  end,
  select = kv.topk {},
}
