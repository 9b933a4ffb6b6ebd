-- The seed's attention-guided pruning with an online k-means summary, during
-- generation: the attention each token receives accumulates (H2O's observe), and
-- when the cache is over budget the least attended tokens (recent window kept) are
-- evicted into `rows` summary rows: built by Lloyd's k-means (iters iterations,
-- squared L2 of keys, initialized with evicted tokens evenly spaced in position)
-- at the first eviction, then each newly evicted token joins its nearest centroid
-- as a count-weighted running mean. Summary rows count in the budget.
local kv = require "kvcc"
local P = kv.params { recent = 8 }

return kv.policy "kmeans" {
  state = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score = function(x, st) return st.acc end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.summary { rows = 4, iters = 3 },
  when = kv.decode { every = 1 },
}
