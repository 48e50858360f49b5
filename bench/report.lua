-- wrk script: print the run's figures as one JSON line prefixed with "JSON " (read by run.sh).
-- Latency percentiles are wrk's (closed loop, not corrected for coordinated omission).
done = function(summary, latency, requests)
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.timeout + e.status
   local secs = summary.duration / 1e6
   io.write(string.format(
      'JSON {"requests":%d,"errors":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
      '"err_timeout":%d,"err_status":%d,"duration_s":%.3f,"rps":%.1f,' ..
      '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
      summary.requests, errors, e.connect, e.read, e.write, e.timeout, e.status,
      secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000))
end
