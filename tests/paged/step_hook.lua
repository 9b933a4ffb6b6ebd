-- A test policy of tests/paged/paged.c (not shipped): per-sequence x.step (kvcc_seq.step, issue 14).
-- The observe hook weighs this step's attention by the step number, so a decode step that sees
-- another x.step leaves another state.
local kv = require "kvcc"

return kv.policy "step_hook" {
  state   = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc * 0.5 + x.attn:sum("group") * (x.step + 1) end,
  score   = function(x, st) return st.acc end,
  select  = kv.topk { keep_recent = 4 },
  when    = kv.decode { every = 1 },
}
