-- Test policy: the threshold rule (kv.threshold) on the sum of the key, with NaN scores on
-- every 7th token (never kept unless protected), sinks 1, window 2, tau from a param.
local kv = require "kvcc"
local P = kv.params { tau = 0.5, sinks = 1, window = 2 }

return kv.policy "threshold_head" {
  score = function(x)
    local nan = kv.where((x.t - (x.t / 7):floor() * 7):eq(3), 0 / 0, 0)
    return x.K:sum("chan") + nan
  end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.window },
}
