//! The command link: the one connection that carries every change to
//! Redis, with its FIFO of awaited replies (as hiredis's async context
//! keeps its reply callbacks), the turn's emits gathered into script calls
//! (`send_batch`), and the emits in flight until their reply, their
//! record or their deadline settles them. What a change took back is the
//! engine's (`T`): the pipeline carries it to the reply and never reads it.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::keys::{KeyNames, partition_of};
use super::link::{Endpoint, Link, LinkState};
use super::records;
use crate::engine::{IdemKey, Outcome, SourceKey, StorageError, Ticket};
use crate::text::push_u64;

/// Events a partition stream keeps at most, about (`MAXLEN ~` divided by
/// the events in the record added; fewer when calls grow): how far behind a
/// node may fall before it catches up from history streams instead.
/// `SSEHUB_REDIS_PARTITION_LEN` overrides it (a knob for tests).
const PARTITION_LEN: &str = "10000";
/// An emit not acknowledged within this answers 503 (SPEC: within 2 s).
const EMIT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Any other command not answered within this closes the command link.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// The command link is pinged when idle this long (liveness, /healthz).
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A turn's emits go in script calls of at most this many, or this many
/// payload bytes (one call runs in Redis without a break).
const BATCH_EMITS: usize = 512;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

const SCRIPT: &str = include_str!("script.lua");

/// What a reply on the command link answers.
pub enum Awaited<T> {
    /// SCRIPT LOAD and the SETs of a loss: an error loses the link.
    Setup,
    /// `GET epoch` when idle: liveness, and a Redis that lost its data.
    Ping(Instant),
    /// `GET epoch` after a loss: the epoch to use from now on.
    Epoch,
    /// `XREVRANGE` of a history: a resync.
    Resync,
    /// A script call of emits: their counters (their flights hold the rest).
    Emits { counters: Vec<u64>, at: Instant, epoch: u64 },
    /// Any other change, and what to take back if it fails.
    Change { ticket: Option<Ticket>, take_back: T, at: Instant, epoch: u64 },
    /// The script's probe while Redis refuses changes (`probe`).
    Probe(Instant),
    /// `WAIT` after a turn's changes (`replicas.rs`).
    Wait(Instant),
    /// Partition `n`'s newest id (`false`), or its newest at or before the
    /// id read (`true`), asked at connect with the id this node had read (`links.rs`).
    Tail(usize, crate::sse::EventId, bool),
}

/// An emit submitted and not yet answered.
pub struct Flight {
    pub ticket: Ticket,
    pub key: SourceKey,
    pub payload: Vec<u8>,
    /// Its idempotency key, decided by the script.
    pub idem: Option<IdemKey>,
    deadline: Instant,
}

/// Emits in flight, in counter order: mostly taken from the front.
#[derive(Default)]
struct Flights(VecDeque<(u64, Flight)>);

impl Flights {
    fn insert(&mut self, counter: u64, flight: Flight) {
        self.0.push_back((counter, flight));
    }

    fn get(&self, counter: u64) -> Option<&Flight> {
        let at = self.0.binary_search_by_key(&counter, |(c, _)| *c).ok()?;
        self.0.get(at).map(|(_, f)| f)
    }

    fn remove(&mut self, counter: &u64) -> Option<Flight> {
        let at = self.0.binary_search_by_key(counter, |(c, _)| *c).ok()?;
        self.0.remove(at).map(|(_, f)| f)
    }
}

/// The command link and what rides on it; `T` is what a change takes
/// back if it fails (the engine's `TakeBack`).
pub struct Pipeline<T> {
    pub link: Link,
    awaited: VecDeque<Awaited<T>>,
    pub keys: KeyNames,
    partitions: u32,
    /// What a history stream keeps at least: `--history` + 1 (the oldest is the newest evicted).
    pub keep: String,
    /// `--idempotency-keys`: what a source's key list keeps at most.
    max_keys: String,
    partition_len: String,
    sha: String,
    /// Redis's data generation: a different one means it lost data.
    pub epoch: Vec<u8>,
    /// Epochs adopted since start (changes remember the one they were sent in).
    pub epochs: u64,
    /// This process's emit ids are `<node>:<counter>`.
    node: String,
    emits: u64,
    /// By counter, oldest first (so also by deadline).
    flights: Flights,
    /// Emits submitted this turn, not yet sent: (counter, source id).
    batch: Vec<(u64, String)>,
    batch_bytes: usize,
    /// The newest submit time (unix ms) of the batch's emits: their ids' millisecond, at least.
    batch_now: u64,
    pub last_sent: Instant,
    /// Changes sent since the last `WAIT` (`replicas.rs`).
    pub unwaited: usize,
    /// The newest entries of `awaited` whose commands are queued, not yet
    /// all written (`flush` stamps them with the time they went out).
    unwritten: usize,
}

