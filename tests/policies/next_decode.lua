-- Test policy (issue 12): merge next (CaM's positional rule) at a compression during decode,
-- with member counts: each evicted token adds its value, scaled by its member count over its
-- number of targets, to the next m kept tokens (update "sum"); a target's count grows by
-- count_e / ntargets. The decode matrix (tests/diff/decode.c) and the emulated one compress
-- between decode steps.
local kv = require "kvcc"
local P = kv.params { recent = 4, m = 2 }

return kv.policy "next_decode" {
  state = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score = function(x, st) return st.acc end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.next_kept {
    m = P.m, keys = false, update = "sum",
    weight = function(e, k, m) return 0.5 * e.count / m.ntargets end,
  },
  when = kv.decode { every = 1 },
}
