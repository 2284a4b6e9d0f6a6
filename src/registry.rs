//! The source registry: every account's sources by id, name and endpoint
//! key, and each source's subscribers (connection keys). No events: those
//! are the engine's (`engine::Rings`). Per account, its sources in
//! creation order (a page of them costs that page, whatever the other
//! accounts hold) and what its limits count. No I/O.

use std::collections::HashMap;
use std::fmt;

use crate::auth::{AccountId, random_base62};
use crate::engine::{Retention, SourceKey};
use crate::limits::Bucket;
use crate::sse::EventId;
use crate::verify::Verify;

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
    /// The signature check of its webhook deliveries.
    pub verify: Option<Verify>,
    /// Its retention as set (the engine's rings apply it).
    pub retention: Retention,
    /// Its age timer on the reactor's wheel, if armed: (the deadline in
    /// unix ms it is armed for, id).
    pub age_timer: Option<(u64, crate::timer::TimerId)>,
    /// Keys of the connections streaming this source.
    pub subscribers: Vec<u32>,
    /// Subscribers that resumed from an id newer than any this node has
    /// (a node of a cluster that is behind): until an event passes it,
    /// events up to it are not sent to them again. Almost always empty.
    pub ahead: Vec<(u32, EventId)>,
    /// Its emits (`--emit-rate`).
    pub bucket: Bucket,
    /// Created or deleted here, not yet acknowledged by storage: its name
    /// is taken (a second create of it is refused), but nothing finds or
    /// lists it. With `redis`, another node may have taken the name first:
    /// the refused source then never showed. A delete storage refuses
    /// shows it again.
    pending: bool,
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

/// One account's sources in the listing's order, and what its limits count.
#[derive(Default)]
pub struct Account {
    /// Its sources by name (looked up without building a key).
    by_name: HashMap<String, SourceKey>,
    /// (created_at, key): oldest first, then (in one millisecond) in the
    /// order this process took them in. Sources come in that order but at
    /// start (engines recover them in any order) and from other nodes:
    /// then `sorted` is false until the next page sorts them.
    order: Vec<(u64, SourceKey)>,
    sorted: bool,
    /// Of those, the ones not shown (created or deleted, not yet acknowledged).
    hidden: usize,
    /// Open streams of its sources.
    pub streams: u64,
    /// Its sources' emits together (`--account-emit-rate`).
    pub bucket: Bucket,
}

/// One page of an account's sources.
pub struct Page<'a> {
    /// The account's sources shown, on every page.
    pub total: usize,
    pub sources: Vec<&'a Source>,
    /// The position of the last of them.
    pub last: Option<(u64, SourceKey)>,
}

#[derive(Default)]
pub struct Registry {
    sources: HashMap<SourceKey, Source>,
    next_key: SourceKey,
    by_id: HashMap<String, SourceKey>,
    by_endpoint: HashMap<String, SourceKey>,
    /// By `AccountId` (dense: an index of the keys' accounts).
    accounts: Vec<Account>,
}

/// The account's entry, made if new.
fn account_mut(accounts: &mut Vec<Account>, account: AccountId) -> &mut Account {
    let at = account as usize;
    if accounts.len() <= at {
        accounts.resize_with(at + 1, Account::default);
    }
    &mut accounts[at]
}

