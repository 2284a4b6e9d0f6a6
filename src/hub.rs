//! The hub: create, delete, emit and clear over the registry and the
//! engine. The only emit (the API, webhooks and library handles all come
//! here), and the only place that turns an engine's acknowledgement into
//! answers and fan-out: what connections must see is left in `effects`
//! for the reactor to apply.

use std::collections::VecDeque;

use crate::auth::AccountId;
use crate::engine::{Ack, Engine, IdemKey, Op, Outcome, Retention, SourceKey, SourceMeta, StorageError, StoredSource, StoredToken, Ticket};
use crate::history::History;
use crate::limits::{Bucket, Kind, Limits};
use crate::registry::{CreateError, Registry, Source};
use crate::sse::Gap;
use crate::sse::{Event, EventId};
use crate::throttle::{Throttle, throttled};
use crate::tokens::{self, Ended, Tokens};
use crate::verify::Verify;

/// What the reactor must do to connections after the hub's changes.
pub enum Effect<W> {
    /// Queue this event to every subscriber of the source.
    Publish(SourceKey, Event),
    /// These streams' source is gone: end them.
    EndStreams(Vec<u32>),
    /// A token ended (expired, revoked): end the source's streams opened with it.
    EndTokenStreams(Ended),
    /// Send the gap frame to every subscriber of the source.
    Gap(SourceKey, Gap),
    /// Another node created this source: register it (the reactor knows the accounts).
    Created(Box<StoredSource>),
    /// What storage said of a change the caller waits for.
    Answer { waiter: W, result: Result<Ack, StorageError> },
}

/// An emit refused at a rate limit: which, and milliseconds until one would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub kind: Kind,
    pub wait_ms: u64,
}

struct Pending<W> {
    ticket: Ticket,
    /// Who waits for the answer: the caller's type, never read here (a
    /// connection's request, a library handle's call); nobody for changes
    /// made at start.
    waiter: Option<W>,
    /// What to undo if storage refuses the change.
    undo: Undo,
    /// An emit's idempotency key, in flight until acknowledged or refused.
    idem: Option<(SourceKey, [u8; 16])>,
}

/// An emit with an idempotency key that was not submitted (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The key and body of an earlier emit: its id (nothing emitted).
    Replayed(EventId),
    /// The key of an earlier emit with another body (422).
    OtherBody,
    /// The key of an emit storage has not acknowledged yet (409).
    InFlight,
}

/// What to take back if storage refuses a change.
enum Undo {
    Nothing,
    /// Remove the created source.
    Create(SourceKey),
    /// Put back the signature check it had.
    Verify(SourceKey, Option<Verify>),
    /// Put back the retention it had (what it evicted meanwhile stays evicted).
    Retention(SourceKey, Retention),
    /// A new token (of this source).
    Token(SourceKey, String),
    /// A delete: the source is hidden meanwhile and goes once acknowledged;
    /// its tokens (stored form, expiry) come back if nothing was written.
    Delete(SourceKey, Vec<(String, u64)>),
    /// A revoked token (stored form, expiry), back if nothing was written.
    Revoke(SourceKey, String, u64),
}

/// The source's and the account's buckets after one more emit, if both rates allow it.
fn rates(source: &Bucket, account: &Bucket, limits: &Limits, clock_ms: u64) -> Result<(Bucket, Bucket), Limited> {
    let take = |bucket: &Bucket, rate, kind| match rate {
        Some(rate) => bucket.check(rate, clock_ms).map_err(|wait_ms| Limited { kind, wait_ms }),
        None => Ok(*bucket),
    };
    Ok((take(source, limits.emit_rate.as_ref(), Kind::EmitRate)?, take(account, limits.account_emit_rate.as_ref(), Kind::AccountEmitRate)?))
}

