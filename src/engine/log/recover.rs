//! Recovery: the segments of a data dir read in order into sources, their
//! newest events and the kept key. A bad record at the very end of the
//! newest segment (no good record after it: a write cut short by a crash)
//! is cut off; damage anywhere else refuses the start, unless `repair`,
//! which cuts there and goes on.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use log::warn;

use super::record::{self, Bad, Record};
use super::{MAGIC, segment_path, segments};
use crate::engine::{Bounds, IdemKey, Recovered, SourceMeta, StoredSource, StoredToken};
use crate::sse::EventId;
use crate::verify::Verify;

struct Source {
    meta: SourceMeta,
    events: VecDeque<(EventId, Vec<u8>)>,
    last_id: Option<EventId>,
    evicted: Option<EventId>,
    keys: crate::engine::Remembered,
    /// Its tokens given (some may be revoked since): what a delete takes out.
    tokens: Vec<String>,
}

impl Source {
    /// Keeps the newest its count bound allows (the bytes and age bounds
    /// are applied by the ring the events are restored into, and its timer).
    fn bound(&mut self, defaults: Bounds) {
        let max = self.meta.retention.effective(defaults).max_events;
        while self.events.len() > max {
            self.evicted = self.events.pop_front().map(|(id, _)| id).max(self.evicted);
        }
    }
}

/// Sources as the records so far describe them.
pub struct State {
    /// A source's bounds where its retention sets none.
    defaults: Bounds,
    sources: HashMap<String, Source>,
    default_key: Option<String>,
    /// By token; a revocation finds its token, a delete its source's
    /// (`Source::tokens`), without a walk of them all.
    tokens: HashMap<String, StoredToken>,
}

impl State {
    pub fn new(defaults: Bounds) -> State {
        State { defaults, sources: HashMap::new(), default_key: None, tokens: HashMap::new() }
    }

    pub fn apply(&mut self, record: Record<'_>) {
        match record {
            Record::Snapshot => {
                self.sources.clear();
                self.tokens.clear();
            }
            Record::Source { id, account, name, endpoint_key, created_at } => {
                let meta = SourceMeta {
                    retention: Default::default(),
                    id: id.to_string(),
                    account: account.to_string(),
                    name: name.to_string(),
                    endpoint_key: endpoint_key.to_string(),
                    created_at,
                    verify: None,
                };
                // A record of a source already there keeps its tokens' index.
                let tokens = self.sources.remove(id).map(|s| s.tokens).unwrap_or_default();
                self.sources.insert(
                    id.to_string(),
                    Source { meta, events: VecDeque::new(), last_id: None, evicted: None, keys: Default::default(), tokens },
                );
            }
            Record::Deleted { id } => {
                for token in self.sources.remove(id).map(|s| s.tokens).unwrap_or_default() {
                    if self.tokens.get(&token).is_some_and(|t| t.source_id == id) {
                        self.tokens.remove(&token);
                    }
                }
            }
            Record::Key { source, key, id } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                s.keys.insert(key, id, self.defaults.max_keys);
            }
            Record::Event { source, id, payload, key } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                if let Some(k) = key {
                    s.keys.insert(k, id, self.defaults.max_keys);
                }
                s.last_id = s.last_id.max(Some(id));
                s.events.push_back((id, payload.to_vec()));
                s.bound(self.defaults);
            }
            Record::Retention { source, retention, evicted } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                s.meta.retention = retention;
                if let Some(up_to) = evicted {
                    s.events.retain(|(id, _)| *id > up_to);
                }
                s.evicted = s.evicted.max(evicted);
                s.bound(self.defaults);
            }
            Record::Cleared { source, up_to } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                s.events.retain(|(id, _)| *id > up_to);
                s.evicted = s.evicted.max(Some(up_to));
            }
            Record::SourceState { source, last_id, evicted } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                s.last_id = s.last_id.max(Some(last_id));
                s.evicted = s.evicted.max(evicted);
            }
            Record::DefaultKey { key } => self.default_key = Some(key.to_string()),
            Record::Verify { source, settings } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                s.meta.verify = match settings {
                    b"" => None,
                    json => Verify::from_stored(json).or_else(|| {
                        // Written by this code, so only a newer version's scheme gets here.
                        warn!("source {source}: verify settings not understood; the source is kept without them");
                        None
                    }),
                };
            }
            Record::Token { token, source, expires_at } => {
                if let Some(s) = self.sources.get_mut(source) {
                    s.tokens.push(token.to_string());
                    let stored = StoredToken { token: token.to_string(), source_id: source.to_string(), expires_at };
                    self.tokens.insert(token.to_string(), stored);
                }
            }
            Record::TokenRevoked { token } => {
                self.tokens.remove(token);
            }
        }
    }

    pub fn into_recovered(self) -> Recovered {
        let sources = self
            .sources
            .into_values()
            .map(|s| {
                let keys: Vec<(IdemKey, EventId)> = s.keys.iter().collect();
                StoredSource { meta: s.meta, events: s.events.into(), last_id: s.last_id, evicted: s.evicted, keys }
            })
            .collect();
        Recovered { sources, default_key: self.default_key, tokens: self.tokens.into_values().collect() }
    }
}

