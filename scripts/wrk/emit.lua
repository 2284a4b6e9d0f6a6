-- Emit throughput (issue 7, scenario c): POST /v1/sources/<source>/events
-- over keep-alive connections, with the API key as a Bearer token.
--
--   SSEHUB_API_KEY=KEY wrk -t2 -c64 -d10s -s scripts/wrk/emit.lua \
--       http://127.0.0.1:8080 -- [SOURCE] [BYTES]
--
-- SOURCE defaults to $SSEHUB_SOURCE or "load" and must exist; BYTES (default
-- 100) is the size of the JSON body. The key may also come as a third
-- argument, though the environment keeps it out of `ps`. Prints wrk's usual
-- summary and one line for scripts:
--   RESULT scenario=emit requests=... emits_per_s=... errors=... lat_p50_us=... lat_p99_us=...

local source, body, key

function init(args)
  source = args[1] or os.getenv("SSEHUB_SOURCE") or "load"
  local bytes = tonumber(args[2] or "100")
  key = args[3] or os.getenv("SSEHUB_API_KEY")
  if not key or key == "" then
    error("emit.lua: set SSEHUB_API_KEY (or pass the key as the third argument)")
  end
  -- One fixed body: building a new one per request would cost wrk's CPU,
  -- which shares the machine with the server being measured.
  local head = '{"bench":"wrk","pad":"'
  body = head .. string.rep("x", math.max(0, bytes - #head - 2)) .. '"}'

  -- Set before wrk.format() runs (just after init), so every request of
  -- this thread is the same pre-built keep-alive POST.
  wrk.method = "POST"
  wrk.path = "/v1/sources/" .. source .. "/events"
  wrk.body = body
  wrk.headers["Authorization"] = "Bearer " .. key
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
