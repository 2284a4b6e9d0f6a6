//! The `log` engine: sources, events and the generated key in append-only
//! segment files under `--data-dir`, each record length-prefixed and
//! CRC32C-checksummed (`record`). The reactor encodes a turn's records and
//! writes them with one `write` before it polls again; only then are they
//! acknowledged (`never`, `everysec`), or once a helper thread's
//! `fdatasync` covering them has returned (`always`: group commit, one sync
//! for everything written since the last). `everysec` syncs once a second
//! on that thread.
//!
//! Compaction keeps the disk bounded: when the active segment outgrows
//! max(4 MiB, the last snapshot), the reactor starts a new active segment
//! and hands the live state (sources, each one's newest `--history`
//! events, last and evicted ids, idempotency keys, live tokens) to a
//! thread, a slice of time per turn (`snapshot`), which writes it as the
//! segment between the old ones and the new active one (temporary file,
//! fsync, rename, fsync of the dir), then deletes the older segments. A snapshot begins with a `Snapshot` record, so recovery
//! replays every segment in order whatever point a crash hit: before the
//! rename the old segments are whole; after it the snapshot supersedes them.
//!
//! Files: `LOCK` (flock: one process per dir), `<20 digits>.log` segments,
//! each starting with `MAGIC`, and `key`: the generated default key and a
//! newline, for people and scripts (`ssehub key`); the log's record of it
//! is what the server reads. The dir is mode 0700 and files 0600.

pub mod record;
mod recover;
mod snapshot;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::Waker;

use super::{
    Ack, Bounds, Engine, IdemKey, Op, Outcome, Recovered, Retention, Ring, Rings, SourceKey, StorageError, StoredSource, StoredToken,
    Ticket,
};
use crate::history::History;
use crate::sse::Event;
#[cfg(test)]
use crate::sse::EventId;
use crate::throttle::{Throttle, throttled};
use record::Record;
use snapshot::{Sources, Src};

/// The file in the data dir that holds the generated default key.
pub const KEY_FILE: &str = "key";
/// The first bytes of every segment.
pub const MAGIC: &[u8] = b"SSEHLOG1";
/// The active segment is compacted past max(this, the last snapshot).
const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// Nice steps the compaction thread takes below the reactor's priority
/// (10: about a tenth of the weight of a thread at the reactor's nice,
/// enough to finish under a busy reactor, and no longer level with it
/// when the reactor wakes for a request; scripts/bench.sh --fairness).
const COMPACT_NICE: i32 = 10;
/// While writes fail, how often a write is tried without traffic.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The largest such write.
const PROBE_MAX_BYTES: usize = 1024 * 1024;

/// `--fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    Always,
    #[default]
    EverySec,
    Never,
}

impl Fsync {
    pub fn parse(s: &str) -> Option<Fsync> {
        match s {
            "always" => Some(Fsync::Always),
            "everysec" => Some(Fsync::EverySec),
            "never" => Some(Fsync::Never),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::Never => "never",
        }
    }
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.log"))
}

/// The segment numbers in `dir`, oldest first. Only lists: a running
/// compaction's temporary file is left alone.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_string_lossy().strip_suffix(".log").and_then(|n| n.parse().ok()) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Removes the temporary files of a compaction a crash interrupted; only
/// by `open`, which holds the dir's lock, so no compaction is running.
fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// What `open` found and holds, before the reactor starts the engine.
pub struct Opened {
    dir: PathBuf,
    fsync: Fsync,
    limits: Bounds,
    lock: File,
    active: File,
    active_no: u64,
    active_len: u64,
    disk_bytes: u64,
    cut_bytes: u64,
    pub recovered: Recovered,
}

/// Opens (creating) the data dir, takes its lock and recovers it.
pub fn open(dir: &Path, fsync: Fsync, limits: Bounds, repair: bool) -> io::Result<Opened> {
    let fail = |e: String| io::Error::other(e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(format!("cannot create data dir {}: {e}", dir.display())))?;
    // Whatever the umask: the files hold endpoint keys and payloads.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail(format!("data dir {}: {e}", dir.display())))?;
    let lock = create_file(&dir.join("LOCK"), false).map_err(|e| fail(format!("data dir {}: {e}", dir.display())))?;
    if !crate::sys::try_lock(&lock) {
        return Err(fail(format!("data dir {} is in use by another ssehub process", dir.display())));
    }
    crate::sys::ignore_sigxfsz();
    remove_leftovers(dir).map_err(|e| fail(format!("data dir {}: {e}", dir.display())))?;
    let started = Instant::now();
    let scan = recover::scan(dir, limits, repair).map_err(fail)?;
    // Integer arithmetic for the log line: printing an f64 links core's
    // float formatting (~14 KiB), which nothing else needs.
    let us = started.elapsed().as_micros().max(1);
    let ms = (us + 500) / 1000;
    let (active_no, active_len) = match scan.segments.last() {
        Some(&(n, len)) => (n, len),
        None => (1, 0),
    };
    let active = if active_len == 0 {
        let f = create_file(&segment_path(dir, active_no), true)?;
        (&f).write_all(MAGIC)?;
        f.sync_all()?;
        sync_dir(dir)?;
        f
    } else {
        OpenOptions::new().append(true).open(segment_path(dir, active_no))?
    };
    let active_len = active_len.max(MAGIC.len() as u64);
    let disk_bytes = scan.segments.iter().map(|(_, len)| len).sum::<u64>().max(active_len);
    let recovered = scan.state.into_recovered();
    let events: usize = recovered.sources.iter().map(|s| s.events.len()).sum();
    if scan.bytes_read > 0 {
        info!(
            "recovered {} sources and {events} events from {} ({} bytes in {}.{:03} s, {} MB/s)",
            recovered.sources.len(),
            dir.display(),
            scan.bytes_read,
            ms / 1000,
            ms % 1000,
            (scan.bytes_read as u128 + us / 2) / us
        );
    }
    Ok(Opened {
        dir: dir.to_path_buf(),
        fsync,
        limits,
        lock,
        active,
        active_no,
        active_len,
        disk_bytes,
        cut_bytes: scan.cut_bytes,
        recovered,
    })
}

