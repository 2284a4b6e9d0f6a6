//! This node's sources: what it writes back if Redis loses them (stored
//! settings, subscribe tokens) and the newest id it delivered, found by
//! key and by id; the tombstones of sources deleted here; the control
//! records read from a partition, applied; and the take-back of a change
//! that failed.

use std::collections::HashMap;

use super::records::Record;
use crate::engine::{Outcome, Retention, Ring, Rings, SourceKey, SourceMeta, StoredToken};
use crate::history::History;
use crate::sse::EventId;
use crate::verify::Verify;

/// A source as this node has it.
pub struct Src {
    pub id: String,
    /// Written back if Redis loses it, with the tokens.
    pub meta: SourceMeta,
    /// Subscribe tokens (token, expires_at), written back too.
    pub tokens: Vec<(String, u64)>,
    /// The newest id delivered (retained and published) on this node.
    pub last: EventId,
}

/// What a change did to this node's memory, taken back if it fails: what
/// it took out, or what a value was before (put back if Redis refuses the
/// change), or what it added.
pub enum TakeBack {
    Create(SourceKey),
    Delete(SourceKey, Box<(Src, Option<Ring>)>),
    Clear(SourceKey, Option<History>),
    Verify(SourceKey, Option<Verify>),
    /// The retention it had (what the new one evicted stays evicted).
    Retention(SourceKey, Retention),
    Token(SourceKey, String),
    Revoke(SourceKey, (String, u64)),
    Nothing,
}

#[derive(Default)]
pub struct Sources {
    by_key: HashMap<SourceKey, Src>,
    by_id: HashMap<String, SourceKey>,
    /// Deleted here; their create record may still come from a partition read.
    /// (A map, not a set: it shares the registry's instantiation.)
    tombstones: HashMap<String, SourceKey>,
}

impl Sources {
    pub fn insert(&mut self, key: SourceKey, meta: SourceMeta, last: EventId) {
        self.by_id.insert(meta.id.clone(), key);
        self.by_key.insert(key, Src { id: meta.id.clone(), meta, tokens: Vec::new(), last });
    }

    #[inline]
    pub fn get(&self, key: SourceKey) -> Option<&Src> {
        self.by_key.get(&key)
    }

    #[inline]
    pub fn get_mut(&mut self, key: SourceKey) -> Option<&mut Src> {
        self.by_key.get_mut(&key)
    }

    #[inline]
    pub fn key_of(&self, id: &str) -> Option<SourceKey> {
        self.by_id.get(id).copied()
    }

