local kv = require "kvcc"
-- state numbers are 8-bit: state 300 must not become state 44
local st = {}
for i = 1, 300 do st[string.format("s%03d", i)] = kv.token_state(i) end
return kv.policy "x" {
  state = st,
  observe = function(x, s) for i = 1, 300 do s[string.format("s%03d", i)] = x.attn:sum("group") end end,
  score = function(x, s) return s.s300 end,
  select = kv.topk {},
  when = kv.decode { every = 1 },
}
