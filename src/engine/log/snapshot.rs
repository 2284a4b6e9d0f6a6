//! The log engine's sources and their snapshots, taken without stalling
//! the reactor however many sources and tokens there are.
//!
//! A compaction starts a new active segment and raises the epoch. From
//! then on the reactor hands each source of an older epoch to the
//! compaction thread as a [`Piece`]: its meta, the shared frames of its
//! events, its idempotency keys and live tokens, copied cheaply (an event
//! is a reference count). It does so a slice of time per turn, walking
//! the sources in order, and at once for a source about to change (a
//! change to a source not yet handed over hands it over first). So the
//! snapshot holds every source exactly as it was when the new segment
//! began, and the new segment holds every change since. The thread
//! encodes the pieces and writes them (temporary file, fsync, rename,
//! fsync of the dir), then deletes the older segments.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::record::{self, Record};
use super::{MAGIC, create_file, segment_path, segments, sync_dir};
use crate::engine::{IdemKey, Rings, SourceKey, SourceMeta};
use crate::sse::{Event, EventId};

/// The most time a turn spends handing sources over.
const SLICE: Duration = Duration::from_millis(1);
/// Pieces sent to the thread at once.
const BATCH: usize = 256;

/// What the log keeps of a source besides its ring.
pub struct Src {
    pub meta: SourceMeta,
    /// Its live subscribe tokens (stored form, expiry in unix ms).
    pub tokens: Vec<(String, u64)>,
    /// Its place in `Sources::order`.
    at: usize,
    /// Below the current epoch: not yet handed to the running snapshot.
    epoch: u64,
}

/// One source as the snapshot has it.
pub struct Piece {
    meta: SourceMeta,
    last_id: EventId,
    evicted: Option<EventId>,
    events: Vec<Event>,
    keys: Vec<(IdemKey, EventId)>,
    tokens: Vec<(String, u64)>,
}

/// From the reactor to the compaction thread: messages in order, and
/// whether the reactor let go of its end (a std channel would do, at
/// about ten times the code in the binary).
#[derive(Default)]
pub struct Pipe {
    queue: Mutex<(VecDeque<Msg>, bool)>,
    ready: Condvar,
}

impl Pipe {
    fn send(&self, msg: Msg) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).0.push_back(msg);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_one();
    }

    /// The next message; `None` once the reactor let go and none is left.
    pub fn recv(&self) -> Option<Msg> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(msg) = q.0.pop_front() {
                return Some(msg);
            }
            if q.1 {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

pub enum Msg {
    Pieces(Vec<Piece>),
    /// Every source is handed over: the snapshot is whole.
    Done,
}

struct Capture {
    /// The next place in `order` to look at.
    cursor: usize,
    /// Sources looked at per turn at most (tests: a snapshot over many turns).
    per_step: usize,
    /// Tokens expired by then are left out.
    now_ms: u64,
    batch: Vec<Piece>,
    out: Arc<Pipe>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.out.close();
    }
}

/// The sources, in an order a snapshot walks, and the running snapshot.
#[derive(Default)]
pub struct Sources {
    map: HashMap<SourceKey, Src>,
    order: Vec<SourceKey>,
    epoch: u64,
    capture: Option<Capture>,
    /// `Capture::per_step` of the next snapshot (0: no bound).
    pub per_step: usize,
}

impl Sources {
    pub fn get(&self, key: &SourceKey) -> Option<&Src> {
        self.map.get(key)
    }

    /// The source, to change it: handed to a running snapshot first.
    pub fn get_mut(&mut self, key: SourceKey, rings: &Rings) -> Option<&mut Src> {
        self.touch(key, rings);
        self.map.get_mut(&key)
    }

    /// A source is about to change (in its ring too): a running snapshot
    /// gets it as it is, if it has not yet.
    pub fn touch(&mut self, key: SourceKey, rings: &Rings) {
        let Some(capture) = &mut self.capture else { return };
        let Some(src) = self.map.get_mut(&key).filter(|s| s.epoch < self.epoch) else { return };
        src.epoch = self.epoch;
        capture.take(key, src, rings);
    }

    /// A source made (or put back) now: a running snapshot leaves it out,
    /// as the new segment has it.
    pub fn insert(&mut self, key: SourceKey, meta: SourceMeta, tokens: Vec<(String, u64)>) {
        let epoch = self.epoch;
        match self.map.get_mut(&key) {
            Some(src) => {
                (src.meta, src.tokens, src.epoch) = (meta, tokens, epoch);
            }
            None => {
                self.map.insert(key, Src { meta, tokens, at: self.order.len(), epoch });
                self.order.push(key);
            }
        }
    }

