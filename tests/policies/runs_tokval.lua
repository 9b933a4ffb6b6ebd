-- Test policy (issue 12): merge runs (KVMerger's rule) reading ordinary [token] values in its
-- pair expressions: the attention A (mean over the heads, so that the kernels keep it per
-- instance until the compaction) at the evicted row (e:at) and at the pivot (k:at) in the
-- weights and the self weight, and seeded kvcc.random draws at the rows' positions in the
-- similarity of neighbours (the runs) and in the weights. The interpreter is the reference (no
-- published method reads these; what is tested is that x86 and CUDA C read them as it does).
local kv = require "kvcc"
local P = kv.params { recent = 4, thr = 0.3, seed = 3, seed2 = 4 }

local function attention(x)                 -- [token]: summed over the obs, mean over the group
  return kv.softmax(x.Q:dot(x.K, "chan") * x.scale, "token"):sum("obs"):mean("group")
end

return kv.policy "runs_tokval" {
  obs = kv.all,
  score = function(x) return attention(x):mean("head") end,
  select = kv.topk { keep_recent = P.recent },
  merge = kv.runs {
    -- the cosine of the keys, or (a quarter of the pairs, by a draw at e's position) above
    -- any threshold: the decision keeps the cosine's margin to thr (tests/common/casegen.h)
    sim = function(e, k)
      return kv.cosine(e.K, k.K, "chan") + kv.where(e:at(kv.random(P.seed2)):lt(0.25), 4, 0)
    end,
    threshold = P.thr,
    weight = function(e, k, m)
      local A = attention(m.x)
      return (0.5 + e:at(kv.random(P.seed))) * e:at(A) / k:at(A)
    end,
    self_weight = function(k, m)
      local A = attention(m.x)
      return 1 + k:at(A)
    end,
  },
}
