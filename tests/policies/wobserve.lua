-- Differential test policy (not shipped): weights in the observe hook (x86 generated observe
-- loops, the CUDA decode kernel) and in the score of a decode-time policy: H2O's accumulated
-- attention weighted per query head and shifted per (layer, head).
local kv = require "kvcc"
local P = kv.params { recent = 8 }
local W = kv.weights { wa = { "layer", "head", "group" }, wb = { "layer", "head" } }

return kv.policy "wobserve" {
  state = { acc = kv.token_state(0.0) },
  observe = function(x, st) st.acc = st.acc + (x.attn * W.wa:abs()):sum("group") + W.wb:abs() * 0.01 end,
  score = function(x, st) return st.acc * (W.wb * 0.1 + 1) end,
  select = kv.topk { keep_recent = P.recent },
  when = kv.decode { every = 1 },
}
