//! Sources and their retained events across a clean restart, in
//! `--state-file`: written when the server stops (to a temporary file, then
//! renamed over the old one), read back when it starts. A crash keeps what
//! the last clean stop wrote.
//!
//! The format is lines of words; every field is a word (names, ids and keys
//! have no spaces) except the envelope, which is compact JSON to the end of
//! its line:
//!
//! ```text
//! ssehub-state 1
//! source <id> <account> <name> <endpoint-key> <created-at-ms> <last-event-id>
//! event <source-id> <event-id> <envelope JSON>
//! ```

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::auth::Keys;
use crate::source::{Registry, Source, valid_name};
use crate::sse::{Event, EventId};

const MAGIC: &str = "ssehub-state 1";

/// A source as saved: plain data, `Send`, before the registry exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSource {
    pub id: String,
    pub account: String,
    pub name: String,
    pub endpoint_key: String,
    pub created_at: u64,
    pub last_id: EventId,
    /// Oldest first.
    pub events: Vec<(EventId, String)>,
}

#[derive(Debug)]
pub struct StateError {
    pub line: usize,
    pub why: &'static str,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

/// Reads a state file; a missing file is an empty state (the first start).
pub fn load(path: &Path) -> io::Result<Vec<SavedSource>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("--state-file {}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(e.kind(), format!("--state-file {}: {e}", path.display()))),
    }
}

pub fn parse(text: &str) -> Result<Vec<SavedSource>, StateError> {
    let mut sources: Vec<SavedSource> = Vec::new();
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, MAGIC)) => {}
        _ => return Err(StateError { line: 1, why: "not an ssehub state file" }),
    }
    for (i, line) in lines {
        let bad = |why| StateError { line: i + 1, why };
        let id = |t: &str| t.parse::<EventId>().map_err(|_| bad("bad event id"));
        match line.split_once(' ') {
            Some(("source", rest)) => {
                let w: Vec<&str> = rest.split(' ').collect();
                let [source_id, account, name, endpoint_key, created_at, last_id] = w[..] else {
                    return Err(bad("a source line has 6 fields"));
                };
                if !valid_name(name) || !source_id.starts_with("dc_") || endpoint_key.is_empty() || account.is_empty() {
                    return Err(bad("bad source"));
                }
                sources.push(SavedSource {
                    id: source_id.to_string(),
                    account: account.to_string(),
                    name: name.to_string(),
                    endpoint_key: endpoint_key.to_string(),
                    created_at: created_at.parse().map_err(|_| bad("bad creation time"))?,
                    last_id: id(last_id)?,
                    events: Vec::new(),
                });
            }
            Some(("event", rest)) => {
                let mut w = rest.splitn(3, ' ');
                let (Some(source_id), Some(event_id), Some(envelope)) = (w.next(), w.next(), w.next()) else {
                    return Err(bad("an event line has 3 fields"));
                };
                let source = sources.iter_mut().rev().find(|s| s.id == source_id).ok_or_else(|| bad("event of an unknown source"))?;
                let event_id = id(event_id)?;
                if source.events.last().is_some_and(|(last, _)| *last >= event_id) || event_id > source.last_id {
                    return Err(bad("event ids out of order"));
                }
                serde_json::from_str::<serde::de::IgnoredAny>(envelope).map_err(|_| bad("envelope is not JSON"))?;
                source.events.push((event_id, envelope.to_string()));
            }
            _ if line.is_empty() => {}
            _ => return Err(bad("unknown line")),
        }
    }
    Ok(sources)
}

/// Writes every source and its history, atomically.
pub fn save(path: &Path, registry: &Registry, keys: &Keys) -> io::Result<()> {
    let mut out = Vec::new();
    writeln!(out, "{MAGIC}")?;
    for s in registry.sources() {
        write_source(&mut out, s, keys.account_name(s.account))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&out)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn write_source(out: &mut Vec<u8>, s: &Source, account: &str) -> io::Result<()> {
    writeln!(out, "source {} {} {} {} {} {}", s.id, account, s.name, s.endpoint_key, s.created_at, s.last_id())?;
    for event in s.history.after(EventId::default()) {
        write!(out, "event {} {} ", s.id, event.id)?;
        out.extend_from_slice(event.envelope());
        out.push(b'\n');
    }
    Ok(())
}

/// Puts saved sources into a new registry.
pub fn restore(registry: &mut Registry, keys: &mut Keys, saved: Vec<SavedSource>) {
    for s in saved {
        let account = keys.account(&s.account);
        let events: Vec<Event> = s.events.iter().map(|(id, envelope)| Event::from_envelope(*id, envelope.as_bytes())).collect();
        registry.restore(account, &s, events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_sources_and_history() {
        let mut keys = Keys::default();
        let alice = keys.add("k", "alice");
        let mut r = Registry::new(3, 1000);
        let a = r.create(alice, "orders", 5).unwrap();
        r.create(alice, "empty", 6).unwrap();
        for n in 0..5u64 {
            r.emit(a, format!("{{\"n\":{n}}}").as_bytes(), 2000 + n);
        }
        let dir = std::env::temp_dir().join(format!("ssehub-state-test-{}", std::process::id()));
        save(&dir, &r, &keys).unwrap();
        let saved = load(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(saved.len(), 2);
        assert_eq!(saved[0].events.len(), 3, "only what history retained");

        let mut keys2 = Keys::default();
        let mut r2 = Registry::new(3, 9000);
        restore(&mut r2, &mut keys2, saved);
        let a2 = r2.find(keys2.account("alice"), "orders").unwrap();
        let (old, new) = (r.get(a), r2.get(a2));
        assert_eq!((&old.id, &old.endpoint_key, old.created_at), (&new.id, &new.endpoint_key, new.created_at));
        let frames = |s: &Source| s.history.after(EventId::default()).map(|e| e.frame.clone()).collect::<Vec<_>>();
        assert_eq!(frames(old), frames(new), "the same frames, byte for byte");
        assert!(r2.emit(a2, b"1", 1) > old.last_id(), "ids keep increasing even if the clock stepped back");
    }

    #[test]
    fn refuses_damaged_files() {
        let table: &[(&str, usize, &str)] = &[
            ("", 1, "not an ssehub state file"),
            ("ssehub-state 1\nsource dc_x a n k 1\n", 2, "a source line has 6 fields"),
            ("ssehub-state 1\nsource dc_x a bad! k 1 5-0\n", 2, "bad source"),
            ("ssehub-state 1\nevent dc_x 1-0 {}\n", 2, "event of an unknown source"),
            ("ssehub-state 1\nsource dc_x a n k 1 5-0\nevent dc_x 1-0 {\n", 3, "envelope is not JSON"),
            ("ssehub-state 1\nsource dc_x a n k 1 5-0\nevent dc_x 2-0 {}\nevent dc_x 1-0 {}\n", 4, "event ids out of order"),
            ("ssehub-state 1\nsource dc_x a n k 1 5-0\nevent dc_x 6-0 {}\n", 3, "event ids out of order"),
            ("ssehub-state 1\nwhat\n", 2, "unknown line"),
        ];
        for (text, line, why) in table {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.why), (*line, *why), "{text:?}");
        }
    }
}
