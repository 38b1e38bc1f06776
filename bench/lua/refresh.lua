-- refresh.lua - POST /api/auth/refresh where every request is a valid
-- rotation.
--
-- A refresh token is single use: replaying one revokes its whole session.
-- So each thread owns a disjoint pool of fresh tokens (line i of the tokens
-- file goes to thread i mod threads), request() takes a token from the pool
-- and response() puts back the new one the server issued. A thread has at
-- most one request in flight per connection, so a pool larger than the
-- thread's connection count never runs dry while answers are 200.
-- Arguments after "--": tokens file, number of threads.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

setup = bench_number_threads

local pool, head, tail = {}, 1, 0
local starved = 0

function init(args)
  pool = bench_thread_lines(args[1], tonumber(args[2]))
  tail = #pool
end

function request()
  local tok = "pool-exhausted"
  if head <= tail then
    tok = pool[head]
    pool[head] = nil
    head = head + 1
  else
    starved = starved + 1
  end
  return wrk.format("POST", "/api/auth/refresh", { ["Content-Type"] = "application/json" },
    '{"refresh_token":"' .. tok .. '"}')
end

function response(status, headers, body)
  if status == 200 then
    local tok = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if tok then
      tail = tail + 1
      pool[tail] = tok
    end
  end
end

done = bench_done
