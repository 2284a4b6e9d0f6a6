//! Accounts and their API keys: loading a keys file, finding the account of
//! a presented key in constant time, and random tokens from the OS.

use std::fmt;

use crate::limits::{Limits, Overrides};

/// Index of an account in `Keys::accounts`.
pub type AccountId = u32;

/// One configured key, kept across a reload of the keys file while the
/// same key names the same account (streams remember the key they opened with).
pub type KeyId = u32;

/// The account that `--api-key` and `--source` act on.
pub const DEFAULT_ACCOUNT: &str = "default";

#[derive(Debug, Default, Clone)]
pub struct Keys {
    accounts: Vec<String>,
    /// What the keys file sets over the flags' limits, by account.
    limits: Vec<Overrides>,
    keys: Vec<(Vec<u8>, AccountId, KeyId)>,
    next_id: KeyId,
}

#[derive(Debug)]
pub struct KeysFileError {
    pub line: usize,
    pub why: &'static str,
}

impl fmt::Display for KeysFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keys file line {}: {}", self.line, self.why)
    }
}

impl Keys {
    /// Adds `key` for `account` (created on first mention).
    pub fn add(&mut self, key: &str, account: &str) -> AccountId {
        let id = self.account(account);
        self.keys.push((key.as_bytes().to_vec(), id, self.next_id));
        self.next_id += 1;
        id
    }

    /// The keys after a reload: `default_key` and those of the keys file
    /// `text`. Accounts keep their ids; a key that still names the same
    /// account keeps its `KeyId`, so only streams of keys removed or moved
    /// to another account end.
    pub fn reloaded(&self, default_key: Option<&str>, text: &str) -> Result<Keys, KeysFileError> {
        // Limits as the file says now: an option taken out goes back to the flag's value.
        let limits = vec![Overrides::default(); self.accounts.len()];
        let mut new = Keys { accounts: self.accounts.clone(), limits, keys: Vec::new(), next_id: self.next_id };
        if let Some(key) = default_key {
            new.add(key, DEFAULT_ACCOUNT);
        }
        new.parse_file(text)?;
        for (key, account, id) in &mut new.keys {
            if let Some(&(_, _, old)) = self.keys.iter().find(|(k, a, _)| k == key && a == account) {
                *id = old;
            }
        }
        Ok(new)
    }

    /// The key is still configured.
    pub fn has(&self, id: KeyId) -> bool {
        self.keys.iter().any(|k| k.2 == id)
    }

    /// Keys and accounts with at least one key.
    pub fn counts(&self) -> (usize, usize) {
        let accounts = self.keys.iter().enumerate().filter(|&(i, k)| !self.keys[..i].iter().any(|e| e.1 == k.1)).count();
        (self.keys.len(), accounts)
    }

    /// The id of `account`, created if new.
    pub fn account(&mut self, account: &str) -> AccountId {
        match self.accounts.iter().position(|a| a == account) {
            Some(i) => i as AccountId,
            None => {
                self.accounts.push(account.to_string());
                self.limits.push(Overrides::default());
                (self.accounts.len() - 1) as AccountId
            }
        }
    }

    /// The account's limits: the flags' `base`, with what the keys file sets for it.
    pub fn limits(&self, account: AccountId, base: &Limits) -> Limits {
        self.limits.get(account as usize).map_or(*base, |o| o.over(base))
    }

    pub fn account_name(&self, id: AccountId) -> &str {
        &self.accounts[id as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses `KEY ACCOUNT [LIMIT=VALUE…]` lines; `#` starts a comment.
    /// The account's limits may be set on any of its lines (the last value
    /// given wins); an unknown one is an error, as a bad line is.
    pub fn parse_file(&mut self, text: &str) -> Result<(), KeysFileError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(key), Some(account)) = (words.next(), words.next()) else {
                return Err(KeysFileError { line: i + 1, why: "expected `KEY ACCOUNT`" });
            };
            let id = self.add(key, account) as usize;
            for word in words {
                self.limits[id].set(word).map_err(|why| KeysFileError { line: i + 1, why })?;
            }
        }
        Ok(())
    }

    /// The account of `presented`, and which key it is. Every key is
    /// compared in full, so the time taken does not tell how much of a key
    /// matched, nor which.
    pub fn lookup(&self, presented: &[u8]) -> Option<(AccountId, KeyId)> {
        let mut found = None;
        for (key, account, id) in &self.keys {
            if constant_time_eq(key, presented) {
                found = Some((*account, *id));
            }
        }
        found
    }
}

