//! Opening the data dir: created (mode 0700) and locked, a crashed
//! compaction's leftovers removed, the segments recovered (`recover.rs`)
//! and the active one opened; then the key file, and the engine started
//! on the reactor thread with its sync thread.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use log::info;
use mio::Waker;

use super::snapshot::Sources;
use super::sync::Syncer;
use super::{Fsync, KEY_FILE, Log, MAGIC, create_file, recover, segment_path, sync_dir};
use crate::engine::{Bounds, Recovered, Rings};
use crate::throttle::Throttle;

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
        let sync = Syncer::start(self.fsync, file.clone(), &waker);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conformance::TempDir;
    use crate::engine::log::segments;

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
}
