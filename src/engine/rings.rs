//! The retained events of every source, as every engine keeps them in
//! memory: one `History` ring per source, and the last id assigned, so
//! that ids increase strictly per source (also across a restart on the
//! same clock: they start above the process's start millisecond).

use std::collections::HashMap;

use super::{Retention, SourceKey, StoredSource};
use crate::history::{History, Limits};
use crate::sse::Gap;
use crate::sse::{Event, EventId};

/// One source's ring (taken out by `remove`, put back by `put_back`).
pub struct Ring {
    /// The source's public id: the envelope's `emitter_id`.
    id: String,
    history: History,
    last_id: EventId,
}

pub struct Rings {
    rings: HashMap<SourceKey, Ring>,
    /// A source's bounds where its retention sets none.
    defaults: Limits,
    /// Ids start above this millisecond.
    floor_ms: u64,
    /// Where each event is framed before its shared copy is made.
    scratch: Vec<u8>,
}

impl Rings {
    pub fn new(capacity: usize, floor_ms: u64) -> Rings {
        Rings::with_limits(Limits::count(capacity), floor_ms)
    }

    pub fn with_limits(defaults: Limits, floor_ms: u64) -> Rings {
        Rings { rings: HashMap::new(), defaults, floor_ms, scratch: Vec::new() }
    }

    fn floor(&self) -> EventId {
        // The first id is at least (floor+1)-1: above any id of an
        // earlier process, even one that stopped in this millisecond.
        EventId { ms: self.floor_ms + 1, seq: 0 }
    }

    pub fn create(&mut self, key: SourceKey, id: &str) {
        let ring = Ring { id: id.to_string(), history: History::with_limits(self.defaults), last_id: self.floor() };
        self.rings.insert(key, ring);
    }

    /// Sets the source's retention: count and bytes bounds at once, age
    /// at `now_ms`. The next deadline, if any.
    pub fn set_retention(&mut self, key: SourceKey, retention: &Retention, now_ms: u64) -> Option<u64> {
        let ring = self.rings.get_mut(&key)?;
        ring.history.set_limits(retention.effective(self.defaults));
        ring.history.expire(now_ms)
    }

    /// Evicts the source's events past its age bound; the next deadline.
    pub fn expire(&mut self, key: SourceKey, now_ms: u64) -> Option<u64> {
        self.rings.get_mut(&key)?.history.expire(now_ms)
    }

    /// When the source's oldest event passes its age bound (unix ms).
    pub fn deadline(&self, key: SourceKey) -> Option<u64> {
        self.rings.get(&key)?.history.deadline()
    }

    pub fn restore(&mut self, key: SourceKey, source: StoredSource) {
        let last_id = source.last_id.unwrap_or_default().max(self.floor());
        let id = &source.meta.id;
        let events = source.events.iter().map(|(event_id, payload)| Event::new(*event_id, id, payload, &mut self.scratch));
        let history = History::restore(source.meta.retention.effective(self.defaults), events, source.evicted);
        self.rings.insert(key, Ring { id: source.meta.id, history, last_id });
    }

    /// Takes the source's ring out (a delete; `put_back` undoes it).
    pub fn remove(&mut self, key: SourceKey) -> Option<Ring> {
        self.rings.remove(&key)
    }

    pub fn put_back(&mut self, key: SourceKey, ring: Ring) {
        self.rings.insert(key, ring);
    }

    /// Empties the source's ring; returns what it held (`put_history` undoes it).
    pub fn clear(&mut self, key: SourceKey) -> Option<History> {
        Some(self.rings.get_mut(&key)?.history.clear())
    }

    /// Puts back a ring's events as they were before a clear (its newest
    /// id assigned stays: ids never go back).
    pub fn put_history(&mut self, key: SourceKey, history: History) {
        if let Some(ring) = self.rings.get_mut(&key) {
            ring.history = history;
        }
    }

    /// Drops the events up to `up_to` (a clear ordered among events by id).
    pub fn clear_to(&mut self, key: SourceKey, up_to: EventId) {
        if let Some(ring) = self.rings.get_mut(&key) {
            ring.history.clear_to(up_to);
        }
    }

    /// Events up to `id` are lost for good: a resume point below it gets the gap signal.
    pub fn lost_up_to(&mut self, key: SourceKey, id: EventId) {
        if let Some(ring) = self.rings.get_mut(&key) {
            ring.history.lost_up_to(id);
        }
    }

    /// Assigns the next id of `key` at `now_ms` and frames the event (not
    /// yet retained: see `retain`). `None` if the source is gone.
    pub fn stage(&mut self, key: SourceKey, payload: &[u8], now_ms: u64) -> Option<Event> {
        let ring = self.rings.get_mut(&key)?;
        let id = ring.last_id.next(now_ms);
        ring.last_id = id;
        Some(Event::new(id, &ring.id, payload, &mut self.scratch))
    }

    /// Keeps an acknowledged event; false if its source is gone.
    pub fn retain(&mut self, key: SourceKey, event: Event) -> bool {
        match self.rings.get_mut(&key) {
            Some(ring) => {
                ring.history.push(event);
                true
            }
            None => false,
        }
    }

    /// The source's ring.
    pub fn history(&self, key: SourceKey) -> Option<&History> {
        self.rings.get(&key).map(|r| &r.history)
    }

    /// What a resume after `after` replays, and its gap.
    pub fn replay(&self, key: SourceKey, after: EventId) -> (Option<Gap>, impl Iterator<Item = &Event>) {
        let history = self.history(key);
        (history.and_then(|h| h.gap(after)), history.into_iter().flat_map(move |h| h.after(after)))
    }

    /// The newest id this node has had of the source: retained, or evicted
    /// or cleared since; `None` for none (or no such source).
    pub fn newest_known(&self, key: SourceKey) -> Option<EventId> {
        let history = self.history(key)?;
        history.newest(1).next().map(|e| e.id).max(history.evicted())
    }

    /// The newest id assigned to the source (or the floor).
    pub fn last_id(&self, key: SourceKey) -> Option<EventId> {
        self.rings.get(&key).map(|r| r.last_id)
    }
}
