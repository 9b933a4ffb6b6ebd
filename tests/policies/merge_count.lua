-- Test policy (issue 12): member counts at prefill on the kernels. SnapKV's selection
-- (snapkv_merge.lua); the evicted tokens fold into their nearest kept token (cosine of
-- keys) as a mean weighted by member counts (ToMe's size-weighted average), each kept
-- row's count grows by the counts it absorbs (the compiled policy's state row "count"),
-- and decode attention adds log(count) to each row's logit.
local kv = require "kvcc"
local P = kv.params { window = 8, kernel = 5 }

return kv.policy "merge_count" {
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")  -- [group, obs, token]
    local s = kv.where(x.t:lt(x.n - P.window), a:mean("obs"), 0)
    return kv.avgpool(s, P.kernel):mean("group")
  end,
  select = kv.topk { keep_recent = P.window },
  merge = kv.nearest {
    weight = function(e, k, m) return e.count end,
    self_weight = function(k, m) return k.count end,
    count_bias = true,
  },
}
