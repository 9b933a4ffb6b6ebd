local kv = require "kvcc"
return kv.policy "p" {
  score = function(x) return x.t end,
  select = kv.topk { keep = function(x) return x.n / 2 end, schedule = kv.pyramid {} },
}
