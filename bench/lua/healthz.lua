-- healthz.lua - GET the URL given to wrk (/healthz, or nginx's "return 200").
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")
done = bench_done
