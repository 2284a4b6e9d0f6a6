//! The sync thread: `fdatasync` off the reactor. With `always` it is told
//! of every write and syncs all written since its last sync with one call
//! (group commit), then wakes the reactor, which acknowledges what that
//! covered; with `everysec` it looks once a second. `never` has none.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::error;
use mio::Waker;

use super::Fsync;

/// The reactor's end of the sync thread.
pub struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Between the reactor and the sync thread.
struct Shared {
    state: Mutex<Want>,
    wake: Condvar,
    /// Log position (bytes written since start, all segments) covered by a completed sync.
    synced: AtomicU64,
    failed: AtomicBool,
    syncs: AtomicU64,
    sync_ns: AtomicU64,
}

struct Want {
    file: Arc<File>,
    /// Position written so far.
    written: u64,
    stop: bool,
}

impl Syncer {
    /// The thread that syncs `file` in `mode`; none for `never`.
    pub fn start(mode: Fsync, file: Arc<File>, waker: &Arc<Waker>) -> Option<Syncer> {
        if mode == Fsync::Never {
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(Want { file, written: 0, stop: false }),
            wake: Condvar::new(),
            synced: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            sync_ns: AtomicU64::new(0),
        });
        let (s, w) = (shared.clone(), waker.clone());
        let thread = std::thread::Builder::new().name("log-sync".into()).spawn(move || sync_loop(&s, mode, &w)).ok();
        Some(Syncer { shared, thread })
    }

    /// The log position a completed sync covers.
    pub fn synced(&self) -> u64 {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// A sync failed (and the thread has ended).
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// The log is written up to `at`; `now` (`always`) wakes the thread to sync it.
    pub fn wrote(&self, at: u64, now: bool) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).written = at;
        if now {
            self.shared.wake.notify_one();
        }
    }

    /// The reactor synced the log up to `at` itself.
    pub fn covered(&self, at: u64) {
        self.shared.synced.fetch_max(at, Ordering::AcqRel);
    }

    /// The active segment is now `file`.
    pub fn switch_to(&self, file: Arc<File>) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).file = file;
    }

    /// For `/metrics`: bytes covered, syncs, and nanoseconds spent in them.
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (s.synced.load(Ordering::Relaxed), s.syncs.load(Ordering::Relaxed), s.sync_ns.load(Ordering::Relaxed))
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sync thread: waits for something written and unsynced (`always`:
/// told at once; `everysec`: looks once a second), syncs it, wakes the reactor.
fn sync_loop(shared: &Shared, mode: Fsync, waker: &Waker) {
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
