-- Test policy (issue 12): merge runs (KVMerger's rule) at a compression during decode, with
-- member counts. H2O's accumulated attention (observed at decode steps) ranks the tokens;
-- runs of neighbouring tokens whose keys have cosine >= thr fold into their pivot, weighted
-- by the absorbed rows' member counts (a state row "count" after `acc`). The decode matrix
-- (tests/diff/decode.c) and the emulated one compress between decode steps.
local kv = require "kvcc"
local P = kv.params { recent = 4, thr = 0.5 }

return kv.policy "runs_decode" {
  state = { acc = kv.token_state(0) },
  observe = function(x, st) st.acc = st.acc + x.attn:sum("group") end,
  score = function(x, st) return st.acc end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.runs {
    threshold = P.thr,
    weight = function(e, k, m) return e.count end,
    self_weight = function(k, m) return k.count end,
  },
  when = kv.decode { every = 1 },
}
