-- Test policy (issue 12): RazorAttention's compensation token on the kernels, the same
-- rule for every head (razor.lua's head classes and `keep` wait on the issue-13 kernels):
-- sinks and a recent window kept, the rest by key norm, what is evicted folded into one
-- summary row (the count-weighted mean of the evicted keys and values, counted in the
-- budget), which decode attention weighs by its member count (log(count) on its logit).
local kv = require "kvcc"
local P = kv.params { sinks = 4, recent = 8 }

return kv.policy "summary_mean" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.recent },
  merge = kv.summary { rows = 1, count_bias = true },
}