impl<T> Pipeline<T> {
    pub fn new(token: Token, keys: KeyNames, partitions: u32, history: usize, max_keys: usize, epoch: Vec<u8>) -> Pipeline<T> {
        Pipeline {
            link: Link::new(token),
            awaited: VecDeque::new(),
            keys,
            partitions,
            keep: (history + 1).to_string(),
            max_keys: max_keys.max(1).to_string(),
            partition_len: std::env::var("SSEHUB_REDIS_PARTITION_LEN")
                .ok()
                .filter(|n| n.parse::<u32>().is_ok_and(|n| n > 0))
                .unwrap_or_else(|| PARTITION_LEN.to_string()),
            sha: crate::sha1::hex(SCRIPT.as_bytes()),
            epoch,
            epochs: 0,
            node: crate::auth::random_base62(12),
            emits: 0,
            flights: Flights::default(),
            batch: Vec::new(),
            batch_bytes: 0,
            batch_now: 0,
            last_sent: Instant::now(),
            unwaited: 0,
            unwritten: 0,
        }
    }

    /// Connects if the link is down and its backoff has passed: the
    /// link's set-up and SCRIPT LOAD go first.
    pub fn connect_due(&mut self, at: &Endpoint, registry: &Registry, now: Instant) -> io::Result<()> {
        if self.link.due(now) {
            self.link.connect(at, registry)?;
            self.load_script();
            self.last_sent = now;
        }
        Ok(())
    }

