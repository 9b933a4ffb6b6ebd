local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) if x.t < 4 then return x.t end return -x.t end,
  select = kv.topk {},
}