/// Equal without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `len` random characters of `[0-9A-Za-z]` from the OS's generator
/// (5.95 bits each, unbiased by rejection).
pub fn random_base62(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        crate::sys::os_random(&mut buf);
        for &b in &buf {
            // 248 = 4 * 62: bytes above it would favour the first letters.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_accounts_by_key() {
        let mut keys = Keys::default();
        keys.parse_file("# accounts\nk-alice alice\n\nk-bob bob # second\nk-alice2 alice\n").unwrap();
        let alice = keys.lookup(b"k-alice").unwrap().0;
        assert_eq!(keys.account_name(alice), "alice");
        assert_eq!(keys.lookup(b"k-alice2").map(|f| f.0), Some(alice));
        assert_eq!(keys.account_name(keys.lookup(b"k-bob").unwrap().0), "bob");
        for wrong in [&b"k-alic"[..], b"k-alicf", b"", b"k-alice "] {
            assert_eq!(keys.lookup(wrong), None);
        }
        let err = keys.parse_file("ok a\nlonely\n").unwrap_err();
        assert_eq!((err.line, err.why), (2, "expected `KEY ACCOUNT`"));
    }

    #[test]
    fn a_reload_keeps_accounts_and_unchanged_keys() {
        let mut keys = Keys::default();
        keys.add("dflt", DEFAULT_ACCOUNT);
        keys.parse_file("k-a alice\nk-b bob\nk-c carol\n").unwrap();
        let (alice, a) = keys.lookup(b"k-a").unwrap();
        let (_, b) = keys.lookup(b"k-b").unwrap();
        let (_, c) = keys.lookup(b"k-c").unwrap();
        let (_, d) = keys.lookup(b"dflt").unwrap();
        // k-b removed, k-c moved to alice, k-n added.
        let new = keys.reloaded(Some("dflt"), "k-a alice\nk-c alice\nk-n dave\n").unwrap();
        assert_eq!(new.lookup(b"k-a"), Some((alice, a)));
        assert_eq!(new.lookup(b"dflt").map(|f| f.1), Some(d));
        assert_eq!(new.lookup(b"k-b"), None);
        assert!(new.has(a) && !new.has(b) && !new.has(c));
        assert_eq!(new.lookup(b"k-c").map(|f| f.0), Some(alice));
        assert_eq!(new.account_name(new.lookup(b"k-n").unwrap().0), "dave");
        assert_eq!(new.account_name(keys.lookup(b"k-b").unwrap().0), "bob", "account ids are kept");
        assert_eq!(new.counts(), (4, 3));
        assert!(keys.reloaded(None, "lonely\n").is_err());
    }

    #[test]
    fn limits_follow_the_account_and_a_reload_replaces_them() {
        let base = Limits::default();
        let mut keys = Keys::default();
        keys.add("dflt", DEFAULT_ACCOUNT);
        keys.parse_file("k-a alice sources=3\nk-b bob\nk-a2 alice streams=4 sources=5\n").unwrap();
        let alice = keys.lookup(b"k-a").unwrap().0;
        let bob = keys.lookup(b"k-b").unwrap().0;
        assert_eq!((keys.limits(alice, &base).sources, keys.limits(alice, &base).streams), (Some(5), Some(4)), "the last value wins");
        assert_eq!(keys.limits(bob, &base), base);
        assert_eq!(keys.limits(99, &base), base, "an account the file never named");
        let new = keys.reloaded(Some("dflt"), "k-a alice\nk-b bob tokens=none\n").unwrap();
        assert_eq!(new.limits(alice, &base), base, "an option taken out goes back to the flag");
        assert_eq!(new.limits(bob, &base).tokens, None);
        let err = keys.reloaded(None, "k-a alice\nk-b bob sources=x\n").unwrap_err();
        assert_eq!((err.line, err.why), (2, "expected a count or none"));
        assert!(keys.reloaded(None, "k-a alice colour=red\n").unwrap_err().why.starts_with("unknown option"));
    }

    #[test]
    fn random_tokens_are_base62_and_differ() {
        let a = random_base62(22);
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_base62(22));
    }
}
