//! What a worker's subscribers received, counted: each subscriber's
//! counters, the `measure` window, and the tallies of a `drop` (storm),
//! of `redial` and of `churn`. No sockets here: the worker feeds each
//! parsed SSE item to `Measure::on_item` or `Churn::on_item`.

use super::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One subscriber's counters, kept across a storm's reconnect. Order per
/// connection is in the contract, so a seq below `next` is a duplicate
/// or a reorder: both count as dups.
#[derive(Default)]
pub struct Sub {
    pub comments: u32,
    pub measured: bool,
    pub next: u32,
    pub got: u32,
    pub dups: u32,
    /// The id of the last event seen: the `Last-Event-ID` of its next connect.
    pub last_id: Vec<u8>,
    /// Dropped by a storm; reconnecting or reconnected.
    pub dropped: bool,
    /// A churn subscriber, and the seq it must get next, once known.
    pub churn: bool,
    pub expect: Option<u32>,
    /// The reconnection time its streams set with `retry:`, kept across
    /// connections as by EventSource.
    pub retry_ms: Option<u32>,
    /// Ended by the server while `redial` is on: waiting to reconnect, or
    /// reconnecting.
    pub redialing: bool,
}

/// What a `drop` did, in this worker.
#[derive(Default)]
pub struct Storm {
    pub drop_ns: u64,
    pub closed_ns: u64,
    /// The last reconnected subscriber's first handshake.
    pub up_ns: u64,
    pub dropped: u64,
    pub reconnected: u64,
    /// Dropped before any event: reconnected without `Last-Event-ID`.
    pub no_last_id: u64,
    /// Reconnects in flight, at most.
    pub inflight: usize,
}

/// `redial`: streams the server ends reconnect as an EventSource does,
/// after their `retry:` (or `default_ms` without one), and again after the
/// same wait when a reconnect fails. Counted per 100 ms window.
#[derive(Default)]
pub struct Redial {
    pub armed: bool,
    pub default_ms: u32,
    /// Streams open when armed, and how many of them the server ended.
    pub expect: u64,
    pub ended: u64,
    /// Reconnected (first handshake seen), and reconnects that failed.
    pub back: u64,
    pub failed: u64,
    pub first_end_ns: u64,
    pub last_end_ns: u64,
    pub last_up_ns: u64,
    /// 100 ms window -> reconnects begun (connect issued), handshakes, and
    /// reconnects due (when each was meant to begin: the stream's end seen
    /// plus its retry time, free of this process's own lateness).
    pub connects: BTreeMap<u64, u64>,
    pub ups: BTreeMap<u64, u64>,
    pub dues: BTreeMap<u64, u64>,
    /// The most a reconnect began after it was due (a stall of this process).
    pub late_max_ns: u64,
    /// (when, slot) of the reconnects waiting for their retry time.
    pub due: BinaryHeap<Reverse<(u64, usize)>>,
    pub announced: bool,
}

impl Redial {
    /// Milliseconds until the next reconnect is due, at most `cap`.
    pub fn wait_ms(&self, now: u64, cap: i32) -> i32 {
        match self.due.peek() {
            Some(Reverse((at, _))) => (at.saturating_sub(now).div_ceil(1_000_000) as i32).min(cap),
            None => cap,
        }
    }
}

/// `churn`: subscribers opened at a steady rate, each leaving after
/// `reads` events.
#[derive(Default)]
pub struct Churn {
    pub run: u64,
    /// Connects per second; 0 once stopped.
    pub per_s: f64,
    pub reads: u32,
    pub since_ns: u64,
    pub opened: u64,
    pub complete: u64,
    /// Gone before `reads` events: refused, or closed by the server.
    pub failed: u64,
    pub gaps: u64,
    pub dups: u64,
    /// Those that resumed with `Last-Event-ID`.
    pub replayed: u64,
    pub open_now: usize,
    pub peak: usize,
    /// Stopped opening: `churned` is said once the last one is gone.
    pub stopping: bool,
    /// The newest event any churn subscriber saw: (seq, id).
    pub latest: Option<(u64, Vec<u8>)>,
}

