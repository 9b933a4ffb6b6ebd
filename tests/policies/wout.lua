-- Two weights with an out axis (issue 13: their size comes with the data, one for the policy):
-- the C API tests (tests/lib/api_misuse.c) set them in either order, with a wrong out size; c
-- (no out axis) given first moves when the first out-axis weight lays the buffer out again.
local kv = require "kvcc"
local W = kv.weights { c = { "chan" }, a = { "layer", "head", "chan", "out" }, b = { "out", "chan" } }

return kv.policy "wout" {
  score = function(x)
    return (x.K:dot(W.a, "chan") ^ 2):sum("out") + x.K:dot(W.b, "chan"):max("out") + x.K:dot(W.c, "chan")
  end,
  select = kv.topk {},
}
