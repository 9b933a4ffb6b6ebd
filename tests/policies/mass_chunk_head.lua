-- Test policy: the cumulative-mass rule (kv.mass) over chunks of `chunk` tokens at scope head
-- (mass_chunk.lua's rule per head; the CUDA kv_select path): a chunk with a protected token is
-- protected, the others rank by their mean key norm and count their sum; the shortest prefix of
-- them reaching p of the head's total is kept with the protected chunks, then whole chunks while
-- they fit in the head's budget (a shorter last chunk may fill in); sinks 2, the last `recent`
-- tokens protected (0: the shorter last chunk competes).
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 2, recent = 3, chunk = 4 }

return kv.policy "mass_chunk_head" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.recent, chunk = P.chunk },
}
