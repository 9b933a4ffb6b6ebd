-- a chunk size from a param, checked when it runs
local kv = require "kvcc"
local P = kv.params { c = 4 }
return kv.policy "seg_param" { score = function(x) return x.t:max("token", { chunk = P.c }) end,
  select = kv.topk {} }
