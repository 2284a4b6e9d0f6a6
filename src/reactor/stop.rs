//! Stopping. With `--drain`, the first stop request begins a drain: no
//! more accepting (a `--reuse-port` sibling or the load balancer takes new
//! connections), requests in flight answered and their connections closed,
//! then the open streams ended one after another, spread evenly over the
//! drain, each after a `retry:` of 1 to 5 s, so that their clients come
//! back spread out rather than all at once; a second request ends the rest
//! at once. Then, or at once without a drain, the stop itself: what is
//! left flushed and ended, storage released. systemd hears of it
//! (`STOPPING=1`).

use std::io;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use log::info;
use mio::{Events, Token};

use super::{Due, EVENTS_CAPACITY, Reactor, STOP_GRACE_MS, WRITE_BUDGET};
use crate::conn::Reason;
use crate::engine;
use crate::outq::Buf;
use crate::sse;
use crate::sys::random_in;

/// Drained streams are ended at most this often, in batches when many are due.
const DRAIN_TICK_MS: u64 = 10;
/// After a drain's length: how long its last peers may take to close
/// before the stop closes them (the process is gone within a second of it).
const DRAIN_LINGER_MS: u64 = 400;
/// From the drain's start, the stop's grace ends no later than its length plus this.
const DRAIN_STOP_BY_MS: u64 = 700;
/// The `retry:` a drained stream's client is told (milliseconds).
const DRAIN_RETRY_MS: RangeInclusive<u32> = 1000..=5000;

/// A drain under way.
pub(super) struct Drain {
    /// When it began: reactor milliseconds, and the same as an `Instant`.
    started: u64,
    started_at: Instant,
    /// How long it spreads the streams' ends over, in milliseconds.
    length: u64,
    /// Streams open when it began, and how many of them it has ended.
    streams: usize,
    ended: usize,
    /// The slab key from which the next stream to end is looked for.
    cursor: usize,
}

impl Reactor {
    /// A stop request (SIGTERM, SIGINT, `Handle::shutdown`): true when the
    /// reactor is to stop now; with `--drain`, the first one begins the drain.
    pub(super) fn on_shutdown(&mut self) -> bool {
        if self.drain.is_some() {
            self.log_drain_end("drain cut short", self.stats.subscribers as usize, "streams left end now");
            return true;
        }
        if self.config.drain.is_zero() {
            self.notify.send("STOPPING=1");
            return true;
        }
        self.begin_drain();
        false
    }

