local kv = require "kvcc"
return kv.policy "x" {
  state = { acc = kv.token_state(0) },
  score = function(x, st) return st.acc end,
  select = kv.topk {},
  when = kv.decode { every = 1 },
}
