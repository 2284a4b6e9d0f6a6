//! The links' lives, as the engine sees them: connected when due to
//! where the master is now (`master.rs`), lost (what was in flight on the
//! command link settled, the master looked for again), moved at once when
//! the Sentinels switch the master, and their readiness dispatched.

use std::time::Instant;

use super::link::{CLOSED_BY_REDIS, Got, LinkState};
use super::pipeline::Awaited;
use super::resp::Value;
use super::sentinel::{self, Heard};
use super::{Redis, TOKEN_BASE};
use crate::engine::{Outcome, StorageError};
use crate::sse::EventId;

impl Redis {
    pub(super) fn connect_due(&mut self, now: Instant) {
        if !self.pipe.link.due(now) && !self.readers.iter().any(|r| r.link.due(now)) {
            return;
        }
        let at = match self.master.endpoint(now) {
            Ok(Some(at)) => at,
            // Not known yet (the Sentinels are asked).
            Ok(None) => return,
            Err(e) => {
                // Every link due fails to connect, and waits for its backoff.
                if self.pipe.link.due(now) {
                    self.lose_cmd(&e.to_string());
                }
                for n in 0..self.readers.len() {
                    if self.readers[n].link.due(now) {
                        self.lose_reader(n, &e.to_string());
                    }
                }
                return;
            }
        };
        let was_due = self.pipe.link.due(now);
        if let Err(e) = self.pipe.connect_due(&at, &self.registry, now) {
            self.lose_cmd(&e.to_string());
        } else if was_due {
            self.ask_tails();
        }
        for n in 0..self.readers.len() {
            if let Err(e) = self.readers[n].connect_due(&at, &self.registry, now) {
                self.lose_reader(n, &e.to_string());
            }
        }
    }

    pub(super) fn lose_cmd(&mut self, why: &str) {
        let (was_up, sent, awaited) = self.pipe.lose(&self.registry);
        self.master.lost(&self.registry, Instant::now());
        // What was read before the loss is checked on the next server (unless a check is pending).
        self.unchecked.resize(self.readers.len(), None);
        self.written.resize(self.readers.len(), EventId::default());
        for n in 0..self.readers.len() {
            if self.unchecked[n].is_none() {
                self.unchecked[n] = self.read_at(n).max(Some(self.written[n])).filter(|id| *id > EventId::default());
            }
        }
        self.health.lost(was_up, &self.master.url, "command link", why);
        // A loss being handled is seen again on the next command, and handled then;
        // a resync not answered is asked again.
        self.recovering = false;
        if self.resync.as_ref().is_some_and(|r| !r.done) {
            self.resync = None;
        }
        // In flight: fails, except emits, which wait for their record (or their deadline);
        // all fail now if nothing was sent (the set-up did not pass).
        for a in awaited {
            match a {
                Awaited::Change { ticket, take_back, .. } => {
                    self.sources.take_back(&mut self.rings, take_back, !sent);
                    let error = if sent { StorageError::Unreachable } else { StorageError::WriteFailed };
                    if let Some(ticket) = ticket {
                        self.ready.push(Outcome::Done { ticket, result: Err(error) });
                    }
                }
                Awaited::Emits { counters, .. } if !sent => self.pipe.fail_flights(&counters, &mut self.ready),
                _ => {}
            }
        }
        for (awaited, _) in self.replicas.lost() {
            self.unconfirmed(awaited);
        }
    }

    pub(super) fn lose_reader(&mut self, n: usize, why: &str) {
        let was_up = self.readers[n].lose(&self.registry);
        self.master.lost(&self.registry, Instant::now());
        self.health.lost(was_up, &self.master.url, "a partition link", why);
        // The server closed it: the command link to the same server may be
        // closed too, its end not read yet. Read it now, or a partition link
        // back first would make the node healthy on a dead command link,
        // and the next emit would wait out its deadline there.
        if was_up && why == CLOSED_BY_REDIS && self.pipe.link.state == LinkState::Up {
            let mut replies = Vec::new();
            let got = self.pipe.link.read(&mut replies);
            self.took_cmd(got, &mut replies);
        }
    }

