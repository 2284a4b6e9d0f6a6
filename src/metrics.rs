//! Counters: the reactor counts in plain integers on its own thread and
//! publishes them once per loop turn into atomics that any thread (a
//! `Handle`, `/metrics`) can read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    /// Events emitted (API, webhooks, handles).
    pub events_emitted: u64,
    /// Event frames queued to subscribers, live and replayed.
    pub frames_delivered: u64,
    /// Bytes written to SSE streams.
    pub bytes_delivered: u64,
    /// Subscribers dropped past `--max-subscriber-buffer`.
    pub subscribers_dropped_slow: u64,
    /// Responses by status class: 1xx..5xx at index 0..4.
    pub responses: [u64; 5],
}

impl Stats {
    pub(crate) fn count_response(&mut self, status: u16) {
        if let Some(slot) = self.responses.get_mut((status / 100).wrapping_sub(1) as usize) {
            *slot += 1;
        }
    }

    /// Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut s = String::with_capacity(1536);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            s.push_str(&format!("# HELP ssehub_{name} {help}\n# TYPE ssehub_{name} {kind}\nssehub_{name} {value}\n"));
        };
        metric("connections_open", "gauge", "Open client connections.", self.connections_open);
        metric("subscribers", "gauge", "Open SSE streams.", self.subscribers);
        metric("sources", "gauge", "Sources in all accounts.", self.sources);
        metric("connections_accepted_total", "counter", "Connections accepted.", self.connections_accepted);
        metric("connections_refused_total", "counter", "Connections refused at the connection limit.", self.connections_refused);
        metric("events_emitted_total", "counter", "Events emitted by API calls, webhooks and handles.", self.events_emitted);
        metric(
            "frames_delivered_total",
            "counter",
            "Event frames queued to subscribers (one per event per subscriber).",
            self.frames_delivered,
        );
        metric("bytes_delivered_total", "counter", "Bytes written to SSE streams.", self.bytes_delivered);
        metric(
            "subscribers_dropped_slow_total",
            "counter",
            "Subscribers dropped past --max-subscriber-buffer.",
            self.subscribers_dropped_slow,
        );
        s.push_str("# HELP ssehub_http_responses_total HTTP responses by status class.\n# TYPE ssehub_http_responses_total counter\n");
        for (i, n) in self.responses.iter().enumerate() {
            s.push_str(&format!("ssehub_http_responses_total{{class=\"{}xx\"}} {n}\n", i + 1));
        }
        s
    }
}

/// `Stats` readable from any thread.
#[derive(Debug, Default)]
pub struct Published {
    values: [AtomicU64; 14],
}

impl Published {
    pub fn store(&self, s: &Stats) {
        let [r1, r2, r3, r4, r5] = s.responses;
        let all = [
            s.connections_open,
            s.subscribers,
            s.sources,
            s.connections_accepted,
            s.connections_refused,
            s.events_emitted,
            s.frames_delivered,
            s.bytes_delivered,
            s.subscribers_dropped_slow,
            r1,
            r2,
            r3,
            r4,
            r5,
        ];
        for (slot, v) in self.values.iter().zip(all) {
            slot.store(v, Relaxed);
        }
    }

    pub fn load(&self) -> Stats {
        let v: Vec<u64> = self.values.iter().map(|a| a.load(Relaxed)).collect();
        Stats {
            connections_open: v[0],
            subscribers: v[1],
            sources: v[2],
            connections_accepted: v[3],
            connections_refused: v[4],
            events_emitted: v[5],
            frames_delivered: v[6],
            bytes_delivered: v[7],
            subscribers_dropped_slow: v[8],
            responses: [v[9], v[10], v[11], v[12], v[13]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_and_renders() {
        let mut s = Stats { subscribers: 3, frames_delivered: 7, ..Stats::default() };
        s.count_response(202);
        s.count_response(404);
        s.count_response(999);
        let p = Published::default();
        p.store(&s);
        assert_eq!(p.load(), s);
        let text = s.render();
        assert!(text.contains("\nssehub_subscribers 3\n"));
        assert!(text.contains("ssehub_http_responses_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("ssehub_http_responses_total{class=\"4xx\"} 1\n"));
    }
}
