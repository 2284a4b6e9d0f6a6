//! Counters: the reactor counts in plain integers on its own thread and
//! publishes them once per loop turn into atomics that any thread (a
//! `Handle`, `/metrics`) can read. The process's own figures (descriptors,
//! memory, CPU) are read from the kernel when `/metrics` is scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::limits::Kind;

/// The statuses counted one by one (`ssehub_http_responses_by_code_total`);
/// any other counts under its class only.
pub const CODES: [u16; 20] = [100, 200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 422, 429, 431, 500, 503];

/// The reactor's counters. Gauges are set, totals only grow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Open client connections.
    pub connections_open: u64,
    /// Open SSE streams.
    pub subscribers: u64,
    /// Sources in all accounts.
    pub sources: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections refused at the connection limit or for lack of descriptors.
    pub connections_refused: u64,
    /// Connections closed because a head, a body or a send took too long.
    pub connections_timed_out: u64,
    /// Requests answered 401 (no key, a wrong key, an expired token, a webhook's signature).
    pub auth_failures: u64,
    /// Sources created through the API.
    pub sources_created: u64,
    /// Subscribe tokens created.
    pub tokens_created: u64,
    /// Times storage started refusing changes (a write or sync failed, Redis unreachable).
    pub storage_failures: u64,
    /// Times storage accepted changes again after failing.
    pub storage_recoveries: u64,
    /// Events emitted (API, webhooks, handles).
    pub events_emitted: u64,
    /// Event frames queued to subscribers, live and replayed.
    pub frames_delivered: u64,
    /// Bytes written to SSE streams.
    pub delivered_bytes: u64,
    /// Subscribers dropped past `--max-subscriber-buffer`.
    pub subscribers_dropped_slow: u64,
    /// Requests refused at a tenant limit, in the order of `limits::Kind::ALL`.
    pub limited: [u64; Kind::ALL.len()],
    /// Responses by status class: 1xx..5xx at index 0..4.
    pub responses: [u64; 5],
    /// Responses by status, in the order of `CODES`.
    pub responses_by_code: [u64; CODES.len()],
    /// When the server started (unix milliseconds).
    pub started_unix_ms: u64,
    /// TLS handshakes completed (`--tls-cert`).
    pub tls_handshakes_ok: u64,
    /// TLS handshakes failed.
    pub tls_handshakes_failed: u64,
    /// The loaded certificate's notAfter (unix seconds); 0 without TLS.
    pub tls_cert_not_after: u64,
}

fn metric_line(s: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(s, "# HELP ssehub_{name} {help}\n# TYPE ssehub_{name} gauge\nssehub_{name} {value}\n");
}

/// The fields of `Stats` one after another, as published.
const VALUES: usize = 20 + LIMITED + 5 + CODES.len();
const LIMITED: usize = Kind::ALL.len();

impl Stats {
    pub(crate) fn count_response(&mut self, status: u16) {
        if let Some(slot) = self.responses.get_mut((status / 100).wrapping_sub(1) as usize) {
            *slot += 1;
        }
        if let Some(at) = CODES.iter().position(|&c| c == status) {
            self.responses_by_code[at] += 1;
        }
    }

    pub(crate) fn count_limited(&mut self, kind: Kind) {
        self.limited[kind as usize] += 1;
    }

