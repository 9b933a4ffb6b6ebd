-- DynamicKV (Zhou et al., 2025), as DreamMr/DynamicKV methods/dynamic_v11.py at KV-head
-- granularity: the window's summed attention, pooled, averaged over the query heads of
-- the KV head. Layer budgets follow the task: after every 4th layer, a global top-k over
-- the (layer, head, token) scores of the layers so far gives each layer a share of
-- (B - window) * layers, rescaled (in f32, as the code) and capped by ratio_max times the
-- uniform share; a layer keeps its smallest share over the rounds, the same count in
-- every head, plus the window. B is the runtime budget (or n_keep for a ratio).
local kv = require "kvcc"
local P = kv.params { window = 8, kernel = 7, ratio_max = 10 }

return kv.policy "dynamickv" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    local s = kv.where(x.t:lt(x.n - P.window), a:sum("obs"), 0)    -- the prefix only
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window, schedule = kv.dynamic { ratio_max = P.ratio_max, every = 4 } },
}