/// What recovery found besides the state.
pub struct Scan {
    pub state: State,
    /// Segment numbers and sizes on disk, oldest first.
    pub segments: Vec<(u64, u64)>,
    pub bytes_read: u64,
    /// Bytes cut (torn tail, or repaired damage).
    pub cut_bytes: u64,
}

/// A record that is not the end of its segment: a good record starts later.
fn good_record_after(buf: &[u8], from: usize) -> bool {
    (from + 1..buf.len()).any(|p| record::decode(&buf[p..]).is_ok())
}

/// Reads every segment of `dir`; cuts what must be cut (truncating the file).
pub fn scan(dir: &Path, defaults: Bounds, repair: bool) -> Result<Scan, String> {
    let numbers = segments(dir).map_err(|e| format!("data dir {}: {e}", dir.display()))?;
    let mut scan = Scan { state: State::new(defaults), segments: Vec::new(), bytes_read: 0, cut_bytes: 0 };
    for (i, &n) in numbers.iter().enumerate() {
        let path = segment_path(dir, n);
        let buf = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        scan.bytes_read += buf.len() as u64;
        let newest = i + 1 == numbers.len();
        let good = read_segment(&buf, &mut scan.state);
        let len = match good {
            Ok(()) => buf.len(),
            Err((at, why)) => {
                let tail = newest && !good_record_after(&buf, at);
                if !tail && !repair {
                    return Err(format!(
                        "data dir damaged: {} at offset {at} ({why}); start with --repair to cut it there",
                        path.display()
                    ));
                }
                let cut = buf.len() - at;
                if tail {
                    warn!("{}: cut a torn tail of {cut} bytes at offset {at} ({why})", path.display());
                } else {
                    warn!("--repair: {}: cut {cut} bytes at offset {at} ({why})", path.display());
                }
                cut_file(&path, at as u64)?;
                scan.cut_bytes += cut as u64;
                at
            }
        };
        scan.segments.push((n, len as u64));
    }
    Ok(scan)
}

/// Applies a segment's records; on a bad one, its offset and why.
fn read_segment(buf: &[u8], state: &mut State) -> Result<(), (usize, &'static str)> {
    if buf.len() < MAGIC.len() {
        return Err((0, "short header"));
    }
    if &buf[..MAGIC.len()] != MAGIC {
        return Err((0, "not an ssehub log segment"));
    }
    let mut at = MAGIC.len();
    while at < buf.len() {
        match record::decode(&buf[at..]) {
            Ok((record, len)) => {
                state.apply(record);
                at += len;
            }
            Err(Bad::Short) => return Err((at, "record cut short")),
            Err(Bad::Corrupt) => return Err((at, "bad checksum or record")),
        }
    }
    Ok(())
}

