local kv = require "kvcc"
return kv.policy "x" {
  state = { tau = kv.token_state(0.5), acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score = function(x, st) return st.acc end,
  select = kv.topk {},
  merge = kv.nearest { threshold = function(e, k) return e.tau end },
  when = kv.decode { every = 1 },
}
