local kv = require "kvcc"
local inner
return kv.policy "p" {
  score = function(x)
    local s = kv.scan(0, function(h) inner = h * 2; return inner + x.t end)
    return s + inner
  end,
  select = kv.topk {},
}
