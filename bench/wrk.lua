-- POST the body in $WRK_BODY (default {}) as JSON; print one RESULT line:
-- req/s, p50 ms, p99 ms, max ms, non-2xx/3xx answers, socket errors.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d %d\n",
		summary.requests / (summary.duration / 1e6),
		latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
		e.status, e.connect + e.read + e.write + e.timeout))
end