impl Undo {
    /// Storage refused the change with `error`. What it did not make is
    /// taken back; a delete or revocation whose fate is unknown (a lost
    /// link to Redis, a failed sync) is kept here, on the safe side.
    fn apply(self, registry: &mut Registry, tokens: &mut Tokens, error: StorageError) {
        // Surely not done, and the source still here (another node's delete may have taken it).
        let not_done = |key| error == StorageError::WriteFailed && registry.get(key).is_some();
        match self {
            Undo::Nothing => {}
            Undo::Delete(key, kept) if not_done(key) => {
                registry.confirm(key);
                for (token, expires_at) in kept {
                    tokens.insert(&token, key, expires_at);
                }
            }
            Undo::Delete(key, _) => drop(registry.remove(key)),
            Undo::Revoke(key, token, expires_at) if not_done(key) => drop(tokens.insert(&token, key, expires_at)),
            Undo::Revoke(..) => {}
            Undo::Create(key) => {
                // Tokens made for it meanwhile go with it: a token names a source that exists.
                registry.remove(key);
                tokens.remove_source(key);
            }
            Undo::Verify(key, before) => drop(registry.set_verify(key, before)),
            Undo::Retention(key, before) => drop(registry.set_retention(key, before)),
            Undo::Token(key, token) => drop(tokens.revoke(key, &token)),
        }
    }
}

pub struct Hub<W> {
    pub registry: Registry,
    pub tokens: Tokens,
    engine: Box<dyn Engine>,
    /// In submission order, as engines acknowledge.
    pending: VecDeque<Pending<W>>,
    pub effects: Vec<Effect<W>>,
    outcomes: Vec<Outcome>,
    /// Storage refused the last change: logged once, until it recovers.
    failing: bool,
    /// Times storage started failing, and recovered (`/metrics`).
    pub failures: u64,
    pub recoveries: u64,
    /// A disk that flaps fails and recovers many times a second.
    fail_lines: Throttle,
    recover_lines: Throttle,
    /// Sources deleted on other nodes (Redis).
    remote_lines: Throttle,
    /// Idempotency keys of emits waiting for storage: as few as emits in
    /// flight, so a list.
    in_flight: Vec<(SourceKey, [u8; 16])>,
    /// Sources whose age deadline may have come nearer (an event retained,
    /// a retention set, a source restored): the reactor arms their timers.
    pub aging: Vec<SourceKey>,
}

impl<W> Hub<W> {
    pub fn new(engine: Box<dyn Engine>) -> Hub<W> {
        Hub {
            registry: Registry::default(),
            tokens: Tokens::default(),
            engine,
            pending: VecDeque::new(),
            effects: Vec::new(),
            outcomes: Vec::new(),
            failing: false,
            failures: 0,
            recoveries: 0,
            fail_lines: Throttle::default(),
            recover_lines: Throttle::default(),
            remote_lines: Throttle::default(),
            aging: Vec::new(),
            in_flight: Default::default(),
        }
    }

    pub fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// Readiness of one of the engine's sockets.
    pub fn engine_ready(&mut self, event: &mio::event::Event) {
        self.engine.ready(event);
    }

    fn submit(&mut self, op: Op<'_>, now_ms: u64, undo: Undo) -> Ticket {
        let ticket = self.engine.submit(op, now_ms);
        self.pending.push_back(Pending { ticket, waiter: None, undo, idem: None });
        ticket
    }

    /// Names who is told when `ticket` (just submitted) is acknowledged.
    pub fn wait(&mut self, ticket: Ticket, waiter: W) {
        if let Some(p) = self.pending.iter_mut().rev().find(|p| p.ticket == ticket) {
            p.waiter = Some(waiter);
        }
    }

    /// Creates a source, with a signature check of its webhooks if given.
    pub fn create(
        &mut self,
        account: AccountId,
        account_name: &str,
        name: &str,
        verify: Option<Verify>,
        retention: Retention,
        now_ms: u64,
    ) -> Result<(SourceKey, Ticket), CreateError> {
        let key = self.registry.create(account, name, now_ms)?;
        self.registry.set_verify(key, verify);
        self.registry.set_retention(key, retention);
        let meta = self.meta(key, account_name);
        Ok((key, self.submit(Op::Create { key, meta: &meta }, now_ms, Undo::Create(key))))
    }

    /// Sets, changes or (`None`) removes a source's signature check; in
    /// effect for the next delivery, put back if storage refuses it.
    pub fn set_verify(&mut self, key: SourceKey, verify: Option<Verify>, now_ms: u64) -> Ticket {
        let before = self.registry.set_verify(key, verify);
        let verify = self.source(key).verify.clone();
        self.submit(Op::Verify { key, verify: verify.as_ref() }, now_ms, Undo::Verify(key, before))
    }

