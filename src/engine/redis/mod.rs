//! The `redis` engine: many ssehub nodes on one Redis (SPEC §6).
//!
//! Every change is one EVALSHA of `script.lua` (atomic; the emits of one
//! turn share a call): an emit XADDs to the source's history stream (Redis
//! assigns the id, per source increasing) and goes, with the id before it,
//! into the call's record for the source's partition stream (one XADD per
//! partition and call, at most about `pipeline::PARTITION_LEN` events
//! kept); creates, deletes and clears write the source's hash and a
//! control record to the same partition, so they are ordered with the
//! source's events. Commands go out on one command link, written once per
//! turn, replies matched FIFO.
//!
//! Each node reads every partition with a blocking XREAD on a link of its
//! own, always after the last id it read. Every node keeps a ring for
//! every source (loaded at start, fed by the reads), so replay is always
//! local. An event reaches a node's subscribers once: at the emitting
//! node's acknowledgement if the node already has the event before it
//! (else the read brings it in order), or when read; an id at or below the
//! source's last delivered one is dropped.
//!
//! Faults: a link that fails or stops answering is closed and reconnected
//! with backoff; what was in flight on the command link fails, except
//! emits, which wait (at most `pipeline::EMIT_TIMEOUT`) for their record to show up
//! in a partition read: the emit id (node + counter) in the record tells a
//! landed emit from a lost one, so a lost reply is never stored twice.
//! A Redis that refuses writes (OOM, MISCONF, READONLY, NOREPLICAS) makes
//! the engine unhealthy from the first refused change until emits, or the
//! probe sent once a second meanwhile, are taken; deletes and clears are
//! still tried meanwhile (a full memory takes them).
//!
//! This file is the engine: the changes, the replies applied
//! to this node's sources and rings, faults and data loss. Beside it:
//! `sources.rs` (this node's sources, take-backs), `url.rs` (where Redis
//! is), `master.rs` and `sentinel.rs` (where the master is now),
//! `resolve.rs` (host names looked up off the reactor),
//! `keys.rs` (the key layout), `load.rs` (the blocking load at start),
//! `pipeline.rs` (the command link), `replicas.rs` (`WAIT` before an
//! acknowledgement), `follow.rs` (the partition readers), `deliver.rs`
//! (records and replies into the rings, once, in order, at poll),
//! `records.rs` (the records, sans I/O), `health.rs` (logs and metrics of the links),
//! `links.rs` (the links' lives), `link.rs`, `tls.rs` and `resp.rs` (one
//! connection, TLS, RESP).

mod deliver;
mod follow;
mod health;
mod keys;
mod link;
mod links;
mod load;
mod master;
mod pipeline;
mod records;
mod replicas;
mod resolve;
pub mod resp;
mod sentinel;
mod sources;
#[cfg(feature = "tls")]
mod tls;
mod url;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::error;
use mio::{Events, Poll, Registry, Token, Waker};

use super::{
    Ack, Bounds, Engine, IdemKey, Op, Outcome, Retention, Rings, SourceKey, SourceMeta, StorageError, StoredSource, StoredToken, Ticket,
};
use crate::sse::EventId;
use crate::throttle::throttled;
use crate::verify::Verify;
use deliver::Held;
use follow::{Reader, Resync};
use health::{Health, Refusing, elsewhere};
use link::LinkState;
pub use load::{Opened, open};
use master::Locator;
use pipeline::{Awaited, Pipeline};
use records::{Emitted, Record};
use replicas::Replicas;
use resp::Value;
use sources::{Sources, TakeBack};
pub use url::RedisUrl;

/// Tokens of the engine's links: `TOKEN_BASE` is the command link,
/// `TOKEN_BASE + 1 + n` partition `n`'s reader, `sentinel::TOKEN` the Sentinel link.
pub const TOKEN_BASE: usize = usize::MAX / 2;
/// `--redis-partitions`' default.
pub const DEFAULT_PARTITIONS: u32 = 16;

