-- A threshold policy in the style of KVzap / DMS: keep every token whose score reaches
-- tau, plus the recent window; the ratio or budget, when given, caps the count (best
-- scores first). The score: how much more attention the window's queries give a token
-- than uniform attention would, log(n * mean attention) (0 = uniform).
local kv = require "kvcc"
local P = kv.params { window = 16, tau = 0 }

return kv.policy "threshold" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    return (a:mean("obs"):mean("group") * x.n):log()
  end,
  select = kv.threshold { tau = P.tau, keep_recent = P.window },
}
