local kv = require "kvcc"
return kv.policy "x" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.topk {},
  merge = kv.next_kept { m = 2, weight = function(e, k, m) return e:at(m.x.K:norm("chan")) end },
  when = kv.decode { every = 1 },
}
