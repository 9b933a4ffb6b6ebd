-- Test policy: key norms ranked over the whole model (scope = "model"): layers and heads keep
-- different numbers of rows, and KvccPress must compress every layer in one call.
local kv = require "kvcc"

return kv.policy "knorm_model" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk { keep_first = 2, scope = "model" },
}
