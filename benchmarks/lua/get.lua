-- GET a log from a random message number, so that each reply holds a
-- whole batch, in the kaf format or the one given.
--   wrk ... -s get.lua URL -- MESSAGES BATCH [FORMAT]
require "report"

local messages, batch, base

function init(args)
  messages = tonumber(args[1])
  batch = tonumber(args[2] or "1000")
  base = wrk.path .. "?from="
  if args[3] then
    base = wrk.path .. "?format=" .. args[3] .. "&from="
  end
  math.randomseed(7)
end

function request()
  return wrk.format("GET", base .. math.random(1, messages - batch + 1))
end
