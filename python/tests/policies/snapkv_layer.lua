-- Test policy: SnapKV's score with scope = "layer" (the heads of a layer share its budget and
-- compete in one ranking, AdaKV without a floor): heads keep different numbers of rows, which
-- KvccPress pads to the longest head and masks.
local kv = require "kvcc"
local P = kv.params { window = 16, kernel = 5 }

return kv.policy "snapkv_layer" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window, scope = "layer" },
}
