-- gateway_paced.lua - GET /api/auth/me with the token passed after "--",
-- each connection waiting on average the given milliseconds after every
-- answer before its next request: with C connections the offered rate is
-- about C * 1000 / (pause + latency) requests/s. The pause is drawn uniformly
-- from [0, 2 * pause] so the connections do not fall into step and arrive in
-- bursts (which would measure wrk's timer, not the server). Debian's wrk has no -R (that is
-- wrk2), so this is how bench/gateway.sh measures latency at a fixed,
-- sub-saturation rate. wrk measures latency from the write of a request to
-- its answer, so the pause is not counted.
--   wrk -c C -s gateway_paced.lua URL -- TOKEN DELAY_MS
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

wrk.method = "GET"
wrk.path = "/api/auth/me"
local pause_ms = 1

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  pause_ms = tonumber(args[2]) or 1
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
end

function delay()
  return math.random(0, 2 * pause_ms)
end

done = bench_done