    pub(super) fn on_ready(&mut self, event: &mio::event::Event) {
        self.stalled = false;
        let t = event.token().0;
        let mut replies = std::mem::take(&mut self.replies);
        if event.token() == sentinel::TOKEN {
            // (A master found after a question is connected to when each link's backoff passes:
            // a Sentinel that names a server that is not the master yet must not make a busy loop.)
            if self.master.ready(event, &self.registry) == Heard::Switched {
                self.switched();
            }
        } else if t == TOKEN_BASE {
            let got = self.pipe.link.ready(event, &mut replies);
            self.took_cmd(got, &mut replies);
        } else if let Some(n) = t.checked_sub(TOKEN_BASE + 1).filter(|&n| n < self.readers.len()) {
            let got = self.readers[n].link.ready(event, &mut replies);
            self.took_reader(n, got, &mut replies);
        }
        self.replies = replies;
        if self.health.is_down() && self.all_up() {
            self.health.back(&self.master.url);
        }
    }

    /// On every connect of the command link, each partition's newest id,
    /// and its newest at or before what this node has read: a server whose
    /// partition ends before what was read, or lacks the record read while
    /// holding older ones, lost it (a failover to a replica that missed the
    /// last writes, with the `epoch` key intact; records another node wrote
    /// there since do not hide it), and is handled as a data loss (`tail`).
    fn ask_tails(&mut self) {
        for n in 0..self.readers.len() {
            let Some(read) = self.unchecked.get(n).copied().flatten().or_else(|| self.read_at(n)) else { continue };
            let (stream, cursor) = (self.pipe.keys.partition(n as u32), read.to_string());
            self.pipe.send(&[b"XREVRANGE", stream.as_bytes(), b"+", b"-", b"COUNT", b"1"], Awaited::Tail(n, read, false));
            self.pipe.send(&[b"XREVRANGE", stream.as_bytes(), cursor.as_bytes(), b"-", b"COUNT", b"1"], Awaited::Tail(n, read, true));
        }
    }

    /// The records a batch of emits wrote (`{'P', partition, id}` after the emits' answers).
    pub(super) fn wrote(&mut self, records: &[Value]) {
        self.written.resize(self.readers.len(), EventId::default());
        for r in records {
            let Some([_, partition, id]) = r.as_array() else { continue };
            let (Some(partition), Some(id)) = (partition.as_bytes(), id.as_bytes().and_then(super::records::parse_id)) else { continue };
            if let Some(n) = (0..self.readers.len()).find(|&n| self.pipe.keys.partition(n as u32).as_bytes() == partition) {
                self.written[n] = self.written[n].max(id);
            }
        }
    }

    /// A partition's read records wait for the check of what was read before a loss.
    pub(super) fn unchecked(&self) -> bool {
        self.unchecked.iter().any(Option::is_some)
    }

    /// The id partition `n`'s reader has read up to, if any.
    fn read_at(&self, n: usize) -> Option<crate::sse::EventId> {
        let reader = self.readers.get(n)?;
        super::records::parse_id(&reader.cursor).filter(|c| *c > crate::sse::EventId::default())
    }