pub struct Redis {
    /// Where the master is (and the URL).
    master: Locator,
    registry: Registry,
    own: Option<(Poll, Events)>,
    rings: Rings,
    /// A source's bounds where its retention sets none.
    bounds: Bounds,
    /// Ids start above this millisecond.
    floor_ms: u64,
    /// The clock the reactor last gave (a change's or an eviction's
    /// time): records of other nodes' retention changes apply at it, so
    /// the engine's time is the reactor's, fake clocks included.
    now_ms: u64,
    /// The command link (its key names are the engine's).
    pipe: Pipeline<TakeBack>,
    readers: Vec<Reader>,
    sources: Sources,
    next_ticket: u64,
    ready: Vec<Outcome>,
    entries: VecDeque<Record>,
    /// What replies brought since the last poll (`deliver.rs`).
    held: Vec<Held>,
    replies: Vec<Value>,
    /// A loss is being handled (the new epoch not yet known).
    recovering: bool,
    default_key: Option<String>,
    resync: Option<Resync>,
    /// Records wait for a resync (or for the command link to ask one).
    stalled: bool,
    /// A reply said the master is elsewhere (`-READONLY`, `-LOADING`, …):
    /// the command link is dropped once the read's replies are taken.
    elsewhere: Option<String>,
    scratch: Vec<u8>,
    health: Health,
    /// Redis refuses writes: unhealthy, and probing.
    refusing: Refusing,
    /// `--redis-replicas`: changes wait for `WAIT`.
    replicas: Replicas<TakeBack>,
    /// Per partition, what this node had read when the command link was
    /// lost, until the server it connects to next shows it has that record
    /// (`links::ask_tails`; a reader reconnected first may read on past a loss).
    unchecked: Vec<Option<EventId>>,
    /// Per partition, the newest record this node's emits wrote (it may not have read it yet).
    written: Vec<EventId>,
}

impl Redis {
    /// The engine, its links registered on the reactor's poll; host
    /// names resolved off the reactor wake it with `waker`.
    pub fn start(mut opened: Opened, registry: Registry, waker: Arc<Waker>) -> Redis {
        opened.locator.wake_with(waker);
        Redis::new(opened, registry, None)
    }

    /// The engine with a poll of its own, read in `poll` (tests drive it
    /// through the seam alone).
    #[cfg(test)]
    pub fn standalone(opened: Opened) -> Redis {
        let poll = Poll::new().expect("a poll");
        let registry = poll.registry().try_clone().expect("a registry");
        Redis::new(opened, registry, Some((poll, Events::with_capacity(64))))
    }

    fn new(opened: Opened, registry: Registry, own: Option<(Poll, Events)>) -> Redis {
        let Opened { locator, keys, history, bounds, floor_ms, partitions, cursors, epoch, default_key, replicas, .. } = opened;
        let readers = cursors.into_iter().enumerate().map(|(n, cursor)| Reader::new(Token(TOKEN_BASE + 1 + n), cursor)).collect();
        let mut r = Redis {
            master: locator,
            registry,
            own,
            rings: Rings::with_limits(Bounds { max_events: history, ..bounds }, 0),
            pipe: Pipeline::new(Token(TOKEN_BASE), keys, partitions, history, bounds.max_keys, epoch),
            bounds: Bounds { max_events: history, ..bounds },
            floor_ms,
            now_ms: crate::sys::unix_ms(),
            readers,
            sources: Sources::default(),
            next_ticket: 0,
            ready: Vec::new(),
            entries: VecDeque::new(),
            held: Vec::new(),
            replies: Vec::new(),
            recovering: false,
            default_key,
            resync: None,
            stalled: false,
            elsewhere: None,
            scratch: Vec::new(),
            health: Health::default(),
            refusing: Refusing::default(),
            replicas: Replicas::new(replicas),
            unchecked: Vec::new(),
            written: Vec::new(),
        };
        r.connect_due(Instant::now());
        r
    }

    fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    /// Queues one script call on the command link.
    fn call(&mut self, source: &str, op: &[u8], args: &[&[u8]], ticket: Option<Ticket>, take_back: TakeBack) {
        self.pipe.call(source, op, args, ticket, take_back, &mut self.ready);
    }

