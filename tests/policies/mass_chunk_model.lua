-- Test policy: the cumulative-mass rule (kv.mass) over chunks of `chunk` tokens at scope model
-- (mass_chunk.lua's rule over all layers and heads of a sequence; the CUDA kv_select_grp path,
-- emulated GPU matrix in check-emu-full): a chunk with a protected token is protected, the others
-- rank by their mean key norm (ties: lower layer, head, position) and count their sum; the
-- shortest prefix of them reaching p of the model's total is kept with the protected chunks, then
-- whole chunks while they fit in the model's budget (a shorter last chunk may fill in); sinks 2,
-- the last `recent` tokens protected (0: the shorter last chunk competes).
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 2, recent = 3, chunk = 4 }

return kv.policy "mass_chunk_model" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.recent, scope = "model",
                     chunk = P.chunk },
}
