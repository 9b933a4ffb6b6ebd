-- D2O (Wan et al., 2024) during generation: H2O's accumulated attention picks the
-- tokens to keep (recent window protected); an evicted token is merged into its
-- nearest kept token (cosine of keys) when that similarity reaches a threshold
-- kept as an exponential moving average of the mean maximum similarity of each
-- compression (tau = beta tau' + (1 - beta) mean), weighted by a softmax over the
-- target's self-similarity 1 and the similarities: w_k = e^1, w_e = e^sim.
-- D2O's per-layer budgets from attention variance are not modelled.
local kv = require "kvcc"
local P = kv.params { recent = 8, beta = 0.7 }

return kv.policy "d2o" {
  state = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score = function(x, st) return st.acc end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.nearest {
    threshold = kv.adaptive { beta = P.beta },
    weight = function(e, k, m) return m.sim:exp() end,
    self_weight = math.exp(1),
  },
  when = kv.decode { every = 1 },
}
