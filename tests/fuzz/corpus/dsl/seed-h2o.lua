-- H2O (Zhang et al., 2023) during generation: every decode step adds the
-- attention each cached token receives (summed over the query heads of its
-- KV head) to that token's running total; when the cache is over budget, the
-- tokens with the smallest totals are evicted. The recent window is kept.
local kv = require "kvcc"
local P = kv.params { recent = 32 }

return kv.policy "h2o" {
  state   = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score   = function(x, st) return st.acc end,
  select  = kv.topk { keep_recent = P.recent },
  when    = kv.decode { every = 1 },
}