fn create_file(path: &Path, append: bool) -> io::Result<File> {
    OpenOptions::new().create(true).write(true).append(append).mode(0o600).open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An op written (or to be written), acknowledged when durable.
struct Staged {
    ticket: Ticket,
    ack: Ack,
    publish: Option<(SourceKey, Event)>,
    /// The emit's idempotency key, remembered with the event.
    idem: Option<IdemKey>,
    revert: Revert,
}

/// A deleted source (meta and tokens) and ring, until its record is written.
type Taken = (Option<Src>, Option<Ring>);

/// What an op changed in the engine's memory, put back if its write fails
/// (the file then holds nothing of it, and memory must say the same: a
/// later snapshot is written from memory).
enum Revert {
    Nothing,
    Create(SourceKey),
    Delete(SourceKey, Box<Taken>),
    Clear(SourceKey, Option<History>),
    Verify(SourceKey, Option<crate::verify::Verify>),
    /// The retention before (what it evicted meanwhile stays evicted).
    Retention(SourceKey, Retention),
    Token(SourceKey, String),
    Revoke(SourceKey, Option<(String, u64)>),
}

/// Between the reactor and the sync thread.
struct SyncShared {
    state: Mutex<SyncWant>,
    wake: Condvar,
    /// Log position (bytes written since start, all segments) covered by a completed sync.
    synced: AtomicU64,
    failed: AtomicBool,
    syncs: AtomicU64,
    sync_ns: AtomicU64,
}

struct SyncWant {
    file: Arc<File>,
    /// Position written so far.
    written: u64,
    stop: bool,
}

/// A compaction running on its thread: its result once done.
type Compaction = Arc<Mutex<Option<Result<u64, String>>>>;

pub struct Log {
    rings: Rings,
    /// Sources' metas and live subscribe tokens, and the snapshot being taken.
    sources: Sources,
    default_key: Option<String>,
    dir: PathBuf,
    fsync: Fsync,
    file: Arc<File>,
    active_no: u64,
    active_len: u64,
    /// Bytes of the segments before the active one.
    older_bytes: u64,
    snapshot_len: u64,
    /// Encoded records not yet written, and their ops.
    pending: Vec<u8>,
    staged: Vec<Staged>,
    /// Written, waiting for a sync (`always`): (position, op).
    unsynced: VecDeque<(u64, Staged)>,
    written: u64,
    next_ticket: u64,
    ready: Vec<Outcome>,
    sync: Option<Arc<SyncShared>>,
    syncer: Option<std::thread::JoinHandle<()>>,
    waker: Arc<Waker>,
    compaction: Option<Compaction>,
    /// Its thread, joined before the lock is released.
    compactor: Option<std::thread::JoinHandle<()>>,
    /// A sync failed: nothing is acknowledged until a restart.
    broken: bool,
    /// A write failed and has not succeeded since (logged once): unhealthy.
    write_failing: bool,
    /// While writes fail: when to try a write that changes nothing, and
    /// its size (the failed batch's), so that health comes back without
    /// waiting for traffic a load balancer has moved away.
    probe: Option<(Instant, usize)>,
    write_fail_lines: Throttle,
    cut_bytes: u64,
    compactions: u64,
    /// The data dir's lock: held until `close`.
    lock: Option<File>,
}

impl Opened {
    pub fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    /// Writes the generated default key to `key` (unless it holds it
    /// already): a temporary file, synced, renamed over it.
    pub fn keep_key_file(&self, key: &str) -> io::Result<PathBuf> {
        let path = self.dir.join(KEY_FILE);
        let line = format!("{key}\n");
        if std::fs::read_to_string(&path).is_ok_and(|kept| kept == line) {
            return Ok(path);
        }
        // `.tmp`: removed at the next open if a crash leaves it.
        let tmp = self.dir.join("key.tmp");
        let write = || -> io::Result<()> {
            let f = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
            (&f).write_all(line.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        };
        write().map(|()| path.clone()).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Starts the engine on the reactor thread (and its sync thread).
    pub fn start(self, floor_ms: u64, waker: Arc<Waker>) -> Log {
        let file = Arc::new(self.active);
        let (sync, syncer) = match self.fsync {
            Fsync::Never => (None, None),
            mode => {
                let shared = Arc::new(SyncShared {
                    state: Mutex::new(SyncWant { file: file.clone(), written: 0, stop: false }),
                    wake: Condvar::new(),
                    synced: AtomicU64::new(0),
                    failed: AtomicBool::new(false),
                    syncs: AtomicU64::new(0),
                    sync_ns: AtomicU64::new(0),
                });
                let (s, w) = (shared.clone(), waker.clone());
                let thread = std::thread::Builder::new().name("log-sync".into()).spawn(move || sync_loop(&s, mode, &w)).ok();
                (Some(shared), thread)
            }
        };
        Log {
            rings: Rings::with_limits(self.limits, floor_ms),
            sources: Sources::default(),
            default_key: self.recovered.default_key.clone(),
            dir: self.dir,
            fsync: self.fsync,
            file,
            active_no: self.active_no,
            older_bytes: self.disk_bytes - self.active_len,
            active_len: self.active_len,
            snapshot_len: 0,
            pending: Vec::new(),
            staged: Vec::new(),
            unsynced: VecDeque::new(),
            written: 0,
            next_ticket: 0,
            ready: Vec::new(),
            sync,
            syncer,
            waker,
            compaction: None,
            compactor: None,
            broken: false,
            write_failing: false,
            probe: None,
            write_fail_lines: Throttle::default(),
            cut_bytes: self.cut_bytes,
            compactions: 0,
            lock: Some(self.lock),
        }
    }
}

/// The sync thread: waits for something written and unsynced (`always`:
/// told at once; `everysec`: looks once a second), syncs it, wakes the reactor.
fn sync_loop(shared: &SyncShared, mode: Fsync, waker: &Waker) {
    loop {
        let (file, target) = {
            let mut want = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if want.stop {
                    return;
                }
                if want.written > shared.synced.load(Ordering::Acquire) && mode == Fsync::Always {
                    break;
                }
                want = match mode {
                    Fsync::Always => shared.wake.wait(want).unwrap_or_else(|e| e.into_inner()),
                    _ => {
                        let (w, timeout) = shared.wake.wait_timeout(want, Duration::from_secs(1)).unwrap_or_else(|e| e.into_inner());
                        if timeout.timed_out() && !w.stop && w.written > shared.synced.load(Ordering::Acquire) {
                            want = w;
                            break;
                        }
                        w
                    }
                };
            }
            (want.file.clone(), want.written)
        };
        let started = Instant::now();
        let result = file.sync_data();
        shared.sync_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                shared.synced.fetch_max(target, Ordering::AcqRel);
            }
            Err(e) => {
                error!("fdatasync of the log failed: {e}");
                shared.failed.store(true, Ordering::Release);
                let _ = waker.wake();
                return;
            }
        }
        if mode == Fsync::Always {
            let _ = waker.wake();
        }
    }
}