    /// Sets a source's retention, in effect at once (what it no longer
    /// allows is evicted now); the setting is put back if storage refuses it.
    pub fn set_retention(&mut self, key: SourceKey, retention: Retention, now_ms: u64) -> Ticket {
        let before = self.registry.set_retention(key, retention);
        self.aging.push(key);
        self.submit(Op::Retention { key, retention }, now_ms, Undo::Retention(key, before))
    }

    /// The source's age deadline came: what is past it is evicted. The
    /// next deadline (unix ms), if any.
    pub fn expire(&mut self, key: SourceKey, now_ms: u64) -> Option<u64> {
        self.registry.get(key)?;
        self.engine.expire(key, now_ms)
    }

    fn meta(&self, key: SourceKey, account_name: &str) -> SourceMeta {
        let s = self.source(key);
        SourceMeta {
            id: s.id.clone(),
            account: account_name.to_string(),
            name: s.name.clone(),
            endpoint_key: s.endpoint_key.clone(),
            created_at: s.created_at,
            verify: s.verify.clone(),
            retention: s.retention,
        }
    }

    /// Deletes a source: its streams end and its tokens are revoked at
    /// once; nothing finds it while storage writes the delete, and it is
    /// back (without its streams) if storage writes nothing of it.
    pub fn delete(&mut self, key: SourceKey, now_ms: u64) -> Ticket {
        let kept = self.tokens.take_source(key);
        let subscribers = self.registry.hide(key);
        if !subscribers.is_empty() {
            self.effects.push(Effect::EndStreams(subscribers));
        }
        self.submit(Op::Delete { key }, now_ms, Undo::Delete(key, kept))
    }

    /// Takes a deleted source (here or on another node) out of the registry,
    /// ending its streams and revoking its tokens.
    fn forget(&mut self, key: SourceKey) -> Option<Source> {
        let mut source = self.registry.remove(key)?;
        self.tokens.remove_source(key);
        if !source.subscribers.is_empty() {
            self.effects.push(Effect::EndStreams(std::mem::take(&mut source.subscribers)));
        }
        Some(source)
    }

    /// Whether an emit of `key` would pass its rates now (`limits`: its
    /// account's; `clock_ms`: the reactor's clock); nothing is taken.
    pub fn emit_refused(&self, key: SourceKey, limits: &Limits, clock_ms: u64) -> Option<Limited> {
        if limits.emit_rate.is_none() && limits.account_emit_rate.is_none() {
            return None;
        }
        let source = self.registry.get(key)?;
        let account = self.registry.account(source.account).map(|a| a.bucket).unwrap_or_default();
        rates(&source.bucket, &account, limits, clock_ms).err()
    }

    /// Takes one emit of `key` from its bucket and its account's, or says
    /// which rate refuses it; a refused emit takes nothing from either.
    pub fn take_emit(&mut self, key: SourceKey, limits: &Limits, clock_ms: u64) -> Result<(), Limited> {
        if limits.emit_rate.is_none() && limits.account_emit_rate.is_none() {
            return Ok(());
        }
        let Some((source, account)) = self.registry.buckets(key) else { return Ok(()) };
        let (s, a) = rates(source, account, limits, clock_ms)?;
        *source = s;
        *account = a;
        Ok(())
    }

    /// Emits compact JSON; retained and delivered once acknowledged.
    pub fn emit(&mut self, key: SourceKey, payload: &[u8], now_ms: u64) -> Ticket {
        self.submit(Op::Append { key, payload, idem: None }, now_ms, Undo::Nothing)
    }

    /// Emits with an idempotency key (`idem`: hashes of the key and of the
    /// request's body), unless the key was used on the source: then what
    /// the first emit got, and nothing is emitted.
    pub fn emit_idempotent(&mut self, key: SourceKey, payload: &[u8], idem: IdemKey, now_ms: u64) -> Result<Ticket, Repeat> {
        if self.in_flight.contains(&(key, idem.key)) {
            return Err(Repeat::InFlight);
        }
        match self.engine.rings().repeat(key, &idem.key, now_ms) {
            Some((body, id)) if body == idem.body => return Err(Repeat::Replayed(id)),
            Some(_) => return Err(Repeat::OtherBody),
            None => {}
        }
        let ticket = self.submit(Op::Append { key, payload, idem: Some(idem) }, now_ms, Undo::Nothing);
        self.in_flight.push((key, idem.key));
        if let Some(p) = self.pending.back_mut() {
            p.idem = Some((key, idem.key));
        }
        Ok(ticket)
    }