impl Churn {
    /// Connects due by `now`: the schedule is open-loop, so a stall is
    /// caught up rather than lowering the offered rate.
    pub fn due(&self, now: u64) -> u64 {
        if self.per_s <= 0.0 {
            return 0;
        }
        let target = (now.saturating_sub(self.since_ns) as f64 * self.per_s / 1e9) as u64 + 1;
        target.saturating_sub(self.opened)
    }

    /// Milliseconds until the next connect is due, for epoll_wait.
    pub fn wait_ms(&self, now: u64) -> i32 {
        if self.per_s <= 0.0 {
            return 1000;
        }
        let next = self.since_ns + (self.opened as f64 * 1e9 / self.per_s) as u64;
        next.saturating_sub(now).div_ceil(1_000_000).min(1000) as i32
    }

    /// Events must come consecutively; a replay must start right after its id.
    pub fn on_item(&mut self, item: sse::Item<'_>, sub: &mut Sub, envelope: bool) {
        let (id, data) = match item {
            sse::Item::Comment(_) => return sub.comments += 1,
            sse::Item::Event { id, data } => (id, data),
        };
        let Some(p) = sse::probe(data, envelope).filter(|p| p.run == self.run) else { return };
        let seq = p.seq as u32;
        match sub.expect {
            Some(e) if seq < e => return self.dups += 1,
            Some(e) => self.gaps += u64::from(seq - e),
            None => {}
        }
        sub.expect = Some(seq + 1);
        sub.got += 1;
        if self.latest.as_ref().is_none_or(|l| p.seq > l.0) {
            self.latest = Some((p.seq, id.to_vec()));
        }
    }
}

/// The selftest's view of the churn schedule: one connect at once, then
/// one per period, caught up after a stall; a stopped churn opens none.
pub fn churn_schedule_ok() -> bool {
    let mut c = Churn { per_s: 100.0, since_ns: 1_000_000_000, ..Churn::default() };
    let first = c.due(c.since_ns) == 1 && c.wait_ms(c.since_ns) == 0;
    c.opened = 1;
    let waits = c.wait_ms(c.since_ns) == 10 && c.due(c.since_ns + 9_999_999) == 0;
    let stalled = c.due(c.since_ns + 50_000_000) == 5;
    c.per_s = 0.0;
    first && waits && stalled && c.due(u64::MAX / 2) == 0 && c.wait_ms(0) == 1000
}

/// The current `measure` window.
#[derive(Default)]
pub struct Measure {
    pub active: bool,
    pub run: u64,
    pub events: u32,
    pub first: Vec<u64>,
    pub last: Vec<u64>,
    pub count: Vec<u32>,
    pub lat: hist::Hist,
    pub hs: BTreeMap<u64, u64>,
    /// Measured subscribers, and those that have all events or are gone.
    pub subs: usize,
    pub settled: usize,
    pub announced: bool,
    pub foreign: u64,
    pub bad: u64,
    pub envelope: bool,
}

impl Measure {
    pub fn on_item(&mut self, item: sse::Item<'_>, sub: &mut Sub, now: u64) {
        let data = match item {
            sse::Item::Event { id, data } => {
                id.clone_into(&mut sub.last_id);
                data
            }
            sse::Item::Comment(_) => {
                sub.comments += 1;
                // Measured subscribers had their connect-time handshake
                // before, so these are the periodic ones.
                if self.active && sub.measured {
                    *self.hs.entry(now / HS_WINDOW_NS).or_default() += 1;
                }
                return;
            }
        };
        let Some(p) = sse::probe(data, self.envelope) else {
            return self.bad += 1;
        };
        if !sub.measured || p.run != self.run || p.seq >= u64::from(self.events) {
            return self.foreign += 1;
        }
        let seq = p.seq as u32;
        if seq < sub.next {
            return sub.dups += 1;
        }
        sub.next = seq + 1;
        sub.got += 1;
        self.lat.record(now.saturating_sub(p.t_ns));
        let s = seq as usize;
        self.first[s] = self.first[s].min(now);
        self.last[s] = self.last[s].max(now);
        self.count[s] += 1;
        if sub.got == self.events {
            self.settled += 1;
        }
    }
}