pub fn valid_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Registry {
    /// A new source with a fresh id and endpoint key.
    pub fn create(&mut self, account: AccountId, name: &str, now_ms: u64) -> Result<SourceKey, CreateError> {
        if !valid_name(name) {
            return Err(CreateError::BadName);
        }
        if self.account(account).is_some_and(|a| a.by_name.contains_key(name)) {
            return Err(CreateError::Taken);
        }
        let id = format!("dc_{}", random_base62(SOURCE_ID_CHARS));
        let key = self.insert(account, id, name.to_string(), random_base62(ENDPOINT_KEY_CHARS), now_ms);
        self.set_pending(key, true);
        Ok(key)
    }

    /// Storage acknowledged the source's creation (or refused its
    /// deletion): it is found and listed from now on.
    pub fn confirm(&mut self, key: SourceKey) {
        self.set_pending(key, false);
    }

    /// Shows or hides a source, keeping its account's count of hidden ones.
    fn set_pending(&mut self, key: SourceKey, pending: bool) {
        let Some(s) = self.sources.get_mut(&key).filter(|s| s.pending != pending) else { return };
        s.pending = pending;
        let account = account_mut(&mut self.accounts, s.account);
        match pending {
            true => account.hidden += 1,
            false => account.hidden -= 1,
        }
    }

    /// A delete waits for storage: nothing finds or lists the source, and
    /// its name stays taken; its subscribers are returned (to be ended).
    pub fn hide(&mut self, key: SourceKey) -> Vec<u32> {
        self.set_pending(key, true);
        let Some(s) = self.sources.get_mut(&key) else { return Vec::new() };
        s.ahead.clear();
        let ended = std::mem::take(&mut s.subscribers);
        account_mut(&mut self.accounts, s.account).streams -= ended.len() as u64;
        ended
    }

    fn shown(&self, key: &SourceKey) -> bool {
        self.sources.get(key).is_some_and(|s| !s.pending)
    }

    /// Puts in a source as stored (at start, or created elsewhere).
    pub fn insert(&mut self, account: AccountId, id: String, name: String, endpoint_key: String, created_at: u64) -> SourceKey {
        let key = self.next_key;
        self.next_key += 1;
        self.by_id.insert(id.clone(), key);
        self.by_endpoint.insert(endpoint_key.clone(), key);
        let a = account_mut(&mut self.accounts, account);
        a.by_name.insert(name.clone(), key);
        let at = (created_at, key);
        a.sorted = a.order.last().is_none_or(|&last| last < at) && (a.sorted || a.order.is_empty());
        a.order.push(at);
        self.sources.insert(
            key,
            Source {
                id,
                name,
                account,
                endpoint_key,
                created_at,
                verify: None,
                retention: Retention::default(),
                age_timer: None,
                subscribers: Vec::new(),
                ahead: Vec::new(),
                bucket: Bucket::default(),
                pending: false,
            },
        );
        key
    }

    /// The source named by id or name in `account`. Both are looked up in
    /// the account alone: another account's source is not found, exactly
    /// like a missing one, and a name that looks like another account's id
    /// still finds this account's source.
    pub fn find(&self, account: AccountId, id_or_name: &str) -> Option<SourceKey> {
        let by_id = self.by_id.get(id_or_name).copied().filter(|k| self.sources[k].account == account);
        by_id.or_else(|| self.account(account)?.by_name.get(id_or_name).copied()).filter(|k| self.shown(k))
    }

    /// The source with this public id, in any account.
    pub fn find_id(&self, id: &str) -> Option<SourceKey> {
        self.by_id.get(id).copied()
    }

    pub fn find_endpoint(&self, endpoint_key: &str) -> Option<SourceKey> {
        self.by_endpoint.get(endpoint_key).copied().filter(|k| self.shown(k))
    }

    pub fn get(&self, key: SourceKey) -> Option<&Source> {
        self.sources.get(&key)
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Up to `limit` of the account's sources shown, oldest first, after
    /// the source `after` (one of them) if given.
    #[cfg(test)]
    pub fn page(&mut self, account: AccountId, after: Option<SourceKey>, limit: usize) -> Page<'_> {
        let from = after.and_then(|k| self.position(k));
        self.page_from(account, from, limit)
    }

    /// Where a source stands in its account's listing: after it, a page
    /// goes on from there (`page_from`) even once the source is gone.
    pub fn position(&self, key: SourceKey) -> Option<(u64, SourceKey)> {
        self.sources.get(&key).map(|s| (s.created_at, key))
    }

    /// Up to `limit` of the account's sources shown, oldest first, after
    /// the position `from` if given; `Page::last` is where the next goes on.
    pub fn page_from(&mut self, account: AccountId, from: Option<(u64, SourceKey)>, limit: usize) -> Page<'_> {
        let Some(a) = self.accounts.get_mut(account as usize) else { return Page { total: 0, sources: Vec::new(), last: None } };
        if !a.sorted {
            a.order.sort_unstable();
            a.sorted = true;
        }
        let from = from.map_or(0, |from| a.order.partition_point(|&at| at <= from));
        let mut sources = Vec::with_capacity(limit.min(a.order.len() - from));
        let mut last = None;
        for &(at, k) in &a.order[from..] {
            if sources.len() == limit {
                break;
            }
            let s = &self.sources[&k];
            if !s.pending {
                sources.push(s);
                last = Some((at, k));
            }
        }
        Page { total: a.order.len() - a.hidden, sources, last }
    }

    /// The account's sources, shown or not (a create in flight counts).
    pub fn count(&self, account: AccountId) -> usize {
        self.account(account).map_or(0, |a| a.order.len())
    }

    /// What the account's limits count, and its emit bucket.
    pub fn account(&self, account: AccountId) -> Option<&Account> {
        self.accounts.get(account as usize)
    }

    /// A source and its account, to take an emit from both buckets.
    pub fn buckets(&mut self, key: SourceKey) -> Option<(&mut Bucket, &mut Bucket)> {
        let s = self.sources.get_mut(&key)?;
        Some((&mut s.bucket, &mut account_mut(&mut self.accounts, s.account).bucket))
    }

    /// Sets or removes the source's signature check; returns the one before.
    pub fn set_verify(&mut self, key: SourceKey, verify: Option<Verify>) -> Option<Verify> {
        self.sources.get_mut(&key).and_then(|s| std::mem::replace(&mut s.verify, verify))
    }

    /// The source, to change (`None` if it is gone).
    pub fn get_mut(&mut self, key: SourceKey) -> Option<&mut Source> {
        self.sources.get_mut(&key)
    }

    /// Sets the source's retention; returns the one before.
    pub fn set_retention(&mut self, key: SourceKey, retention: Retention) -> Retention {
        self.sources.get_mut(&key).map_or(retention, |s| std::mem::replace(&mut s.retention, retention))
    }

    /// Removes a source; returns it (its subscribers are to be ended).
    pub fn remove(&mut self, key: SourceKey) -> Option<Source> {
        self.set_pending(key, false);
        let source = self.sources.remove(&key)?;
        let account = account_mut(&mut self.accounts, source.account);
        account.streams -= source.subscribers.len() as u64;
        let at = (source.created_at, key);
        let found = match account.sorted {
            true => account.order.binary_search(&at).ok(),
            false => account.order.iter().position(|&o| o == at),
        };
        // Removed in place, so that what is sorted stays sorted.
        if let Some(i) = found {
            account.order.remove(i);
        }
        // Only its own entries: another node's source of the same name may
        // have been registered while this one's create was refused.
        if self.by_id.get(&source.id) == Some(&key) {
            self.by_id.remove(&source.id);
        }
        if account.by_name.get(&source.name) == Some(&key) {
            account.by_name.remove(&source.name);
        }
        if self.by_endpoint.get(&source.endpoint_key) == Some(&key) {
            self.by_endpoint.remove(&source.endpoint_key);
        }
        Some(source)
    }

    /// Adds a subscriber; returns its index in the source's list.
    pub fn subscribe(&mut self, key: SourceKey, conn: u32) -> u32 {
        let s = self.sources.get_mut(&key).expect("subscribing to a live source");
        s.subscribers.push(conn);
        account_mut(&mut self.accounts, s.account).streams += 1;
        (s.subscribers.len() - 1) as u32
    }

    /// The subscriber `conn` resumed from `after`, newer than any event
    /// of the source here: events up to it are not to be sent to it.
    pub fn resumed_ahead(&mut self, key: SourceKey, conn: u32, after: EventId) {
        if let Some(s) = self.sources.get_mut(&key) {
            s.ahead.push((conn, after));
        }
    }

    /// `id` was published: subscribers it has passed get every event from now on.
    pub fn passed(&mut self, key: SourceKey, id: EventId) {
        if let Some(s) = self.sources.get_mut(&key) {
            s.ahead.retain(|&(_, after)| after > id);
        }
    }

    /// Removes the subscriber at `index`; returns the connection that moved
    /// into its place (whose index is now `index`), if any.
    pub fn unsubscribe(&mut self, key: SourceKey, index: u32) -> Option<u32> {
        let s = self.sources.get_mut(&key)?;
        let gone = s.subscribers.swap_remove(index as usize);
        account_mut(&mut self.accounts, s.account).streams -= 1;
        if !s.ahead.is_empty() {
            s.ahead.retain(|&(conn, _)| conn != gone);
        }
        s.subscribers.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_accounts() {
        let mut r = Registry::default();
        let a = r.create(0, "orders", 5).unwrap();
        assert_eq!(r.create(0, "orders", 5), Err(CreateError::Taken));
        assert_eq!(r.find(0, "orders"), None, "not found before storage has it");
        assert!(r.page(0, None, 10).sources.is_empty(), "nor listed");
        assert_eq!(r.page(0, None, 10).total, 0);
        r.confirm(a);
        let b = r.create(1, "orders", 5).unwrap();
        r.confirm(b);
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            assert_eq!(r.create(0, bad, 5), Err(CreateError::BadName), "{bad:?}");
        }
        let id_a = r.get(a).unwrap().id.clone();
        assert!(id_a.starts_with("dc_") && id_a.len() == 19);
        assert_eq!(r.find(0, "orders"), Some(a));
        assert_eq!(r.find(0, &id_a), Some(a));
        assert_eq!(r.find(1, &id_a), None, "another account's source is not found");
        assert_eq!(r.find(1, "orders"), Some(b));
        assert_eq!(r.find_endpoint(&r.get(b).unwrap().endpoint_key.clone()), Some(b));
        r.remove(a);
        assert_eq!(r.find(0, "orders"), None);
        let again = r.create(0, "orders", 6).unwrap();
        assert_ne!(again, a, "keys are never reused");
    }

    #[test]
    fn a_name_like_another_accounts_id_finds_the_named_source() {
        let mut r = Registry::default();
        let a = r.create(0, "orders", 5).unwrap();
        let id_a = r.get(a).unwrap().id.clone();
        let b = r.create(1, &id_a, 5).unwrap();
        r.confirm(a);
        r.confirm(b);
        assert_eq!(r.find(1, &id_a), Some(b));
        assert_eq!(r.find(0, &id_a), Some(a));
        assert_eq!(r.find(2, &id_a), None);
    }

    #[test]
    fn removing_a_refused_source_keeps_the_one_that_took_its_name() {
        let mut r = Registry::default();
        let mine = r.create(0, "orders", 5).unwrap();
        let theirs = r.insert(0, "dc_theirs".into(), "orders".into(), "ep".into(), 4);
        assert_eq!(r.find(0, "orders"), Some(theirs), "theirs shows while mine waits");
        r.remove(mine);
        assert_eq!(r.find(0, "orders"), Some(theirs));
    }

    #[test]
    fn pages_of_an_account_skip_the_hidden_and_count_streams() {
        let mut r = Registry::default();
        let keys: Vec<SourceKey> =
            (0..5).map(|n| r.insert(0, format!("dc_{n}"), format!("s{n}"), format!("e{n}"), 100 - (n % 2))).collect();
        r.insert(1, "dc_x".into(), "x".into(), "ex".into(), 1);
        let names = |p: Page<'_>| (p.total, p.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(" "));
        // Oldest first; in the same millisecond, in the order taken in.
        assert_eq!(names(r.page(0, None, 10)), (5, "s1 s3 s0 s2 s4".into()));
        assert_eq!(names(r.page(0, Some(keys[3]), 2)), (5, "s0 s2".into()));
        let pending = r.create(0, "new", 101).unwrap();
        r.hide(keys[0]);
        assert_eq!(names(r.page(0, None, 10)), (4, "s1 s3 s2 s4".into()), "neither a create nor a delete in flight shows");
        assert_eq!(r.count(0), 6, "both count against the limit");
        r.confirm(pending);
        r.remove(keys[0]);
        assert_eq!(names(r.page(0, Some(keys[4]), 10)), (5, "new".into()));
        assert_eq!(names(r.page(2, None, 10)), (0, String::new()));
        r.subscribe(keys[1], 7);
        r.subscribe(keys[1], 8);
        r.subscribe(keys[2], 9);
        assert_eq!(r.account(0).unwrap().streams, 3);
        r.unsubscribe(keys[1], 0);
        r.hide(keys[2]);
        assert_eq!(r.account(0).unwrap().streams, 1);
        r.remove(keys[1]);
        assert_eq!(r.account(0).unwrap().streams, 0);
        // Out of order (as at start), removed before a page sorts them.
        let late = r.insert(3, "dc_l".into(), "late".into(), "el".into(), 50);
        let early = r.insert(3, "dc_e".into(), "early".into(), "ee".into(), 10);
        r.insert(3, "dc_m".into(), "mid".into(), "em".into(), 30);
        r.remove(late);
        assert_eq!(names(r.page(3, None, 10)), (2, "early mid".into()));
        r.remove(early);
        assert_eq!(names(r.page(3, None, 10)), (1, "mid".into()));
    }

    #[test]
    fn unsubscribe_reports_the_moved_subscriber() {
        let mut r = Registry::default();
        let s = r.create(0, "s", 0).unwrap();
        for conn in [10, 11, 12] {
            r.subscribe(s, conn);
        }
        assert_eq!(r.unsubscribe(s, 0), Some(12));
        assert_eq!(r.get(s).unwrap().subscribers, [12, 11]);
        assert_eq!(r.unsubscribe(s, 1), None);
        assert_eq!(r.remove(s).unwrap().subscribers, [12]);
    }
}
