//! The hub: create, delete, emit and clear over the registry and the
//! engine. The only emit (the API, webhooks and library handles all come
//! here), and the only place that turns an engine's acknowledgement into
//! answers and fan-out: what connections must see is left in `effects`
//! for the reactor to apply.

use std::collections::VecDeque;

use log::{error, info};

use crate::api::reply::Answer;
use crate::auth::AccountId;
use crate::engine::{Ack, Engine, Op, Outcome, SourceKey, SourceMeta, StorageError, StoredSource, Ticket};
use crate::history::{Gap, History};
use crate::registry::{CreateError, Registry, Source};
use crate::sse::{Event, EventId};

/// Who waits for a ticket.
pub enum Waiter {
    /// Nobody (changes made at start).
    Nobody,
    /// A connection's request, answered with `answer` in its `slot` of
    /// the connection's answers.
    Conn { key: usize, generation: u32, slot: u32, answer: Answer },
    /// A library handle's call.
    Handle(Box<dyn FnOnce(Result<Ack, StorageError>)>),
}

/// What the reactor must do to connections after the hub's changes.
pub enum Effect {
    /// Queue this event to every subscriber of the source.
    Publish(SourceKey, Event),
    /// These streams' source is gone: end them.
    EndStreams(Vec<u32>),
    /// Send the gap frame to every subscriber of the source.
    Gap(SourceKey, Gap),
    /// Another node created this source: register it (the reactor knows the accounts).
    Created(StoredSource),
    /// Answer the connection's request in `slot` (if it is still the same connection).
    Answer { key: usize, generation: u32, slot: u32, answer: Answer, result: Result<Ack, StorageError> },
}

struct Pending {
    ticket: Ticket,
    waiter: Waiter,
    /// A create to undo if storage refuses it.
    undo_create: Option<SourceKey>,
}

pub struct Hub {
    pub registry: Registry,
    engine: Box<dyn Engine>,
    /// In submission order, as engines acknowledge.
    pending: VecDeque<Pending>,
    pub effects: Vec<Effect>,
    outcomes: Vec<Outcome>,
    /// Storage refused the last change: logged once, until it recovers.
    failing: bool,
}

impl Hub {
    pub fn new(engine: Box<dyn Engine>) -> Hub {
        Hub { registry: Registry::default(), engine, pending: VecDeque::new(), effects: Vec::new(), outcomes: Vec::new(), failing: false }
    }

    pub fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// Readiness of one of the engine's sockets.
    pub fn engine_ready(&mut self, event: &mio::event::Event) {
        self.engine.ready(event);
    }

    fn submit(&mut self, op: Op<'_>, now_ms: u64, undo_create: Option<SourceKey>) -> Ticket {
        let ticket = self.engine.submit(op, now_ms);
        self.pending.push_back(Pending { ticket, waiter: Waiter::Nobody, undo_create });
        ticket
    }

    /// Names who is told when `ticket` (just submitted) is acknowledged.
    pub fn wait(&mut self, ticket: Ticket, waiter: Waiter) {
        if let Some(p) = self.pending.iter_mut().rev().find(|p| p.ticket == ticket) {
            p.waiter = waiter;
        }
    }

    pub fn create(&mut self, account: AccountId, account_name: &str, name: &str, now_ms: u64) -> Result<(SourceKey, Ticket), CreateError> {
        let key = self.registry.create(account, name, now_ms)?;
        let meta = self.meta(key, account_name);
        Ok((key, self.submit(Op::Create { key, meta: &meta }, now_ms, Some(key))))
    }

    fn meta(&self, key: SourceKey, account_name: &str) -> SourceMeta {
        let s = self.source(key);
        SourceMeta {
            id: s.id.clone(),
            account: account_name.to_string(),
            name: s.name.clone(),
            endpoint_key: s.endpoint_key.clone(),
            created_at: s.created_at,
        }
    }

    /// Deletes a source at once, ending its streams; storage acknowledges later.
    pub fn delete(&mut self, key: SourceKey, now_ms: u64) -> Ticket {
        if let Some(source) = self.registry.remove(key)
            && !source.subscribers.is_empty()
        {
            self.effects.push(Effect::EndStreams(source.subscribers));
        }
        self.submit(Op::Delete { key }, now_ms, None)
    }