    /// Prometheus text exposition: the server's counters, then the process's.
    pub(crate) fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(s, "# HELP ssehub_{name} {help}\n# TYPE ssehub_{name} {kind}\nssehub_{name} {value}\n");
        };
        metric("connections_open", "gauge", "Open client connections.", self.connections_open);
        metric("subscribers", "gauge", "Open SSE streams.", self.subscribers);
        metric("sources", "gauge", "Sources in all accounts.", self.sources);
        metric("connections_accepted_total", "counter", "Connections accepted.", self.connections_accepted);
        metric("connections_refused_total", "counter", "Connections refused at the connection limit.", self.connections_refused);
        metric(
            "connections_timed_out_total",
            "counter",
            "Connections closed because a request head, a body or a send took too long.",
            self.connections_timed_out,
        );
        metric(
            "auth_failures_total",
            "counter",
            "Requests answered 401 (missing or wrong key or token, invalid signature).",
            self.auth_failures,
        );
        metric("sources_created_total", "counter", "Sources created through the API.", self.sources_created);
        metric("tokens_created_total", "counter", "Subscribe tokens created.", self.tokens_created);
        metric("storage_failures_total", "counter", "Times storage started refusing changes.", self.storage_failures);
        metric("storage_recoveries_total", "counter", "Times storage accepted changes again after failing.", self.storage_recoveries);
        metric("events_emitted_total", "counter", "Events emitted by API calls, webhooks and handles.", self.events_emitted);
        metric(
            "frames_delivered_total",
            "counter",
            "Event frames queued to subscribers (one per event per subscriber).",
            self.frames_delivered,
        );
        metric("delivered_bytes_total", "counter", "Bytes written to SSE streams.", self.delivered_bytes);
        metric(
            "subscribers_dropped_slow_total",
            "counter",
            "Subscribers dropped past --max-subscriber-buffer.",
            self.subscribers_dropped_slow,
        );
        s.push_str("# HELP ssehub_limited_total Requests refused or cut at a tenant limit or a request body limit.\n# TYPE ssehub_limited_total counter\n");
        for (kind, n) in Kind::ALL.iter().zip(self.limited) {
            let _ = writeln!(s, "ssehub_limited_total{{limit=\"{}\"}} {n}", kind.name());
        }
        s.push_str("# HELP ssehub_http_responses_total HTTP responses by status class.\n# TYPE ssehub_http_responses_total counter\n");
        for (i, n) in self.responses.iter().enumerate() {
            let _ = writeln!(s, "ssehub_http_responses_total{{class=\"{}xx\"}} {n}", i + 1);
        }
        s.push_str(
            "# HELP ssehub_http_responses_by_code_total HTTP responses by status code.\n\
             # TYPE ssehub_http_responses_by_code_total counter\n",
        );
        for (code, n) in CODES.iter().zip(self.responses_by_code).filter(|&(_, n)| n > 0) {
            let _ = writeln!(s, "ssehub_http_responses_by_code_total{{code=\"{code}\"}} {n}");
        }
        if self.tls_cert_not_after > 0 {
            s.push_str("# HELP ssehub_tls_handshakes_total TLS handshakes by result.\n# TYPE ssehub_tls_handshakes_total counter\n");
            let _ = writeln!(s, "ssehub_tls_handshakes_total{{result=\"ok\"}} {}", self.tls_handshakes_ok);
            let _ = writeln!(s, "ssehub_tls_handshakes_total{{result=\"failed\"}} {}", self.tls_handshakes_failed);
            metric_line(
                &mut s,
                "tls_cert_expiry_timestamp_seconds",
                "The loaded certificate's notAfter (unix seconds).",
                self.tls_cert_not_after,
            );
        }
        s.push_str(concat!(
            "# HELP ssehub_build_info The running version.\n# TYPE ssehub_build_info gauge\nssehub_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1\n"
        ));
        process_metrics(&mut s, self.started_unix_ms);
        s
    }

    fn values(&self) -> [u64; VALUES] {
        let mut v = [0; VALUES];
        let scalars = [
            self.connections_open,
            self.subscribers,
            self.sources,
            self.connections_accepted,
            self.connections_refused,
            self.connections_timed_out,
            self.auth_failures,
            self.sources_created,
            self.tokens_created,
            self.storage_failures,
            self.storage_recoveries,
            self.events_emitted,
            self.frames_delivered,
            self.delivered_bytes,
            self.subscribers_dropped_slow,
            self.started_unix_ms,
            0,
            self.tls_handshakes_ok,
            self.tls_handshakes_failed,
            self.tls_cert_not_after,
        ];
        let all = scalars.iter().chain(&self.limited).chain(&self.responses).chain(&self.responses_by_code);
        for (slot, &x) in v.iter_mut().zip(all) {
            *slot = x;
        }
        v
    }

    fn from_values(v: &[u64; VALUES]) -> Stats {
        let mut s = Stats {
            connections_open: v[0],
            subscribers: v[1],
            sources: v[2],
            connections_accepted: v[3],
            connections_refused: v[4],
            connections_timed_out: v[5],
            auth_failures: v[6],
            sources_created: v[7],
            tokens_created: v[8],
            storage_failures: v[9],
            storage_recoveries: v[10],
            events_emitted: v[11],
            frames_delivered: v[12],
            delivered_bytes: v[13],
            subscribers_dropped_slow: v[14],
            started_unix_ms: v[15],
            tls_handshakes_ok: v[17],
            tls_handshakes_failed: v[18],
            tls_cert_not_after: v[19],
            ..Stats::default()
        };
        s.limited.copy_from_slice(&v[20..20 + LIMITED]);
        s.responses.copy_from_slice(&v[20 + LIMITED..25 + LIMITED]);
        s.responses_by_code.copy_from_slice(&v[25 + LIMITED..]);
        s
    }
}

/// Bucket bounds for round trips and other latencies: 100 µs to 1 s, as
/// (microseconds, the `le` label in seconds).
pub const LATENCY_BUCKETS: [(u64, &str); 13] = [
    (100, "0.0001"),
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
];