    pub fn clear(&mut self, key: SourceKey, now_ms: u64) -> Ticket {
        self.submit(Op::Clear { key }, now_ms, Undo::Nothing)
    }

    pub fn keep_default_key(&mut self, key: &str, now_ms: u64) {
        self.submit(Op::DefaultKey(key), now_ms, Undo::Nothing);
    }

    /// A new subscribe token of `key`, valid until `expires_at` (unix ms):
    /// the token itself, for its one answer (the table and storage keep its
    /// `tokens::stored` form).
    pub fn create_token(&mut self, key: SourceKey, expires_at: u64, now_ms: u64) -> (StoredToken, Ticket) {
        let token = tokens::generate();
        let kept = tokens::stored(&token).expect("a generated token has the token shape");
        let kept = StoredToken { token: kept, source_id: self.source(key).id.clone(), expires_at };
        self.tokens.insert(&kept.token, key, expires_at);
        let ticket = self.submit(Op::Token { key, token: &kept }, now_ms, Undo::Token(key, kept.token.clone()));
        (StoredToken { token, ..kept }, ticket)
    }

    /// Revokes one of `key`'s tokens (as presented) at once, ending its
    /// streams; `None` if it is not one of them.
    pub fn revoke_token(&mut self, key: SourceKey, token: &str, now_ms: u64) -> Option<Ticket> {
        let kept = tokens::stored(token)?;
        let (ended, expires_at) = self.tokens.revoke(key, &kept)?;
        self.effects.push(Effect::EndTokenStreams(ended));
        Some(self.submit(Op::RevokeToken { key, token: &kept }, now_ms, Undo::Revoke(key, kept.clone(), expires_at)))
    }

    /// Forgets the tokens expired at `now_ms`, ending their streams.
    pub fn expire_tokens(&mut self, now_ms: u64) {
        let mut ended = Vec::new();
        self.tokens.expire(now_ms, &mut ended);
        self.effects.extend(ended.into_iter().map(Effect::EndTokenStreams));
    }

    /// Puts back a token the engine found at start (unless its source is
    /// gone or it has expired).
    pub fn restore_token(&mut self, token: StoredToken, now_ms: u64) {
        let Some(key) = self.registry.find_id(&token.source_id) else { return };
        if token.expires_at > now_ms && self.tokens.insert(&token.token, key, token.expires_at) {
            self.engine.restore_token(key, token);
        }
    }

    /// End of a loop turn: storage writes what the turn submitted.
    pub fn flush(&mut self) {
        self.engine.flush();
    }

    /// The server stops: storage is released (`Engine::close`).
    pub fn close(&mut self) {
        self.engine.close();
    }