    fn emit(&mut self, ticket: Ticket, key: SourceKey, payload: &[u8], idem: Option<IdemKey>, now_ms: u64) {
        let Some(src) = self.sources.get(key) else {
            self.ready.push(Outcome::Done { ticket, result: Ok(Ack::Stored) });
            return;
        };
        let id = src.id.clone();
        let at = now_ms.max(self.floor_ms + 1);
        self.pipe.emit(ticket, key, id, payload, idem, at, &mut self.ready);
    }

    /// One emit's part of a batch's reply (`records::emitted`), or nil (no such source).
    fn emitted(&mut self, counter: u64, reply: &Value) {
        let Some(flight) = self.pipe.land(counter) else { return };
        let result = match (reply, records::emitted(reply)) {
            (_, Some(Emitted::Appended(id, prev))) => {
                if let Some(idem) = flight.idem {
                    self.rings.remember(flight.key, idem, id);
                }
                self.ready.push(Outcome::Done { ticket: flight.ticket, result: Ok(Ack::Appended(id)) });
                // Delivered (at the next poll) if nothing before it is missing here; else the read brings it in order.
                if self.sources.get(flight.key).is_some_and(|s| prev <= s.last) {
                    self.hold(flight.key, id, &flight.payload);
                }
                return;
            }
            // Another emit (of any node) with the key and the same body got `id`: nothing appended.
            (_, Some(Emitted::Replayed(id))) => {
                if let Some(idem) = flight.idem {
                    self.rings.remember(flight.key, idem, id);
                }
                Ok(Ack::Replayed(id))
            }
            (_, Some(Emitted::OtherBody)) => Err(StorageError::KeyReused),
            // The source is gone in Redis.
            (Value::Nil, _) => Ok(Ack::Stored),
            _ => Err(StorageError::Unreachable),
        };
        self.ready.push(Outcome::Done { ticket: flight.ticket, result });
    }

    fn create(&mut self, key: SourceKey, meta: &SourceMeta, ticket: Option<Ticket>) {
        self.rings.create(key, &meta.id);
        self.rings.set_retention(key, &meta.retention, crate::sys::unix_ms());
        self.sources.insert(key, meta.clone(), EventId::default());
        self.put_source(b"c", meta, "0-0", ticket, TakeBack::Create(key));
    }

    /// Writes a source's hash: `c` creates it (refused if the name is
    /// taken), `w` writes it back after a loss with the newest id served.
    fn put_source(&mut self, op: &[u8], meta: &SourceMeta, last: &str, ticket: Option<Ticket>, take_back: TakeBack) {
        let created = meta.created_at.to_string();
        let verify = meta.verify.as_ref().map(Verify::stored_json).unwrap_or_default();
        let (retention, keep, age) = (records::retention_text(&meta.retention), self.keep(&meta.retention), self.age(&meta.retention));
        let args: [&[u8]; 9] = [
            meta.account.as_bytes(),
            meta.name.as_bytes(),
            meta.endpoint_key.as_bytes(),
            created.as_bytes(),
            last.as_bytes(),
            &verify,
            retention.as_bytes(),
            keep.as_bytes(),
            age.as_bytes(),
        ];
        self.call(&meta.id, op, &args, ticket, take_back);
    }

    /// What a source's history stream keeps: the count in effect, and one
    /// more (the newest evicted).
    fn keep(&self, retention: &Retention) -> String {
        (retention.effective(self.bounds).max_events + 1).to_string()
    }

    /// A source's age bound in effect, in ms ('' for none).
    fn age(&self, retention: &Retention) -> String {
        retention.effective(self.bounds).max_age_ms.map(|ms| ms.to_string()).unwrap_or_default()
    }

    /// Keeps a subscribe token (its stored form) in its source's hash;
    /// expired ones there are dropped meanwhile.
    fn put_token(&mut self, id: &str, token: &str, expires_at: u64, now_ms: u64, ticket: Option<Ticket>, take_back: TakeBack) {
        let (expires_at, now) = (expires_at.to_string(), now_ms.to_string());
        self.call(id, b"T", &[token.as_bytes(), expires_at.as_bytes(), now.as_bytes()], ticket, take_back);
    }

