-- Listing in a loop (scripts/bench.sh --fairness): each connection pages
-- through the account's sources, GET /v1/sources?limit=1000&after=<the
-- end_cursor of the page before>, and starts again after the last page.
--
--   SSEHUB_API_KEY=KEY wrk -t1 -c4 -d30s -s scripts/wrk/list.lua http://127.0.0.1:8080
--
-- Prints wrk's usual summary and one line for scripts:
--   RESULT scenario=list requests=... pages_per_s=... sources_per_s=... errors=... lat_p99_us=...

local key
local after = ""
local listed = 0

function init(args)
  key = os.getenv("SSEHUB_API_KEY")
  if not key or key == "" then
    error("list.lua: set SSEHUB_API_KEY")
  end
end

function request()
  local path = "/v1/sources?limit=1000"
  if after ~= "" then
    path = path .. "&after=" .. after
  end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. key })
end

-- One thread's connections share `after`: each page asked for follows the
-- last one answered, so together they walk the listing over and over.
function response(status, headers, body)
  if status ~= 200 then
    return
  end
  local cursor = body:match('"end_cursor":"([^"]*)"')
  local count = tonumber(body:match('"count":(%d+)') or "0")
  listed = listed + count
  after = cursor or ""
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT scenario=list requests=%d duration_s=%.2f pages_per_s=%.0f errors=%d non_2xx=%d " ..
    "lat_p50_us=%d lat_p99_us=%d lat_max_us=%d\n",
    summary.requests, secs, summary.requests / secs, errors, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
