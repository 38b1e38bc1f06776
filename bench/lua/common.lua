-- common.lua - loaded by every bench script: prints one machine-readable
-- line that bench/run.sh turns into its table, and lets scripts split an
-- input file between wrk's threads. wrk counts statuses >= 400 as "status"
-- errors; they are reported, never hidden.
--
-- wrk runs each thread in its own Lua state and loads the script (and so
-- this file) into every one, plus one more for setup(): globals are per
-- thread, and thread:set() is the only way to hand a thread a value.
function bench_done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f bad_status=%d socket_errors=%d\n",
    summary.requests, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end

-- As setup: numbers the threads 0, 1, ... in the global "index" of each.
local threads_numbered = 0
function bench_number_threads(thread)
  thread:set("index", threads_numbered)
  threads_numbered = threads_numbered + 1
end

-- The non-empty lines of path that belong to this thread (needs
-- bench_number_threads as setup): the i-th non-empty line, counting from 0,
-- goes to thread i mod nthreads, so the threads' shares are disjoint.
function bench_thread_lines(path, nthreads)
  local mine, line = {}, 0
  for text in io.lines(path) do
    if text ~= "" then
      if line % nthreads == index then
        mine[#mine + 1] = text
      end
      line = line + 1
    end
  end
  return mine
end
