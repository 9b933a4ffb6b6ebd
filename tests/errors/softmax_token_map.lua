local kv = require "kvcc"
-- softmax over token of a [token] value is generated (expected_attention); over chan it is not
return kv.policy "x" {
  score = function(x) return kv.softmax(x.K, "chan"):sum("chan") end,
  select = kv.topk {},
}