    /// True when every submitted change has been acknowledged or refused.
    pub fn settled(&self) -> bool {
        self.pending.is_empty()
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
                        if self.engine.rings().deadline(key).is_some() {
                            self.aging.push(key);
                        }
                        self.effects.push(Effect::Publish(key, event));
                    }
                }
                Outcome::Done { ticket, result } => self.done(ticket, result),
                Outcome::Created(stored) => self.effects.push(Effect::Created(stored)),
                Outcome::Gap { key, gap } => self.effects.push(Effect::Gap(key, gap)),
                // (A source gone meanwhile has nothing to set.)
                Outcome::Verify { key, verify } => drop(self.registry.set_verify(key, verify)),
                Outcome::Retention { key, retention } => {
                    if self.registry.get(key).is_some() {
                        self.registry.set_retention(key, retention);
                        self.aging.push(key);
                    }
                }
                Outcome::Token { key, token } => {
                    if self.registry.get(key).is_some() {
                        self.tokens.insert(&token.token, key, token.expires_at);
                    }
                }
                Outcome::TokenRevoked { key, token } => {
                    if let Some((ended, _)) = self.tokens.revoke(key, &token) {
                        self.effects.push(Effect::EndTokenStreams(ended));
                    }
                }
                Outcome::Deleted { key } => {
                    if let Some(source) = self.forget(key) {
                        throttled!(self.remote_lines, Info, "source {} ({}) deleted on another node", source.name, source.id);
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
        if let Some(idem) = p.idem
            && let Some(at) = self.in_flight.iter().position(|&k| k == idem)
        {
            self.in_flight.swap_remove(at);
        }
        match result {
            // Not a failure of storage: another node took the name first.
            // (Nor is an idempotency key used with another body, seen by Redis.)
            Err(e @ (StorageError::Conflict | StorageError::KeyReused)) => p.undo.apply(&mut self.registry, &mut self.tokens, e),
            Err(e) => {
                if !self.failing {
                    throttled!(self.fail_lines, Error, "storage unavailable: {e}; changes are refused (503) until it recovers");
                    self.failing = true;
                    self.failures += 1;
                }
                p.undo.apply(&mut self.registry, &mut self.tokens, e);
            }
            Ok(_) => {
                match p.undo {
                    Undo::Create(key) => self.registry.confirm(key),
                    Undo::Delete(key, _) => drop(self.registry.remove(key)),
                    _ => {}
                }
                if self.failing {
                    throttled!(self.recover_lines, Info, "storage recovered: changes are accepted again");
                    self.failing = false;
                    self.recoveries += 1;
                }
            }
        }
        if let Some(waiter) = p.waiter {
            self.effects.push(Effect::Answer { waiter, result });
        }
    }

    /// Puts back a source the engine found at start.
    pub fn restore(&mut self, account: AccountId, stored: StoredSource) -> SourceKey {
        let m = &stored.meta;
        let key = self.registry.insert(account, m.id.clone(), m.name.clone(), m.endpoint_key.clone(), m.created_at);
        self.registry.set_verify(key, m.verify.clone());
        self.registry.set_retention(key, m.retention);
        self.engine.restore(key, stored);
        self.aging.push(key);
        key
    }

    /// Takes in a source from an earlier version's state file: stored like
    /// a new one, with its events and their ids.
    pub fn import(&mut self, account: AccountId, stored: StoredSource, now_ms: u64) -> SourceKey {
        let m = &stored.meta;
        let key = self.registry.insert(account, m.id.clone(), m.name.clone(), m.endpoint_key.clone(), m.created_at);
        self.registry.set_verify(key, stored.meta.verify.clone());
        self.submit(Op::Import { key, source: &stored }, now_ms, Undo::Nothing);
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

    /// True if `after` is newer than every event of the source here, on a
    /// node of a cluster (it is behind: the events up to `after` are still
    /// to come). Alone, a node has every event of its own: a newer id is
    /// none of them, and nothing that comes repeats one.
    pub fn is_ahead(&self, key: SourceKey, after: EventId) -> bool {
        self.engine.shared() && self.engine.rings().newest_known(key).is_none_or(|newest| after > newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Memory;
    use crate::engine::conformance::Delayed;

    /// A repeat while the first emit waits for storage is `InFlight`; once
    /// acknowledged, a replay of its id (or, for another body, `OtherBody`).
    #[test]
    fn a_repeat_is_in_flight_until_the_first_is_acknowledged() {
        let mut hub: Hub<()> = Hub::new(Box::new(Delayed::new(Box::new(Memory::new(10, 1_000)), 3)));
        let account = crate::auth::Keys::default().add("k", "default");
        let (key, _) = hub.create(account, "default", "s", None, Retention::default(), 2_000).unwrap();
        let idem = IdemKey::new(b"key", b"[1]");
        let ticket = hub.emit_idempotent(key, b"[1]", idem, 2_000).unwrap();
        assert_eq!(hub.emit_idempotent(key, b"[1]", idem, 2_000), Err(Repeat::InFlight));
        assert_eq!(hub.emit_idempotent(key, b"[2]", IdemKey::new(b"key", b"[2]"), 2_000), Err(Repeat::InFlight));
        for _ in 0..10 {
            hub.flush();
            hub.settle();
        }
        assert!(hub.settled(), "ticket {ticket:?} acknowledged");
        let id = hub.history(key).unwrap().newest(1).next().unwrap().id;
        assert_eq!(hub.emit_idempotent(key, b"[1]", idem, 2_000), Err(Repeat::Replayed(id)));
        assert_eq!(hub.emit_idempotent(key, b"[2]", IdemKey::new(b"key", b"[2]"), 2_000), Err(Repeat::OtherBody));
        assert_eq!(hub.history(key).unwrap().len(), 1);
    }
}