fn cut_file(path: &PathBuf, len: u64) -> Result<(), String> {
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // A segment cut inside its header is rewritten with a whole one.
    if len < MAGIC.len() as u64 {
        file.set_len(0).and_then(|_| std::io::Write::write_all(&mut &file, MAGIC)).map_err(|e| format!("{}: {e}", path.display()))?;
    } else {
        file.set_len(len).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    file.sync_all().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    //! The torn-write matrix: a segment cut at every byte offset of its
    //! last two records, and one bit flipped in each record, against an
    //! oracle that applies the records that survive.

    use super::*;
    use crate::engine::conformance::TempDir;

    const HISTORY: usize = 3;

    fn id(ms: u64, seq: u64) -> EventId {
        EventId { ms, seq }
    }

    fn records() -> Vec<Record<'static>> {
        let source = |id, name| Record::Source { id, account: "default", name, endpoint_key: "k", created_at: 7 };
        let event = |source, ms, payload| Record::Event { source, id: id(ms, 0), payload, key: None };
        vec![
            Record::DefaultKey { key: "sk_kept" },
            source("dc_a", "a"),
            event("dc_a", 1, &b"1"[..]),
            source("dc_b", "b"),
            event("dc_a", 2, b"[2]"),
            event("dc_b", 3, b"{\"n\":3}"),
            event("dc_a", 4, b"4"),
            event("dc_a", 5, b"\"five\""),
            Record::Cleared { source: "dc_b", up_to: id(3, 0) },
            Record::SourceState { source: "dc_a", last_id: id(9, 0), evicted: Some(id(1, 0)) },
            event("dc_b", 10, b"10"),
            Record::Deleted { id: "dc_a" },
            event("dc_b", 11, b"{\"last\":true}"),
        ]
    }

    /// What the first `n` records recover to, in a comparable form.
    fn oracle(n: usize) -> String {
        let mut state = State::new(Bounds::count(HISTORY));
        records().into_iter().take(n).for_each(|r| state.apply(r));
        normal(state.into_recovered())
    }

    fn normal(recovered: Recovered) -> String {
        let mut sources: Vec<String> = recovered.sources.iter().map(|s| format!("{s:?}")).collect();
        sources.sort();
        format!("{:?} {sources:?}", recovered.default_key)
    }

    /// The segment's bytes and where each record starts (and the end).
    fn segment() -> (Vec<u8>, Vec<usize>) {
        let mut bytes = MAGIC.to_vec();
        let mut starts = Vec::new();
        for r in records() {
            starts.push(bytes.len());
            r.encode(&mut bytes);
        }
        starts.push(bytes.len());
        (bytes, starts)
    }

    /// Writes `bytes` as the only segment of a fresh dir and scans it.
    fn scan_bytes(bytes: &[u8], repair: bool) -> (Result<Scan, String>, Vec<u8>) {
        let dir = TempDir::new();
        let path = segment_path(&dir.0, 1);
        std::fs::write(&path, bytes).unwrap();
        let result = scan(&dir.0, Bounds::count(HISTORY), repair);
        (result, std::fs::read(&path).unwrap())
    }

    #[test]
    fn a_cut_anywhere_in_the_last_two_records_recovers_the_exact_prefix() {
        let (bytes, starts) = segment();
        let n = records().len();
        for cut in starts[n - 2]..=bytes.len() {
            let whole = starts.iter().filter(|&&s| s <= cut).count() - 1;
            let (result, left) = scan_bytes(&bytes[..cut], false);
            let scan = result.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(normal(scan.state.into_recovered()), oracle(whole), "cut at {cut}");
            assert_eq!(scan.cut_bytes as usize, cut - starts[whole], "cut at {cut}");
            assert_eq!(left.len(), starts[whole], "the file is cut back to the last whole record (cut at {cut})");
        }
    }

    #[test]
    fn a_flipped_bit_is_a_torn_tail_in_the_last_record_and_damage_before_it() {
        let (bytes, starts) = segment();
        let n = records().len();
        for r in 0..n {
            for at in starts[r]..starts[r + 1] {
                for bit in [0, 3, 7] {
                    let mut damaged = bytes.clone();
                    damaged[at] ^= 1 << bit;
                    let (result, _) = scan_bytes(&damaged, false);
                    let (repaired, _) = scan_bytes(&damaged, true);
                    let repaired = repaired.unwrap_or_else(|e| panic!("--repair, record {r} byte {at}: {e}"));
                    assert_eq!(normal(repaired.state.into_recovered()), oracle(r), "--repair, record {r} byte {at}");
                    if r + 1 == n {
                        let scan = result.unwrap_or_else(|e| panic!("the last record, byte {at}: {e}"));
                        assert_eq!(normal(scan.state.into_recovered()), oracle(r), "the last record, byte {at}");
                    } else {
                        let e = result.err().unwrap_or_else(|| panic!("record {r} byte {at} bit {bit}: not refused"));
                        assert!(e.contains(&format!("at offset {}", starts[r])), "record {r} byte {at}: {e}");
                    }
                }
            }
        }
    }
}
