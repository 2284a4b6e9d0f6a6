//! Subscribe tokens (SPEC §2.1): short-lived credentials that read one
//! source's stream and summaries, for browsers and third parties. The
//! table of live tokens, their expiry order, and checking a presented
//! token. No I/O, no clock: times come in as unix milliseconds.
//!
//! A token is `st_` + a selector + a verifier. The selector finds the
//! entry in a map (its lookup time may tell whether a selector exists,
//! which says nothing about a verifier); the SHA-256 of the presented
//! verifier is then compared in constant time with the one kept.
//!
//! Only that hash is kept, in the table and in storage (the `log` engine's
//! records, Redis): `st_` + selector + `.` + base64 of the SHA-256 of the
//! verifier (its [`stored`] form). Whoever reads a data dir or a Redis dump
//! finds no token that could be presented; the token itself is shown once,
//! in the answer that made it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroU32;

use sha2::{Digest, Sha256};

use crate::auth::{KeyId, constant_time_eq, random_base62};
use crate::engine::SourceKey;

pub const PREFIX: &str = "st_";
/// What opened a stream, which ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// An API key: a `--keys-file` reload that removes it (or moves it to
    /// another account) ends the stream.
    Key(KeyId),
    /// A subscribe token: its expiry or revocation ends the stream.
    Token(Serial),
}

/// Characters that find a token (~71 bits).
const SELECTOR_CHARS: usize = 12;
/// Characters that prove it (~190 bits).
const VERIFIER_CHARS: usize = 32;
/// The longest life a token may be given: 30 days.
pub const MAX_LIFE_S: u64 = 30 * 24 * 3600;
pub const DEFAULT_LIFE_S: u64 = 3600;

/// Names a token within the process; a stream opened with it keeps it
/// (4 bytes that fit in the stream phase, so a connection grows by none).
pub type Serial = NonZeroU32;

struct Entry {
    /// SHA-256 of the verifier.
    verifier: [u8; 32],
    source: SourceKey,
    serial: Serial,
    expires_at: u64,
}

/// What a presented credential is as a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A live token of `source`; streams opened with it carry `serial`.
    Valid { source: SourceKey, serial: Serial },
    /// Past its expiry (not yet swept).
    Expired,
    /// Unknown or revoked.
    Unknown,
}

/// A token that ended (expired, revoked): its streams are to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub source: SourceKey,
    pub serial: Serial,
}

/// A selector: the characters that find a token.
type Selector = [u8; SELECTOR_CHARS];

/// The table. Every operation costs the tokens it touches, not every
/// token: a source's tokens are listed by source (a delete takes them at
/// once), and expiries are kept in a heap ordered by time, whose entries a
/// revocation leaves behind (skipped when they come up, and dropped in one
/// rebuild when they outnumber the live tokens).
#[derive(Default)]
pub struct Tokens {
    by_selector: HashMap<Selector, Entry>,
    /// Live tokens by source (`--max-tokens-per-source`, deletes).
    per_source: HashMap<SourceKey, Vec<Selector>>,
    /// (expiry, serial, selector), earliest first; the top is always live.
    expiries: BinaryHeap<Reverse<(u64, u32, Selector)>>,
    next_serial: u32,
}

/// A fresh random token.
pub fn generate() -> String {
    format!("{PREFIX}{}", random_base62(SELECTOR_CHARS + VERIFIER_CHARS))
}

/// True for what looks like a token (so a wrong one is told apart from a wrong key).
pub fn looks_like(presented: &[u8]) -> bool {
    presented.starts_with(PREFIX.as_bytes())
}

fn split(token: &[u8]) -> Option<(Selector, &[u8])> {
    let rest = token.strip_prefix(PREFIX.as_bytes())?;
    if rest.len() != SELECTOR_CHARS + VERIFIER_CHARS {
        return None;
    }
    let (selector, verifier) = rest.split_at(SELECTOR_CHARS);
    Some((selector.try_into().ok()?, verifier))
}

/// The form a token is kept in: its selector and the hash of its verifier.
/// `None` if `token` is not of the token shape.
pub fn stored(token: &str) -> Option<String> {
    let (selector, verifier) = split(token.as_bytes())?;
    Some(kept_form(&selector, &Sha256::digest(verifier)))
}

fn kept_form(selector: &Selector, hash: &[u8]) -> String {
    format!("{PREFIX}{}.{}", String::from_utf8_lossy(selector), crate::base64::encode(hash))
}

/// A stored form taken apart: (selector, hash of the verifier).
fn parse_stored(kept: &str) -> Option<(Selector, [u8; 32])> {
    let (selector, hash) = kept.strip_prefix(PREFIX)?.split_once('.')?;
    let hash = crate::base64::decode(hash)?.try_into().ok()?;
    Some((selector.as_bytes().try_into().ok()?, hash))
}