    /// Emits compact JSON; retained and delivered once acknowledged.
    pub fn emit(&mut self, key: SourceKey, payload: &[u8], now_ms: u64) -> Ticket {
        self.submit(Op::Append { key, payload }, now_ms, None)
    }

    pub fn clear(&mut self, key: SourceKey, now_ms: u64) -> Ticket {
        self.submit(Op::Clear { key }, now_ms, None)
    }

    pub fn keep_default_key(&mut self, key: &str, now_ms: u64) {
        self.submit(Op::DefaultKey(key), now_ms, None);
    }

    /// End of a loop turn: storage writes what the turn submitted.
    pub fn flush(&mut self) {
        self.engine.flush();
    }

    pub fn wants_flush(&self) -> bool {
        self.engine.wants_flush()
    }

    /// Turns what the engine acknowledged into effects and handle replies.
    pub fn settle(&mut self) {
        let mut outcomes = std::mem::take(&mut self.outcomes);
        self.engine.poll(&mut outcomes);
        for outcome in outcomes.drain(..) {
            match outcome {
                Outcome::Publish { key, event } => {
                    if self.registry.get(key).is_some() {
                        self.effects.push(Effect::Publish(key, event));
                    }
                }
                Outcome::Done { ticket, result } => self.done(ticket, result),
                Outcome::Created(stored) => self.effects.push(Effect::Created(stored)),
                Outcome::Gap { key, gap } => self.effects.push(Effect::Gap(key, gap)),
                Outcome::Deleted { key } => {
                    if let Some(source) = self.registry.remove(key) {
                        info!("source {} ({}) deleted on another node", source.name, source.id);
                        if !source.subscribers.is_empty() {
                            self.effects.push(Effect::EndStreams(source.subscribers));
                        }
                    }
                }
            }
        }
        self.outcomes = outcomes;
    }

    fn done(&mut self, ticket: Ticket, result: Result<Ack, StorageError>) {
        let at = match self.pending.front() {
            Some(p) if p.ticket == ticket => 0,
            _ => match self.pending.iter().position(|p| p.ticket == ticket) {
                Some(at) => at,
                None => return,
            },
        };
        let Some(p) = self.pending.remove(at) else { return };
        match result {
            // Not a failure of storage: another node took the name first.
            Err(StorageError::Conflict) => {
                if let Some(key) = p.undo_create {
                    self.registry.remove(key);
                }
            }
            Err(e) => {
                if !self.failing {
                    error!("storage unavailable: {e}; changes are refused (503) until it recovers");
                    self.failing = true;
                }
                if let Some(key) = p.undo_create {
                    self.registry.remove(key);
                }
            }
            Ok(_) if self.failing => {
                info!("storage recovered: changes are accepted again");
                self.failing = false;
            }
            Ok(_) => {}
        }
        match p.waiter {
            Waiter::Nobody => {}
            Waiter::Handle(reply) => reply(result),
            Waiter::Conn { key, generation, slot, answer } => self.effects.push(Effect::Answer { key, generation, slot, answer, result }),
        }
    }

    /// Puts back a source the engine found at start.
    pub fn restore(&mut self, account: AccountId, stored: StoredSource) -> SourceKey {
        let m = &stored.meta;
        let key = self.registry.insert(account, m.id.clone(), m.name.clone(), m.endpoint_key.clone(), m.created_at);
        self.engine.restore(key, stored);
        key
    }

    /// Takes in a source from an earlier version's state file: stored like
    /// a new one, with its events and their ids.
    pub fn import(&mut self, account: AccountId, stored: StoredSource, now_ms: u64) -> SourceKey {
        let m = &stored.meta;
        let key = self.registry.insert(account, m.id.clone(), m.name.clone(), m.endpoint_key.clone(), m.created_at);
        self.submit(Op::Import { key, source: &stored }, now_ms, None);
        key
    }

    pub fn source(&self, key: SourceKey) -> &Source {
        self.registry.get(key).expect("a source the caller just found")
    }

    /// The source's retained events.
    pub fn history(&self, key: SourceKey) -> Option<&History> {
        self.engine.rings().history(key)
    }

    /// What a resume after `after` replays, and its gap.
    pub fn replay(&self, key: SourceKey, after: EventId) -> (Option<Gap>, impl Iterator<Item = &Event>) {
        self.engine.rings().replay(key, after)
    }
}
