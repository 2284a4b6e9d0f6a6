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
use crate::engine::{Recovered, SourceMeta, StoredSource, StoredToken};
use crate::sse::EventId;

struct Source {
    meta: SourceMeta,
    events: VecDeque<(EventId, Vec<u8>)>,
    last_id: Option<EventId>,
    evicted: Option<EventId>,
}

/// Sources as the records so far describe them.
pub struct State {
    history: usize,
    sources: HashMap<String, Source>,
    default_key: Option<String>,
    /// Few (compaction keeps only live ones), so a list.
    tokens: Vec<StoredToken>,
}

impl State {
    pub fn new(history: usize) -> State {
        State { history, sources: HashMap::new(), default_key: None, tokens: Vec::new() }
    }

    pub fn apply(&mut self, record: Record<'_>) {
        match record {
            Record::Snapshot => {
                self.sources.clear();
                self.tokens.clear();
            }
            Record::Source { id, account, name, endpoint_key, created_at } => {
                let meta = SourceMeta {
                    id: id.to_string(),
                    account: account.to_string(),
                    name: name.to_string(),
                    endpoint_key: endpoint_key.to_string(),
                    created_at,
                };
                self.sources.insert(id.to_string(), Source { meta, events: VecDeque::new(), last_id: None, evicted: None });
            }
            Record::Deleted { id } => {
                self.sources.remove(id);
                self.tokens.retain(|t| t.source_id != id);
            }
            Record::Event { source, id, payload } => {
                let Some(s) = self.sources.get_mut(source) else { return };
                s.last_id = s.last_id.max(Some(id));
                s.events.push_back((id, payload.to_vec()));
                while s.events.len() > self.history {
                    s.evicted = s.events.pop_front().map(|(id, _)| id).max(s.evicted);
                }
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
            Record::Token { token, source, expires_at } => {
                if self.sources.contains_key(source) {
                    self.tokens.push(StoredToken { token: token.to_string(), source_id: source.to_string(), expires_at });
                }
            }
            Record::TokenRevoked { token } => self.tokens.retain(|t| t.token != token),
        }
    }

    pub fn into_recovered(self) -> Recovered {
        let sources = self
            .sources
            .into_values()
            .map(|s| StoredSource { meta: s.meta, events: s.events.into(), last_id: s.last_id, evicted: s.evicted })
            .collect();
        Recovered { sources, default_key: self.default_key, tokens: self.tokens }
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
pub fn scan(dir: &Path, history: usize, repair: bool) -> Result<Scan, String> {
    let numbers = segments(dir).map_err(|e| format!("data dir {}: {e}", dir.display()))?;
    let mut scan = Scan { state: State::new(history), segments: Vec::new(), bytes_read: 0, cut_bytes: 0 };
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
