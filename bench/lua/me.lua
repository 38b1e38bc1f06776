-- me.lua - GET /api/auth/me with the access token passed after "--".
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

wrk.method = "GET"
wrk.path = "/api/auth/me"

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
end

done = bench_done
