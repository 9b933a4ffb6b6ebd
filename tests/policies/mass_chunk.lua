-- Test policy: the cumulative-mass rule (kv.mass) over chunks of `chunk` tokens at scope layer:
-- a chunk with a protected token is protected, the others rank by their mean key norm and count
-- their sum; the shortest prefix of them reaching p of the layer's total is kept with the
-- protected chunks, then whole chunks while they fit in the layer's budget (a shorter last chunk
-- may fill in); sinks 2, the last `recent` tokens protected (0: the shorter last chunk competes)
-- (goldens: tests/oracle/gen_select.py, selref.mass_group).
local kv = require "kvcc"
local P = kv.params { p = 0.6, sinks = 2, recent = 3, chunk = 4 }

return kv.policy "mass_chunk" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.mass { p = P.p, keep_first = P.sinks, keep_recent = P.recent, scope = "layer",
                     chunk = P.chunk },
}