impl Log {
    fn encode(&mut self, record: Record<'_>) {
        record.encode(&mut self.pending);
    }

    fn stage(&mut self, ticket: Ticket, ack: Ack, publish: Option<(SourceKey, Event)>) {
        self.staged.push(Staged { ticket, ack, publish, idem: None, revert: Revert::Nothing });
    }

    fn stage_change(&mut self, ticket: Ticket, revert: Revert) {
        self.staged.push(Staged { ticket, ack: Ack::Stored, publish: None, idem: None, revert });
    }

    /// A write failed: the changes of `staged` are taken back, newest first.
    fn revert(&mut self, staged: &mut [Staged]) {
        for s in staged.iter_mut().rev() {
            match std::mem::replace(&mut s.revert, Revert::Nothing) {
                Revert::Nothing => {}
                Revert::Create(key) => {
                    self.sources.remove(key, &self.rings);
                    self.rings.remove(key);
                }
                Revert::Delete(key, taken) => {
                    let (src, ring) = *taken;
                    if let Some(src) = src {
                        self.sources.insert(key, src.meta, src.tokens);
                    }
                    if let Some(ring) = ring {
                        self.rings.put_back(key, ring);
                    }
                }
                Revert::Clear(key, Some(history)) => self.rings.put_history(key, history),
                Revert::Clear(_, None) => {}
                Revert::Verify(key, before) => {
                    if let Some(s) = self.sources.get_mut(key, &self.rings) {
                        s.meta.verify = before;
                    }
                }
                Revert::Retention(key, before) => {
                    if let Some(s) = self.sources.get_mut(key, &self.rings) {
                        s.meta.retention = before;
                        self.rings.set_retention(key, &before, 0);
                    }
                }
                Revert::Token(key, token) => {
                    if let Some(s) = self.sources.get_mut(key, &self.rings) {
                        s.tokens.retain(|t| t.0 != token);
                    }
                }
                Revert::Revoke(key, entry) => {
                    if let Some(s) = self.sources.get_mut(key, &self.rings) {
                        s.tokens.extend(entry);
                    }
                }
            }
        }
    }

    /// A write succeeded. Recovered by a change, the hub says so (once a
    /// second at most, however the disk flaps); by the probe, with no
    /// traffic, this line does.
    fn written_again(&mut self, by_probe: bool) {
        if self.write_failing {
            if by_probe {
                info!("writes to the log succeed again");
            } else {
                debug!("writes to the log succeed again");
            }
            self.write_failing = false;
        }
        self.probe = None;
    }