    /// Takes a source out (after `touch`). The last in `order` moves into
    /// its place: if that is behind the walk, it is handed over now.
    pub fn remove(&mut self, key: SourceKey, rings: &Rings) -> Option<Src> {
        self.touch(key, rings);
        let src = self.map.remove(&key)?;
        self.order.swap_remove(src.at);
        if let Some(&moved) = self.order.get(src.at) {
            if let Some(m) = self.map.get_mut(&moved) {
                m.at = src.at;
            }
            if self.capture.as_ref().is_some_and(|c| src.at < c.cursor) {
                self.touch(moved, rings);
            }
        }
        Some(src)
    }

    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Starts a snapshot of every source as it is now, handed to `out`.
    pub fn start_capture(&mut self, now_ms: u64, out: Arc<Pipe>) {
        self.epoch += 1;
        let per_step = if self.per_step == 0 { usize::MAX } else { self.per_step };
        self.capture = Some(Capture { cursor: 0, per_step, now_ms, batch: Vec::new(), out });
    }

    /// Hands sources over for a slice of time; sends `Done` after the last.
    pub fn step(&mut self, rings: &Rings) {
        let Some(capture) = &mut self.capture else { return };
        let started = Instant::now();
        let mut looked = 0;
        while let Some(&key) = self.order.get(capture.cursor) {
            if looked == capture.per_step {
                return;
            }
            looked += 1;
            capture.cursor += 1;
            if let Some(src) = self.map.get_mut(&key).filter(|s| s.epoch < self.epoch) {
                src.epoch = self.epoch;
                capture.take(key, src, rings);
            }
            if capture.cursor % 32 == 0 && started.elapsed() >= SLICE {
                return;
            }
        }
        capture.send();
        capture.out.send(Msg::Done);
        self.capture = None;
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&SourceKey, &Src)> {
        self.map.iter()
    }

    /// Ends a running snapshot unfinished (the thread then drops its file).
    pub fn abandon_capture(&mut self) {
        self.capture = None;
    }
}

impl Capture {
    fn take(&mut self, key: SourceKey, src: &mut Src, rings: &Rings) {
        let (Some(history), Some(last_id)) = (rings.history(key), rings.last_id(key)) else { return };
        let now_ms = self.now_ms;
        src.tokens.retain(|t| t.1 > now_ms);
        self.batch.push(Piece {
            meta: src.meta.clone(),
            last_id,
            evicted: history.evicted(),
            events: history.iter().cloned().collect(),
            keys: rings.keys(key).into_iter().flat_map(|k| k.iter()).collect(),
            tokens: src.tokens.clone(),
        });
        if self.batch.len() >= BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        if !self.batch.is_empty() {
            self.out.send(Msg::Pieces(std::mem::take(&mut self.batch)));
        }
    }
}

/// The records that begin a snapshot.
pub fn encode_head(default_key: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    Record::Snapshot.encode(out);
    if let Some(key) = default_key {
        Record::DefaultKey { key }.encode(out);
    }
}

/// One source's records.
pub fn encode_piece(p: &Piece, out: &mut Vec<u8>) {
    let m = &p.meta;
    record::encode_meta(m, out);
    Record::SourceState { source: &m.id, last_id: p.last_id, evicted: p.evicted }.encode(out);
    for event in &p.events {
        Record::Event { source: &m.id, id: event.id, payload: event_payload(event), key: None }.encode(out);
    }
    // Kept 24 hours whether or not their events still are.
    for (key, id) in &p.keys {
        Record::Key { source: &m.id, key: *key, id: *id }.encode(out);
    }
    for (token, expires_at) in &p.tokens {
        Record::Token { token, source: &m.id, expires_at: *expires_at }.encode(out);
    }
}

/// The payload an event was framed from: its envelope's `event` value.
pub fn event_payload(event: &Event) -> &[u8] {
    let envelope = event.envelope();
    // `{"id":"…","indexed_at_ms":…,"event":` <payload> `,"metadata":{…}}`;
    // the metadata is ours and holds no `,"metadata":`, so the last one ends the payload.
    let start = envelope.windows(9).position(|w| w == b",\"event\":").map_or(0, |i| i + 9);
    let end = envelope.windows(12).rposition(|w| w == b",\"metadata\":").unwrap_or(envelope.len());
    &envelope[start..end]
}

/// What the compaction thread is given.
pub struct Job {
    pub dir: PathBuf,
    /// The snapshot's segment number.
    pub n: u64,
    pub default_key: Option<String>,
    /// The segment that was active, made durable first (`everysec`: its
    /// last second may not be yet; the dir, for the new segment's entry).
    pub sync_first: Option<std::sync::Arc<File>>,
    pub pieces: Arc<Pipe>,
}

