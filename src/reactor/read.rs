//! Reading: a connection's one read loop (until drained, closed or its
//! budget), the request cycle over what it read (`process`, one step per
//! phase), and the turn's budget for requests: what is over it is carried
//! over, first in line next turn (`carry`, `resume_reads`), and the end of
//! input waits for requests carried. Parked connections answered in a turn
//! read again at its end.

use std::time::{Duration, Instant};

use log::debug;

use super::Reactor;
use crate::conn::{Fill, Phase, READ_BUDGET, Reason};

/// Requests read and answered per turn: any number until this long after
/// the turn began (once one is answered), then one more per connection
/// that has had none this turn (and one slice of a page of sources per
/// turn in all, `listing.rs`). What is left is carried over, first in line
/// next turn, after this turn's answers and fan-out are written: one
/// account's many connections (a flood of emits, pages of sources) delay
/// another's emit by about one slice and one request per connection, not
/// by all of their work.
pub(super) const REQUEST_TURN: Duration = Duration::from_millis(1);

/// After one step of reading requests: parse again, or wait for more bytes
/// (or for storage, or for the connection's next phase).
pub(super) enum Step {
    Again,
    Wait,
}

impl Reactor {
    /// The connection's one read loop: until drained, closed, or its budget.
    pub(super) fn read(&mut self, key: usize) {
        let mut budget = READ_BUDGET;
        loop {
            let spent = self.turn_spent();
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) else { return };
            // A client that pipelines without reading its answers waits
            // until they drain; the flush resumes reading. A request parked
            // on storage reads nothing more until it is answered.
            if matches!(conn.phase, Phase::Waiting) || (!conn.is_stream() && conn.out.queued() > self.config.max_subscriber_buffer) {
                return;
            }
            if budget == 0 || (spent && self.served_turn.get(key) == Some(&self.turn)) {
                return self.carry(key);
            }
            // A handshake waits for the next turn once this one's flights are spent.
            #[cfg(feature = "tls")]
            let flight = match conn.tls() {
                Some(tls) if tls.handshaking() && self.flights_left == 0 => {
                    return self.to_handshake.push_back((key, conn.generation));
                }
                Some(tls) => tls.handshaking() && !tls.wants_write(),
                None => false,
            };
            #[cfg(feature = "tls")]
            let began = flight.then(Instant::now);
            let filled = conn.fill(&mut self.scratch);
            #[cfg(feature = "tls")]
            if let Some(tls) = conn.tls_mut() {
                if flight && tls.wants_write() {
                    self.flights_left -= 1;
                }
                // A handshake's time is not the turn's time for requests:
                // pipelined emits go on at their pace during a surge.
                if let Some(began) = began {
                    self.turn_ends += began.elapsed();
                }
                if tls.just_established() {
                    self.stats.tls_handshakes_ok += 1;
                } else if filled.is_err() && tls.handshaking() {
                    self.stats.tls_handshakes_failed += 1;
                }
                // Handshake messages to send.
                if tls.wants_write() && filled.is_ok() {
                    self.to_flush.mark(conn, key);
                }
            }
            match filled {
                Ok(Fill::Read(n)) => {
                    budget = budget.saturating_sub(n);
                    if conn.reads_requests() {
                        self.process(key);
                    }
                }
                Ok(Fill::Last(_)) => {
                    if conn.reads_requests() {
                        self.process(key);
                    }
                    return;
                }
                Ok(Fill::Drained) => return,
                Ok(Fill::Eof) => return self.on_eof(key),
                Ok(Fill::PlainOnTls) => {
                    conn.refuse_plain_on_tls();
                    self.disarm(key);
                    self.stats.count_response(400);
                    return self.to_flush.mark(&mut self.conns[key], key);
                }
                Err(e) => {
                    debug!("{}: {e}", self.conns[key].peer);
                    return self.close(key, Reason::Io(e.kind()));
                }
            }
        }
    }

    /// The turn's time for requests is up (once one was answered): a
    /// connection served in it waits for the next.
    pub(super) fn turn_spent(&self) -> bool {
        self.turn_served && Instant::now() >= self.turn_ends
    }

    /// Reads (and requests already read) of `key` wait for the next turn
    /// (listed once: a request carried is followed by its read loop's).
    pub(super) fn carry(&mut self, key: usize) {
        let entry = (key, self.conns[key].generation);
        if self.to_read.last() != Some(&entry) {
            self.to_read.push(entry);
        }
    }

    /// Carried-over connections, in order: the requests they have read,
    /// then what waits in their sockets.
    pub(super) fn resume_reads(&mut self) {
        for (key, generation) in std::mem::take(&mut self.to_read) {
            let Some(conn) = self.conns.get(key).filter(|c| c.generation == generation) else { continue };
            if matches!(conn.phase, Phase::Head) && !conn.rbuf.is_empty() {
                self.process(key);
            }
            // The input ended after what was carried: once that is answered
            // (or found incomplete), the connection ends as at any end of input.
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.generation == generation && c.peer_eof && c.closing.is_none() && matches!(c.phase, Phase::Head))
                && self.to_read.last() != Some(&(key, generation))
            {
                self.on_eof(key);
                continue;
            }
            // Unless its requests were carried over again.
            if self.conns.get(key).is_some_and(|c| c.generation == generation && c.can_read)
                && self.to_read.last() != Some(&(key, generation))
            {
                self.read(key);
            }
        }
    }

    pub(super) fn on_eof(&mut self, key: usize) {
        self.release_body(key);
        let conn = &mut self.conns[key];
        // Requests read before the FIN but carried over to the next turn
        // (a spent turn) are still answered; the last answer then closes.
        if matches!(conn.phase, Phase::Head) && !conn.rbuf.is_empty() && self.to_read.contains(&(key, conn.generation)) {
            conn.peer_eof = true;
            return;
        }
        let was_linger = matches!(conn.phase, Phase::Linger);
        // Answers to requests read before the FIN still go out.
        if conn.peer_closed() {
            if conn.has_output() {
                self.to_flush.mark(conn, key);
            }
        } else {
            self.close(key, if was_linger { Reason::Done } else { Reason::PeerClosed });
        }
    }

    /// Parses and answers every complete request in the read buffer.
    pub(super) fn process(&mut self, key: usize) {
        loop {
            let spent = self.turn_spent() && self.served_turn.get(key) == Some(&self.turn);
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) else { return };
            let step = match conn.phase {
                // A read must see the changes awaited before it.
                Phase::Head if conn.awaiting() > 0 && (conn.rbuf.starts_with(b"GET ") || conn.rbuf.starts_with(b"HEAD ")) => {
                    conn.park();
                    Step::Wait
                }
                Phase::Head if conn.rbuf.is_empty() => Step::Wait,
                Phase::Head if spent => {
                    self.carry(key);
                    Step::Wait
                }
                Phase::Head => self.on_head(key),
                Phase::Body(_) => self.on_body(key),
                Phase::Waiting | Phase::Stream { .. } | Phase::Linger => Step::Wait,
            };
            if let Step::Wait = step {
                return;
            }
        }
    }

    /// Parked connections answered this turn read and parse again.
    pub(super) fn resume_parked(&mut self) {
        for (key, generation) in std::mem::take(&mut self.to_resume) {
            let Some(conn) = self.conns.get(key).filter(|c| c.generation == generation && c.closing.is_none()) else { continue };
            if matches!(conn.phase, Phase::Head) {
                let can_read = conn.can_read;
                self.process(key);
                if can_read {
                    self.read(key);
                }
            }
        }
    }
}
