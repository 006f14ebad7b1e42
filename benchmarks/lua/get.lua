-- GET a log from a random message number, so that each reply holds a
-- whole batch.
--   wrk ... -s get.lua URL -- MESSAGES BATCH
require "report"

local messages, batch, base

function init(args)
  messages = tonumber(args[1])
  batch = tonumber(args[2] or "1000")
  base = wrk.path .. "?from="
  math.randomseed(7)
end

function request()
  return wrk.format("GET", base .. math.random(1, messages - batch + 1))
end
