//! The retained events of every source, as every engine keeps them in
//! memory: one `History` ring per source, and the last id assigned, so
//! that ids increase strictly per source (also across a restart on the
//! same clock: they start above the process's start millisecond).

use std::collections::{HashMap, VecDeque};

use super::{IDEMPOTENCY_KEY_LIFE_MS, IdemKey, Retention, SourceKey, StoredSource};
use crate::history::{Bounds, History};
use crate::sse::Gap;
use crate::sse::{Event, EventId};

/// One source's ring (taken out by `remove`, put back by `put_back`).
pub struct Ring {
    /// The source's public id: the envelope's `emitter_id`.
    id: String,
    history: History,
    last_id: EventId,
    /// Idempotency keys of its emits.
    keys: Remembered,
}

/// A source's idempotency keys, the newest `max` of the last 24 hours:
/// by key hash, and in emit order for eviction. About 100 bytes a key
/// (48 in each of the two tables, plus the map's slack).
#[derive(Default)]
pub struct Remembered {
    by_key: HashMap<[u8; 16], ([u8; 16], EventId)>,
    order: VecDeque<([u8; 16], EventId)>,
}

impl Remembered {
    /// Keeps `idem` for the event `id`; forgets the oldest past `max`
    /// and those 24 hours older than `id`.
    pub fn insert(&mut self, idem: IdemKey, id: EventId, max: usize) {
        self.by_key.insert(idem.key, (idem.body, id));
        self.order.push_back((idem.key, id));
        while self.order.len() > max || self.order.front().is_some_and(|(_, at)| at.ms.saturating_add(IDEMPOTENCY_KEY_LIFE_MS) <= id.ms) {
            let Some((key, at)) = self.order.pop_front() else { break };
            // A key used again later (after a 503) has its newer entry.
            if self.by_key.get(&key).is_some_and(|&(_, kept)| kept == at) {
                self.by_key.remove(&key);
            }
        }
    }

    /// The body hash and event id of a key used within 24 hours of `now_ms`.
    pub fn get(&self, key: &[u8; 16], now_ms: u64) -> Option<([u8; 16], EventId)> {
        self.by_key.get(key).copied().filter(|(_, id)| id.ms.saturating_add(IDEMPOTENCY_KEY_LIFE_MS) > now_ms)
    }

    /// Every key, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (IdemKey, EventId)> + '_ {
        self.order.iter().filter_map(|(key, id)| {
            let (body, kept) = self.by_key.get(key)?;
            (kept == id).then_some((IdemKey { key: *key, body: *body }, *id))
        })
    }
}

pub struct Rings {
    rings: HashMap<SourceKey, Ring>,
    /// A source's bounds where its retention sets none.
    defaults: Bounds,
    /// Ids start above this millisecond.
    floor_ms: u64,
    /// Where each event is framed before its shared copy is made.
    scratch: Vec<u8>,
}

impl Rings {
    #[cfg(test)]
    pub fn new(capacity: usize, floor_ms: u64) -> Rings {
        Rings::with_limits(Bounds::count(capacity), floor_ms)
    }

    pub fn with_limits(defaults: Bounds, floor_ms: u64) -> Rings {
        Rings { rings: HashMap::new(), defaults, floor_ms, scratch: Vec::new() }
    }

    fn floor(&self) -> EventId {
        // The first id is at least (floor+1)-1: above any id of an
        // earlier process, even one that stopped in this millisecond.
        EventId { ms: self.floor_ms + 1, seq: 0 }
    }

    pub fn create(&mut self, key: SourceKey, id: &str) {
        let ring =
            Ring { id: id.to_string(), history: History::with_limits(self.defaults), last_id: self.floor(), keys: Remembered::default() };
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
        let mut keys = Remembered::default();
        for (idem, id) in source.keys {
            keys.insert(idem, id, self.defaults.max_keys);
        }
        self.rings.insert(key, Ring { id: source.meta.id, history, last_id, keys });
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

    /// Remembers the idempotency key of the source's acknowledged event `id`.
    pub fn remember(&mut self, key: SourceKey, idem: IdemKey, id: EventId) {
        if let Some(ring) = self.rings.get_mut(&key) {
            ring.keys.insert(idem, id, self.defaults.max_keys);
        }
    }

    /// The event an emit with the same idempotency key got, and the hash
    /// of its body, if the key was used on the source within 24 hours.
    pub fn repeat(&self, key: SourceKey, idem_key: &[u8; 16], now_ms: u64) -> Option<([u8; 16], EventId)> {
        self.rings.get(&key)?.keys.get(idem_key, now_ms)
    }

    /// The source's idempotency keys (for a snapshot).
    pub fn keys(&self, key: SourceKey) -> Option<&Remembered> {
        self.rings.get(&key).map(|r| &r.keys)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EventId {
        EventId { ms, seq: 0 }
    }

    fn idem(n: u8) -> IdemKey {
        IdemKey { key: [n; 16], body: [n + 100; 16] }
    }

    #[test]
    fn remembers_the_newest_keys_of_the_last_day() {
        let mut r = Remembered::default();
        for n in 0..5 {
            r.insert(idem(n), id(1000 + n as u64), 3);
        }
        let kept: Vec<u8> = r.iter().map(|(k, _)| k.key[0]).collect();
        assert_eq!(kept, [2, 3, 4], "the newest 3");
        assert_eq!(r.get(&[1; 16], 2000), None);
        assert_eq!(r.get(&[4; 16], 2000), Some(([104; 16], id(1004))));
        // A key used again (its first emit refused, say) keeps its newer event, also when the older entry goes.
        r.insert(idem(2), id(1010), 3);
        assert_eq!(r.get(&[2; 16], 2000), Some(([102; 16], id(1010))));
        r.insert(idem(7), id(1011), 3);
        assert_eq!(r.get(&[2; 16], 2000), Some(([102; 16], id(1010))), "the newer entry stays");
        assert_eq!(r.iter().count(), 3);
        // A day later: older keys go as a newer one comes, and none answers after its day.
        let day = IDEMPOTENCY_KEY_LIFE_MS;
        assert_eq!(r.get(&[7; 16], 1011 + day), None);
        r.insert(idem(9), id(1011 + day), 3);
        let kept: Vec<u8> = r.iter().map(|(k, _)| k.key[0]).collect();
        assert_eq!(kept, [9]);
        assert_eq!((r.by_key.len(), r.order.len()), (1, 1), "both tables bounded");
    }
}
