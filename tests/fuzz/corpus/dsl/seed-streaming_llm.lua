-- StreamingLLM (Xiao et al., 2023): keep a few attention sinks at the start
-- and the most recent tokens. The score is the token's index, so top-k keeps
-- the newest; the sinks are protected.
local kv = require "kvcc"
local P = kv.params { sinks = 4 }

return kv.policy "streaming_llm" {
  score = function(x) return x.t end,
  select = kv.topk { keep_first = P.sinks },
}