/// The compaction thread: writes the snapshot as segment `n` from the
/// pieces as they come (temporary file, fsync, rename, fsync of the dir),
/// then deletes the segments before it. Its size.
pub fn write(job: Job) -> io::Result<u64> {
    if let Some(old) = &job.sync_first {
        old.sync_data()?;
        sync_dir(&job.dir)?;
    }
    let tmp = job.dir.join(format!("{:020}.tmp", job.n));
    let result = write_tmp(&tmp, &job);
    let len = match result {
        Ok(len) => len,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, segment_path(&job.dir, job.n))?;
    sync_dir(&job.dir)?;
    for old in segments(&job.dir)?.into_iter().filter(|&m| m < job.n) {
        std::fs::remove_file(segment_path(&job.dir, old))?;
    }
    sync_dir(&job.dir)?;
    Ok(len)
}

fn write_tmp(tmp: &Path, job: &Job) -> io::Result<u64> {
    let f = create_file(tmp, false)?;
    let mut w = BufWriter::with_capacity(256 * 1024, &f);
    let mut buf = Vec::new();
    encode_head(job.default_key.as_deref(), &mut buf);
    let mut len = 0;
    loop {
        w.write_all(&buf)?;
        len += buf.len() as u64;
        buf.clear();
        match job.pieces.recv() {
            Some(Msg::Pieces(pieces)) => {
                for p in &pieces {
                    encode_piece(p, &mut buf);
                }
            }
            Some(Msg::Done) => break,
            None => return Err(io::Error::other("the server stopped before the snapshot was whole")),
        }
    }
    w.flush()?;
    drop(w);
    f.sync_all()?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conformance::TempDir;
    use crate::engine::log::tests::waker;
    use crate::engine::log::{Fsync, Log, open, recover};
    use crate::engine::{Bounds, Engine, Op, Recovered, StoredToken};

    /// A whole snapshot taken as the reactor takes one, in bytes.
    fn snapshot_of(log: &mut Log, now_ms: u64) -> Vec<u8> {
        let pipe = Arc::new(Pipe::default());
        log.sources.start_capture(now_ms, pipe.clone());
        while log.sources.capturing() {
            log.sources.step(&log.rings);
        }
        let mut out = Vec::new();
        encode_head(log.default_key.as_deref(), &mut out);
        while let Some(msg) = pipe.recv() {
            if let Msg::Pieces(pieces) = msg {
                pieces.iter().for_each(|p| encode_piece(p, &mut out));
            }
        }
        out
    }

    /// What a restart would recover from `log`'s snapshot alone.
    fn recovered_from_snapshot(log: &mut Log, now_ms: u64, bounds: Bounds) -> Recovered {
        let mut state = recover::State::new(bounds);
        let bytes = snapshot_of(log, now_ms);
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let (record, len) = record::decode(&bytes[at..]).unwrap();
            state.apply(record);
            at += len;
        }
        state.into_recovered()
    }

    #[test]
    fn snapshots_keep_live_tokens_and_drop_expired_ones() {
        let dir = TempDir::new();
        let mut log = open(&dir.0, Fsync::Never, Bounds::count(10), false).unwrap().start(1_000, waker());
        let meta = crate::engine::conformance::meta(1);
        let mut tickets = vec![log.submit(Op::Create { key: 1, meta: &meta }, 2_000)];
        for (token, expires_at) in [("st_live", 10_000), ("st_expired", 5_000)] {
            let t = StoredToken { token: token.into(), source_id: meta.id.clone(), expires_at };
            tickets.push(log.submit(Op::Token { key: 1, token: &t }, 2_000));
        }
        log.flush();
        let recovered = recovered_from_snapshot(&mut log, 6_000, Bounds::count(10));
        let tokens: Vec<String> = recovered.tokens.into_iter().map(|t| t.token).collect();
        assert_eq!(tokens, ["st_live"]);
    }

    #[test]
    fn snapshots_keep_idempotency_keys_of_evicted_events() {
        let dir = TempDir::new();
        let mut log = open(&dir.0, Fsync::Never, Bounds::count(1), false).unwrap().start(1_000, waker());
        log.submit(Op::Create { key: 1, meta: &crate::engine::conformance::meta(1) }, 2_000);
        let idem = IdemKey::new(b"key", b"1");
        log.submit(Op::Append { key: 1, payload: b"1", idem: Some(idem) }, 2_000);
        log.submit(Op::Append { key: 1, payload: b"2", idem: None }, 2_000);
        log.flush();
        log.poll(&mut Vec::new());
        let source = recovered_from_snapshot(&mut log, 3_000, Bounds::count(1)).sources.remove(0);
        assert_eq!(source.events.len(), 1, "the keyed event is evicted");
        assert_eq!(source.keys.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [idem], "its key is not");
    }

    #[test]
    fn payloads_come_back_from_frames() {
        for payload in [&b"1"[..], b"{\"event\":{\"metadata\":2},\"x\":\",\\\"metadata\\\":\"}", b"[]", b"\"s\""] {
            let event = Event::new(EventId { ms: 5, seq: 1 }, "dc_x", payload, &mut Vec::new());
            assert_eq!(event_payload(&event), payload);
        }
    }
}
