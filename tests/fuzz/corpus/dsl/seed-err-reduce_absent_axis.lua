local kv = require "kvcc"
return kv.policy "x" {
  score = function(x)
    local s = x.K:norm("chan")
    return s:mean("obs")
  end,
  select = kv.topk {},
}
