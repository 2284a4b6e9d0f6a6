//! The links' health as an operator sees it: one log line when Redis
//! becomes unreachable and one when every link is back, the links lost,
//! the commands' round trips, and the engine's rows of `/metrics`. The
//! engine's lines that come per change or per source, or per flip of a
//! flapping link, pass at most once a second per kind (`Lines`). While
//! Redis refuses writes, the engine is unhealthy and probes (`Refusing`).

use std::time::{Duration, Instant};

use super::url::RedisUrl;
use crate::metrics::{Histogram, LATENCY_BUCKETS};
use crate::text::push_u64;
use crate::throttle::{Throttle, throttled};

/// One throttle per kind of the engine's lines that Redis or the traffic
/// can cause in bulk: the first of a second is logged with its detail, the
/// others of that second at `debug`, counted on the next that passes.
#[derive(Default)]
pub struct Lines {
    /// Redis refused a change (per change).
    pub refused: Throttle,
    /// Redis takes changes again (per flip).
    pub taken: Throttle,
    /// A source's events lost, evicted before this node caught up, or
    /// caught up from its history (per source).
    pub lost: Throttle,
    pub evicted: Throttle,
    pub catching_up: Throttle,
    /// Redis unreachable, reachable again (per flip of a flapping link).
    unreachable: Throttle,
    reachable: Throttle,
}

pub struct Health {
    pub lines: Lines,
    reconnects: u64,
    /// Round trips of the commands on the command link.
    rtt: Histogram<{ LATENCY_BUCKETS.len() }>,
    down_since: Option<Instant>,
}

impl Default for Health {
    fn default() -> Health {
        Health { lines: Lines::default(), reconnects: 0, rtt: Histogram::new(&LATENCY_BUCKETS), down_since: None }
    }
}

impl Health {
    /// A link was lost (`was_up`: it had connected, so it counts as a
    /// reconnect), or failed to connect.
    pub fn lost(&mut self, was_up: bool, url: &RedisUrl, link: &str, why: &str) {
        if was_up {
            self.reconnects += 1;
        }
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            throttled!(
                self.lines.unreachable,
                Error,
                "Redis at {} unreachable ({link}: {why}); emits answer 503 until it is back, reconnecting",
                url.describe()
            );
        }
    }

    #[cfg(test)]
    pub fn metrics_reconnects(&self) -> u64 {
        self.reconnects
    }

    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    /// Every link is up again.
    pub fn back(&mut self, url: &RedisUrl) {
        // Whole milliseconds: no float is formatted anywhere (its code is 20 KiB of the binary).
        let ms = self.down_since.take().map_or(0, |t| t.elapsed().as_millis());
        throttled!(self.lines.reachable, Info, "Redis at {} reachable again after {ms} ms", url.describe());
    }

    /// A command asked `at` is answered.
    pub fn rtt(&mut self, at: Instant) {
        self.rtt.observe(at.elapsed().as_micros() as u64);
    }

    /// The rows of `/metrics`; `all_up`: every link is connected and answering.
    pub fn metrics(&self, all_up: bool, out: &mut String) {
        let rows: [(&str, &str, &str, u64); 3] = [
            ("redis_up", "gauge", "1 while every link to Redis is connected and answering.", u64::from(all_up)),
            ("redis_reconnects_total", "counter", "Connected links to Redis lost since start (each is reconnected).", self.reconnects),
            ("redis_commands_total", "counter", "Commands answered by Redis on the command link.", self.rtt.count()),
        ];
        let mut text = Vec::new();
        for (name, kind, help, value) in rows {
            for part in ["# HELP ssehub_", name, " ", help, "\n# TYPE ssehub_", name, " ", kind, "\nssehub_", name, " "] {
                text.extend_from_slice(part.as_bytes());
            }
            push_u64(&mut text, value);
            text.push(b'\n');
        }
        out.push_str(std::str::from_utf8(&text).unwrap_or(""));
        self.rtt.render("ssehub_redis_round_trip_seconds", "Round trips of the commands on the command link to Redis.", out);
    }
}

