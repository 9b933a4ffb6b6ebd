-- Test policy: the k-means summary of kmeans.lua at prefill (Lloyd's iterations on
-- a shape matrix): attention of the last `window` queries (mean over queries and
-- the group) with the window kept, the evicted tokens summarized by 4 centroids.
local kv = require "kvcc"
local P = kv.params { window = 8 }

return kv.policy "kmeans_prefill" {
  score = function(x)
    return kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):mean("obs"):mean("group")
  end,
  select = kv.topk { keep_recent = P.window },
  merge = kv.summary { rows = 4, iters = 3 },
}
