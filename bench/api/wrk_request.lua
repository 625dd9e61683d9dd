-- wrk script for bench/api/bench_api.py: method, body and bearer key come from the environment,
-- and `done` prints one machine-readable line (latencies in microseconds, wrk's histogram).
--   BENCH_METHOD=POST BENCH_BODY='{"name":"b","scopes":["read"]}' BENCH_KEY=hk_... wrk -s wrk_request.lua URL
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local key = os.getenv("BENCH_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_WRK requests=%d duration_us=%d p50=%d p95=%d p99=%d max=%d mean=%.1f " ..
    "err_status=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout))
end
