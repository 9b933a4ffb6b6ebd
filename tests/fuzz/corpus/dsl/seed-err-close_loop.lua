local kv = require "kvcc"
pcall(function()
  local guard <close> = setmetatable({}, { __close = function() while true do end end })
  error("unwind")
end)
return kv.policy "x" { score = function(x) return x.t end, select = kv.topk {} }
