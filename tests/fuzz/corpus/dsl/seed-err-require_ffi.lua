local kv = require "kvcc"
local ffi = require "ffi"
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
