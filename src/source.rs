//! The source registry: every account's sources by id, name and endpoint
//! key; each source's history and subscribers (connection keys). It does
//! no I/O: what connections must see (a new event, streams to end) is left
//! in `effects` for the reactor to apply.

use std::collections::HashMap;
use std::fmt;

use slab::Slab;

use crate::auth::{AccountId, random_base62};
use crate::history::History;
use crate::sse::{Event, EventId};
use crate::state::SavedSource;

pub type SourceKey = usize;

/// Random characters after `dc_` in a source id (~95 bits).
const SOURCE_ID_CHARS: usize = 16;
/// Random characters of a webhook endpoint key (~143 bits).
const ENDPOINT_KEY_CHARS: usize = 24;
const NAME_MAX: usize = 64;

pub struct Source {
    pub id: String,
    pub name: String,
    pub account: AccountId,
    pub endpoint_key: String,
    pub created_at: u64,
    pub history: History,
    /// Keys of the connections streaming this source.
    pub subscribers: Vec<u32>,
    last_id: EventId,
}

impl Source {
    /// The id of the last event emitted (or the floor, before any).
    pub fn last_id(&self) -> EventId {
        self.last_id
    }
}

/// What the reactor must do to connections after a registry change.
pub enum Effect {
    /// Queue this event to every subscriber of the source.
    Publish(SourceKey, Event),
    /// These streams' source is gone: end them.
    EndStreams(Vec<u32>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    BadName,
    Taken,
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::BadName => write!(f, "a source name is 1 to {NAME_MAX} characters of A-Z a-z 0-9 _ -"),
            CreateError::Taken => write!(f, "a source with this name already exists"),
        }
    }
}

pub struct Registry {
    sources: Slab<Source>,
    by_id: HashMap<String, SourceKey>,
    /// Per account, by name (looked up without building a key).
    by_name: HashMap<AccountId, HashMap<String, SourceKey>>,
    by_endpoint: HashMap<String, SourceKey>,
    history: usize,
    /// Ids start above this millisecond, the process start: so they keep
    /// increasing across a restart on the same clock.
    id_floor_ms: u64,
    pub effects: Vec<Effect>,
    /// Where each event is framed before its shared copy is made.
    frame_scratch: Vec<u8>,
}

