local kv = require "kvcc"
-- a newline in a message must not split the one-line error
error("first line\nsecond line", 0)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
