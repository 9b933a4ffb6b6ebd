-- Differential test policy (not shipped): the elementwise ops sin, cos, floor and round (rint)
-- and the instance scalars x.ratio and x.nkeep in generated code (the x86 token_map loops, the
-- CUDA score kernels), on [token] and [group, token] values. floor and round read values far
-- from their steps (x.t / 4, x.t / 2: exact in f32), except the coarse floor(2|k|), whose f32 and
-- double arguments agree to ~1e-7 (a step between them is as unlikely as a tie).
local kv = require "kvcc"
local P = kv.params { window = 8, f = 0.37, amp = 0.5 }

return kv.policy "ewmath" {
  score = function(x)
    local k = x.K:norm("chan")                                               -- [token]
    local q = x.K:dot(x.V, "chan")                                           -- [token]
    local a = (k * 3):sin() + (x.pos * P.f):cos() * P.amp + q:cos():sin()
    local b = (x.t / 4):floor() / x.n + (x.t / 2):round() * 0.01 + (k * 2):floor() * 0.1
    local r = x.t:lt(x.nkeep) * 0.25 + x.ratio * k + x.nkeep / (x.n + 1) * 0.01
    return a + b + r + (q * 0.5):round() * 0.001
  end,
  select = kv.topk { keep_recent = P.window },
}
