local kv = require "kvcc"
local P = kv.params { window = 8 }
return kv.policy "x" {
  score = function(x) return kv.softmax(x.Q:dot(x.K, "chan"), "token"):mean("obs") end,
  select = kv.topk { keep_recent = P.window },
}
