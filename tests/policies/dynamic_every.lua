-- DynamicKV's schedule with a round after every layer (policies/dynamickv.lua rounds after
-- every 4th layer; the test matrices have 2 layers): each round's global top-k over the
-- layers so far, the per-layer shares, the rescale and the min over rounds all run.
local kv = require "kvcc"
local P = kv.params { window = 4, kernel = 3, ratio_max = 2 }

return kv.policy "dynamic_every" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    local s = kv.where(x.t:lt(x.n - P.window), a:sum("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window, schedule = kv.dynamic { ratio_max = P.ratio_max, every = 1 } },
}
