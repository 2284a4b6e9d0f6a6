-- Emit throughput against nchan, for the side by side run in scripts/bench.sh:
-- POST /pub/<channel> over keep-alive connections, the same body as emit.lua
-- sends to ssehub, and no key (the nchan publisher location is open).
--
--   wrk -t2 -c64 -d10s -s scripts/wrk/nchan.lua http://127.0.0.1:8090 -- [CHANNEL] [BYTES]
--
-- CHANNEL defaults to "load" (nchan creates it on the first publish); BYTES
-- (default 100) is the size of the JSON body. nchan answers 202 Accepted
-- while the channel has no subscriber and 201 Created when it has some; both
-- are 2xx, so wrk counts neither as an error. Prints wrk's usual summary and
-- the same line as emit.lua:
--   RESULT scenario=emit requests=... emits_per_s=... errors=... lat_p50_us=... lat_p99_us=...

function init(args)
  local channel = args[1] or "load"
  local bytes = tonumber(args[2] or "100")
  local head = '{"bench":"wrk","pad":"'
  wrk.method = "POST"
  wrk.path = "/pub/" .. channel
  wrk.body = head .. string.rep("x", math.max(0, bytes - #head - 2)) .. '"}'
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    "RESULT scenario=emit requests=%d duration_s=%.2f emits_per_s=%.0f errors=%d " ..
    "non_2xx=%d lat_p50_us=%d lat_p99_us=%d lat_max_us=%d\n",
    summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6), errors, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