    /// A reply on the command link.
    fn on_reply(&mut self, reply: Value) {
        let Some(awaited) = self.pipe.next_awaited() else {
            return self.lose_cmd("a reply nothing asked for");
        };
        if let Value::Error(e) = &reply
            && self.elsewhere.is_none()
        {
            self.elsewhere = elsewhere(e);
        }
        if let Awaited::Wait(at) = awaited {
            self.health.rtt(at);
            let (enough, held) = self.replicas.answered(&reply);
            for (awaited, reply) in held {
                if enough { self.settle(awaited, reply) } else { self.unconfirmed(awaited) }
            }
            return;
        }
        if let Err((awaited, reply)) = self.replicas.hold(awaited, reply) {
            self.settle(awaited, reply);
        }
    }

    /// A change that too few replicas confirmed (or whose `WAIT` was lost
    /// with the link): `503`, its fate unknown.
    fn unconfirmed(&mut self, awaited: Awaited<TakeBack>) {
        match awaited {
            Awaited::Emits { counters, .. } => self.pipe.fail_flights(&counters, &mut self.ready),
            Awaited::Change { ticket, take_back, .. } => {
                self.sources.take_back(&mut self.rings, take_back, false);
                if let Some(ticket) = ticket {
                    self.ready.push(Outcome::Done { ticket, result: Err(StorageError::Unreachable) });
                }
            }
            _ => {}
        }
    }

    /// What a reply on the command link answers, settled.
    fn settle(&mut self, awaited: Awaited<TakeBack>, reply: Value) {
        match awaited {
            Awaited::Setup => {
                if let Value::Error(e) = reply {
                    error!("Redis refused the connection's set-up: {}", String::from_utf8_lossy(&e));
                    self.lose_cmd("set-up refused");
                }
            }
            Awaited::Ping(at) => {
                self.health.rtt(at);
                if reply.as_bytes() != Some(&self.pipe.epoch[..]) {
                    self.data_lost();
                }
            }
            Awaited::Resync => self.resynced(&reply),
            Awaited::Probe(at) => {
                self.health.rtt(at);
                match &reply {
                    Value::Error(e) if e.starts_with(b"NOSCRIPT") => self.pipe.load_script(),
                    Value::Error(_) => {}
                    _ => self.taken(),
                }
            }
            Awaited::Wait(_) => {}
            Awaited::Tail(n, read, upto) => self.tail(n, read, upto, &reply),
            Awaited::Epoch => {
                if let Some(epoch) = reply.as_bytes() {
                    self.pipe.epoch = epoch.to_vec();
                }
                self.pipe.epochs += 1;
                self.recovering = false;
            }
            Awaited::Emits { counters, at, epoch } => {
                self.health.rtt(at);
                if let Value::Error(e) = &reply {
                    if !e.starts_with(b"TAKEN") {
                        self.refused(e, epoch);
                    }
                    return self.pipe.fail_flights(&counters, &mut self.ready);
                }
                self.taken();
                let parts = reply.as_array().unwrap_or(&[]);
                let n = counters.len();
                for (i, counter) in counters.into_iter().enumerate() {
                    self.emitted(counter, parts.get(i).unwrap_or(&Value::Error(Vec::new())));
                }
                self.wrote(parts.get(n..).unwrap_or(&[]));
            }
            Awaited::Change { ticket, take_back, at, epoch } => {
                self.health.rtt(at);
                let result = match &reply {
                    Value::Error(e) if e.starts_with(b"TAKEN") => {
                        self.sources.take_back(&mut self.rings, take_back, true);
                        Err(StorageError::Conflict)
                    }
                    Value::Error(e) => {
                        let refused = self.refused(e, epoch);
                        self.sources.take_back(&mut self.rings, take_back, refused);
                        Err(if refused { StorageError::WriteFailed } else { StorageError::Unreachable })
                    }
                    // (Not `taken`: a full memory takes deletes and clears, not emits.)
                    _ => Ok(Ack::Stored),
                };
                if let Some(ticket) = ticket {
                    self.ready.push(Outcome::Done { ticket, result });
                }
            }
        }
    }

