-- POST SIZE-byte messages to LOGS logs in turn: URL1, URL2 … URL<LOGS>.
--   wrk ... -s put_logs.lua URL -- SIZE LOGS
require "report"

local requests = {}
local turn = 0

function init(args)
  local size = tonumber(args[1] or "100")
  local logs = tonumber(args[2] or "8")
  local body = string.rep("x", size)
  for i = 1, logs do
    requests[i] = wrk.format("POST", wrk.path .. i, nil, body)
  end
end

function request()
  turn = turn % #requests + 1
  return requests[turn]
end
