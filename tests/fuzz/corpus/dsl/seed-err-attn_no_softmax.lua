local kv = require "kvcc"
return kv.policy "x" {
  obs = 8,
  score = function(x) return (x.Q:dot(x.K, "chan") * x.scale):exp():mean("obs"):mean("group") end,
  select = kv.topk {},
}
