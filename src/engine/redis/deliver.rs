//! What reaches this node's rings and subscribers, once and in order:
//! the partitions' records (applied at `poll`), and the events an emit's
//! reply or a catch-up brings (on a reply, between two polls: held until
//! the next one).
//!
//! An event enters a ring only together with its `Publish`, at `poll`.
//! The reactor reads the engine's links in the same turn as the clients'
//! sockets (`Engine::ready`), and turns outcomes into frames when it
//! settles; a stream that opens between the two replays the ring after
//! its `Last-Event-ID`. Had the reply put the event in the ring at once,
//! that stream would get it in its replay and again from the `Publish`
//! (seen as one event twice after a reconnect, under load).

use super::Redis;
use super::follow::Resync;
use super::link::LinkState;
use super::records::{self, Record};
use super::resp::Value;
use crate::engine::{Ack, Outcome, SourceKey, StoredSource};
use crate::sse::{Event, EventId, Gap};
use crate::throttle::throttled;

/// What a reply brought for the rings, in the order it came.
pub enum Held {
    /// The source's next event here (its id already the source's last).
    Event(SourceKey, Event),
    /// Events up to this id are lost for good; the gap for live streams.
    Lost(SourceKey, EventId, Gap),
}

impl Redis {
    /// Retains and publishes an event if it is the source's next here (at `poll`).
    pub(super) fn deliver(&mut self, key: SourceKey, id: EventId, payload: &[u8]) {
        if let Some(event) = self.next_event(key, id, payload) {
            self.publish(key, event);
        }
    }

    /// `deliver` for a reply: the event is the source's last at once (what
    /// follows it is told by that), in the ring and published at the next poll.
    pub(super) fn hold(&mut self, key: SourceKey, id: EventId, payload: &[u8]) {
        if let Some(event) = self.next_event(key, id, payload) {
            self.held.push(Held::Event(key, event));
        }
    }

    /// What replies held since the last poll, into the rings and out.
    pub(super) fn release_held(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        for h in held.drain(..) {
            match h {
                Held::Event(key, event) => self.publish(key, event),
                Held::Lost(key, up_to, gap) => {
                    self.rings.lost_up_to(key, up_to);
                    self.ready.push(Outcome::Gap { key, gap });
                }
            }
        }
        // (Its buffer kept: no allocation per turn.)
        self.held = held;
    }

    /// The event framed, if it is newer than the source's last here (it becomes that).
    fn next_event(&mut self, key: SourceKey, id: EventId, payload: &[u8]) -> Option<Event> {
        let src = self.sources.get_mut(key)?;
        if id <= src.last {
            return None;
        }
        src.last = id;
        Some(Event::new(id, &src.id, payload, &mut self.scratch))
    }

    fn publish(&mut self, key: SourceKey, event: Event) {
        if self.rings.retain(key, event.clone()) {
            self.ready.push(Outcome::Publish { key, event });
        }
    }

    /// Applies read records in order; stops after a remote create, which
    /// the core must register (and name a key for) before the source's
    /// next records. Waits while what was read before the command link was
    /// lost is not yet found on the server the links connected to again
    /// (`links::ask_tails`): a reader that reconnected first, to a server
    /// that lost records, must not deliver past them before the loss is handled.
    pub(super) fn apply_entries(&mut self) {
        if self.unchecked() {
            return;
        }
        while let Some(entry) = self.entries.pop_front() {
            match entry {
                Record::Event { source, id, prev, emit, payload } => {
                    let Some(key) = self.sources.key_of(&source) else { continue };
                    let last = self.sources.get(key).map_or(EventId::default(), |s| s.last);
                    if prev > last && id > last {
                        match self.resync.take() {
                            // Caught up as far as history holds: the rest is gone.
                            Some(r) if r.key == key && r.prev == prev && r.done => {
                                self.rings.lost_up_to(key, prev);
                                if !r.gap_sent {
                                    throttled!(self.health.lines.lost, Warn, "source {source}: events after {last} up to {prev} are lost");
                                    self.ready.push(Outcome::Gap { key, gap: Gap { after: last, resumed_from: Some(id) } });
                                }
                            }
                            waiting => {
                                // A finished resync still here is stale (its source went meanwhile).
                                let waiting = waiting.filter(|r| !r.done);
                                self.stalled = true;
                                if waiting.is_none() && self.pipe.link.state == LinkState::Up {
                                    throttled!(
                                        self.health.lines.catching_up,
                                        Info,
                                        "source {source}: catching up from its history after {last} (this node fell behind its partition)"
                                    );
                                    let keep = self.sources.get(key).map(|s| self.keep(&s.meta.retention)).unwrap_or_default();
                                    self.resync = Some(Resync::ask(&mut self.pipe, &source, key, last, prev, &keep));
                                } else {
                                    self.resync = waiting;
                                }
                                self.entries.push_front(Record::Event { source, id, prev, emit, payload });
                                return;
                            }
                        }
                    } else if self.resync.as_ref().is_some_and(|r| r.key == key && r.done) {
                        self.resync = None;
                    }
                    // (Not with `--redis-replicas`: its reply waits for `WAIT`.)
                    if self.replicas.n == 0
                        && let Some(flight) = self.pipe.land_own(&emit)
                    {
                        // Our emit, its reply not (yet) here: the record proves Redis took it.
                        if let Some(idem) = flight.idem {
                            self.rings.remember(key, idem, id);
                        }
                        self.ready.push(Outcome::Done { ticket: flight.ticket, result: Ok(Ack::Appended(id)) });
                    }
                    self.deliver(key, id, &payload);
                }
                Record::Created(meta) => {
                    if !self.sources.is_new(&meta.id) {
                        continue;
                    }
                    self.ready.push(Outcome::Created(Box::new(StoredSource {
                        meta,
                        events: Vec::new(),
                        last_id: None,
                        evicted: None,
                        keys: Vec::new(),
                    })));
                    return;
                }
                control => self.sources.apply(control, &mut self.rings, &mut self.ready, self.now_ms),
            }
        }
    }

    /// The history's events after the source's last delivered one (a
    /// reply: held until the next poll).
    pub(super) fn resynced(&mut self, reply: &Value) {
        let Some(r) = &mut self.resync else { return };
        r.done = true;
        let (key, prev) = (r.key, r.prev);
        let Some(last) = self.sources.get(key).map(|s| s.last) else { return };
        // (id, the id before it, payload)
        let events = records::history(reply, prev);
        if let Some(&(_, before, _)) = events.first().filter(|e| e.1 > last) {
            // Some of what this node missed is no longer in the history either.
            throttled!(
                self.health.lines.evicted,
                Warn,
                "source {}: events after {last} up to {before} were evicted before this node caught up",
                self.sources.get(key).map_or("", |s| &s.id)
            );
            let resumed_from = events.first().map(|e| e.0);
            self.held.push(Held::Lost(key, before, Gap { after: last, resumed_from }));
            if let Some(r) = &mut self.resync {
                r.gap_sent = true;
            }
        }
        for (id, _, payload) in events {
            self.hold(key, id, &payload);
        }
    }
}
