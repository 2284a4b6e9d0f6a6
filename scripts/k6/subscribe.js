// Not run by the tests: it needs a k6 built with the xk6-sse extension
// (`xk6 build`, which compiles k6 from source with Go and fetches the
// extension), and that build cannot be done here (no Go toolchain, no
// module downloads). tests/k6.rs runs scripts/k6/emit.js with the stock k6.
//
// k6 load test for ssehub with the xk6-sse extension (k6/x/sse): VUS virtual
// users each hold one stream of SOURCE for HOLD seconds with an
// `Authorization: Bearer` key, count the events they get and check that
// every event's data is ssehub's envelope, i.e. that `JSON.parse(e.data).event`
// parses. With EMIT_RATE > 0 a second scenario emits that many events per
// second to the source meanwhile (k6/http), stamped with the send time, so
// the run also measures delivery latency (millisecond resolution).
//
//   xk6 build --with github.com/phymbert/xk6-sse     # once: a k6 binary with the extension
//   SSEHUB_API_KEY=sk_... ./k6 run -e VUS=1000 -e HOLD=60 -e EMIT_RATE=10 scripts/k6/subscribe.js
//
// Environment (-e NAME=value or exported):
//   SSEHUB_URL      base URL                       http://127.0.0.1:8080
//   SSEHUB_API_KEY  the key (required)
//   SOURCE          source name or id; the setup creates it if missing   load
//   VUS             subscribers                    100
//   HOLD            seconds each subscriber stays  60
//   EMIT_RATE       events per second emitted while they listen (0: none)  0
//
// xk6-sse's `sse.open` blocks the VU while its stream is open; a stream is
// closed from its own handler, so it ends at the first frame after HOLD: at
// most one --handshake-interval (15 s) later, since every `:sse-handshake`
// comment also reaches the handler (as an event with `comment` set and empty
// `data`). Those frames are counted as handshakes, not as events.
// One k6 process holds as many streams as its open-file limit allows
// (`ulimit -n`); k6 spends far more memory and CPU per stream than
// benches/load/, so use that tool for the server's own numbers
// (docs/benchmarks.md) and this script to test ssehub the way a k6 user would.

import sse from "k6/x/sse";
import http from "k6/http";
import { check, fail } from "k6";
import { Counter, Rate, Trend } from "k6/metrics";

const BASE = (__ENV.SSEHUB_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const KEY = __ENV.SSEHUB_API_KEY || "";
const SOURCE = __ENV.SOURCE || "load";
const VUS = parseInt(__ENV.VUS || "100", 10);
const HOLD = parseFloat(__ENV.HOLD || "60");
const EMIT_RATE = parseInt(__ENV.EMIT_RATE || "0", 10);
const AUTH = { Authorization: `Bearer ${KEY}` };
// Emitting starts once the subscribers had time to connect, and stops early
// enough for the last event to reach every one of them.
const EMIT_START = 10;
const EMIT_FOR = Math.max(1, HOLD - EMIT_START - 5);

const scenarios = {
  subscribe: {
    executor: "per-vu-iterations",
    exec: "subscribe",
    vus: VUS,
    iterations: 1,
    // HOLD, then up to one handshake interval until the next frame.
    maxDuration: `${Math.ceil(HOLD) + 30}s`,
    gracefulStop: "20s",
  },
};
if (EMIT_RATE > 0) {
  scenarios.emit = {
    executor: "constant-arrival-rate",
    exec: "emit",
    rate: EMIT_RATE,
    timeUnit: "1s",
    startTime: `${EMIT_START}s`,
    duration: `${EMIT_FOR}s`,
    preAllocatedVUs: 2,
    maxVUs: 20,
  };
}

export const options = {
  scenarios,
  thresholds: {
    checks: ["rate==1"],
    ssehub_event_parsed: ["rate==1"],
  },
};

const events = new Counter("ssehub_events");
const handshakes = new Counter("ssehub_handshakes");
const parsed = new Rate("ssehub_event_parsed");
const latency = new Trend("ssehub_event_latency", true);

export function setup() {
  if (!KEY) {
    fail("set SSEHUB_API_KEY (with no key configured, the server keeps the key it generated; `ssehub key` prints it: export SSEHUB_API_KEY=$(ssehub key))");
  }
  // 201 created, or 409: it exists already.
  const res = http.post(`${BASE}/v1/sources`, JSON.stringify({ name: SOURCE }), {
    headers: Object.assign({ "Content-Type": "application/json" }, AUTH),
  });
  if (res.status !== 201 && res.status !== 409) {
    fail(`creating source ${SOURCE}: HTTP ${res.status} ${res.body}`);
  }
}

export function subscribe() {
  const url = `${BASE}/sources/${encodeURIComponent(SOURCE)}/sse`;
  const until = Date.now() + HOLD * 1000;
  let got = 0;
  const res = sse.open(url, { headers: AUTH, tags: { name: "ssehub stream" } }, function (client) {
    client.on("event", function (e) {
      if (!e.data) {
        // :sse-handshake, which xk6-sse hands over as a data-less event.
        handshakes.add(1);
      } else {
        got++;
        events.add(1);
        let payload;
        try {
          payload = JSON.parse(e.data).event;
        } catch (_) {
          payload = undefined;
        }
        parsed.add(payload !== undefined);
        if (payload && typeof payload.sent_ms === "number") {
          latency.add(Date.now() - payload.sent_ms);
        }
      }
      if (Date.now() >= until) {
        client.close();
      }
    });
    client.on("error", function (e) {
      console.error(`stream error: ${e.error()}`);
    });
  });
  check(res, { "stream answered 200": (r) => r && r.status === 200 });
  if (EMIT_RATE > 0) {
    check(got, { "got events": (n) => n > 0 });
  }
}

export function emit() {
  const body = JSON.stringify({ sent_ms: Date.now(), vu: __VU, iter: __ITER });
  const res = http.post(`${BASE}/v1/sources/${encodeURIComponent(SOURCE)}/events`, body, {
    headers: Object.assign({ "Content-Type": "application/json" }, AUTH),
    tags: { name: "emit" },
  });
  check(res, { "emit answered 202": (r) => r.status === 202 });
}
