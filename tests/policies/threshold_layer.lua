-- Test policy: the threshold rule (kv.threshold) at scope layer: the candidates of a layer (its
-- protected tokens, and the others whose score reaches tau; NaN never) share the layer's budget
-- in one ranking; sinks 1, window 2, tau from a param, a NaN score every 7th token (goldens:
-- tests/oracle/gen_select.py, selref.threshold_group).
local kv = require "kvcc"
local P = kv.params { tau = 0.5, sinks = 1, window = 2 }

return kv.policy "threshold_layer" {
  score = function(x)
    local nan = kv.where((x.t - (x.t / 7):floor() * 7):eq(3), 0 / 0, 0)
    return x.K:sum("chan") + nan
  end,
  select = kv.threshold { tau = P.tau, keep_first = P.sinks, keep_recent = P.window, scope = "layer" },
}
