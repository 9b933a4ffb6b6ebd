-- Test policy (issue 12): member counts and the count bias on the kernels. H2O's
-- accumulated attention (observed at decode steps) ranks the tokens; at a compression the
-- evicted tokens fold into their nearest kept token (cosine of keys, merge nearest) as a
-- mean weighted by member counts, each kept row's count grows by the counts it absorbs (a
-- state row of the compiled policy, "count", after `acc`), and decode attention adds
-- log(count) to each row's logit
-- (RazorAttention's compensation, ToMe's proportional attention). A merge during decode:
-- the decode matrix (tests/diff/decode.c) compresses between its decode steps.
local kv = require "kvcc"
local P = kv.params { recent = 8 }

return kv.policy "nearest_bias" {
  state = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score = function(x, st) return st.acc end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.nearest {                       -- count-weighted mean (ToMe's size-weighted average)
    weight = function(e, k, m) return e.count end,
    self_weight = function(k, m) return k.count end,
    count_bias = true,
  },
  when = kv.decode { every = 1 },
}
