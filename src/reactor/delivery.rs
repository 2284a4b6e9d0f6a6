//! Delivery, the reactor's writing half: published events fanned out to
//! their subscribers' queues (shared frames, never copied), queued output
//! flushed once per turn (answers all, streams in slices), and the
//! handshake comments every stream gets each interval.

use std::time::Duration;

use log::warn;

use super::timers::LINGER_TIMEOUT_MS;
use super::{Due, Reactor, WRITE_BUDGET, Waiter};
use crate::api::Reply;
use crate::conn::{Conn, Phase, Reason};
use crate::hub::Effect;
use crate::outq::{Buf, Flushed};
use crate::sse;
use crate::throttle::throttled;
use crate::tokens::Opener;

/// Handshake comments go out in slots of this period, spread over the interval.
const HANDSHAKE_TICK_MS: u64 = 100;
/// Consecutive slab keys that share a handshake slot (see `Handshakes`).
const HANDSHAKE_RUN: usize = 32;
/// Stream connections written per turn (about 5 ms of `send` calls here).
const STREAM_FLUSH_BUDGET: usize = 1024;

/// Spreads handshake comments: streams are split into `slots` by slab key,
/// in runs of `HANDSHAKE_RUN` consecutive keys (slot = key / run % slots),
/// and each tick writes the comment to one slot, so every stream gets one
/// per interval and no tick carries more than its share. Runs rather than
/// single keys: a tick then writes to neighbouring connections, whose state
/// (ours and the kernel's, allocated in accept order) is near in memory,
/// and on loopback wakes each reading process once per run rather than once
/// per write: 30 % less CPU per handshake than key % slots, measured.
/// The tick runs only while there are streams, so an idle server sleeps.
pub(super) struct Handshakes {
    /// A stream younger than this (half an interval) skips its slot: the
    /// comment it got when it opened is recent enough.
    min_age_ms: u64,
    slots: usize,
    slot: usize,
    tick_ms: u64,
    next_at: u64,
    armed: bool,
}

impl Handshakes {
    pub(super) fn new(interval: Duration) -> Handshakes {
        let interval_ms = (interval.as_millis() as u64).max(1);
        let tick_ms = HANDSHAKE_TICK_MS.min(interval_ms);
        Handshakes {
            min_age_ms: interval_ms / 2,
            slots: (interval_ms / tick_ms).max(1) as usize,
            slot: 0,
            tick_ms,
            next_at: 0,
            armed: false,
        }
    }
}

/// Connections with output to write this turn: answers (all of them, each
/// turn, so a publisher's `202` never waits behind a fan-out) and streams
/// (a budget per turn, the rest carried over, so new requests are read
/// between slices of a long fan-out and their events join the queues not
/// yet flushed).
#[derive(Default)]
pub(super) struct ToFlush {
    answers: Vec<usize>,
    streams: Vec<usize>,
}