    /// SCRIPT LOAD (again, after a `NOSCRIPT`).
    pub fn load_script(&mut self) {
        self.link.send(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]);
        self.push_awaited(Awaited::Setup);
    }

    /// Closes the link: what it awaited is the caller's to settle. True if
    /// it was up; and true if it had passed its set-up (else nothing after
    /// the set-up was sent: those commands surely did not run).
    pub fn lose(&mut self, registry: &Registry) -> (bool, bool, VecDeque<Awaited<T>>) {
        let was_up = self.link.state == LinkState::Up;
        let sent = self.link.passed_setup();
        self.link.lose(registry);
        self.unwritten = 0;
        (was_up, sent, std::mem::take(&mut self.awaited))
    }

    fn push_awaited(&mut self, awaited: Awaited<T>) {
        self.awaited.push_back(awaited);
        self.unwritten += 1;
    }

    /// Writes what is queued. A reply's deadline runs from when its command
    /// was written, not queued: a node starved of CPU between the two (a
    /// turn that took long on a busy machine) must not take its own delay
    /// for Redis's, and lose a link that answers (issue 31's million run:
    /// nodes declared a Redis unreachable that answered a fresh client
    /// within 90 ms).
    pub fn flush(&mut self) -> Result<(), String> {
        self.link.flush()?;
        if self.link.unsent() == 0 && self.unwritten > 0 {
            let now = Instant::now();
            let n = self.unwritten.min(self.awaited.len());
            for a in self.awaited.iter_mut().rev().take(n) {
                match a {
                    Awaited::Ping(at) | Awaited::Probe(at) | Awaited::Wait(at) | Awaited::Emits { at, .. } | Awaited::Change { at, .. } => {
                        *at = now
                    }
                    Awaited::Setup | Awaited::Epoch | Awaited::Resync | Awaited::Tail(..) => {}
                }
            }
            self.unwritten = 0;
        }
        Ok(())
    }

    /// Sends a command whose reply answers `awaited`.
    pub fn send(&mut self, command: &[&[u8]], awaited: Awaited<T>) {
        self.link.send(command);
        self.unwaited += usize::from(matches!(awaited, Awaited::Change { .. }));
        self.push_awaited(awaited);
    }

    /// What the next reply answers.
    pub fn next_awaited(&mut self) -> Option<Awaited<T>> {
        self.awaited.pop_front()
    }

    /// Queues one script call.
    pub fn call(&mut self, source: &str, op: &[u8], args: &[&[u8]], ticket: Option<Ticket>, take_back: T, ready: &mut Vec<Outcome>) {
        // Emits queued before this change go first: order is kept.
        self.send_batch(ready);
        let (h, s, p) = (self.keys.source(source), self.keys.history(source), self.keys.partition(partition_of(source, self.partitions)));
        let (i, o) = (self.keys.idem(source), self.keys.idem_order(source));
        let mut all: Vec<&[u8]> = vec![b"EVALSHA", self.sha.as_bytes(), b"8", h.as_bytes(), s.as_bytes(), p.as_bytes()];
        all.extend([self.keys.sources.as_bytes(), self.keys.names.as_bytes(), i.as_bytes(), o.as_bytes(), self.keys.epoch.as_bytes()]);
        all.extend([op, source.as_bytes(), self.partition_len.as_bytes(), &self.epoch]);
        all.extend_from_slice(args);
        self.link.send(&all);
        self.last_sent = Instant::now();
        self.unwaited += 1;
        self.push_awaited(Awaited::Change { ticket, take_back, at: Instant::now(), epoch: self.epochs });
    }

    /// While Redis refuses changes: the script's `P`, one `SET` of the
    /// probe key. Scripts without flags (this one) are refused at their
    /// first write, not before they run: a `maxmemory` OOM (decided when
    /// the call starts, for any write that may grow memory, whatever its
    /// size), MISCONF, READONLY and NOREPLICAS all refuse the first write
    /// of a call and nothing after it. A change's first write (`XADD`,
    /// `HSET`, `HSETNX`) is such a write, and so is this `SET`, so the probe
    /// fails exactly when a change would and succeeds when one would; and
    /// it writes nothing any node reads. A plain `SET` outside the script
    /// would be judged by the command's own rules (and a read like `PING`
    /// by none).
    pub fn probe(&mut self, now: Instant) {
        let key = self.keys.probe.clone();
        self.link.send(&[b"EVALSHA", self.sha.as_bytes(), b"1", key.as_bytes(), b"P"]);
        self.push_awaited(Awaited::Probe(now));
        self.last_sent = now;
    }

    /// Queues an emit to source `id` for this turn's batch.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        ticket: Ticket,
        key: SourceKey,
        id: String,
        payload: &[u8],
        idem: Option<IdemKey>,
        now_ms: u64,
        ready: &mut Vec<Outcome>,
    ) {
        self.emits += 1;
        self.batch_now = self.batch_now.max(now_ms);
        let counter = self.emits;
        self.batch.push((counter, id));
        self.batch_bytes += payload.len();
        self.flights.insert(counter, Flight { ticket, key, payload: payload.to_vec(), idem, deadline: Instant::now() + EMIT_TIMEOUT });
        if self.batch.len() >= BATCH_EMITS || self.batch_bytes >= BATCH_BYTES {
            self.send_batch(ready);
        }
    }

    /// Sends the emits queued since the last change as one script call
    /// (Redis's cost per call is most of its cost per emit).
    pub fn send_batch(&mut self, ready: &mut Vec<Outcome>) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let batch_now = std::mem::take(&mut self.batch_now);
        self.batch_bytes = 0;
        if matches!(self.link.state, LinkState::Down { .. }) {
            for (counter, _) in batch {
                if let Some(f) = self.flights.remove(&counter) {
                    ready.push(Outcome::Done { ticket: f.ticket, result: Err(StorageError::Unreachable) });
                }
            }
            return;
        }
        let mut keys: Vec<String> = Vec::with_capacity(batch.len() * 3);
        // Per emit: its emit id, then its idempotency key's hash and its body's (hex; empty for none).
        let mut emit_args: Vec<[Vec<u8>; 3]> = Vec::with_capacity(batch.len());
        for (counter, id) in &batch {
            keys.extend([self.keys.source(id), self.keys.history(id), self.keys.partition(partition_of(id, self.partitions))]);
            let idem = self.flights.get(*counter).and_then(|f| f.idem);
            if idem.is_some() {
                keys.extend([self.keys.idem(id), self.keys.idem_order(id)]);
            }
            let (key, body) = idem.map_or((Vec::new(), Vec::new()), |k| (hex(&k.key), hex(&k.body)));
            emit_args.push([records::emit_id(&self.node, *counter), key, body]);
        }
        let (mut numkeys, mut now) = (Vec::new(), Vec::new());
        push_u64(&mut numkeys, keys.len() as u64 + 1);
        push_u64(&mut now, batch_now);
        let mut all: Vec<&[u8]> = vec![b"EVALSHA", self.sha.as_bytes(), &numkeys];
        all.extend(keys.iter().map(String::as_bytes));
        all.extend([self.keys.epoch.as_bytes(), b"E", b"", self.partition_len.as_bytes(), &self.epoch, self.keep.as_bytes()]);
        all.extend([self.max_keys.as_bytes(), &now]);
        for ((counter, id), [emit_id, key, body]) in batch.iter().zip(&emit_args) {
            let payload = self.flights.get(*counter).map_or(&b"null"[..], |f| &f.payload);
            all.extend([id.as_bytes(), emit_id, payload, key, body]);
        }
        self.link.send(&all);
        self.last_sent = Instant::now();
        self.unwaited += 1;
        let counters = batch.into_iter().map(|(c, _)| c).collect();
        self.push_awaited(Awaited::Emits { counters, at: Instant::now(), epoch: self.epochs });
    }

    pub fn has_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// The flight of emit `counter`, settled by the caller.
    pub fn land(&mut self, counter: u64) -> Option<Flight> {
        self.flights.remove(&counter)
    }

    /// The flight of an emit this node made, by its emit id (from a record).
    pub fn land_own(&mut self, emit: &[u8]) -> Option<Flight> {
        let counter = records::emit_counter(&self.node, emit)?;
        self.flights.remove(&counter)
    }

    /// These emits failed.
    pub fn fail_flights(&mut self, counters: &[u64], ready: &mut Vec<Outcome>) {
        for counter in counters {
            if let Some(f) = self.flights.remove(counter) {
                ready.push(Outcome::Done { ticket: f.ticket, result: Err(StorageError::Unreachable) });
            }
        }
    }

    /// Deadlines: emits past theirs fail. True if the link stopped
    /// answering (a command, or the connect, took over `OP_TIMEOUT`).
    pub fn expire(&mut self, now: Instant, ready: &mut Vec<Outcome>) -> bool {
        while self.flights.0.front().is_some_and(|(_, f)| f.deadline <= now) {
            let Some((_, flight)) = self.flights.0.pop_front() else { break };
            ready.push(Outcome::Done { ticket: flight.ticket, result: Err(StorageError::Unreachable) });
        }
        self.oldest_timed().is_some_and(|at| now >= at + OP_TIMEOUT)
            || (self.link.state == LinkState::Connecting && now >= self.last_sent + OP_TIMEOUT)
    }

    /// A reply is past its deadline (the link is read before it is judged).
    pub fn overdue(&self, now: Instant) -> bool {
        self.oldest_timed().is_some_and(|at| now >= at + OP_TIMEOUT)
    }

    /// `GET epoch` when the link is idle since `PING_INTERVAL`.
    pub fn ping_if_idle(&mut self, now: Instant) {
        if self.link.state == LinkState::Up && self.awaited.is_empty() && now >= self.last_sent + PING_INTERVAL {
            let epoch = self.keys.epoch.clone();
            self.link.send(&[b"GET", epoch.as_bytes()]);
            self.push_awaited(Awaited::Ping(now));
            self.last_sent = now;
        }
    }

    /// When the oldest awaited reply that has a deadline was asked for.
    pub fn oldest_timed(&self) -> Option<Instant> {
        self.awaited.iter().find_map(|e| match e {
            Awaited::Ping(at) | Awaited::Probe(at) | Awaited::Wait(at) | Awaited::Emits { at, .. } | Awaited::Change { at, .. } => {
                Some(*at)
            }
            Awaited::Setup | Awaited::Epoch | Awaited::Resync | Awaited::Tail(..) => None,
        })
    }

    /// The times `expire`, `ping_if_idle` and a reconnect have to look at next.
    pub fn next_wake(&self, consider: &mut impl FnMut(Instant)) {
        if let Some((_, f)) = self.flights.0.front() {
            consider(f.deadline);
        }
        if let Some(t) = self.oldest_timed() {
            consider(t + OP_TIMEOUT);
        }
        if let LinkState::Down { retry_at } = self.link.state {
            consider(retry_at);
        }
        if self.link.state == LinkState::Connecting {
            consider(self.last_sent + OP_TIMEOUT);
        }
        if self.link.state == LinkState::Up && self.awaited.is_empty() {
            consider(self.last_sent + PING_INTERVAL);
        }
    }
}

/// Lower-case hex of a hash.
fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]).collect()
}
