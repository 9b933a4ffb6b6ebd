local kv = require "kvcc"
return kv.policy "x" {
  score = function(x)
    local s = x.t
    for i = 1, 1e6 do s = s + 1 end
    return s
  end,
  select = kv.topk {},
}