pub fn valid_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Registry {
    pub fn new(history: usize, start_ms: u64) -> Registry {
        Registry {
            sources: Slab::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            by_endpoint: HashMap::new(),
            history,
            id_floor_ms: start_ms,
            effects: Vec::new(),
            frame_scratch: Vec::new(),
        }
    }

    pub fn create(&mut self, account: AccountId, name: &str, now_ms: u64) -> Result<SourceKey, CreateError> {
        if !valid_name(name) {
            return Err(CreateError::BadName);
        }
        if self.by_name.get(&account).is_some_and(|names| names.contains_key(name)) {
            return Err(CreateError::Taken);
        }
        let source = Source {
            id: format!("dc_{}", random_base62(SOURCE_ID_CHARS)),
            name: name.to_string(),
            account,
            endpoint_key: random_base62(ENDPOINT_KEY_CHARS),
            created_at: now_ms,
            history: History::new(self.history),
            subscribers: Vec::new(),
            // The first id is at least (floor+1)-1: above any id of an
            // earlier process, even one that stopped in this millisecond.
            last_id: EventId { ms: self.id_floor_ms + 1, seq: 0 },
        };
        self.by_id.insert(source.id.clone(), self.sources.vacant_key());
        self.by_name.entry(account).or_default().insert(source.name.clone(), self.sources.vacant_key());
        self.by_endpoint.insert(source.endpoint_key.clone(), self.sources.vacant_key());
        Ok(self.sources.insert(source))
    }

    /// The source named by id or name in `account`; another account's
    /// source is not found, exactly like a missing one.
    pub fn find(&self, account: AccountId, id_or_name: &str) -> Option<SourceKey> {
        let key = match self.by_id.get(id_or_name) {
            Some(&k) => k,
            None => *self.by_name.get(&account)?.get(id_or_name)?,
        };
        (self.sources[key].account == account).then_some(key)
    }

    pub fn find_endpoint(&self, endpoint_key: &str) -> Option<SourceKey> {
        self.by_endpoint.get(endpoint_key).copied()
    }

    /// Puts back a source saved by an earlier process (see `state`), with
    /// its events, oldest first.
    pub fn restore(&mut self, account: AccountId, saved: &SavedSource, events: Vec<Event>) -> SourceKey {
        let mut history = History::new(self.history);
        for event in events {
            history.push(event);
        }
        let floor = EventId { ms: self.id_floor_ms + 1, seq: 0 };
        let key = self.sources.insert(Source {
            id: saved.id.clone(),
            name: saved.name.clone(),
            account,
            endpoint_key: saved.endpoint_key.clone(),
            created_at: saved.created_at,
            history,
            subscribers: Vec::new(),
            last_id: saved.last_id.max(floor),
        });
        self.by_id.insert(saved.id.clone(), key);
        self.by_name.entry(account).or_default().insert(saved.name.clone(), key);
        self.by_endpoint.insert(saved.endpoint_key.clone(), key);
        key
    }

    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.sources.iter().map(|(_, s)| s)
    }

    pub fn get(&self, key: SourceKey) -> &Source {
        &self.sources[key]
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// The account's sources, oldest first.
    pub fn list(&self, account: AccountId) -> Vec<&Source> {
        let mut list: Vec<&Source> = self.sources().filter(|s| s.account == account).collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        list
    }

    pub fn delete(&mut self, key: SourceKey) {
        let source = self.sources.remove(key);
        self.by_id.remove(&source.id);
        if let Some(names) = self.by_name.get_mut(&source.account) {
            names.remove(&source.name);
        }
        self.by_endpoint.remove(&source.endpoint_key);
        if !source.subscribers.is_empty() {
            self.effects.push(Effect::EndStreams(source.subscribers));
        }
    }

    /// Records an event whose payload is compact JSON, and leaves it for
    /// the reactor to deliver.
    pub fn emit(&mut self, key: SourceKey, payload: &[u8], now_ms: u64) -> EventId {
        let source = &mut self.sources[key];
        let id = source.last_id.next(now_ms);
        source.last_id = id;
        let event = Event::new(id, &source.id, payload, &mut self.frame_scratch);
        source.history.push(event.clone());
        self.effects.push(Effect::Publish(key, event));
        id
    }

    pub fn clear_history(&mut self, key: SourceKey) {
        self.sources[key].history.clear();
    }

    /// Adds a subscriber; returns its index in the source's list.
    pub fn subscribe(&mut self, key: SourceKey, conn: u32) -> u32 {
        let subs = &mut self.sources[key].subscribers;
        subs.push(conn);
        (subs.len() - 1) as u32
    }

    /// Removes the subscriber at `index`; returns the connection that moved
    /// into its place (whose index is now `index`), if any.
    pub fn unsubscribe(&mut self, key: SourceKey, index: u32) -> Option<u32> {
        let subs = &mut self.sources.get_mut(key)?.subscribers;
        subs.swap_remove(index as usize);
        subs.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_accounts() {
        let mut r = Registry::new(10, 1000);
        let a = r.create(0, "orders", 5).unwrap();
        assert_eq!(r.create(0, "orders", 5), Err(CreateError::Taken));
        let b = r.create(1, "orders", 5).unwrap();
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            assert_eq!(r.create(0, bad, 5), Err(CreateError::BadName), "{bad:?}");
        }
        let id_a = r.get(a).id.clone();
        assert!(id_a.starts_with("dc_") && id_a.len() == 19);
        assert_eq!(r.find(0, "orders"), Some(a));
        assert_eq!(r.find(0, &id_a), Some(a));
        assert_eq!(r.find(1, &id_a), None, "another account's source is not found");
        assert_eq!(r.find(1, "orders"), Some(b));
        assert_eq!(r.find_endpoint(&r.get(b).endpoint_key.clone()), Some(b));
        r.delete(a);
        assert_eq!(r.find(0, "orders"), None);
        assert!(r.create(0, "orders", 6).is_ok(), "a deleted name is free again");
    }

    #[test]
    fn ids_start_above_the_floor_and_increase() {
        let mut r = Registry::new(10, 1000);
        let s = r.create(0, "s", 0).unwrap();
        let ids: Vec<EventId> = [999, 1000, 1001, 1001, 1002, 1500].iter().map(|&now| r.emit(s, b"1", now)).collect();
        assert!(ids[0] > EventId { ms: 1000, seq: u64::MAX }, "above every id of the process before");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(ids[5], EventId { ms: 1500, seq: 0 });
        assert_eq!(r.effects.len(), 6);
    }

    #[test]
    fn unsubscribe_reports_the_moved_subscriber() {
        let mut r = Registry::new(10, 0);
        let s = r.create(0, "s", 0).unwrap();
        for conn in [10, 11, 12] {
            r.subscribe(s, conn);
        }
        assert_eq!(r.unsubscribe(s, 0), Some(12));
        assert_eq!(r.get(s).subscribers, [12, 11]);
        assert_eq!(r.unsubscribe(s, 1), None);
        r.delete(s);
        assert!(matches!(r.effects.last(), Some(Effect::EndStreams(v)) if v == &[12]));
    }
}
