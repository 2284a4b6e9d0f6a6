//! The `--state-file` of the version before the storage engines: sources
//! and their retained events, written at a clean stop. Read once at start
//! and imported into an engine that holds no sources yet.
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
use std::io;
use std::path::Path;

use serde_json::value::RawValue;

use crate::engine::{SourceMeta, StoredSource};
use crate::registry::valid_name;
use crate::sse::EventId;

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
    /// (id, payload), oldest first.
    pub events: Vec<(EventId, Vec<u8>)>,
}

impl SavedSource {
    fn into_stored(self) -> StoredSource {
        let evicted = None;
        let meta = SourceMeta {
            retention: Default::default(),
            id: self.id,
            account: self.account,
            name: self.name,
            endpoint_key: self.endpoint_key,
            created_at: self.created_at,
            verify: None,
        };
        StoredSource { meta, events: self.events, last_id: Some(self.last_id), evicted, keys: Vec::new() }
    }
}

/// The `event` value of an envelope, as the compact JSON it was framed from.
fn payload_of(envelope: &str) -> Option<Vec<u8>> {
    let fields: std::collections::HashMap<String, &RawValue> = serde_json::from_str(envelope).ok()?;
    fields.get("event").map(|e| e.get().as_bytes().to_vec())
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

/// Reads a state file as sources to import; a missing file is nothing to import.
pub fn load(path: &Path) -> io::Result<Vec<StoredSource>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map(|saved| saved.into_iter().map(SavedSource::into_stored).collect())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("--state-file {}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::info!("--state-file {}: does not exist, nothing to import", path.display());
            Ok(Vec::new())
        }
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
                let payload = payload_of(envelope).ok_or_else(|| bad("envelope is not JSON with an event"))?;
                source.events.push((event_id, payload));
            }
            _ if line.is_empty() => {}
            _ => return Err(bad("unknown line")),
        }
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sources_and_payloads() {
        let text = "ssehub-state 1\nsource dc_x alice orders KEY 5 2000-4\n\
                    event dc_x 2000-3 {\"id\":\"2000-3\",\"indexed_at_ms\":2000,\"event\":{\"n\":[1,2]},\"metadata\":{}}\n";
        let saved = parse(text).unwrap();
        let stored = saved[0].clone().into_stored();
        assert_eq!((stored.meta.id.as_str(), stored.meta.account.as_str(), stored.meta.endpoint_key.as_str()), ("dc_x", "alice", "KEY"));
        assert_eq!(stored.events, [(EventId { ms: 2000, seq: 3 }, br#"{"n":[1,2]}"#.to_vec())]);
        assert_eq!(stored.last_id, Some(EventId { ms: 2000, seq: 4 }));
    }

    #[test]
    fn refuses_damaged_files() {
        let table: &[(&str, usize, &str)] = &[
            ("", 1, "not an ssehub state file"),
            ("ssehub-state 1\nsource dc_x a n k 1\n", 2, "a source line has 6 fields"),
            ("ssehub-state 1\nsource dc_x a bad! k 1 5-0\n", 2, "bad source"),
            ("ssehub-state 1\nevent dc_x 1-0 {}\n", 2, "event of an unknown source"),
            ("ssehub-state 1\nsource dc_x a n k 1 5-0\nevent dc_x 1-0 {\n", 3, "envelope is not JSON with an event"),
            ("ssehub-state 1\nsource dc_x a n k 1 5-0\nevent dc_x 2-0 {\"event\":1}\nevent dc_x 1-0 {}\n", 4, "event ids out of order"),
            ("ssehub-state 1\nsource dc_x a n k 1 5-0\nevent dc_x 6-0 {\"event\":1}\n", 3, "event ids out of order"),
            ("ssehub-state 1\nwhat\n", 2, "unknown line"),
        ];
        for (text, line, why) in table {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.why), (*line, *why), "{text:?}");
        }
    }
}
