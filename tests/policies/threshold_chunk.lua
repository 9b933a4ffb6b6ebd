-- Test policy: the threshold rule (kv.threshold) over chunks of `chunk` tokens (a chunk is
-- kept whole when its mean score reaches tau; DESIGN §3), on the sum of the key with NaN
-- scores on every 29th token (a chunk holding one is never kept unless protected), sinks 1,
-- the last `recent` tokens protected (0: the shorter last chunk competes), tau from a param.
local kv = require "kvcc"
local P = kv.params { tau = -1, sinks = 1, recent = 2, chunk = 3 }

return kv.policy "threshold_chunk" {
  score = function(x)
    local nan = kv.where((x.t - (x.t / 29):floor() * 29):eq(3), 0 / 0, 0)
    return x.K:sum("chan") + nan
  end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.recent, chunk = P.chunk },
}