    /// The source with id `id`.
    pub fn find_mut(&mut self, id: &str) -> Option<(SourceKey, &mut Src)> {
        let key = self.key_of(id)?;
        Some((key, self.by_key.get_mut(&key)?))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Src> {
        self.by_key.values()
    }

    pub fn count(&self) -> usize {
        self.by_key.len()
    }

    /// Takes a source out of this node's memory: its state and its ring.
    pub fn take(&mut self, rings: &mut Rings, key: SourceKey) -> Option<(Src, Option<Ring>)> {
        let ring = rings.remove(key);
        let src = self.by_key.remove(&key)?;
        self.by_id.remove(&src.id);
        Some((src, ring))
    }

    /// Deleted here: a create record of `id` read from now on is old news.
    pub fn bury(&mut self, id: String, key: SourceKey) {
        self.tombstones.insert(id, key);
    }

    /// The delete record of `id` is read: its create record came before.
    pub fn unbury(&mut self, id: &str) {
        self.tombstones.remove(id);
    }

    /// A create record of `id` is news: not here, not deleted here.
    pub fn is_new(&self, id: &str) -> bool {
        !self.by_id.contains_key(id) && !self.tombstones.contains_key(id)
    }

    /// Applies a control record read from a partition (a delete, a clear,
    /// a signature check, a token given or revoked) to this node's
    /// sources and rings; what the core must hear of it goes to `ready`.
    /// This node's own changes come back too: only what changes something
    /// is told. (A create is the engine's: the core names its key first.)
    pub fn apply(&mut self, record: Record, rings: &mut Rings, ready: &mut Vec<Outcome>, now_ms: u64) {
        match record {
            Record::Deleted(id) => {
                self.unbury(&id);
                if let Some(key) = self.key_of(&id) {
                    self.take(rings, key);
                    ready.push(Outcome::Deleted { key });
                }
            }
            Record::Cleared(id, up_to) => {
                // Only what came before the clear: later events may be delivered here already.
                if let Some(key) = self.key_of(&id) {
                    rings.clear_to(key, up_to);
                }
            }
            Record::Verify(id, settings) => {
                let Some((key, src)) = self.find_mut(&id) else { return };
                let verify = Verify::from_stored(&settings);
                if src.meta.verify == verify {
                    return;
                }
                src.meta.verify = verify.clone();
                ready.push(Outcome::Verify { key, verify });
            }
            Record::Token(id, token, expires_at) => {
                let Some((key, src)) = self.find_mut(&id).filter(|(_, s)| !s.tokens.iter().any(|(t, _)| *t == token)) else {
                    return;
                };
                src.tokens.push((token.clone(), expires_at));
                ready.push(Outcome::Token { key, token: StoredToken { token, source_id: id, expires_at } });
            }
            Record::Revoked(id, token) => {
                let Some((key, src)) = self.find_mut(&id).filter(|(_, s)| s.tokens.iter().any(|(t, _)| *t == token)) else {
                    return;
                };
                src.tokens.retain(|(t, _)| *t != token);
                ready.push(Outcome::TokenRevoked { key, token });
            }
            Record::Retention(id, retention) => {
                let Some((key, src)) = self.find_mut(&id) else { return };
                if src.meta.retention == retention {
                    return;
                }
                src.meta.retention = retention;
                rings.set_retention(key, &retention, now_ms);
                ready.push(Outcome::Retention { key, retention });
            }
            Record::Event { .. } | Record::Created(_) => {}
        }
    }

    /// A change failed: what it did to this node's memory is put back if
    /// Redis surely did not make it (`refused`), and always for a create, a
    /// signature check and a new token, which the hub takes back on any
    /// failure (if Redis made them after all, their own records bring
    /// them back). A delete, a clear or a revocation whose fate is unknown
    /// stays done here.
    pub fn take_back(&mut self, rings: &mut Rings, take_back: TakeBack, refused: bool) {
        match take_back {
            TakeBack::Create(key) => drop(self.take(rings, key)),
            TakeBack::Verify(key, before) => {
                if let Some(src) = self.by_key.get_mut(&key) {
                    src.meta.verify = before;
                }
            }
            TakeBack::Retention(key, before) => {
                if let Some(src) = self.by_key.get_mut(&key) {
                    src.meta.retention = before;
                    rings.set_retention(key, &before, crate::sys::unix_ms());
                }
            }
            TakeBack::Token(key, token) => {
                if let Some(src) = self.by_key.get_mut(&key) {
                    src.tokens.retain(|(t, _)| *t != token);
                }
            }
            TakeBack::Delete(key, taken) if refused => {
                let (src, ring) = *taken;
                self.tombstones.remove(&src.id);
                self.by_id.insert(src.id.clone(), key);
                self.by_key.insert(key, src);
                if let Some(ring) = ring {
                    rings.put_back(key, ring);
                }
            }
            TakeBack::Clear(key, Some(history)) if refused => rings.put_history(key, history),
            TakeBack::Revoke(key, token) if refused => {
                if let Some(src) = self.by_key.get_mut(&key) {
                    src.tokens.push(token);
                }
            }
            TakeBack::Delete(..) | TakeBack::Clear(..) | TakeBack::Revoke(..) | TakeBack::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Scheme;

    fn meta(id: &str) -> SourceMeta {
        SourceMeta {
            id: id.into(),
            account: "acct".into(),
            name: id.into(),
            endpoint_key: "k".into(),
            created_at: 1,
            verify: None,
            retention: Default::default(),
        }
    }

    /// One source, `a` (key 1), with a token `t`.
    fn one() -> (Sources, Rings) {
        let (mut sources, mut rings) = (Sources::default(), Rings::new(10, 0));
        rings.create(1, "a");
        sources.insert(1, meta("a"), EventId::default());
        sources.get_mut(1).unwrap().tokens.push(("t".into(), 99));
        (sources, rings)
    }

    #[test]
    fn take_backs_put_back_what_redis_surely_did_not_make() {
        for refused in [false, true] {
            // Always taken back: a create, a signature check, a new token.
            let (mut s, mut rings) = one();
            s.take_back(&mut rings, TakeBack::Create(1), refused);
            assert!(s.get(1).is_none() && s.key_of("a").is_none() && s.is_new("a") && rings.remove(1).is_none());
            let (mut s, mut rings) = one();
            s.get_mut(1).unwrap().meta.verify = Some(Verify { scheme: Scheme::Github, secret: "x".into(), reject_invalid: true });
            s.take_back(&mut rings, TakeBack::Verify(1, None), refused);
            assert!(s.get(1).unwrap().meta.verify.is_none());
            let (mut s, mut rings) = one();
            s.take_back(&mut rings, TakeBack::Token(1, "t".into()), refused);
            assert_eq!(s.get(1).unwrap().tokens, []);

            // Put back only if refused: a delete (and its tombstone goes), a revocation.
            let (mut s, mut rings) = one();
            let taken = s.take(&mut rings, 1).unwrap();
            s.bury("a".into(), 1);
            s.take_back(&mut rings, TakeBack::Delete(1, Box::new(taken)), refused);
            assert_eq!(
                (s.key_of("a"), s.get(1).is_some(), rings.remove(1).is_some()),
                if refused { (Some(1), true, true) } else { (None, false, false) }
            );
            assert!(!s.is_new("a"), "here, or deleted here");
            s.unbury("a");
            assert_eq!(s.is_new("a"), !refused);
            let (mut s, mut rings) = one();
            let token = s.get_mut(1).unwrap().tokens.pop().unwrap();
            s.take_back(&mut rings, TakeBack::Revoke(1, token), refused);
            assert_eq!(s.get(1).unwrap().tokens.len(), usize::from(refused));
        }
    }

    #[test]
    fn sources_are_found_by_key_and_by_id() {
        let (mut s, mut rings) = one();
        s.insert(2, meta("b"), EventId::default());
        assert_eq!((s.key_of("a"), s.key_of("b"), s.key_of("c"), s.count()), (Some(1), Some(2), None, 2));
        assert_eq!(s.find_mut("b").map(|(k, src)| (k, src.id.clone())), Some((2, "b".to_string())));
        assert!(!s.is_new("a") && s.is_new("c"));
        let (src, ring) = s.take(&mut rings, 1).unwrap();
        assert_eq!((src.id.as_str(), ring.is_some(), s.key_of("a"), s.count()), ("a", true, None, 1));
        assert!(s.take(&mut rings, 1).is_none());
    }
}
