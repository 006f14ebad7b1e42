-- POST the same body over and over, with wrk's one prepared request (no
-- request() function: the cheapest way for the load generator).
--   wrk ... -s put.lua URL -- SIZE [LINES]
-- SIZE: bytes a message; LINES > 0: each body is a ?batch=lines batch of
-- LINES messages.
require "report"

function init(args)
  local size = tonumber(args[1] or "100")
  local lines = tonumber(args[2] or "0")
  wrk.method = "POST"
  if lines > 0 then
    wrk.body = string.rep(string.rep("x", size) .. "\n", lines)
    wrk.path = wrk.path .. "?batch=lines"
  else
    wrk.body = string.rep("x", size)
  end
end
