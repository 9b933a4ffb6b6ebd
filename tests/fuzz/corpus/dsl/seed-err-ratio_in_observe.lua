local kv = require "kvcc"
return kv.policy "p" {
  state = { a = kv.token_state(0) },
  observe = function(x, st) st.a = st.a + x.ratio end,
  score = function(x, st) return st.a end, select = kv.topk {}, when = kv.decode {},
}
