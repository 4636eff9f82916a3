-- POST the body in $WRK_BODY (default {}) as JSON. With WRK_RID=1 every
-- request carries its own "requestId" (unique across wrk's threads), as a
-- website may send it: the cache key drops it, the raw body changes.
-- Prints one RESULT line: req/s, p50 ms, p99 ms, max ms, non-2xx/3xx
-- answers, socket errors (timeouts included).
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"

local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("tid", threads)
end

if os.getenv("WRK_RID") == "1" then
	local n = 0
	local rest = string.sub(wrk.body, 2)
	request = function()
		n = n + 1
		return wrk.format(nil, nil, nil, '{"requestId":"' .. tid .. "-" .. n .. '",' .. rest)
	end
end

done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d %d\n",
		summary.requests / (summary.duration / 1e6),
		latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
		e.status, e.connect + e.read + e.write + e.timeout))
end
