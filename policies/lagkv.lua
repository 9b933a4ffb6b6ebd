-- LagKV (Liang et al., 2025), as kvpress's LagKVPress: after the sinks, tokens come in
-- chunks of `lag`; a chunk is judged by the next one. Per channel, the next chunk's
-- min and max rescale this chunk's keys (and values); the spread (std over channels)
-- of a rescaled token, softmaxed within its chunk, says how much it deviates from
-- what follows. Keys and values average; the score is the token's rank within its
-- chunk / lag. Sinks and the last full chunk with the partial one score 1; a short
-- context (n < sinks + 2 lag) scores by position.
local kv = require "kvcc"
local P = kv.params { sinks = 4, lag = 128 }

return kv.policy "lagkv" {
  score = function(x)
    local seg = { chunk = P.lag, start = P.sinks }
    local function spread(X)                                       -- X [token, chan]
      local mn = X:min("token", seg):shift("token", P.lag)         -- the next chunk's range
      local mx = X:max("token", seg):shift("token", P.lag)
      local sd = ((X - mn) / (mx - mn)):std("chan") * (x.d / (x.d - 1)):sqrt()  -- torch std: n - 1
      local e = (sd - sd:max("token", seg)):exp()
      return e / e:sum("token", seg)                               -- softmax within the chunk
    end
    local s = ((spread(x.K) + spread(x.V)) / 2):rank("token", seg) / P.lag
    local last = P.sinks + ((x.n - P.sinks) / P.lag):floor() * P.lag - P.lag  -- the tail's start
    local long = kv.where(x.t:lt(P.sinks), 1, kv.where(x.t:ge(last), 1, s))
    local short = kv.where(x.t:lt(P.sinks), 1, (x.t - P.sinks) / (x.n - P.sinks))
    return kv.where(x.n:lt(P.sinks + 2 * P.lag), short, long)
  end,
  select = kv.topk {},
}
