-- a param used as a count (keep_first) whose default is out of range: an error at the
-- select rule naming the param (found by fuzz-dsl: the interpreter's float-to-long
-- conversion overflowed)
local kv = require "kvcc"
local P = kv.params { sinks = 1e23 }
return kv.policy "bad_sinks" {
  score = function(x) return x.K:norm("chan") end,
  select = kv.topk { keep_first = P.sinks },
}