impl Tokens {
    /// Adds a token of `source` in its [`stored`] form; false for anything
    /// else (a token kept whole by a version before hashing is not taken).
    pub fn insert(&mut self, kept: &str, source: SourceKey, expires_at: u64) -> bool {
        let Some((selector, verifier)) = parse_stored(kept) else { return false };
        // From 1; after 2^32 - 1 tokens in one process, round again.
        self.next_serial = self.next_serial.checked_add(1).unwrap_or(1);
        let serial = Serial::new(self.next_serial).unwrap_or(Serial::MIN);
        let entry = Entry { verifier, source, serial, expires_at };
        if let Some(old) = self.by_selector.insert(selector, entry) {
            unlist(&mut self.per_source, old.source, &selector);
        }
        self.per_source.entry(source).or_default().push(selector);
        self.expiries.push(Reverse((expires_at, serial.get(), selector)));
        self.settle();
        true
    }

    /// Drops the heap's stale entries from its top (each once), and
    /// rebuilds it when they outnumber the live ones.
    fn settle(&mut self) {
        while let Some(Reverse((_, serial, selector))) = self.expiries.peek() {
            if self.by_selector.get(selector).is_some_and(|e| e.serial.get() == *serial) {
                break;
            }
            self.expiries.pop();
        }
        if self.expiries.len() > 64 && self.expiries.len() > 2 * self.by_selector.len() {
            self.expiries = self.by_selector.iter().map(|(s, e)| Reverse((e.expires_at, e.serial.get(), *s))).collect();
        }
    }

    pub fn check(&self, presented: &[u8], now_ms: u64) -> Check {
        let Some((selector, verifier)) = split(presented) else { return Check::Unknown };
        match self.by_selector.get(&selector) {
            Some(e) if constant_time_eq(&e.verifier, &Sha256::digest(verifier)) => {
                if now_ms >= e.expires_at {
                    Check::Expired
                } else {
                    Check::Valid { source: e.source, serial: e.serial }
                }
            }
            _ => Check::Unknown,
        }
    }

    /// Revokes the token kept as `kept` ([`stored`]) if it is one of
    /// `source`'s; returns it as ended, and when it would have expired.
    pub fn revoke(&mut self, source: SourceKey, kept: &str) -> Option<(Ended, u64)> {
        let (selector, verifier) = parse_stored(kept)?;
        let e = self.by_selector.get(&selector).filter(|e| e.source == source && constant_time_eq(&e.verifier, &verifier))?;
        let ended = (Ended { source, serial: e.serial }, e.expires_at);
        self.by_selector.remove(&selector);
        unlist(&mut self.per_source, source, &selector);
        self.settle();
        Some(ended)
    }

    /// Forgets every token of a deleted source (its streams end with it).
    pub fn remove_source(&mut self, source: SourceKey) {
        for selector in self.per_source.remove(&source).unwrap_or_default() {
            self.by_selector.remove(&selector);
        }
        self.settle();
    }

    /// Takes out every token of `source`: their stored forms and expiries
    /// (a delete storage refuses puts them back with `insert`).
    pub fn take_source(&mut self, source: SourceKey) -> Vec<(String, u64)> {
        let mut taken = Vec::new();
        for selector in self.per_source.remove(&source).unwrap_or_default() {
            if let Some(e) = self.by_selector.remove(&selector) {
                taken.push((kept_form(&selector, &e.verifier), e.expires_at));
            }
        }
        self.settle();
        taken
    }

    /// Removes every token expired at `now_ms`, into `out`.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<Ended>) {
        while let Some(&Reverse((at, _, selector))) = self.expiries.peek().filter(|Reverse((at, ..))| *at <= now_ms) {
            debug_assert!(at <= now_ms);
            self.expiries.pop();
            // The top is live (settled); what follows it may not be.
            if let Some(e) = self.by_selector.get(&selector).filter(|e| e.expires_at == at) {
                out.push(Ended { source: e.source, serial: e.serial });
                let source = e.source;
                self.by_selector.remove(&selector);
                unlist(&mut self.per_source, source, &selector);
            }
            self.settle();
        }
    }

    /// The source's live tokens (expired ones count until swept, at their expiry).
    pub fn count(&self, source: SourceKey) -> u64 {
        self.per_source.get(&source).map_or(0, |s| s.len() as u64)
    }

    /// When the next token expires (unix ms).
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.peek().map(|Reverse((at, ..))| *at)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_selector.len()
    }
}