impl ToFlush {
    pub(super) fn mark(&mut self, conn: &mut Conn, key: usize) {
        if !conn.pending_write {
            conn.pending_write = true;
            if conn.is_stream() { self.streams.push(key) } else { self.answers.push(key) }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.streams.is_empty()
    }
}

impl Reactor {
    /// Carries out what the hub recorded: answer parked requests, deliver
    /// events, end streams.
    pub(super) fn apply_effects(&mut self) {
        // Swapped with a kept buffer: no allocation per emit.
        let mut effects = std::mem::take(&mut self.spare_effects);
        std::mem::swap(&mut effects, &mut self.hub.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Publish(source, event) => {
                    self.stats.events_emitted += 1;
                    let max = self.config.max_subscriber_buffer;
                    let Some(s) = self.hub.registry.get(source) else { continue };
                    for &k in &s.subscribers {
                        // Resumed from a newer id than this one (on a node that was behind): sent already.
                        if !s.ahead.is_empty() && s.ahead.iter().any(|&(c, after)| c == k && event.id <= after) {
                            continue;
                        }
                        let k = k as usize;
                        let conn = &mut self.conns[k];
                        if conn.closing.is_some() {
                            continue;
                        }
                        // An empty queue takes any one frame, so a large event alone drops no one.
                        if conn.out.queued() > 0 && conn.out.queued() + event.frame.len() > max {
                            throttled!(
                                self.throttles.slow,
                                Warn,
                                "dropping subscriber {}: {} bytes unsent, over --max-subscriber-buffer",
                                conn.peer,
                                conn.out.queued()
                            );
                            self.stats.subscribers_dropped_slow += 1;
                            conn.closing = Some(Reason::SlowSubscriber);
                            self.to_close.push(k);
                            continue;
                        }
                        conn.push(Buf::Shared(event.frame.clone()));
                        self.stats.frames_delivered += 1;
                        self.to_flush.mark(conn, k);
                    }
                    if !s.ahead.is_empty() {
                        self.hub.registry.passed(source, event.id);
                    }
                }
                Effect::EndStreams(keys) => {
                    for k in keys {
                        // The source is gone: the stream ends after what is
                        // queued. Even a closing connection leaves `Stream`,
                        // so that freeing it does not unsubscribe from a new
                        // source that reused the key.
                        let conn = &mut self.conns[k as usize];
                        conn.end_stream();
                        self.stats.subscribers -= 1;
                        if conn.closing.is_none() {
                            self.to_flush.mark(conn, k as usize);
                        }
                    }
                }
                Effect::EndTokenStreams(ended) => {
                    let Some(s) = self.hub.registry.get(ended.source) else { continue };
                    let opened_with = |c: &Conn| c.opener == Opener::Token(ended.serial);
                    let keys: Vec<u32> = s.subscribers.iter().copied().filter(|&k| opened_with(&self.conns[k as usize])).collect();
                    for k in keys {
                        self.unsubscribe(k as usize);
                    }
                }
                Effect::Gap(source, gap) => {
                    let Some(s) = self.hub.registry.get(source) else { continue };
                    let frame: crate::sse::Frame = sse::gap_frame(&gap).into();
                    // What is lost comes before `resumed_from`: a subscriber that resumed
                    // from there or later (on a node that was behind) misses none of it.
                    let past = |k: u32| s.ahead.iter().any(|&(c, after)| c == k && gap.resumed_from.is_some_and(|r| after >= r));
                    for &k in &s.subscribers {
                        if !s.ahead.is_empty() && past(k) {
                            continue;
                        }
                        let conn = &mut self.conns[k as usize];
                        if conn.closing.is_none() {
                            conn.push(Buf::Shared(frame.clone()));
                            self.to_flush.mark(conn, k as usize);
                        }
                    }
                }
                Effect::Created(stored) => {
                    let account = self.keys.account(&stored.meta.account);
                    if self.hub.registry.find(account, &stored.meta.name).is_some() {
                        warn!("source {} ({}) created on another node has a name taken here", stored.meta.name, stored.meta.id);
                    }
                    throttled!(self.throttles.sources, Info, "source {} ({}) created on another node", stored.meta.name, stored.meta.id);
                    self.hub.restore(account, *stored);
                }
                Effect::Answer { waiter: Waiter::Handle(reply), result } => reply(result),
                Effect::Answer { waiter: Waiter::Conn { key, generation, slot, mut answer }, result } => {
                    if self.conns.get(key).is_none_or(|c| c.generation != generation || c.closing.is_some()) {
                        continue;
                    }
                    let access = answer.access.take();
                    let Reply::Response { status, bytes, close } = answer.render(result, &mut self.handler_scratch) else { continue };
                    if let Some(access) = access {
                        access.log(self.conns[key].peer, status, bytes.len() as u64, self.clock_us());
                    }
                    self.answer(key, Some(slot), status, bytes, close);
                }
            }
        }
        self.spare_effects = effects;
    }