    fn begin_drain(&mut self) {
        // Closed: connections waiting in the accept queue are reset, and
        // new ones are refused (or go to a sibling on the same port).
        self.listener = None;
        self.metrics_listener = None;
        let started = self.now;
        let started_at = Instant::now();
        let length = self.config.drain.as_millis() as u64;
        let streams = self.stats.subscribers as usize;
        info!("draining: no longer accepting; ending {streams} streams over {length} ms");
        self.notify.send_number("STOPPING=1\nSTATUS=draining ", streams as u64, " streams");
        self.finish_requests(started_at + Duration::from_millis(STOP_GRACE_MS));
        // Answered: the last answer goes, then the connection lingers for
        // the peer's FIN. Still waiting for storage: ended as by the stop.
        for key in 0..self.conns.capacity() {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none() && !c.is_stream()) else { continue };
            if conn.awaiting() > 0 {
                let _ = conn.flush(WRITE_BUDGET, self.now);
                conn.shutdown_write();
                self.close(key, Reason::Done);
            } else {
                conn.linger();
                self.to_flush.mark(conn, key);
                // The peer's FIN may have come while requests were answered.
                if conn.can_read {
                    self.to_read.push((key, conn.generation));
                }
            }
        }
        self.drain = Some(Drain { started, started_at, length, streams, ended: 0, cursor: 0 });
        self.drain_tick();
    }

    /// Ends the streams due by now (the i-th of n at `length * i / n`),
    /// each after a `retry:`, and sets the timer for the next, or for the
    /// drain's end.
    pub(super) fn drain_tick(&mut self) {
        let Some(Drain { started, length, streams, mut ended, mut cursor, .. }) = self.drain else { return };
        let elapsed = self.now.saturating_sub(started);
        let due = if elapsed >= length { streams } else { (elapsed.saturating_mul(streams as u64) / length) as usize + 1 };
        let mut left = true;
        while ended < due.min(streams) {
            let next = (cursor..self.conns.capacity()).find(|&k| self.conns.get(k).is_some_and(|c| c.is_stream() && c.closing.is_none()));
            // The rest ended on their own.
            let Some(key) = next else {
                left = false;
                break;
            };
            cursor = key + 1;
            self.conns[key].push(Buf::Owned(sse::retry_frame(random_in(&DRAIN_RETRY_MS))));
            self.unsubscribe(key);
            ended += 1;
        }
        let next = match left && ended < streams {
            true => (started + length.saturating_mul(ended as u64) / streams as u64).max(self.now + DRAIN_TICK_MS),
            // Wakes the loop to end the drain even if the last peers stay.
            false => started + length + DRAIN_LINGER_MS,
        };
        self.timers.insert(next, Due::Drain);
        if let Some(drain) = &mut self.drain {
            (drain.ended, drain.cursor) = (ended, cursor);
        }
    }

    /// A drain is over when every stream has ended and every peer closed,
    /// or at its length plus `DRAIN_LINGER_MS` (one line says which).
    pub(super) fn drained(&self) -> bool {
        let Some(drain) = &self.drain else { return false };
        let done = self.stats.subscribers == 0 && self.conns.is_empty();
        if done || self.now >= drain.started + drain.length + DRAIN_LINGER_MS {
            self.log_drain_end("drained", self.conns.len(), "connections left to close");
            return true;
        }
        false
    }

    /// The drain's last line: how many streams it ended, in how long, and what is left.
    fn log_drain_end(&self, how: &str, left: usize, what: &str) {
        let Some(drain) = &self.drain else { return };
        let ms = drain.started_at.elapsed().as_millis();
        info!("{how}: ended {} of {} streams in {ms} ms; {left} {what}", drain.ended, drain.streams);
    }

    /// Answers every request already read (storage acknowledges what it
    /// was handed: an emit it stored is answered `202`, never cut off),
    /// until `until`; nothing more is read, and nothing accepted.
    fn finish_requests(&mut self, until: Instant) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            self.build_listings_now();
            self.hub.flush();
            self.settle();
            self.now = self.start.elapsed().as_millis() as u64;
            let mut unanswered = !self.hub.settled();
            for (_, conn) in self.conns.iter_mut().filter(|(_, c)| c.closing.is_none() && !c.is_stream()) {
                if conn.has_output() && conn.flush(WRITE_BUDGET, self.now).is_err() {
                    continue;
                }
                unanswered |= conn.awaiting() > 0 || conn.has_output();
            }
            let left = until.saturating_duration_since(Instant::now());
            if !unanswered || left.is_zero() {
                return;
            }
            // Storage's acknowledgements (the waker, Redis' sockets) and
            // sockets that take more: nothing more is read.
            let wait = self.hub.engine().next_wake().map_or(left, |at| at.saturating_duration_since(Instant::now()).min(left));
            if let Err(e) = self.poll.poll(&mut events, Some(wait.min(Duration::from_millis(50))))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return;
            }
            for event in events.iter() {
                match event.token() {
                    Token(t) if t >= engine::redis::TOKEN_BASE => self.hub.engine_ready(event),
                    // Nothing is read now, but readiness is kept for what
                    // comes after: a drain goes on with its streams.
                    Token(key) => {
                        let Some(conn) = self.conns.get_mut(key) else { continue };
                        conn.can_write |= event.is_writable() || event.is_write_closed() || event.is_error();
                        conn.can_read |= event.is_readable() || event.is_read_closed() || event.is_error();
                        conn.fin_hint |= event.is_read_closed() || event.is_error();
                        if conn.is_stream() {
                            if conn.can_write && conn.has_output() {
                                self.to_flush.mark(conn, key);
                            }
                            if conn.can_read {
                                self.to_read.push((key, conn.generation));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stops accepting and reading; answers every request already read,
    /// within `STOP_GRACE_MS` (after a drain: by its length plus
    /// `DRAIN_STOP_BY_MS`); flushes what each connection has queued (a
    /// stream: as far as its socket takes it now; after a drain cut short,
    /// with a `retry:`), and ends every connection with a FIN.
    pub(super) fn stop(&mut self) {
        self.listener = None;
        self.metrics_listener = None;
        let mut until = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        if let Some(drain) = &self.drain {
            until = until.min(drain.started_at + Duration::from_millis(drain.length + DRAIN_STOP_BY_MS));
        }
        self.finish_requests(until);
        let draining = self.drain.is_some();
        for (_, conn) in self.conns.iter_mut() {
            // A drain cut short: the streams left come back spread out too.
            if draining && conn.is_stream() && conn.closing.is_none() {
                conn.push(Buf::Owned(sse::retry_frame(random_in(&DRAIN_RETRY_MS))));
            }
            let _ = conn.flush(WRITE_BUDGET, self.now);
            conn.shutdown_write();
        }
        let closed = self.conns.len();
        self.conns.clear();
        // Last: nothing of this process touches the data dir from here on.
        self.hub.close();
        info!("stopped: closed {closed} connections; storage released");
        self.shared.stop();
        self.publish();
    }
}
