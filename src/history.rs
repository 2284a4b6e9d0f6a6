//! The bounded ring of a source's recent events: replay after a
//! `Last-Event-ID`, the newest N for `event_summaries`, and the newest id
//! that fell out of it (evicted or cleared), which tells a resume point
//! whose events can no longer all be replayed (the gap signal).
//!
//! Its bounds (`Bounds`): a count, the bytes of the retained envelopes (the
//! frames' `data` values; the newest event is kept whatever its size), and
//! an age, which the ring does not watch itself (no clock here): its owner
//! calls `expire` at `deadline`.

use std::collections::VecDeque;

use crate::sse::{Event, EventId, Gap};

/// A ring's bounds in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_events: usize,
    /// Milliseconds after its id's millisecond that an event is evicted.
    pub max_age_ms: Option<u64>,
    /// Envelope bytes retained at most (the newest event always stays).
    pub max_bytes: Option<u64>,
    /// Idempotency keys remembered at most (not the ring's: its source's).
    pub max_keys: usize,
}

impl Bounds {
    /// A count and nothing else (and the default number of keys).
    pub fn count(max_events: usize) -> Bounds {
        Bounds { max_events, max_age_ms: None, max_bytes: None, max_keys: 10_000 }
    }
}

pub struct History {
    limits: Bounds,
    events: VecDeque<Event>,
    /// Envelope bytes of `events`.
    bytes: u64,
    /// The newest id evicted (by any bound) or cleared.
    evicted: Option<EventId>,
}

// Public only under the `fuzzing` feature, where clippy wants an `is_empty` no caller needs.
#[cfg_attr(feature = "fuzzing", allow(clippy::len_without_is_empty))]
impl History {
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn new(capacity: usize) -> History {
        History::with_limits(Bounds::count(capacity))
    }

    pub fn with_limits(limits: Bounds) -> History {
        History { limits, events: VecDeque::new(), bytes: 0, evicted: None }
    }

    /// A ring recovered from storage: `events` oldest first (what the
    /// count and bytes bounds allow is kept), `evicted` as stored.
    pub fn restore(limits: Bounds, events: impl IntoIterator<Item = Event>, evicted: Option<EventId>) -> History {
        let mut h = History { evicted, ..History::with_limits(limits) };
        for event in events {
            h.push(event);
        }
        h
    }

    /// Appends; ids arrive increasing. The oldest events fall out past
    /// the count or the bytes bound.
    pub fn push(&mut self, event: Event) {
        self.bytes += event.envelope().len() as u64;
        self.events.push_back(event);
        self.bound();
    }