/// One token of `source` fewer: a list of at most `--max-tokens-per-source`.
fn unlist(per_source: &mut HashMap<SourceKey, Vec<Selector>>, source: SourceKey, selector: &Selector) {
    if let Some(list) = per_source.get_mut(&source) {
        if let Some(at) = list.iter().position(|s| s == selector) {
            list.swap_remove(at);
        }
        if list.is_empty() {
            per_source.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_scope_expiry_and_revocation() {
        let mut t = Tokens::default();
        let (a, b) = (generate(), generate());
        assert!(a.starts_with("st_") && a.len() == 3 + 44);
        let (ka, kb) = (stored(&a).unwrap(), stored(&b).unwrap());
        assert!(t.insert(&ka, 1, 1_000) && t.insert(&kb, 2, 2_000));
        assert_eq!((t.count(1), t.count(2), t.count(3)), (1, 1, 0));
        assert!(!t.insert("st_short", 1, 5), "not of the stored shape");
        assert!(!t.insert(&generate(), 1, 5), "a whole token is not kept");
        assert_eq!(t.check(ka.as_bytes(), 0), Check::Unknown, "the stored form is no token");
        assert!(!ka.contains(&a[3 + 12..]), "the verifier is not in it");
        let Check::Valid { source: 1, serial } = t.check(a.as_bytes(), 999) else { panic!() };
        assert_eq!(t.check(a.as_bytes(), 1_000), Check::Expired);
        let mut wrong = a.clone().into_bytes();
        *wrong.last_mut().unwrap() ^= 1;
        assert_eq!(t.check(&wrong, 0), Check::Unknown, "same selector, another verifier");
        for bad in [&b"st_"[..], b"", b"sk_whatever"] {
            assert_eq!(t.check(bad, 0), Check::Unknown);
        }
        assert_eq!(t.revoke(2, &ka), None, "another source's token");
        assert_eq!(t.revoke(1, &ka).map(|(ended, _)| ended), Some(Ended { source: 1, serial }));
        assert_eq!(t.check(a.as_bytes(), 0), Check::Unknown);
        assert_eq!(t.next_expiry(), Some(2_000));
        let mut out = Vec::new();
        t.expire(1_999, &mut out);
        assert!(out.is_empty());
        t.expire(2_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((t.len(), t.next_expiry()), (0, None));
        assert_eq!((t.count(1), t.count(2)), (0, 0), "revoked and expired tokens are not counted");
    }

    #[test]
    fn a_deleted_sources_tokens_go() {
        let mut t = Tokens::default();
        let tokens: Vec<String> = (0..4).map(|_| generate()).collect();
        for (i, tok) in tokens.iter().enumerate() {
            t.insert(&stored(tok).unwrap(), i as u64 % 2, 100 + i as u64);
        }
        assert_eq!(t.count(0), 2);
        t.remove_source(0);
        assert_eq!((t.len(), t.count(0), t.count(1)), (2, 0, 2));
        assert_eq!(t.next_expiry(), Some(101));
        assert!(matches!(t.check(tokens[1].as_bytes(), 0), Check::Valid { source: 1, .. }));
        assert_eq!(t.check(tokens[0].as_bytes(), 0), Check::Unknown);
        assert_eq!(t.take_source(1).len(), 2);
        assert_eq!(t.count(1), 0);
    }

    #[test]
    fn the_next_expiry_follows_revocations_deletes_and_sweeps() {
        let mut t = Tokens::default();
        let tokens: Vec<String> = (0..1_000).map(|_| stored(&generate()).unwrap()).collect();
        for (i, kept) in tokens.iter().enumerate() {
            t.insert(kept, i as u64 % 10, 10_000 + i as u64);
        }
        assert_eq!(t.next_expiry(), Some(10_000));
        // Revoking the earliest ones moves it on; a later one leaves it.
        for (i, kept) in tokens.iter().enumerate().take(5) {
            assert!(t.revoke(i as u64 % 10, kept).is_some());
        }
        assert_eq!(t.next_expiry(), Some(10_005));
        assert!(t.revoke(1, &tokens[901]).is_some());
        assert_eq!(t.next_expiry(), Some(10_005));
        // Source 5's tokens end at 10_005, 10_015, …: the next is 10_006.
        t.remove_source(5);
        assert_eq!((t.next_expiry(), t.count(5), t.count(6)), (Some(10_006), 0, 100));
        let mut out = Vec::new();
        t.expire(10_020, &mut out);
        // 10_006..=10_020 but 10_015 (source 5's): 14.
        assert_eq!(out.len(), 14);
        assert_eq!(t.next_expiry(), Some(10_021));
        // Revoking all but the last leaves the heap small and right.
        for (i, kept) in tokens.iter().enumerate().take(999).skip(21) {
            t.revoke(i as u64 % 10, kept);
        }
        assert!(t.expiries.len() <= 2 * t.len().max(32), "stale entries are dropped: {}", t.expiries.len());
        assert_eq!((t.len(), t.next_expiry()), (1, Some(10_999)));
        t.expire(20_000, &mut out);
        assert_eq!((t.len(), t.next_expiry(), t.count(9)), (0, None, 0));
    }
}