    /// Partition `n`'s newest id on the server (at or before `read`, if
    /// `upto`), against what this node had read when it asked.
    pub(super) fn tail(&mut self, n: usize, read: crate::sse::EventId, upto: bool, reply: &Value) {
        if upto && let Some(u) = self.unchecked.get_mut(n) {
            *u = None;
        }
        if matches!(reply, Value::Error(_)) {
            return;
        }
        let newest = reply.as_array().and_then(|a| a.first()).and_then(Value::as_array).and_then(|e| e.first()).and_then(Value::as_bytes);
        let newest = newest.and_then(super::records::parse_id);
        let lost = match (upto, newest) {
            // Nothing at or before it: trimmed past it, or empty (the newest tells).
            (true, None) => false,
            (_, newest) => newest.unwrap_or_default() < read,
        };
        if lost {
            let (newest, url) = (newest.unwrap_or_default(), self.master.url.describe());
            if upto {
                log::error!("partition {n} on Redis at {url} lacks {read} that this node read (the record before it there: {newest})");
            } else {
                log::error!("partition {n} on Redis at {url} ends at {newest}, before {read} that this node read");
            }
            self.data_lost();
        }
    }

    /// What a read of the command link brought.
    fn took_cmd(&mut self, got: Got, replies: &mut Vec<Value>) {
        for reply in replies.drain(..) {
            self.on_reply(reply);
        }
        if let Got::Lost(why) = got {
            self.lose_cmd(&why);
        } else if let Some(why) = self.elsewhere.take() {
            self.lose_cmd(&why);
        }
    }

    /// What a read of partition `n`'s link brought.
    fn took_reader(&mut self, n: usize, got: Got, replies: &mut Vec<Value>) {
        for reply in replies.drain(..) {
            if let Err(why) = self.readers[n].reply(reply, &mut self.entries) {
                self.lose_reader(n, &why);
            }
        }
        if let Got::Lost(why) = got {
            self.lose_reader(n, &why);
        }
    }

    /// Deadlines are judged by this node's loop: time spent waiting for
    /// Redis, not time the node itself was busy or starved of CPU. So a
    /// link whose deadline passed is read first (without readiness: the
    /// reply may have come after this turn's poll); only if nothing came
    /// is it dropped, and reconnected.
    pub(super) fn judge_deadlines(&mut self, now: Instant) {
        let mut replies = std::mem::take(&mut self.replies);
        if self.pipe.overdue(now) {
            let got = self.pipe.link.read(&mut replies);
            self.took_cmd(got, &mut replies);
        }
        if self.pipe.expire(now, &mut self.ready) {
            let ago = |t: Instant| now.saturating_duration_since(t).as_millis();
            let why = format!(
                "no answer within its deadline (asked {} ms ago; last write {} ms, last read {} ms ago; {} bytes unsent)",
                self.pipe.oldest_timed().map_or(0, ago),
                ago(self.pipe.link.last_write),
                ago(self.pipe.link.last_read),
                self.pipe.link.unsent()
            );
            self.lose_cmd(&why);
        }
        for n in 0..self.readers.len() {
            if self.readers[n].stuck(now) {
                let got = self.readers[n].link.read(&mut replies);
                self.took_reader(n, got, &mut replies);
                if self.readers[n].stuck(now) {
                    self.lose_reader(n, "no answer within its deadline (block time and a margin)");
                }
            }
        }
        self.replies = replies;
    }

    /// The Sentinels switched the master: every link leaves the old one
    /// and connects to the new one now.
    pub(super) fn switched(&mut self) {
        let why = "the Sentinels switched the master";
        if !matches!(self.pipe.link.state, LinkState::Down { .. }) {
            self.lose_cmd(why);
        }
        for n in 0..self.readers.len() {
            if !matches!(self.readers[n].link.state, LinkState::Down { .. }) {
                self.lose_reader(n, why);
            }
        }
        let now = Instant::now();
        self.pipe.link.retry_now(now);
        for r in &mut self.readers {
            r.link.retry_now(now);
        }
        self.connect_due(now);
    }

    /// The command link is connected and has answered.
    pub(super) fn reachable(&self) -> bool {
        self.pipe.link.state == LinkState::Up && self.pipe.link.answered > 0
    }

    pub(super) fn all_up(&self) -> bool {
        self.pipe.link.state == LinkState::Up && self.pipe.link.answered > 0 && self.readers.iter().all(|r| r.link.state == LinkState::Up)
    }
}