    /// A script call's error reply (sent in `epoch`): a loss is handled,
    /// an unloaded script loaded again. True if the script surely did not run.
    fn refused(&mut self, e: &[u8], epoch: u64) -> bool {
        if e.starts_with(b"LOST") {
            // Not run. A loss seen in the current epoch is handled once.
            if epoch == self.pipe.epochs {
                self.data_lost();
            }
        } else if e.starts_with(b"NOSCRIPT") {
            // Not run: safe to refuse. Loaded again for what follows.
            self.pipe.load_script();
        } else {
            throttled!(self.health.lines.refused, Warn, "Redis refused a change: {}", String::from_utf8_lossy(e));
        }
        self.refusing.refused(e)
    }

    /// Redis took emits (or the probe): healthy again if it refused changes.
    fn taken(&mut self) {
        if self.refusing.taken() {
            throttled!(self.health.lines.taken, Info, "Redis at {} takes changes again", self.master.url.describe());
        }
    }

    /// While Redis refuses writes, once a `PROBE_INTERVAL`, so that health
    /// comes back with no traffic (deletes and clears are refused while
    /// unhealthy, so they cannot be what brings it back).
    fn probe_if_due(&mut self, now: Instant) {
        if self.pipe.link.state == LinkState::Up && self.refusing.probe_due(now) {
            self.pipe.probe(now);
        }
    }

    /// Redis lost data (FLUSHALL, a restart without persistence, a stale
    /// replica): a new epoch, every source this node knows written back
    /// with the newest id it served (ids go on above it; what is gone
    /// counts as evicted, so resumes from before get the gap signal), the
    /// default key, and the partitions read again from their start.
    fn data_lost(&mut self) {
        if self.recovering {
            return;
        }
        self.recovering = true;
        error!(
            "Redis at {} lost data; writing back {} sources and raising their id floors",
            self.master.url.describe(),
            self.sources.count()
        );
        let fresh = crate::auth::random_base62(16);
        let epoch = self.pipe.keys.epoch.clone();
        self.pipe.send(&[b"SET", epoch.as_bytes(), fresh.as_bytes(), b"NX"], Awaited::Setup);
        self.pipe.send(&[b"GET", epoch.as_bytes()], Awaited::Epoch);
        let back: Vec<_> = self.sources.iter().map(|s| (s.meta.clone(), s.last.to_string(), s.tokens.clone())).collect();
        let now = crate::sys::unix_ms();
        for (meta, last, tokens) in back {
            self.put_source(b"w", &meta, &last, None, TakeBack::Nothing);
            for (token, expires_at) in tokens {
                self.put_token(&meta.id, &token, expires_at, now, None, TakeBack::Nothing);
            }
        }
        if let Some(k) = self.default_key.clone() {
            let name = self.pipe.keys.default_key.clone();
            self.pipe.send(&[b"SET", name.as_bytes(), k.as_bytes(), b"NX"], Awaited::Setup);
        }
        for r in &mut self.readers {
            r.cursor = b"0-0".to_vec();
        }
        // (Ids of the server that lost them: not looked for again.)
        self.written.clear();
    }

    /// Deadlines: emits past theirs fail; a command link or a reader that
    /// stopped answering is closed; pings; reconnects.
    fn timers(&mut self, now: Instant) {
        self.judge_deadlines(now);
        self.probe_if_due(now);
        self.pipe.ping_if_idle(now);
        self.master.drive(&self.registry, now);
        self.connect_due(now);
    }

    fn drive_own_poll(&mut self) {
        let Some((mut poll, mut events)) = self.own.take() else { return };
        if poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            for event in events.iter() {
                self.on_ready(event);
            }
        }
        self.own = Some((poll, events));
    }
}

