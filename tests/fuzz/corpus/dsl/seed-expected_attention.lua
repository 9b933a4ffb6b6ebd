-- Expected Attention (Devoto et al., 2025), as kvpress's ExpectedAttentionStatsPress: the
-- queries to come are modelled by their mean mu and covariance (calibration statistics
-- of the pre-RoPE queries, per query head: weights `mu` and `cf`, Sigma = cf cf^T), rotated
-- by the mean RoPE of the next `future` positions (Rbar). A key's expected logit is
--   z = (Rbar mu) . k / sqrt(d) + k^T Rbar Sigma Rbar^T k / (2 d);
-- softmax over the keys after the sinks, mean over the query heads, times |v| (+ eps).
-- The sinks are kept. RoPE pairs (c, c + d/2) as Hugging Face (kvpress); adjacent = 1
-- for (2j, 2j + 1) pairs (llama2.c checkpoints, the shipped model). The future starts
-- after the last position held (kvpress: the prompt length, the same at prefill).
local kv = require "kvcc"
local P = kv.params { sinks = 4, future = 512, theta = 10000, eps = 0, cov = 1, adjacent = 0 }
local W = kv.weights { mu = { "layer", "head", "group", "chan" },
                       cf = { "layer", "head", "group", "chan", "out" } }

return kv.policy "expected_attention" {
  score = function(x)
    local half = x.d / 2
    local firstof = kv.where(P.adjacent, (x.c - (x.c / 2):floor() * 2):eq(0), x.c:lt(half))
    local pair = kv.where(P.adjacent, (x.c / 2):floor(), kv.where(firstof, x.c, x.c - half))
    local th = P.theta ^ (-2 * pair / x.d)                           -- the pair's frequency
    -- mean over k < future of cos / sin((p0 + k) th) = amp * cos / sin((p0 + (future-1)/2) th)
    local amp = (P.future * th / 2):sin() / ((th / 2):sin() * P.future)
    local ph = (x.pos:max("token") + 1 + (P.future - 1) / 2) * th
    local ca, sa = amp * ph:cos(), amp * ph:sin()
    -- k~ = Rbar^T k = ca k + P^T (sa k): P^T y is y of the pair's other half, negated on the second
    local y, dist = sa * x.K, kv.where(P.adjacent, 1, half)
    local kt = ca * x.K + kv.where(firstof, y:shift("chan", dist), -y:shift("chan", -dist))
    local z = kt:dot(W.mu, "chan") * x.scale                         -- [group, token]
      + (kt:dot(W.cf, "chan") ^ 2):sum("out") * P.cov / (2 * x.d)
    z = kv.where(x.t:lt(P.sinks), -math.huge, z)
    local a = kv.softmax(z, "token"):mean("group")
    return (a + P.eps) * x.V:norm("chan")
  end,
  select = kv.topk { keep_first = P.sinks },
}