/// Per link (the command link, then partition 0, 1, …): whether it is up
/// and past its set-up, and the age of its last reply (a partition link
/// gets one at least every block time, a command link a ping's every
/// second: an age that grows says the link makes no progress); then the
/// Sentinel link, if any (up while connected and listening for
/// `+switch-master`; its age grows while no failover is announced).
pub fn links(links: impl Iterator<Item = (bool, Instant)>, sentinel: Option<(bool, Instant)>, out: &mut String) {
    let mut up = String::from(
        "# HELP ssehub_redis_link_up 1 while a link to Redis is connected and past its set-up.\n# TYPE ssehub_redis_link_up gauge\n",
    );
    let mut age = String::from(
        "# HELP ssehub_redis_link_read_age_seconds Time since a link to Redis last read a reply.\n# TYPE ssehub_redis_link_read_age_seconds gauge\n",
    );
    let labels = (0..).map(|n| if n == 0 { "command".to_string() } else { format!("partition-{}", n - 1) });
    let sentinel = sentinel.map(|link| ("sentinel".to_string(), link));
    for (label, (is_up, last_read)) in labels.zip(links).chain(sentinel) {
        let ms = last_read.elapsed().as_millis();
        up.push_str(&format!("ssehub_redis_link_up{{link=\"{label}\"}} {}\n", u8::from(is_up)));
        // Whole milliseconds as seconds, with no float formatting (see `back`).
        age.push_str(&format!("ssehub_redis_link_read_age_seconds{{link=\"{label}\"}} {}.{:03}\n", ms / 1000, ms % 1000));
    }
    out.push_str(&up);
    out.push_str(&age);
}

/// Error replies that say the script did not run or wrote nothing:
/// refused before its first write (`REFUSING`), or not loaded. (`LOST`
/// did not run either, but the loss's write-back has already left without
/// what the change took out: it counts as unknown.)
const REFUSED: [&[u8]; 7] = [b"OOM", b"MISCONF", b"READONLY", b"NOREPLICAS", b"NOSCRIPT", b"LOADING", b"MASTERDOWN"];
/// Error replies that say the master is elsewhere (a replica, one that
/// loads its data, one whose state changed under a blocked read, one cut
/// from its master): the link is left and the master found again.
const ELSEWHERE: [&str; 4] = ["READONLY", "LOADING", "UNBLOCKED", "MASTERDOWN"];

/// Why a link leaves its server, if an error reply says the master is elsewhere.
pub fn elsewhere(e: &[u8]) -> Option<String> {
    let code = ELSEWHERE.iter().find(|code| e.starts_with(code.as_bytes()))?;
    Some(format!("{code}: the master is elsewhere, finding it again"))
}

/// Redis refuses writes (memory full under `noeviction`, persistence
/// failing, a replica, too few replicas for `min-replicas-to-write`): the
/// engine is unhealthy until a change or a probe is taken.
const REFUSING: [&[u8]; 4] = [b"OOM", b"MISCONF", b"READONLY", b"NOREPLICAS"];
/// While Redis refuses writes, a probe this often (`Pipeline::probe`).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether Redis refuses writes: from the first change it refuses so
/// (`REFUSING`) until a change or the probe is taken; meanwhile a probe is
/// due once a `PROBE_INTERVAL`, so that health comes back with no traffic
/// (deletes and clears cannot be what brings it back).
#[derive(Default)]
pub struct Refusing {
    /// When to probe next; `None`: Redis takes writes.
    next_probe: Option<Instant>,
}

impl Refusing {
    /// A change's error reply: starts refusing if it says Redis refuses
    /// writes. True if the script surely did not run (`REFUSED`).
    pub fn refused(&mut self, e: &[u8]) -> bool {
        if self.next_probe.is_none() && REFUSING.iter().any(|code| e.starts_with(code)) {
            self.next_probe = Some(Instant::now() + PROBE_INTERVAL);
        }
        REFUSED.iter().any(|code| e.starts_with(code))
    }

    /// Redis took a change or the probe; true if it was refusing.
    pub fn taken(&mut self) -> bool {
        self.next_probe.take().is_some()
    }

    /// A probe is due now (and the next one is scheduled).
    pub fn probe_due(&mut self, now: Instant) -> bool {
        let due = self.next_probe.is_some_and(|at| now >= at);
        if due {
            self.next_probe = Some(now + PROBE_INTERVAL);
        }
        due
    }

    pub fn is_on(&self) -> bool {
        self.next_probe.is_some()
    }

    pub fn next_probe(&self) -> Option<Instant> {
        self.next_probe
    }
}
