-- Shared by the benchmark scripts: wrk's summary as one JSON line that
-- benchmarks/run.py reads.  wrk runs with this folder as its working
-- directory, so `require "report"` finds this file.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'KAF_BENCH {"requests": %d, "duration_us": %d, "bytes": %d, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
    .. '"latency_us": {"p50": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