/// A Prometheus histogram of durations with fixed buckets: observed in
/// microseconds, exposed in seconds (`_bucket{le=…}` cumulative up to
/// `+Inf`, `_sum`, `_count`). An observation counts into one bucket, with
/// no allocation; the bounds' labels are given as text (no float is
/// formatted anywhere).
#[derive(Debug, Clone)]
pub struct Histogram<const N: usize> {
    /// Upper bounds in microseconds, ascending, with their `le` labels.
    bounds: &'static [(u64, &'static str); N],
    /// Observations per bucket (not cumulative); above the last bound only in `count`.
    counts: [u64; N],
    count: u64,
    sum_us: u64,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: &'static [(u64, &'static str); N]) -> Histogram<N> {
        Histogram { bounds, counts: [0; N], count: 0, sum_us: 0 }
    }

    pub fn observe(&mut self, us: u64) {
        if let Some(at) = self.bounds.iter().position(|&(bound, _)| us <= bound) {
            self.counts[at] += 1;
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The histogram's lines as metric `name` (its full name, ending in `_seconds`).
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut below = 0;
        for (&(_, le), n) in self.bounds.iter().zip(self.counts) {
            below += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {below}");
        }
        let (count, us) = (self.count, self.sum_us);
        let _ = write!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}.{:06}\n{name}_count {count}\n",
            us / 1_000_000,
            us % 1_000_000
        );
    }
}

/// The `process_*` metrics of the Prometheus client libraries, read from
/// `/proc/self` now. Seconds are written as decimals by hand: formatting an
/// f64 would link core's float printing for these lines alone.
fn process_metrics(s: &mut String, started_unix_ms: u64) {
    let mut metric = |name: &str, kind: &str, help: &str, value: &str| {
        let _ = write!(s, "# HELP process_{name} {help}\n# TYPE process_{name} {kind}\nprocess_{name} {value}\n");
    };
    let cpu_us = crate::sys::cpu_micros();
    metric(
        "cpu_seconds_total",
        "counter",
        "User and system CPU time spent in seconds.",
        &format!("{}.{:06}", cpu_us / 1_000_000, cpu_us % 1_000_000),
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric("open_fds", "gauge", "Number of open file descriptors.", &fds.count().to_string());
    }
    metric("max_fds", "gauge", "Maximum number of open file descriptors.", &crate::sys::fd_limit().to_string());
    let rss_kb = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    if let Some(kb) = rss_kb {
        metric("resident_memory_bytes", "gauge", "Resident memory size in bytes.", &(kb * 1024).to_string());
    }
    let start = format!("{}.{:03}", started_unix_ms / 1000, started_unix_ms % 1000);
    metric("start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", &start);
}

/// `Stats` readable from any thread.
#[derive(Debug)]
pub struct Published {
    values: [AtomicU64; VALUES],
}

impl Default for Published {
    fn default() -> Published {
        Published { values: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Published {
    pub fn store(&self, s: &Stats) {
        for (slot, v) in self.values.iter().zip(s.values()) {
            slot.store(v, Relaxed);
        }
    }

    pub fn load(&self) -> Stats {
        Stats::from_values(&std::array::from_fn(|i| self.values[i].load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_cumulatively_in_seconds() {
        let mut h = Histogram::new(&LATENCY_BUCKETS);
        for us in [50, 100, 101, 900, 2_000_000] {
            h.observe(us);
        }
        let mut text = String::new();
        h.render("x_seconds", "Help.", &mut text);
        assert!(text.starts_with("# HELP x_seconds Help.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"0.0001\"} 2\n"), "{text}");
        assert!(text.contains("\nx_seconds_bucket{le=\"0.00025\"} 3\n"), "{text}");
        assert!(text.contains("\nx_seconds_bucket{le=\"0.001\"} 4\n"), "{text}");
        assert!(text.contains("\nx_seconds_bucket{le=\"1\"} 4\nx_seconds_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.ends_with("\nx_seconds_sum 2.001151\nx_seconds_count 5\n"), "{text}");
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn publishes_and_renders() {
        let mut s =
            Stats { subscribers: 3, frames_delivered: 7, delivered_bytes: 9, started_unix_ms: 1_700_000_000_123, ..Stats::default() };
        s.count_response(202);
        s.count_response(404);
        s.count_response(999);
        s.count_response(503);
        s.limited[3] = 4;
        s.limited[6] = 2;
        let p = Published::default();
        p.store(&s);
        assert_eq!(p.load(), s);
        let text = s.render();
        assert!(text.contains("\nssehub_subscribers 3\n"));
        assert!(text.contains("\nssehub_delivered_bytes_total 9\n"));
        assert!(text.contains("ssehub_http_responses_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("ssehub_http_responses_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("ssehub_http_responses_by_code_total{code=\"404\"} 1\n"));
        assert!(text.contains("ssehub_http_responses_by_code_total{code=\"503\"} 1\n"));
        assert!(!text.contains("code=\"999\""));
        assert!(text.contains("ssehub_limited_total{limit=\"emit_rate\"} 4\n"));
        assert!(text.contains("ssehub_limited_total{limit=\"sources\"} 0\n"));
        assert!(text.contains("ssehub_limited_total{limit=\"body_rate\"} 2\n"));
        assert!(text.contains("\nprocess_start_time_seconds 1700000000.123\n"));
        assert!(text.contains(concat!("ssehub_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1\n")));
    }
}