impl Engine for Redis {
    fn submit(&mut self, op: Op<'_>, now_ms: u64) -> Ticket {
        self.now_ms = now_ms;
        let ticket = self.ticket();
        // The source a change is to: one this node does not have is done, as
        // there is nothing to store (a delete takes it out here first: the
        // registry already has). Changes to no source name none.
        let mut taken = None;
        let source = match &op {
            Op::Delete { key } => {
                taken = self.sources.take(&mut self.rings, *key);
                taken.as_ref().map(|(s, _)| s.id.clone())
            }
            Op::Clear { key } | Op::Verify { key, .. } | Op::Token { key, .. } | Op::Retention { key, .. } => {
                self.sources.get(*key).map(|s| s.id.clone())
            }
            Op::RevokeToken { key, token } => {
                self.sources.get(*key).filter(|s| s.tokens.iter().any(|(t, _)| t == token)).map(|s| s.id.clone())
            }
            Op::Create { .. } | Op::Append { .. } | Op::Import { .. } | Op::DefaultKey(_) => Some(String::new()),
        };
        let Some(id) = source else {
            self.ready.push(Outcome::Done { ticket, result: Ok(Ack::Stored) });
            return ticket;
        };
        // Down: refused at once, not after a timeout (a connecting link
        // queues); surely not done, so what a delete took here is put back.
        if matches!(self.pipe.link.state, LinkState::Down { .. }) {
            let error = match (op, taken) {
                (Op::Append { .. }, _) => StorageError::Unreachable,
                (Op::Delete { key }, Some(t)) => {
                    self.sources.take_back(&mut self.rings, TakeBack::Delete(key, Box::new(t)), true);
                    StorageError::WriteFailed
                }
                _ => StorageError::WriteFailed,
            };
            self.ready.push(Outcome::Done { ticket, result: Err(error) });
            return ticket;
        }
        match op {
            Op::Create { key, meta } => self.create(key, meta, Some(ticket)),
            Op::Delete { key } => {
                self.sources.bury(id.clone(), key);
                let take_back = taken.map_or(TakeBack::Nothing, |t| TakeBack::Delete(key, Box::new(t)));
                self.call(&id, b"d", &[], Some(ticket), take_back);
            }
            Op::Clear { key } => {
                let before = self.rings.clear(key);
                self.call(&id, b"x", &[], Some(ticket), TakeBack::Clear(key, before));
            }
            // With an idempotency key, the script decides: appended, replayed, or the key's other body.
            Op::Append { key, payload, idem } => self.emit(ticket, key, payload, idem, now_ms),
            Op::Retention { key, retention } => {
                // In effect here at once (a refusal does not bring back what it evicted); other nodes apply its record.
                let mut before = retention;
                if let Some(src) = self.sources.get_mut(key) {
                    before = std::mem::replace(&mut src.meta.retention, retention);
                }
                self.rings.set_retention(key, &retention, now_ms);
                let (text, keep, age, now) =
                    (records::retention_text(&retention), self.keep(&retention), self.age(&retention), now_ms.to_string());
                let args: [&[u8]; 4] = [text.as_bytes(), keep.as_bytes(), age.as_bytes(), now.as_bytes()];
                self.call(&id, b"r", &args, Some(ticket), TakeBack::Retention(key, before));
            }
            Op::Import { key, source } => {
                // Stored as new: Redis gives the events new ids.
                self.create(key, &source.meta, Some(ticket));
                for (_, payload) in &source.events {
                    let t = self.ticket();
                    self.emit(t, key, payload, None, now_ms);
                }
            }
            Op::Verify { key, verify } => {
                let mut before = None;
                if let Some(src) = self.sources.get_mut(key) {
                    before = std::mem::replace(&mut src.meta.verify, verify.cloned());
                }
                let settings = verify.map(Verify::stored_json).unwrap_or_default();
                self.call(&id, b"v", &[&settings], Some(ticket), TakeBack::Verify(key, before));
            }
            Op::Token { key, token } => {
                if let Some(src) = self.sources.get_mut(key) {
                    src.tokens.retain(|&(_, expires_at)| expires_at > now_ms);
                    src.tokens.push((token.token.clone(), token.expires_at));
                }
                let take_back = TakeBack::Token(key, token.token.clone());
                self.put_token(&id, &token.token, token.expires_at, now_ms, Some(ticket), take_back);
            }
            Op::RevokeToken { token, .. } => {
                let mut take_back = TakeBack::Nothing;
                if let Some((key, src)) = self.sources.find_mut(&id)
                    && let Some(at) = src.tokens.iter().position(|(t, _)| t == token)
                {
                    take_back = TakeBack::Revoke(key, src.tokens.swap_remove(at));
                }
                self.call(&id, b"R", &[token.as_bytes()], Some(ticket), take_back);
            }
            Op::DefaultKey(k) => {
                self.pipe.send_batch(&mut self.ready);
                let name = self.pipe.keys.default_key.clone();
                let change =
                    Awaited::Change { ticket: Some(ticket), take_back: TakeBack::Nothing, at: Instant::now(), epoch: self.pipe.epochs };
                self.pipe.send(&[b"SET", name.as_bytes(), k.as_bytes(), b"NX"], change);
                self.default_key = Some(k.to_string());
            }
        }
        ticket
    }

