local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk {},
  -- a merge that is not a merge rule is reported here, not at 'return'
  merge = "average",
}
