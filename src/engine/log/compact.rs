//! When to compact, and the start of it: once the active segment has
//! outgrown max(`COMPACT_MIN_BYTES`, the last snapshot), the reactor makes
//! what came before durable, starts a new active segment, and hands the
//! sources to a thread that writes the snapshot (`snapshot.rs`) between
//! the old segments and the new one; a slice of them per turn, until all
//! are handed over. The thread's result is taken up in a later turn.

use std::io::Write;
use std::sync::{Arc, Mutex};

use log::{error, warn};

use super::staged::Staged;
use super::{Fsync, Log, MAGIC, create_file, segment_path, snapshot, sync_dir};

/// The active segment is compacted past max(this, the last snapshot).
const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// Nice steps the compaction thread takes below the reactor's priority
/// (10: about a tenth of the weight of a thread at the reactor's nice,
/// enough to finish under a busy reactor, and no longer level with it
/// when the reactor wakes for a request; scripts/bench.sh --fairness).
const COMPACT_NICE: i32 = 10;

/// A compaction running on its thread: its result once done.
pub type Compaction = Arc<Mutex<Option<Result<u64, String>>>>;

impl Log {
    /// Rotates and starts a snapshot (`snapshot`), when the active
    /// segment has grown past its bound; the snapshot is then handed over
    /// a slice per turn, and written by a thread.
    pub(super) fn maybe_compact(&mut self) {
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
                s.covered(self.written);
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
            s.switch_to(self.file.clone());
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::conformance::TempDir;
    use crate::engine::log::snapshot::event_payload;
    use crate::engine::log::tests::{engine, waker};
    use crate::engine::log::{open, segments};
    use crate::engine::{Bounds, Engine, IdemKey, Op, Retention, SourceMeta, StoredToken};
    use crate::sse::EventId;

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
}
