-- Stre's sinks are protected.
local kv = require "kvcc"
local P = kv.params { sinks = 188888888888888888888888 }

return kv.policy "streaming_llm" {
  score = function(x) return x.d end,
  select = kv.topk { keep_first = P.sinks },
}
