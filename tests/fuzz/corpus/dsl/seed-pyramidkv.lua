-- PyramidKV (Cai et al., 2024): SnapKV's scores with a per-layer budget that
-- shrinks linearly from the first layer to the last (kvpress's
-- PyramidKVPress.get_layer_budget; beta sets the steepness).
local kv = require "kvcc"
local P = kv.params { window = 64, kernel = 5, beta = 20 }

return kv.policy "pyramidkv" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window, schedule = kv.pyramid { beta = P.beta } },
}
