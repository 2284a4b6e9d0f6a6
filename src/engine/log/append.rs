//! The append path: a turn's records encoded into one batch as ops are
//! submitted (each op staged beside them), written with one `write` at
//! `flush`, and the ops acknowledged: at once (`never`, `everysec`), or
//! once the sync thread's `fdatasync` covers them (`always`). A failed
//! write is cut off the file and its ops taken back and failed; while
//! writes fail, a probe tries a write once a second.

use std::io::Write;
use std::time::{Duration, Instant};

use log::{debug, error, info};

use super::record::Record;
use super::staged::{Revert, Staged, take_back};
use super::{Fsync, Log};
use crate::engine::{Ack, Outcome, SourceKey, StorageError, Ticket};
use crate::sse::Event;
use crate::throttle::throttled;

/// While writes fail, how often a write is tried without traffic.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The largest such write.
const PROBE_MAX_BYTES: usize = 1024 * 1024;

impl Log {
    pub(super) fn encode(&mut self, record: Record<'_>) {
        record.encode(&mut self.pending);
    }

    pub(super) fn stage(&mut self, ticket: Ticket, ack: Ack, publish: Option<(SourceKey, Event)>) {
        self.staged.push(Staged { ticket, ack, publish, idem: None, revert: Revert::Nothing });
    }

    pub(super) fn stage_change(&mut self, ticket: Ticket, revert: Revert) {
        self.staged.push(Staged { ticket, ack: Ack::Stored, publish: None, idem: None, revert });
    }

    /// The turn's records, written with one `write`: their ops are
    /// acknowledged now, or after the sync that covers them (`always`),
    /// or, if the write fails, taken back and failed.
    pub(super) fn write_batch(&mut self) {
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
                        s.wrote(self.written, true);
                        let at = self.written;
                        self.unsynced.extend(staged.into_iter().map(|st| (at, st)));
                    }
                    (sync, _) => {
                        if let Some(s) = sync {
                            s.wrote(self.written, false);
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
                take_back(&mut staged, &mut self.sources, &mut self.rings);
                self.fail_all(staged, StorageError::WriteFailed);
            }
        }
        self.pending.clear();
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
    pub(super) fn probe_writes(&mut self) {
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

    pub(super) fn acknowledge(&mut self, s: Staged) {
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

    pub(super) fn durable(&self) -> u64 {
        match (&self.sync, self.fsync) {
            (Some(s), Fsync::Always) => s.synced(),
            _ => self.written,
        }
    }

    pub(super) fn break_down(&mut self) {
        if !self.broken {
            error!("the log cannot be trusted after a failed fdatasync: emits are refused (503) until ssehub is restarted");
            self.broken = true;
        }
        let unsynced: Vec<Staged> = self.unsynced.drain(..).map(|(_, s)| s).collect();
        self.fail_all(unsynced, StorageError::SyncFailed);
    }
}
