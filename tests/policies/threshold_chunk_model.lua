-- Test policy: threshold_chunk.lua at scope model: the chunks of a model (its protected chunks, and
-- the others whose mean score reaches tau; NaN never) share the model's budget in one greedy
-- ranking (DESIGN §3; the interpreter's selectkeep), NaN scores on every 29th token, sinks 1,
-- the last `recent` tokens protected (0: the shorter last chunk competes), tau from a param.
local kv = require "kvcc"
local P = kv.params { tau = -1, sinks = 1, recent = 2, chunk = 3 }

return kv.policy "threshold_chunk_model" {
  score = function(x)
    local nan = kv.where((x.t - (x.t / 29):floor() * 29):eq(3), 0 / 0, 0)
    return x.K:sum("chan") + nan
  end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.recent, chunk = P.chunk,
                           scope = "model" },
}
