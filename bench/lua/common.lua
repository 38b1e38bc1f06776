-- common.lua - loaded by every bench script: prints one machine-readable
-- line that bench/run.sh turns into its table. wrk counts statuses >= 400
-- as "status" errors; they are reported, never hidden.
function bench_done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f bad_status=%d socket_errors=%d\n",
    summary.requests, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
