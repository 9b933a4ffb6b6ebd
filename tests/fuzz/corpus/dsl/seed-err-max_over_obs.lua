local kv = require "kvcc"
return kv.policy "x" {
  obs = 8,
  score = function(x)
    return kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):max("obs"):mean("group")
  end,
  select = kv.topk {},
}
