//! The bounded ring of a source's recent events: replay after a
//! `Last-Event-ID`, the newest N for `event_summaries`, and the newest id
//! that fell out of it (evicted or cleared), which tells a resume point
//! whose events can no longer all be replayed (the gap signal).

use std::collections::VecDeque;

use crate::sse::{Event, EventId, Gap};

pub struct History {
    capacity: usize,
    events: VecDeque<Event>,
    /// The newest id evicted at capacity or cleared.
    evicted: Option<EventId>,
}

// Public only under the `fuzzing` feature, where clippy wants an `is_empty` no caller needs.
#[cfg_attr(feature = "fuzzing", allow(clippy::len_without_is_empty))]
impl History {
    pub fn new(capacity: usize) -> History {
        History { capacity, events: VecDeque::new(), evicted: None }
    }

    /// A ring recovered from storage: `events` oldest first (only the
    /// newest `capacity` are kept), `evicted` as stored.
    pub fn restore(capacity: usize, events: impl IntoIterator<Item = Event>, evicted: Option<EventId>) -> History {
        let mut h = History { capacity, events: VecDeque::new(), evicted };
        for event in events {
            h.push(event);
        }
        h
    }

    /// Appends; ids arrive increasing. The oldest event falls out at capacity.
    pub fn push(&mut self, event: Event) {
        if self.capacity == 0 {
            self.evicted = Some(event.id);
            return;
        }
        if self.events.len() == self.capacity
            && let Some(old) = self.events.pop_front()
        {
            self.evicted = Some(old.id);
        }
        self.events.push_back(event);
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
            self.events.pop_front();
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
        std::mem::replace(self, History { capacity: self.capacity, events: VecDeque::new(), evicted })
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
        let restored = History::restore(2, ring(5, &[(1, 0), (2, 0), (3, 0)]).after(id(0, 0)).cloned(), None);
        assert_eq!((restored.len(), restored.evicted()), (2, Some(id(1, 0))), "a smaller --history at restore evicts");
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
