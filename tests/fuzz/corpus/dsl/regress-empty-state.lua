-- found by fz_dsl: an empty state table sorted a NULL array (qsort(NULL, 0): UB)
local kv = require "kvcc"
return kv.policy "p" {
  state = {},
  score = function(x) return x.K:norm("chan") end,
}
