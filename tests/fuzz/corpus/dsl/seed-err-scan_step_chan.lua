local kv = require "kvcc"
return kv.policy "p" {
  score = function(x) return kv.scan(0, function(h) return x.K + h end):sum("chan") end,
  select = kv.topk {},
}