    fn flush(&mut self) {
        self.master.flush();
        self.pipe.send_batch(&mut self.ready);
        self.replicas.wait_if_due(&mut self.pipe);
        for n in 0..self.readers.len() {
            let keys = &self.pipe.keys;
            if let Err(why) = self.readers[n].flush(|| keys.partition(n as u32)) {
                self.lose_reader(n, &why);
            }
        }
        if self.pipe.link.state == LinkState::Up
            && let Err(why) = self.pipe.flush()
        {
            self.lose_cmd(&why);
        }
    }

    fn wants_flush(&self) -> bool {
        self.pipe.link.wants_flush()
            || self.master.wants_flush()
            || self.pipe.has_batch()
            || self.readers.iter().any(Reader::wants_flush)
            || (!self.entries.is_empty() && !self.stalled && !self.unchecked())
            || !self.ready.is_empty()
            || !self.held.is_empty()
    }

    fn poll(&mut self, out: &mut Vec<Outcome>) {
        self.drive_own_poll();
        self.release_held();
        self.apply_entries();
        self.timers(Instant::now());
        out.append(&mut self.ready);
    }

    fn ready(&mut self, event: &mio::event::Event) {
        self.on_ready(event);
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        self.pipe.next_wake(&mut consider);
        self.master.next_wake(&mut consider);
        for r in &self.readers {
            r.next_wake(&mut consider);
        }
        if let Some(t) = self.refusing.next_probe() {
            consider(t);
        }
        at
    }

    fn rings(&self) -> &Rings {
        &self.rings
    }

    /// Each node evicts by age from the ids, by the same rule, so every
    /// node shows the same events after the deadline.
    fn expire(&mut self, key: SourceKey, now_ms: u64) -> Option<u64> {
        self.now_ms = now_ms;
        let evicted = |rings: &Rings| rings.history(key).and_then(|h| h.evicted());
        let before = evicted(&self.rings);
        let next = self.rings.expire(key, now_ms);
        // Redis's copy goes too (any node may ask; the same trim twice does nothing).
        if evicted(&self.rings) != before
            && self.pipe.link.state == LinkState::Up
            && let Some(src) = self.sources.get(key)
            && let Some(age) = src.meta.retention.effective(self.bounds).max_age_ms
        {
            let (id, cut) = (src.id.clone(), now_ms.saturating_sub(age).to_string());
            self.call(&id, b"a", &[cut.as_bytes()], None, TakeBack::Nothing);
        }
        next
    }

    fn metrics(&self, out: &mut String) {
        self.health.metrics(self.all_up(), out);
        let links = std::iter::once(&self.pipe.link).chain(self.readers.iter().map(|r| &r.link));
        health::links(links.map(|l| (l.passed_setup(), l.last_read)), self.master.sentinel_link(), out);
    }

    /// Every link is up (the command link answers, each partition link is
    /// connected: a node that delivers nothing is not healthy), and Redis
    /// takes changes (from the first one it refuses until emits, or a
    /// probe, are taken).
    fn healthy(&self) -> bool {
        self.all_up() && !self.refusing.is_on()
    }

    /// While Redis refuses writes, deletes and clears are still sent: one
    /// it refuses is surely not done and is taken back here (`503`), and a
    /// full memory takes them (their first write frees; they free memory).
    fn takes_removals(&self) -> bool {
        self.reachable()
    }

    fn shared(&self) -> bool {
        true
    }

    fn restore(&mut self, key: SourceKey, source: StoredSource) {
        self.sources.insert(key, source.meta.clone(), source.last_id.unwrap_or_default());
        self.rings.restore(key, source);
    }

    fn restore_token(&mut self, key: SourceKey, token: StoredToken) {
        if let Some(src) = self.sources.get_mut(key) {
            src.tokens.push((token.token, token.expires_at));
        }
    }
}

#[cfg(test)]
pub mod testing;
