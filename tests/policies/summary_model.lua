-- Test policy (issue 12): summary rows under a model-wide budget (x86; CUDA: kv_select_grp ranks
-- the ordinary rows of the layer, the summary block left out): all heads share it, each head's ordinary rows ranked by key sum, what a
-- head evicts summarized by 2 k-means rows (2 Lloyd iterations) counted in its own budget.
local kv = require "kvcc"
local P = kv.params { recent = 4 }

return kv.policy "summary_model" {
  score = function(x) return -x.K:sum("chan") end,
  select = kv.topk { keep_first = 2, keep_recent = P.recent, scope = "model" },
  merge = kv.summary { rows = 2, iters = 2 },
}
