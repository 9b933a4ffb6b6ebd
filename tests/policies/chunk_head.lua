-- chunked selection, scope head: low-norm keys kept in chunks of `chunk`
-- tokens (mean score), the first `sinks` and the last `window` protected
local kv = require "kvcc"
local P = kv.params { chunk = 3, sinks = 2, window = 5 }

return kv.policy "chunk_head" {
  score = function(x) return -x.K:norm("chan") end,
  select = kv.topk { keep_first = P.sinks, keep_recent = P.window, chunk = P.chunk },
}
