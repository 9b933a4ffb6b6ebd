local kv = require "kvcc"
return kv.policy "x" { select = kv.topk {} }