    /// While writes fail, once a `PROBE_INTERVAL`: a record that changes
    /// nothing (a revocation of no token), as large as the failed batch,
    /// is written and cut off again.
    fn probe_writes(&mut self) {
        let Some((_, len)) = self.probe.filter(|&(at, _)| Instant::now() >= at && self.pending.is_empty()) else { return };
        let filler = "~".repeat(len.clamp(1, PROBE_MAX_BYTES));
        let mut bytes = Vec::new();
        Record::TokenRevoked { token: &filler }.encode(&mut bytes);
        let written = (&*self.file).write_all(&bytes);
        if let Err(e) = self.file.set_len(self.active_len) {
            error!("cannot cut the failed write off the log: {e}");
            self.broken = true;
        }
        match written {
            Ok(()) => self.written_again(true),
            Err(_) => self.probe = Some((Instant::now() + PROBE_INTERVAL, len)),
        }
    }

    fn fail_all(&mut self, staged: impl IntoIterator<Item = Staged>, e: StorageError) {
        for s in staged {
            self.ready.push(Outcome::Done { ticket: s.ticket, result: Err(e) });
        }
    }

    fn acknowledge(&mut self, s: Staged) {
        self.ready.push(Outcome::Done { ticket: s.ticket, result: Ok(s.ack) });
        if let Some((key, event)) = s.publish {
            if let Some(idem) = s.idem {
                self.rings.remember(key, idem, event.id);
            }
            if self.rings.retain(key, event.clone()) {
                self.ready.push(Outcome::Publish { key, event });
            }
        }
    }

    /// Staged changes with nothing to write: acknowledged behind what
    /// still waits for a sync (`always`), else at once.
    fn acknowledge_unwritten(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        if self.unsynced.is_empty() {
            for st in staged {
                self.acknowledge(st);
            }
        } else {
            let at = self.written;
            self.unsynced.extend(staged.into_iter().map(|st| (at, st)));
        }
    }

    fn durable(&self) -> u64 {
        match (&self.sync, self.fsync) {
            (Some(s), Fsync::Always) => s.synced.load(Ordering::Acquire),
            _ => self.written,
        }
    }

    fn break_down(&mut self) {
        if !self.broken {
            error!("the log cannot be trusted after a failed fdatasync: emits are refused (503) until ssehub is restarted");
            self.broken = true;
        }
        let unsynced: Vec<Staged> = self.unsynced.drain(..).map(|(_, s)| s).collect();
        self.fail_all(unsynced, StorageError::SyncFailed);
    }

    fn encode_verify(&mut self, id: &str, verify: Option<&crate::verify::Verify>) {
        let settings = verify.map(|v| v.stored_json()).unwrap_or_default();
        self.encode(Record::Verify { source: id, settings: &settings });
    }

