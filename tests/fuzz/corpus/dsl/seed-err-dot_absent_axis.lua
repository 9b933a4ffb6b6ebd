local kv = require "kvcc"
local P = kv.params { window = 8 }
return kv.policy "x" {
  score = function(x) return x.Q:dot(x.K, "token"):mean("obs"):mean("group") end,
  select = kv.topk { keep_recent = P.window },
}
