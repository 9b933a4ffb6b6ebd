-- chunked selection, scope layer: the heads of a layer share its budget;
-- scores are the observation queries' attention (fused attn_score)
local kv = require "kvcc"
local P = kv.params { chunk = 3, sinks = 1, window = 4 }

return kv.policy "chunk_layer" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    return a:mean("obs"):mean("group")
  end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.window, scope = "layer", chunk = P.chunk },
}
