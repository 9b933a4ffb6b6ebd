-- The seed's gated rolling window (seed 000) with DMS's delayed eviction: a small
-- learned gate reads each token as it arrives, g_t = sigmoid(w . k_t + b + u g_{t-1})
-- (a recurrence along the tokens, per head; weights from kvcc calibrate's fit), over
-- the prompt and, continued from the last token's gate, at every decoding step. A token
-- stays while it is among the last `window`; after that only if its gate is >= tau.
-- With a ratio or budget, at most n_keep are kept, best gates first (the window first).
-- The gate's form is the oracle's provisional reading of the seed (no published
-- formula; tests/oracle/README.md S6).
local kv = require "kvcc"
local P = kv.params { window = 16, tau = 0.5 }
local W = kv.weights { gate_w = { "layer", "head", "chan" }, gate_b = { "layer", "head" },
                       gate_u = { "layer", "head" } }

return kv.policy "gated_window" {
  score = function(x)
    local z = x.K:dot(W.gate_w, "chan") + W.gate_b                  -- [token]
    return kv.scan(0, function(g) return kv.sigmoid(z + W.gate_u * g) end)
  end,
  select = kv.threshold { tau = P.tau, keep_recent = P.window },
  when = kv.decode { every = 1 },
}