    fn pop(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.bytes -= old.envelope().len() as u64;
            self.evicted = self.evicted.max(Some(old.id));
        }
    }

    /// Evicts the oldest while a count or bytes bound is passed.
    fn bound(&mut self) {
        while self.events.len() > self.limits.max_events {
            self.pop();
        }
        if let Some(max) = self.limits.max_bytes {
            while self.bytes > max && self.events.len() > 1 {
                self.pop();
            }
        }
    }

    /// New bounds, in effect at once for count and bytes (and for age at
    /// the next `expire`).
    pub fn set_limits(&mut self, limits: Bounds) {
        self.limits = limits;
        self.bound();
    }

    /// When the oldest event passes the age bound (unix ms), if any.
    pub fn deadline(&self) -> Option<u64> {
        Some(self.events.front()?.id.ms.saturating_add(self.limits.max_age_ms?))
    }

    /// Evicts the events older than the age bound at `now_ms`; the next deadline.
    pub fn expire(&mut self, now_ms: u64) -> Option<u64> {
        while self.deadline().is_some_and(|at| at <= now_ms) {
            self.pop();
        }
        self.deadline()
    }

    /// Envelope bytes retained.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The gap a resume after `last` meets: some event newer than `last`
    /// was evicted or cleared. Resuming from exactly the newest evicted id
    /// loses nothing.
    pub fn gap(&self, last: EventId) -> Option<Gap> {
        let evicted = self.evicted?;
        (last < evicted).then(|| Gap { after: last, resumed_from: self.after(last).next().map(|e| e.id) })
    }

    /// The newest id evicted or cleared, if any.
    pub fn evicted(&self) -> Option<EventId> {
        self.evicted
    }

    /// Every retained event with an id greater than `last`, oldest first.
    /// An id older than the oldest retained replays them all.
    pub fn after(&self, last: EventId) -> impl Iterator<Item = &Event> {
        let start = self.events.partition_point(|e| e.id <= last);
        self.events.range(start..)
    }

    /// Every retained event, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// The newest `n`, newest first.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &Event> {
        self.events.iter().rev().take(n)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Drops the events up to `up_to`; `up_to` counts as evicted (a
    /// clear that happened at that id, learnt later than newer events).
    pub fn clear_to(&mut self, up_to: EventId) {
        if up_to == EventId::default() {
            return;
        }
        while self.events.front().is_some_and(|e| e.id <= up_to) {
            self.pop();
        }
        self.evicted = self.evicted.max(Some(up_to));
    }

    /// Events up to `id` that this ring never had are gone for good.
    pub fn lost_up_to(&mut self, id: EventId) {
        self.evicted = self.evicted.max(Some(id));
    }

    /// Empties the ring (its newest id counts as evicted); returns what it held.
    pub fn clear(&mut self) -> History {
        let evicted = self.events.back().map(|e| e.id).or(self.evicted);
        std::mem::replace(self, History { evicted, ..History::with_limits(self.limits) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> EventId {
        EventId { ms, seq }
    }

    fn ring(capacity: usize, ids: &[(u64, u64)]) -> History {
        let mut h = History::new(capacity);
        for &(ms, seq) in ids {
            h.push(Event::new(id(ms, seq), "dc_x", b"1", &mut Vec::new()));
        }
        h
    }

    #[test]
    fn replays_after_an_id() {
        let h = ring(100, &[(10, 0), (10, 1), (12, 0), (15, 0)]);
        type Case = ((u64, u64), &'static [(u64, u64)]);
        let table: &[Case] = &[
            ((0, 0), &[(10, 0), (10, 1), (12, 0), (15, 0)]),
            ((10, 0), &[(10, 1), (12, 0), (15, 0)]),
            ((10, 1), &[(12, 0), (15, 0)]),
            ((11, 5), &[(12, 0), (15, 0)]),
            ((15, 0), &[]),
            ((99, 0), &[]),
        ];
        for &((ms, seq), want) in table {
            let got: Vec<EventId> = h.after(id(ms, seq)).map(|e| e.id).collect();
            let want: Vec<EventId> = want.iter().map(|&(m, s)| id(m, s)).collect();
            assert_eq!(got, want, "after {ms}-{seq}");
        }
    }

    #[test]
    fn keeps_only_the_newest() {
        let h = ring(3, &[(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
        assert_eq!(h.len(), 3);
        let all: Vec<u64> = h.after(id(0, 0)).map(|e| e.id.ms).collect();
        assert_eq!(all, [3, 4, 5], "an id older than the oldest retained replays all retained");
        let newest: Vec<u64> = h.newest(2).map(|e| e.id.ms).collect();
        assert_eq!(newest, [5, 4]);
        assert_eq!(h.newest(10).count(), 3);
        assert_eq!(ring(0, &[(1, 0)]).len(), 0);
    }

    #[test]
    fn knows_the_gap_of_a_resume_point() {
        let gap = |after: (u64, u64), from: Option<(u64, u64)>| {
            Some(Gap { after: id(after.0, after.1), resumed_from: from.map(|(m, s)| id(m, s)) })
        };
        // 1..5 emitted into 3 slots: 1 and 2 evicted.
        let h = ring(3, &[(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
        type Case = ((u64, u64), Option<Gap>);
        let table: &[Case] = &[
            ((0, 0), gap((0, 0), Some((3, 0)))),
            ((1, 0), gap((1, 0), Some((3, 0)))),
            ((1, 9), gap((1, 9), Some((3, 0)))),
            // exactly the newest evicted: nothing lost
            ((2, 0), None),
            ((3, 0), None),
            ((5, 0), None),
            ((9, 0), None),
        ];
        for &(after, want) in table {
            assert_eq!(h.gap(id(after.0, after.1)), want, "after {after:?}");
        }
        assert_eq!(ring(3, &[(1, 0), (2, 0)]).gap(id(0, 0)), None, "never evicted");
        let mut cleared = ring(3, &[(1, 0), (2, 0)]);
        cleared.clear();
        assert_eq!(cleared.gap(id(1, 0)), gap((1, 0), None));
        assert_eq!(cleared.gap(id(2, 0)), None);
        cleared.clear();
        assert_eq!(cleared.evicted(), Some(id(2, 0)), "clearing nothing moves nothing");
        assert_eq!(ring(0, &[(1, 0), (2, 0)]).gap(id(1, 0)), gap((1, 0), None), "--history 0 keeps nothing");
        let restored = History::restore(Bounds::count(2), ring(5, &[(1, 0), (2, 0), (3, 0)]).after(id(0, 0)).cloned(), None);
        assert_eq!((restored.len(), restored.evicted()), (2, Some(id(1, 0))), "a smaller --history at restore evicts");
    }

    fn sized(limits: Bounds, events: &[(u64, usize)]) -> History {
        let mut h = History::with_limits(limits);
        for &(ms, size) in events {
            h.push(Event::new(id(ms, 0), "dc_x", format!("\"{}\"", "x".repeat(size)).as_bytes(), &mut Vec::new()));
        }
        h
    }

    #[test]
    fn evicts_by_bytes_keeping_the_newest() {
        let one = sized(Bounds::count(10), &[(1, 0)]).bytes();
        // (max_bytes, sizes pushed at ms 1, 2, …) → the ms retained
        type Case = (u64, &'static [usize], &'static [u64]);
        let table: &[Case] = &[
            (one * 3, &[0, 0, 0], &[1, 2, 3]),
            (one * 3, &[0, 0, 0, 0], &[2, 3, 4]),
            (one * 2 + 10, &[0, 0, 10], &[2, 3]),
            (one * 2 + 10, &[10, 0, 0], &[2, 3]),
            (one, &[0, 500], &[2]),
            (one, &[500], &[1]),
            (one + 500, &[500, 0, 0], &[2, 3]),
        ];
        for &(max, sizes, want) in table {
            let events: Vec<(u64, usize)> = sizes.iter().enumerate().map(|(i, &s)| (i as u64 + 1, s)).collect();
            let h = sized(Bounds { max_bytes: Some(max), ..Bounds::count(10) }, &events);
            let kept: Vec<u64> = h.iter().map(|e| e.id.ms).collect();
            assert_eq!(kept, want, "max {max}, sizes {sizes:?}");
            assert_eq!(h.bytes(), h.iter().map(|e| e.envelope().len() as u64).sum::<u64>());
            let evicted = (want[0] > 1).then(|| id(want[0] - 1, 0));
            assert_eq!(h.evicted(), evicted, "the newest evicted moves with every eviction");
        }
    }

    #[test]
    fn evicts_by_age_at_each_deadline() {
        let mut h = sized(Bounds { max_age_ms: Some(100), ..Bounds::count(10) }, &[(1000, 0), (1050, 0), (1200, 0)]);
        assert_eq!(h.deadline(), Some(1100));
        // (now, deadline after, retained)
        type Case = (u64, Option<u64>, &'static [u64]);
        let table: &[Case] =
            &[(1099, Some(1100), &[1000, 1050, 1200]), (1100, Some(1150), &[1050, 1200]), (1250, Some(1300), &[1200]), (1300, None, &[])];
        for &(now, next, kept) in table {
            assert_eq!(h.expire(now), next, "at {now}");
            assert_eq!(h.iter().map(|e| e.id.ms).collect::<Vec<_>>(), kept, "at {now}");
        }
        assert_eq!(h.evicted(), Some(id(1200, 0)));
        assert_eq!(h.gap(id(1050, 0)), Some(Gap { after: id(1050, 0), resumed_from: None }));
        assert_eq!(sized(Bounds::count(10), &[(1, 0)]).deadline(), None, "no age bound: no deadline");
    }

    #[test]
    fn new_limits_apply_at_once() {
        let mut h = sized(Bounds::count(10), &[(1, 0), (2, 0), (3, 0), (4, 0)]);
        h.set_limits(Bounds::count(2));
        assert_eq!(h.iter().map(|e| e.id.ms).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(h.evicted(), Some(id(2, 0)));
        h.set_limits(Bounds { max_age_ms: Some(5), ..Bounds::count(10) });
        assert_eq!(h.deadline(), Some(8));
    }
}

/// The invariant of `fuzz/history_replay`, checked on every `cargo test`:
/// replay after any id is exactly the retained events with a greater id.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn replays_exactly_the_later_events(
            capacity in 0usize..12,
            clock in prop::collection::vec(0u64..40, 0..30),
            last in (0u64..130, 0u64..6),
            text in "\\PC{0,
            6}",
        ) {
            let (mut h, mut ids, mut id) = (History::new(capacity), Vec::new(), EventId { ms: 1, seq: 0 });
            for now in clock {
                id = id.next(now * 3);
                h.push(Event::new(id, "dc_p", b"1", &mut Vec::new()));
                ids.push(id);
            }
            let retained = &ids[ids.len().saturating_sub(capacity)..];
            let mut probes = vec![EventId { ms: last.0, seq: last.1 }];
            probes.extend(retained.iter().copied());
            probes.extend(text.parse::<EventId>().ok());
            for last in probes {
                let replayed: Vec<EventId> = h.after(last).map(|e| e.id).collect();
                let want: Vec<EventId> = retained.iter().copied().filter(|&i| i > last).collect();
                prop_assert_eq!(replayed, want, "after {}", last);
            }
        }
    }
}