    /// Rotates and starts a snapshot (`snapshot`), when the active
    /// segment has grown past its bound; the snapshot is then handed over
    /// a slice per turn, and written by a thread.
    fn maybe_compact(&mut self) {
        if self.sources.capturing() {
            return self.sources.step(&self.rings);
        }
        if let Some(done) = &self.compaction {
            let result = done.lock().unwrap_or_else(|e| e.into_inner()).take();
            match result {
                None => return,
                Some(Ok(len)) => {
                    self.compactions += 1;
                    self.snapshot_len = len;
                    self.older_bytes = len;
                }
                Some(Err(e)) => warn!("compaction failed: {e}; the older segments stay"),
            }
            self.compaction = None;
        }
        if self.broken || self.active_len < COMPACT_MIN_BYTES.max(self.snapshot_len) || !self.pending.is_empty() {
            return;
        }
        // `always`: what waits for a sync is made durable and acknowledged
        // here (one group's worth: rare, once per segment), so that every
        // change before the new segment is in memory for the snapshot.
        // Otherwise changes are acknowledged when written, and the thread
        // syncs the old segment first.
        let mut sync_first = None;
        if self.fsync == Fsync::Always {
            if let Err(e) = self.file.sync_data() {
                error!("fdatasync of the log failed: {e}");
                return self.break_down();
            }
            if let Some(s) = &self.sync {
                s.synced.fetch_max(self.written, Ordering::AcqRel);
            }
            let unsynced: Vec<Staged> = self.unsynced.drain(..).map(|(_, s)| s).collect();
            for s in unsynced {
                self.acknowledge(s);
            }
        } else if self.fsync == Fsync::EverySec {
            sync_first = Some(self.file.clone());
        }
        let (snap_no, new_no) = (self.active_no + 1, self.active_no + 2);
        let new = match create_file(&segment_path(&self.dir, new_no), true).and_then(|f| {
            (&f).write_all(MAGIC)?;
            if self.fsync == Fsync::Always {
                sync_dir(&self.dir)?;
            }
            Ok(f)
        }) {
            Ok(f) => Arc::new(f),
            Err(e) => return warn!("compaction: cannot start a new segment: {e}"),
        };
        self.older_bytes += self.active_len;
        self.file = new;
        self.active_no = new_no;
        self.active_len = MAGIC.len() as u64;
        if let Some(s) = &self.sync {
            s.state.lock().unwrap_or_else(|e| e.into_inner()).file = self.file.clone();
        }
        let pipe = Arc::new(snapshot::Pipe::default());
        let job =
            snapshot::Job { dir: self.dir.clone(), n: snap_no, default_key: self.default_key.clone(), sync_first, pieces: pipe.clone() };
        let done: Compaction = Arc::new(Mutex::new(None));
        let (result, waker) = (done.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new().name("log-compact".into()).spawn(move || {
            // Encoding and writing a large snapshot takes a core for a
            // while: on a core shared with the reactor, not ahead of it.
            crate::sys::lower_thread_priority(COMPACT_NICE);
            let r = snapshot::write(job).map_err(|e| e.to_string());
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            let _ = waker.wake();
        });
        if let Ok(thread) = spawned {
            self.compaction = Some(done);
            self.sources.start_capture(crate::sys::unix_ms(), pipe);
            // A finished one's, if any: joined at once.
            if let Some(earlier) = self.compactor.replace(thread) {
                let _ = earlier.join();
            }
        }
    }
}

/// The payload an event was framed from: its envelope's `event` value.
fn event_payload(event: &Event) -> &[u8] {
    let envelope = event.envelope();
    // `{"id":"…","indexed_at_ms":…,"event":` <payload> `,"metadata":{…}}`;
    // the metadata is ours and holds no `,"metadata":`, so the last one ends the payload.
    let start = envelope.windows(9).position(|w| w == b",\"event\":").map_or(0, |i| i + 9);
    let end = envelope.windows(12).rposition(|w| w == b",\"metadata\":").unwrap_or(envelope.len());
    &envelope[start..end]
}

impl Engine for Log {
    fn submit(&mut self, op: Op<'_>, now_ms: u64) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        // A running snapshot gets the source as it is before the change.
        match op {
            Op::Delete { key }
            | Op::Clear { key }
            | Op::Verify { key, .. }
            | Op::Retention { key, .. }
            | Op::Append { key, .. }
            | Op::Import { key, .. }
            | Op::Token { key, .. }
            | Op::RevokeToken { key, .. } => self.sources.touch(key, &self.rings),
            Op::Create { .. } | Op::DefaultKey(_) => {}
        }
        match op {
            Op::Create { key, meta } => {
                self.rings.create(key, &meta.id);
                let m = meta;
                self.encode(Record::Source {
                    id: &m.id,
                    account: &m.account,
                    name: &m.name,
                    endpoint_key: &m.endpoint_key,
                    created_at: m.created_at,
                });
                if m.verify.is_some() {
                    self.encode_verify(&m.id, m.verify.as_ref());
                }
                if !m.retention.is_default() {
                    self.encode(Record::Retention { source: &m.id, retention: m.retention, evicted: None });
                }
                self.rings.set_retention(key, &m.retention, now_ms);
                self.sources.insert(key, meta.clone(), Vec::new());
                self.stage_change(ticket, Revert::Create(key));
            }
            Op::Delete { key } => {
                // Its tokens go with it (the record deletes them too, at recovery).
                let src = self.sources.remove(key, &self.rings);
                let ring = self.rings.remove(key);
                if let Some(s) = &src {
                    let id = s.meta.id.clone();
                    self.encode(Record::Deleted { id: &id });
                }
                self.stage_change(ticket, Revert::Delete(key, Box::new((src, ring))));
            }
            Op::Clear { key } => {
                let newest = self.rings.history(key).and_then(|h| h.newest(1).next().map(|e| e.id));
                let before = self.rings.clear(key);
                if let (Some(up_to), Some(s)) = (newest, self.sources.get(&key)) {
                    let id = s.meta.id.clone();
                    self.encode(Record::Cleared { source: &id, up_to });
                }
                self.stage_change(ticket, Revert::Clear(key, before));
            }
            Op::Verify { key, verify } => {
                let mut before = None;
                if let Some(s) = self.sources.get_mut(key, &self.rings) {
                    before = std::mem::replace(&mut s.meta.verify, verify.cloned());
                    let id = s.meta.id.clone();
                    self.encode_verify(&id, verify);
                }
                self.stage_change(ticket, Revert::Verify(key, before));
            }
            Op::Retention { key, retention } => {
                let mut before = retention;
                if let Some(s) = self.sources.get_mut(key, &self.rings) {
                    before = std::mem::replace(&mut s.meta.retention, retention);
                    let id = s.meta.id.clone();
                    self.rings.set_retention(key, &retention, now_ms);
                    let evicted = self.rings.history(key).and_then(|h| h.evicted());
                    self.encode(Record::Retention { source: &id, retention, evicted });
                }
                self.stage_change(ticket, Revert::Retention(key, before));
            }
            Op::Append { key, payload, idem } => match (self.rings.stage(key, payload, now_ms), self.sources.get(&key)) {
                (Some(event), Some(s)) => {
                    let id = s.meta.id.clone();
                    self.encode(Record::Event { source: &id, id: event.id, payload, key: idem });
                    self.stage(ticket, Ack::Appended(event.id), Some((key, event)));
                    if let Some(staged) = self.staged.last_mut() {
                        staged.idem = idem;
                    }
                }
                _ => self.stage(ticket, Ack::Stored, None),
            },
            Op::Import { key, source } => {
                let m = &source.meta;
                self.encode(Record::Source {
                    id: &m.id,
                    account: &m.account,
                    name: &m.name,
                    endpoint_key: &m.endpoint_key,
                    created_at: m.created_at,
                });
                if m.verify.is_some() {
                    self.encode_verify(&m.id, m.verify.as_ref());
                }
                if !m.retention.is_default() {
                    self.encode(Record::Retention { source: &m.id, retention: m.retention, evicted: None });
                }
                for (id, payload) in &source.events {
                    self.encode(Record::Event { source: &m.id, id: *id, payload, key: None });
                }
                if let Some(last_id) = source.last_id {
                    self.encode(Record::SourceState { source: &m.id, last_id, evicted: source.evicted });
                }
                self.sources.insert(key, m.clone(), Vec::new());
                self.rings.restore(key, source.clone());
                // Kept if the write fails, as the hub keeps it: written with the next snapshot.
                self.stage(ticket, Ack::Stored, None);
            }
            Op::DefaultKey(key) => {
                self.encode(Record::DefaultKey { key });
                // Kept if the write fails: the process uses the key, and the next snapshot writes it.
                self.default_key = Some(key.to_string());
                self.stage(ticket, Ack::Stored, None);
            }
            Op::Token { key, token } => {
                let t = token;
                self.encode(Record::Token { token: &t.token, source: &t.source_id, expires_at: t.expires_at });
                if let Some(s) = self.sources.get_mut(key, &self.rings) {
                    s.tokens.push((t.token.clone(), t.expires_at));
                }
                self.stage_change(ticket, Revert::Token(key, t.token.clone()));
            }
            Op::RevokeToken { key, token } => {
                // A source's tokens are at most `--max-tokens-per-source`.
                let mut revoked = None;
                if let Some(s) = self.sources.get_mut(key, &self.rings)
                    && let Some(at) = s.tokens.iter().position(|t| t.0 == token)
                {
                    revoked = Some(s.tokens.swap_remove(at));
                }
                if revoked.is_some() {
                    self.encode(Record::TokenRevoked { token });
                }
                self.stage_change(ticket, Revert::Revoke(key, revoked));
            }
        }
        ticket
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            // Changes that write no record (a clear of an empty history)
            // are acknowledged all the same, in their turn.
            return self.acknowledge_unwritten();
        }
        let staged = std::mem::take(&mut self.staged);
        if self.broken {
            self.pending.clear();
            return self.fail_all(staged, StorageError::SyncFailed);
        }
        match (&*self.file).write_all(&self.pending) {
            Ok(()) => {
                self.written_again(false);
                let n = self.pending.len() as u64;
                self.active_len += n;
                self.written += n;
                match (&self.sync, self.fsync) {
                    (Some(s), Fsync::Always) => {
                        s.state.lock().unwrap_or_else(|e| e.into_inner()).written = self.written;
                        s.wake.notify_one();
                        let at = self.written;
                        self.unsynced.extend(staged.into_iter().map(|st| (at, st)));
                    }
                    (sync, _) => {
                        if let Some(s) = sync {
                            s.state.lock().unwrap_or_else(|e| e.into_inner()).written = self.written;
                        }
                        for st in staged {
                            self.acknowledge(st);
                        }
                    }
                }
            }
            Err(e) => {
                if !self.write_failing {
                    // The cause, which the hub's line does not know; a disk that flaps fails many times a second.
                    throttled!(
                        self.write_fail_lines,
                        Error,
                        "write to the log in {} failed: {e}; emits are refused (503) until writes succeed",
                        self.dir.display()
                    );
                    self.write_failing = true;
                }
                self.probe = Some((Instant::now() + PROBE_INTERVAL, self.pending.len()));
                // What part of the batch reached the file is cut off again,
                // and memory says what the file says.
                if let Err(e) = self.file.set_len(self.active_len) {
                    error!("cannot cut the failed write off the log: {e}");
                    self.broken = true;
                }
                let mut staged = staged;
                self.revert(&mut staged);
                self.fail_all(staged, StorageError::WriteFailed);
            }
        }
        self.pending.clear();
    }

