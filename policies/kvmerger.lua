-- KVMerger (Wang et al., 2024): H2O's heavy hitters and a recent window are kept;
-- the other tokens merge within "merging sets", runs of consecutive tokens whose
-- neighbouring keys have cosine similarity >= thr. Each run's pivot is its kept
-- token ranked first by the selection (a run without one is dropped); the evicted
-- tokens of the run fold into it with Gaussian-kernel weights
-- exp(-|k_e - k_p|^2 / (2 sigma^2)) (the pivot's own weight exp(0) = 1), keys and values.
local kv = require "kvcc"
local P = kv.params { recent = 8, thr = 0.5, sigma = 8 }

return kv.policy "kvmerger" {
  obs = kv.all,
  score = function(x)
    local a = kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token")
    return a:sum("obs"):mean("group")
  end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.runs {
    threshold = P.thr,
    weight = function(e, k)
      local diff = e.K - k.K
      return (-diff:dot(diff, "chan") / (2 * P.sigma * P.sigma)):exp()
    end,
  },
}
