-- Emits with and without an Idempotency-Key (issue 27's figure: keyed
-- emits/s against plain ones, same run, both built per request so that
-- wrk's own cost is the same for both):
--
--   SSEHUB_API_KEY=KEY wrk -t2 -c64 -d10s -s scripts/wrk/emit_idempotent.lua \
--       http://127.0.0.1:8080 -- SOURCE keyed|plain
--
-- keyed: a new key per request (thread number and a counter), so every
-- emit is stored and its key remembered. Prints wrk's summary and a
-- RESULT line as emit.lua does.

local threads, counter, path, headers, keyed = 0, 0, nil, nil, false
local body = '{"bench":"wrk","pad":"' .. string.rep("x", 76) .. '"}'

function setup(thread)
  threads = threads + 1
  thread:set("n", threads)
end

function init(args)
  path = "/v1/sources/" .. (args[1] or "load") .. "/events"
  keyed = args[2] == "keyed"
  headers = { ["Authorization"] = "Bearer " .. os.getenv("SSEHUB_API_KEY"), ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  if keyed then
    headers["Idempotency-Key"] = "wrk-" .. n .. "-" .. counter
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT scenario=emit_idempotent requests=%d emits_per_s=%.0f errors=%d non_2xx=%d lat_p50_us=%d lat_p99_us=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), e.connect + e.read + e.write + e.status + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