    /// Ends one stream of a source that stays: it leaves the subscriber
    /// list, and what is queued still goes out.
    pub(super) fn unsubscribe(&mut self, key: usize) {
        let Phase::Stream { source, index } = self.conns[key].phase else { return };
        self.drop_subscriber(source, index);
        let conn = &mut self.conns[key];
        conn.end_stream();
        if conn.closing.is_none() {
            self.to_flush.mark(conn, key);
        }
    }

    /// Writes before sleeping: every connection with queued output, once.
    pub(super) fn flush_pending(&mut self) {
        let answers = std::mem::take(&mut self.to_flush.answers);
        let mut streams = std::mem::take(&mut self.to_flush.streams);
        // The streams over budget go first next turn, still marked pending.
        self.to_flush.streams = streams.split_off(streams.len().min(STREAM_FLUSH_BUDGET));
        for key in answers.into_iter().chain(streams) {
            // Not pending: a carried-over key whose connection closed (the
            // key may be reused) or that was listed twice.
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.pending_write) else { continue };
            conn.pending_write = false;
            if conn.closing.is_some() || !conn.can_write {
                continue;
            }
            match conn.flush(WRITE_BUDGET, self.now) {
                Ok((done, n)) => {
                    if conn.is_stream() {
                        self.stats.delivered_bytes += n as u64;
                    }
                    match done {
                        Flushed::Empty => self.on_flushed(key),
                        Flushed::Budget => self.to_flush.mark(conn, key),
                        // A stream, or a last answer (`Linger`, whose phase timer is
                        // disarmed): without this deadline a peer that never reads
                        // would hold the slot and the queued answer for ever.
                        Flushed::Blocked if conn.timer.is_none() => self.arm(key, self.now + self.send_timeout_ms),
                        Flushed::Blocked => {}
                    }
                }
                Err(e) => self.close(key, Reason::Io(e.kind())),
            }
        }
    }

    fn on_flushed(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.phase {
            Phase::Linger => {
                conn.shutdown_write();
                if conn.peer_eof {
                    self.close(key, Reason::Done);
                } else {
                    self.arm(key, self.now + LINGER_TIMEOUT_MS);
                }
            }
            // Reading paused while answers piled up: resume.
            Phase::Head | Phase::Body(_) if conn.can_read => self.read(key),
            _ => {}
        }
    }

    /// Starts the handshake ticks when the first stream opens.
    pub(super) fn start_handshakes(&mut self) {
        let hs = &mut self.handshakes;
        if !hs.armed {
            hs.armed = true;
            hs.next_at = self.now + hs.tick_ms;
            self.timers.insert(hs.next_at, Due::Handshake);
        }
    }

    /// Writes the handshake comment to this tick's slot of streams. A
    /// stream with output still queued is busy anyway and is skipped; so is
    /// one opened less than half an interval ago, so the first periodic
    /// comment comes between a half and one and a half intervals after the
    /// opening one.
    pub(super) fn handshake_tick(&mut self) {
        let hs = &mut self.handshakes;
        let end = self.conns.capacity();
        let mut run = hs.slot * HANDSHAKE_RUN;
        while run < end {
            for key in run..(run + HANDSHAKE_RUN).min(end) {
                if let Some(conn) = self.conns.get_mut(key)
                    && conn.is_stream()
                    && self.now * 1000 >= conn.request_at_us + hs.min_age_ms * 1000
                    && conn.closing.is_none()
                    && conn.out.is_empty()
                {
                    conn.push(Buf::Static(sse::HANDSHAKE));
                    self.to_flush.mark(conn, key);
                }
            }
            run += hs.slots * HANDSHAKE_RUN;
        }
        hs.slot = (hs.slot + 1) % hs.slots;
        hs.armed = self.stats.subscribers > 0;
        if hs.armed {
            // Fixed cadence; after a stall, skip missed ticks rather than burst.
            hs.next_at = (hs.next_at + hs.tick_ms).max(self.now);
            self.timers.insert(hs.next_at, Due::Handshake);
        }
    }
}
