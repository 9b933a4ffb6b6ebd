local kv = require "kvcc"
local P = kv.params { window = 8 }
return kv.policy "x" {
  score = function(x) return x.t * P.windw end,
  select = kv.topk { keep_recent = P.window },
}