    /// Also while a snapshot is handed over: the next slice is due at once.
    fn wants_flush(&self) -> bool {
        !self.pending.is_empty() || !self.staged.is_empty() || self.sources.capturing()
    }

    fn poll(&mut self, out: &mut Vec<Outcome>) {
        if self.sync.as_ref().is_some_and(|s| s.failed.load(Ordering::Acquire)) {
            self.break_down();
        }
        self.probe_writes();
        let durable = self.durable();
        while self.unsynced.front().is_some_and(|(at, _)| *at <= durable) {
            if let Some((_, s)) = self.unsynced.pop_front() {
                self.acknowledge(s);
            }
        }
        self.maybe_compact();
        out.append(&mut self.ready);
    }

    fn rings(&self) -> &Rings {
        &self.rings
    }

    fn metrics(&self, out: &mut String) {
        let (synced, syncs, ns) = match &self.sync {
            Some(s) => (s.synced.load(Ordering::Relaxed), s.syncs.load(Ordering::Relaxed), s.sync_ns.load(Ordering::Relaxed)),
            None => (0, 0, 0),
        };
        let rows: [(&str, &str, &str, String); 7] = [
            ("log_bytes", "gauge", "Bytes of the log's segments on disk.", (self.older_bytes + self.active_len).to_string()),
            ("log_written_bytes_total", "counter", "Bytes written to the log since start.", self.written.to_string()),
            ("log_synced_bytes_total", "counter", "Bytes of the log covered by a completed fdatasync since start.", synced.to_string()),
            ("log_syncs_total", "counter", "fdatasync calls on the log.", syncs.to_string()),
            ("log_sync_seconds_total", "counter", "Seconds spent in fdatasync of the log.", {
                let us = (ns + 500) / 1000;
                format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
            }),
            ("log_cut_bytes_total", "counter", "Bytes cut off the log at recovery (torn tail, --repair).", self.cut_bytes.to_string()),
            ("log_compactions_total", "counter", "Compactions of the log.", self.compactions.to_string()),
        ];
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP ssehub_{name} {help}\n# TYPE ssehub_{name} {kind}\nssehub_{name} {value}\n"));
        }
    }

    /// Unhealthy while writes fail (until one succeeds) and after a failed sync.
    fn healthy(&self) -> bool {
        !self.broken && !self.write_failing
    }

    fn next_wake(&self) -> Option<Instant> {
        self.probe.map(|(at, _)| at)
    }

    /// Age evictions write nothing: recovery applies the same bound to
    /// the same ids (and a snapshot holds only what is retained).
    fn expire(&mut self, key: SourceKey, now_ms: u64) -> Option<u64> {
        self.sources.touch(key, &self.rings);
        self.rings.expire(key, now_ms)
    }

    fn restore(&mut self, key: SourceKey, source: StoredSource) {
        self.sources.insert(key, source.meta.clone(), Vec::new());
        self.rings.restore(key, source);
    }

    fn restore_token(&mut self, key: SourceKey, token: StoredToken) {
        if let Some(s) = self.sources.get_mut(key, &self.rings) {
            s.tokens.push((token.token, token.expires_at));
        }
    }

    /// The sync thread stops and a running compaction ends, so nothing of
    /// this process touches the dir any more; then its lock is released.
    fn close(&mut self) {
        if let Some(s) = &self.sync {
            s.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            s.wake.notify_one();
        }
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        // An unfinished snapshot is dropped (the older segments stay).
        self.sources.abandon_capture();
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
        self.lock = None;
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SourceMeta;
    use crate::engine::conformance::{TempDir, check_all};

    fn waker() -> Arc<Waker> {
        let poll = Box::leak(Box::new(mio::Poll::new().unwrap()));
        Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap())
    }

    fn engine(dir: &Path, history: usize, floor: u64, fsync: Fsync) -> (Box<dyn Engine>, Recovered) {
        let mut opened = open(dir, fsync, Bounds::count(history), false).unwrap();
        let recovered = std::mem::take(&mut opened.recovered);
        (Box::new(opened.start(floor, waker())), recovered)
    }

    /// A whole snapshot taken as the reactor takes one, in bytes.
    fn snapshot_of(log: &mut Log, now_ms: u64) -> Vec<u8> {
        let pipe = Arc::new(snapshot::Pipe::default());
        log.sources.start_capture(now_ms, pipe.clone());
        while log.sources.capturing() {
            log.sources.step(&log.rings);
        }
        let mut out = Vec::new();
        snapshot::encode_head(log.default_key.as_deref(), &mut out);
        while let Some(msg) = pipe.recv() {
            if let snapshot::Msg::Pieces(pieces) = msg {
                pieces.iter().for_each(|p| snapshot::encode_piece(p, &mut out));
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
    fn log_engine_conforms_in_every_fsync_mode() {
        for fsync in [Fsync::Always, Fsync::EverySec, Fsync::Never] {
            check_all(&|dir, history, floor| engine(dir, history, floor, fsync), true);
        }
    }

    #[test]
    fn a_second_open_of_the_dir_is_refused() {
        let dir = TempDir::new();
        let _first = open(&dir.0, Fsync::Never, Bounds::count(10), false).unwrap();
        let e = open(&dir.0, Fsync::Never, Bounds::count(10), false).err().unwrap();
        assert_eq!(e.to_string(), format!("data dir {} is in use by another ssehub process", dir.0.display()));
    }

    #[test]
    fn an_interrupted_compactions_file_goes_at_open_and_only_then() {
        let dir = TempDir::new();
        drop(open(&dir.0, Fsync::Never, Bounds::count(10), false).unwrap());
        let tmp = dir.0.join(format!("{:020}.tmp", 2));
        std::fs::write(&tmp, b"half a snapshot").unwrap();
        assert_eq!(segments(&dir.0).unwrap(), [1], "listing leaves it");
        assert!(tmp.exists());
        drop(open(&dir.0, Fsync::Never, Bounds::count(10), false).unwrap());
        assert!(!tmp.exists(), "open removes it");
    }

    #[test]
    fn compaction_keeps_signature_checks() {
        let dir = TempDir::new();
        let checked = crate::engine::conformance::verify("standard-webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        {
            let (mut e, _) = engine(&dir.0, 4, 1_000, Fsync::Never);
            let meta = SourceMeta {
                id: "dc_compacted".into(),
                account: "default".into(),
                name: "c".into(),
                endpoint_key: "k".into(),
                created_at: 1,
                verify: Some(crate::engine::conformance::verify("github", "old")),
                retention: Retention::default(),
            };
            e.submit(Op::Create { key: 1, meta: &meta }, 2_000);
            e.submit(Op::Verify { key: 1, verify: Some(&checked) }, 2_000);
            // Past the 4 MiB that start a compaction, and on until it is done.
            let payload = format!("\"{}\"", "x".repeat(64 * 1024));
            let deadline = Instant::now() + Duration::from_secs(20);
            while segments(&dir.0).unwrap().len() != 2 || segments(&dir.0).unwrap()[0] == 1 {
                assert!(Instant::now() < deadline, "no compaction: {:?}", segments(&dir.0));
                e.submit(Op::Append { key: 1, payload: payload.as_bytes(), idem: None }, 2_000);
                e.flush();
                e.poll(&mut Vec::new());
            }
        }
        let (_, recovered) = engine(&dir.0, 4, 1_000, Fsync::Never);
        assert_eq!(recovered.sources[0].meta.verify, Some(checked), "read back from the snapshot alone");
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

    /// A source as recovery gives it: meta, events, tokens.
    type Kept = (SourceMeta, Vec<(EventId, Vec<u8>)>, Vec<String>);

    /// A compaction whose snapshot is handed over in many turns while
    /// sources are created, deleted (moving others in the walk's order),
    /// emitted to, cleared and given and revoked tokens: the log reopens
    /// to exactly what memory held.
    #[test]
    fn a_snapshot_taken_over_many_turns_of_changes_reopens_exactly() {
        let dir = TempDir::new();
        let meta = |n: u64| SourceMeta {
            id: format!("dc_{n}"),
            account: format!("a{}", n % 3),
            name: format!("s{n}"),
            endpoint_key: format!("k{n}"),
            created_at: n,
            verify: None,
            retention: Retention::default(),
        };
        let token =
            |n: u64, source: u64| StoredToken { token: format!("st_{n}"), source_id: format!("dc_{source}"), expires_at: u64::MAX - n };
        let now = 2_000;
        let mut log = open(&dir.0, Fsync::EverySec, Bounds::count(3), false).unwrap().start(1_000, waker());
        log.sources.per_step = 7;
        let n = 600;
        let mut next_token = 0;
        for key in 0..n {
            log.submit(Op::Create { key, meta: &meta(key) }, now);
            for e in 0..(key % 5) {
                log.submit(Op::Append { key, payload: format!("{e}").as_bytes(), idem: Some(IdemKey::new(b"k", &[e as u8])) }, now);
            }
            if key % 2 == 0 {
                next_token += 1;
                log.submit(Op::Token { key, token: &token(next_token, key) }, now);
            }
        }
        // Past the 4 MiB that start a compaction.
        let big = format!("\"{}\"", "x".repeat(64 * 1024));
        while log.active_len < COMPACT_MIN_BYTES {
            log.submit(Op::Append { key: 1, payload: big.as_bytes(), idem: None }, now);
            log.flush();
        }
        log.poll(&mut Vec::new());
        assert!(log.sources.capturing(), "the snapshot is under way");
        let (mut turns, mut created) = (0, n);
        while log.sources.capturing() {
            turns += 1;
            let k = (turns * 37) % n;
            log.submit(Op::Delete { key: k }, now);
            log.submit(Op::Create { key: created, meta: &meta(created) }, now);
            created += 1;
            let a = (turns * 13 + 5) % n;
            log.submit(Op::Append { key: a, payload: format!("{turns}").as_bytes(), idem: None }, now);
            next_token += 1;
            log.submit(Op::Token { key: a, token: &token(next_token, a) }, now);
            let b = ((turns * 29 + 3) % n) & !1;
            log.submit(Op::RevokeToken { key: b, token: &format!("st_{}", b / 2 + 1) }, now);
            if turns % 5 == 0 {
                log.submit(Op::Clear { key: (turns * 11) % n }, now);
            }
            log.flush();
            log.poll(&mut Vec::new());
        }
        assert!(turns > 20, "handed over in many turns: {turns}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while log.compactions == 0 {
            assert!(Instant::now() < deadline, "the compaction ends");
            std::thread::sleep(Duration::from_millis(5));
            log.poll(&mut Vec::new());
        }
        assert!(segments(&dir.0).unwrap()[0] > 1, "the older segments are gone");
        // What memory holds, as recovery would give it.
        let mut want: Vec<Kept> = log
            .sources
            .iter()
            .map(|(&key, s)| {
                let events = log.rings.history(key).unwrap().iter().map(|e| (e.id, event_payload(e).to_vec())).collect();
                let mut tokens: Vec<String> = s.tokens.iter().map(|t| t.0.clone()).collect();
                tokens.sort();
                (s.meta.clone(), events, tokens)
            })
            .collect();
        drop(log);
        let (_, recovered) = engine(&dir.0, 3, 1_000, Fsync::EverySec);
        let mut got: Vec<Kept> = recovered
            .sources
            .into_iter()
            .map(|s| {
                let mut tokens: Vec<String> =
                    recovered.tokens.iter().filter(|t| t.source_id == s.meta.id).map(|t| t.token.clone()).collect();
                tokens.sort();
                (s.meta, s.events, tokens)
            })
            .collect();
        want.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        got.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "source {}", w.0.id);
        }
        assert!(want.iter().any(|w| !w.2.is_empty()) && want.iter().any(|w| !w.1.is_empty()));
    }

    #[test]
    fn payloads_come_back_from_frames() {
        for payload in [&b"1"[..], b"{\"event\":{\"metadata\":2},\"x\":\",\\\"metadata\\\":\"}", b"[]", b"\"s\""] {
            let event = Event::new(EventId { ms: 5, seq: 1 }, "dc_x", payload, &mut Vec::new());
            assert_eq!(event_payload(&event), payload);
        }
    }
}
