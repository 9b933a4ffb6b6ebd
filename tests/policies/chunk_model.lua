-- chunked selection, scope model: one budget for every (layer, head); no
-- recent window, so partial last chunks compete with full chunks by score
local kv = require "kvcc"
local P = kv.params { chunk = 3, sinks = 3, window = 0 }

return kv.policy "chunk_model" {
  score = function(x) return x.K:sum("chan") end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.window, scope = "model", chunk = P.chunk },
}
