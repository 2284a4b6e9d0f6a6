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
//!
//! This file is the overview: the files, `Fsync`, and the engine's state
//! (`Log`). Beside it: `open.rs` (the dir opened, locked and recovered;
//! the key file; the engine started), `engine.rs` (`impl Engine`: each op
//! as records and a change in memory; poll, metrics, close), `append.rs`
//! (the turn's one write, its acknowledgements, a failed write taken back
//! and the probe while writes fail), `staged.rs` (an op until it is
//! acknowledged, and how its change is taken back), `sync.rs` (the fsync
//! thread), `compact.rs` (when to compact: the new segment and the
//! snapshot's thread), `snapshot.rs` (the sources, handed to a snapshot a
//! slice per turn, and its encoding), `recover.rs` (the segments read
//! back) and `record.rs` (the records, sans I/O).

mod append;
mod compact;
mod engine;
mod open;
pub mod record;
mod recover;
mod snapshot;
mod staged;
mod sync;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mio::Waker;

use super::{Engine, Outcome, Rings};
use crate::throttle::Throttle;
use compact::Compaction;
pub use open::{Opened, open};
use snapshot::Sources;
use staged::Staged;
use sync::Syncer;

/// The file in the data dir that holds the generated default key.
pub const KEY_FILE: &str = "key";
/// The first bytes of every segment.
pub const MAGIC: &[u8] = b"SSEHLOG1";

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

fn create_file(path: &Path, append: bool) -> io::Result<File> {
    OpenOptions::new().create(true).write(true).append(append).mode(0o600).open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The engine on the reactor thread: the sources in memory (their rings
/// and `Sources`), the active segment and the turn's batch, the sync and
/// compaction threads, and health.
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
    /// The sync thread (none with `never`).
    sync: Option<Syncer>,
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

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    //! The engine as the reactor opens and starts it, for the tests here
    //! and beside; and the conformance suite in every fsync mode.
    use std::path::Path;
    use std::sync::Arc;

    use mio::Waker;

    use super::{Fsync, open};
    use crate::engine::conformance::check_all;
    use crate::engine::{Bounds, Engine, Recovered};

    pub fn waker() -> Arc<Waker> {
        let poll = Box::leak(Box::new(mio::Poll::new().unwrap()));
        Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap())
    }

    pub fn engine(dir: &Path, history: usize, floor: u64, fsync: Fsync) -> (Box<dyn Engine>, Recovered) {
        let mut opened = open(dir, fsync, Bounds::count(history), false).unwrap();
        let recovered = std::mem::take(&mut opened.recovered);
        (Box::new(opened.start(floor, waker())), recovered)
    }

    #[test]
    fn log_engine_conforms_in_every_fsync_mode() {
        for fsync in [Fsync::Always, Fsync::EverySec, Fsync::Never] {
            check_all(&|dir, history, floor| engine(dir, history, floor, fsync), true);
        }
    }
}
