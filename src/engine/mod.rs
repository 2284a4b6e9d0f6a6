//! The storage seam: what the core asks of storage, and the engines that
//! answer (`memory`; `log` and `redis` follow the same contract).
//!
//! Every change (create, update, delete a source; append an event; clear a
//! history; tokens) is *submitted* during a loop turn and gets a
//! [`Ticket`]; the engine *acknowledges* it later, at once (`memory`),
//! after the turn's records were written or synced (`log`), or when Redis
//! replied. Acknowledgements come out of [`Engine::poll`] in submission
//! order, as [`Outcome`]s: `Done` answers the ticket, `Publish` hands an
//! event to the subscribers. An event is retained and delivered only once
//! it is acknowledged, so a subscriber never sees what storage may lose.
//!
//! The retained events themselves live in [`Rings`], shared by every
//! engine: one bounded ring per source, the id floor, and the newest id
//! evicted or cleared (the gap signal).

use std::fmt;
use std::io;
use std::sync::Arc;

use mio::Waker;

pub mod log;
mod memory;
// Without the feature only its URL parsing is reachable; the rest is left out by the linker.
#[cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]
pub mod redis;
mod rings;

#[cfg(test)]
pub mod conformance;

pub use memory::Memory;
pub use rings::{Remembered, Ring, Rings};

pub use crate::history::Bounds;
use crate::sse::{Event, EventId};
use crate::verify::Verify;

/// A source as the core names it: never reused within a process, so an
/// acknowledgement that arrives after a delete finds nothing to touch.
pub type SourceKey = u64;

/// What storage keeps of a source besides its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMeta {
    pub id: String,
    /// The account's name (its id is a per-process index).
    pub account: String,
    pub name: String,
    pub endpoint_key: String,
    pub created_at: u64,
    /// The signature check of its webhook deliveries (secret included).
    pub verify: Option<Verify>,
    /// Its retention as set (members `None`: the server's defaults).
    pub retention: Retention,
}

/// A source's retention bounds as set (SPEC §10); `None` takes the
/// server's default (`--history`, `--history-max-age`, `--history-max-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_events: Option<u32>,
    pub max_age_s: Option<u32>,
    pub max_bytes: Option<u32>,
}

impl Retention {
    pub const MAX_EVENTS: std::ops::RangeInclusive<u64> = 1..=100_000;
    pub const MAX_AGE_S: std::ops::RangeInclusive<u64> = 1..=31_536_000;
    pub const MAX_BYTES: std::ops::RangeInclusive<u64> = 1024..=(1 << 31);

    /// The bounds in effect: each member set, or the default.
    pub fn effective(&self, defaults: Bounds) -> Bounds {
        Bounds {
            max_events: self.max_events.map_or(defaults.max_events, |n| n as usize),
            max_age_ms: self.max_age_s.map(|s| s as u64 * 1000).or(defaults.max_age_ms),
            max_bytes: self.max_bytes.map(u64::from).or(defaults.max_bytes),
            max_keys: defaults.max_keys,
        }
    }

    /// Nothing set: every bound is the server's.
    pub fn is_default(&self) -> bool {
        *self == Retention::default()
    }
}

/// How long an idempotency key is remembered after its emit (SPEC §10).
pub const IDEMPOTENCY_KEY_LIFE_MS: u64 = 24 * 3600 * 1000;
/// `--idempotency-keys`: keys remembered per source at most, by default.
pub const DEFAULT_IDEMPOTENCY_KEYS: usize = 10_000;

/// An emit's idempotency key as storage keeps it: the first 16 bytes of
/// the SHA-256 of the key and of the request body (48 bytes with the
/// event id, whatever the key's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdemKey {
    pub key: [u8; 16],
    pub body: [u8; 16],
}

impl IdemKey {
    pub fn new(key: &[u8], body: &[u8]) -> IdemKey {
        IdemKey { key: digest16(key), body: digest16(body) }
    }
}

fn digest16(bytes: &[u8]) -> [u8; 16] {
    use sha2::Digest;
    let full = sha2::Sha256::digest(bytes);
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// A source and its retained events as an engine found them at start
/// (plain data, `Send`: framed on the reactor thread).
#[derive(Debug, Clone)]
pub struct StoredSource {
    pub meta: SourceMeta,
    /// (id, compact JSON payload), oldest first.
    pub events: Vec<(EventId, Vec<u8>)>,
    /// The newest id ever assigned (ids continue above it).
    pub last_id: Option<EventId>,
    /// The newest id evicted or cleared.
    pub evicted: Option<EventId>,
    /// Idempotency keys of its emits, with the ids they got, oldest first.
    pub keys: Vec<(IdemKey, EventId)>,
}

/// A subscribe token as storage keeps it (SPEC §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token: String,
    /// The public id of the source it reads.
    pub source_id: String,
    /// Unix milliseconds.
    pub expires_at: u64,
}

/// Everything an engine found at start.
#[derive(Debug, Default)]
pub struct Recovered {
    pub sources: Vec<StoredSource>,
    /// A generated default key kept from an earlier start.
    pub default_key: Option<String>,
    /// Subscribe tokens not revoked, of sources not deleted (some may
    /// have expired meanwhile).
    pub tokens: Vec<StoredToken>,
}

/// One submitted change.
pub enum Op<'a> {
    Create {
        key: SourceKey,
        meta: &'a SourceMeta,
    },
    Delete {
        key: SourceKey,
    },
    /// `payload` is compact JSON; the engine assigns the id. With an
    /// idempotency key, the key is kept with the event (`Rings::repeat`).
    Append {
        key: SourceKey,
        payload: &'a [u8],
        idem: Option<IdemKey>,
    },
    Clear {
        key: SourceKey,
    },
    /// The source's signature check set, changed or (`None`) removed.
    Verify {
        key: SourceKey,
        verify: Option<&'a Verify>,
    },
    /// The source's retention set (in effect at once: what it no longer
    /// allows is evicted at `now_ms`).
    Retention {
        key: SourceKey,
        retention: Retention,
    },
    /// A source with its events and their ids, from an earlier version's
    /// state file (stored as it is, retained at once).
    Import {
        key: SourceKey,
        source: &'a StoredSource,
    },
    /// Keep a generated default key for the next start.
    DefaultKey(&'a str),
    /// A subscribe token of the source.
    Token {
        key: SourceKey,
        token: &'a StoredToken,
    },
    /// A token revoked before its expiry (expired ones are dropped
    /// without a record).
    RevokeToken {
        key: SourceKey,
        token: &'a str,
    },
}

/// Names a submitted op until it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// An acknowledgement's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Stored,
    /// An appended event, with the id it got.
    Appended(EventId),
    /// An emit with an idempotency key already used with the same body:
    /// nothing appended, the id the first emit got (decided by storage
    /// shared by nodes, `redis`).
    Replayed(EventId),
}

/// Why storage did not take a change; nothing of it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageError {
    /// A write failed (disk full, file too large); may recover.
    WriteFailed,
    /// A sync failed: the page cache is not trusted until a restart.
    SyncFailed,
    /// The engine cannot be reached (Redis down).
    Unreachable,
    /// Another node took the name first (Redis).
    Conflict,
    /// The emit's idempotency key was used with another body (decided by
    /// storage shared by nodes, `redis`): nothing appended.
    KeyReused,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::WriteFailed => write!(f, "a write to storage failed"),
            StorageError::SyncFailed => write!(f, "a sync of storage failed; restart needed"),
            StorageError::Unreachable => write!(f, "storage is unreachable"),
            StorageError::Conflict => write!(f, "a source with this name already exists"),
            StorageError::KeyReused => write!(f, "this Idempotency-Key was used with another body on this source"),
        }
    }
}

/// What `poll` hands the core, in submission order.
#[derive(Debug)]
pub enum Outcome {
    Done {
        ticket: Ticket,
        result: Result<Ack, StorageError>,
    },
    /// An acknowledged event, now retained: deliver it.
    Publish {
        key: SourceKey,
        event: Event,
    },
    /// Another node created a source: register it (a key), then
    /// `Engine::restore` it; the engine holds its later records until then.
    Created(Box<StoredSource>),
    /// Another node deleted a source: its streams end.
    Deleted {
        key: SourceKey,
    },
    /// Events of the source were lost before they reached this node's
    /// subscribers: they get the gap signal (the ring knows it too).
    Gap {
        key: SourceKey,
        gap: crate::sse::Gap,
    },
    /// Another node set or removed the source's signature check.
    Verify {
        key: SourceKey,
        verify: Option<crate::verify::Verify>,
    },
    /// Another node made a subscribe token of the source.
    Token {
        key: SourceKey,
        token: StoredToken,
    },
    /// Another node set the source's retention (the rings apply it).
    Retention {
        key: SourceKey,
        retention: Retention,
    },
    /// Another node revoked one: its streams here end.
    TokenRevoked {
        key: SourceKey,
        token: String,
    },
}

/// A storage engine. Called only on the reactor thread.
pub trait Engine {
    /// Queues a change; the ticket comes back in a later `Outcome::Done`.
    /// Rings change at submission for creates, deletes and clears (so the
    /// core's view is at once consistent; they change back if storage
    /// surely wrote nothing of it), and at acknowledgement for appends (so
    /// nothing unacknowledged is retained).
    fn submit(&mut self, op: Op<'_>, now_ms: u64) -> Ticket;

    /// End of a loop turn: hand what was submitted to storage (one write).
    fn flush(&mut self) {}

    /// True while submitted work waits for `flush`: the loop must not sleep.
    fn wants_flush(&self) -> bool {
        false
    }

    /// Appends every outcome ready now.
    fn poll(&mut self, out: &mut Vec<Outcome>);

    /// The retained events.
    fn rings(&self) -> &Rings;

    /// Evicts the source's events past its age bound at `now_ms` (called
    /// when its deadline comes); the next deadline (unix ms), if any.
    fn expire(&mut self, _key: SourceKey, _now_ms: u64) -> Option<u64> {
        None
    }

    /// Prometheus lines of the engine's own metrics.
    fn metrics(&self, _out: &mut String) {}

    /// False while the engine cannot take changes (for `/healthz`).
    fn healthy(&self) -> bool {
        true
    }

    /// False while a delete or a clear is to be refused before it is done
    /// (it would fail, or be done here and undone by the next start). By
    /// default, while not healthy.
    fn takes_removals(&self) -> bool {
        self.healthy()
    }

    /// True if other nodes share the storage: a client may then resume
    /// here from an id this node has not read yet.
    fn shared(&self) -> bool {
        false
    }

    /// Puts back a source found at start (or created by another node).
    fn restore(&mut self, key: SourceKey, source: StoredSource);

    /// Puts back a token found at start (engines that keep tokens).
    fn restore_token(&mut self, _key: SourceKey, _token: StoredToken) {}

    /// Readiness of one of the engine's own sockets (tokens from
    /// `redis::TOKEN_BASE`), registered on the reactor's poll.
    fn ready(&mut self, _event: &mio::event::Event) {}

    /// When the engine wants `poll` called even if nothing happens (its
    /// deadlines and reconnects).
    fn next_wake(&self) -> Option<std::time::Instant> {
        None
    }

    /// The server stops: after this the engine takes no more changes and
    /// nothing of it uses its storage (threads joined, the data dir's lock
    /// released), before its memory is freed, which may take long.
    fn close(&mut self) {}
}

/// Which engine `--engine` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// Nothing survives a stop.
    Memory,
    /// Append-only files in `--data-dir` (SPEC §5).
    #[default]
    Log,
    /// Shared by many nodes through `--redis` (SPEC §6).
    Redis,
}

impl EngineKind {
    /// The engine a `--engine` value names.
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "memory" => Some(EngineKind::Memory),
            "log" => Some(EngineKind::Log),
            "redis" => Some(EngineKind::Redis),
            _ => None,
        }
    }
}

/// What an engine is opened with: the storage part of the server's
/// `Config` (`Config::engine_settings`), so that the engine needs nothing
/// above it.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub struct Settings {
    pub kind: EngineKind,
    /// A source's bounds where its retention sets none (`--history`,
    /// `--history-max-age`, `--history-max-bytes`), and the idempotency
    /// keys it remembers (`--idempotency-keys`).
    pub bounds: Bounds,
    /// The `log` engine's directory, its sync policy, and whether damage
    /// before the tail is cut (`--repair`).
    pub data_dir: std::path::PathBuf,
    pub fsync: log::Fsync,
    pub repair: bool,
    /// The `redis` engine's server and its number of partition streams.
    pub redis: Option<redis::RedisUrl>,
    pub redis_partitions: u32,
    /// Replicas that must have a change before it is acknowledged (`WAIT`).
    pub redis_replicas: u32,
}

/// An engine opened at bind (files locked, what was stored read), not yet
/// started. `Send`, so a server binds on one thread and runs on another.
pub struct Opened {
    kind: Opening,
    recovered: Recovered,
    waker: Arc<Waker>,
}

enum Opening {
    Memory {
        limits: Bounds,
    },
    Log(log::Opened),
    #[cfg(feature = "redis")]
    Redis(Box<redis::Opened>),
    /// Tests bring their own engine (started with the floor).
    #[cfg(test)]
    Custom(Box<dyn FnOnce(u64) -> Box<dyn Engine> + Send>),
}

impl Opened {
    pub fn open(config: &Settings, waker: Arc<Waker>) -> io::Result<Opened> {
        Ok(match config.kind {
            EngineKind::Memory => Opened { kind: Opening::Memory { limits: config.bounds }, recovered: Recovered::default(), waker },
            EngineKind::Log => {
                let mut opened = log::open(&config.data_dir, config.fsync, config.bounds, config.repair)?;
                let recovered = std::mem::take(&mut opened.recovered);
                Opened { kind: Opening::Log(opened), recovered, waker }
            }
            #[cfg(not(feature = "redis"))]
            EngineKind::Redis => return Err(io::Error::other("this ssehub was built without the redis engine (cargo feature `redis`)")),
            #[cfg(feature = "redis")]
            EngineKind::Redis => {
                let url = config.redis.as_ref().ok_or_else(|| io::Error::other("--engine redis needs --redis URL"))?;
                let mut opened = redis::open(url, config.redis_partitions, config.bounds.max_events, "ssehub:")?;
                opened.replicas = config.redis_replicas;
                opened.bounds = config.bounds;
                let recovered = std::mem::take(&mut opened.recovered);
                Opened { kind: Opening::Redis(Box::new(opened)), recovered, waker }
            }
        })
    }

    #[cfg(test)]
    pub fn custom(make: Box<dyn FnOnce(u64) -> Box<dyn Engine> + Send>, waker: Arc<Waker>) -> Opened {
        Opened { kind: Opening::Custom(make), recovered: Recovered::default(), waker }
    }

    /// Where the engine keeps its data, for log lines.
    pub fn describe(&self) -> String {
        match &self.kind {
            Opening::Memory { .. } => "memory".to_string(),
            Opening::Log(log) => log.describe(),
            #[cfg(feature = "redis")]
            Opening::Redis(r) => r.describe(),
            #[cfg(test)]
            Opening::Custom(_) => "a test engine".to_string(),
        }
    }

    /// Where a person or a script reads the generated default key: the
    /// `log` engine writes it to a file of its own (which it returns).
    pub fn show_key(&self, key: &str) -> io::Result<Option<std::path::PathBuf>> {
        match &self.kind {
            Opening::Log(log) => log.keep_key_file(key).map(Some),
            _ => Ok(None),
        }
    }

    /// What the engine found.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Starts the engine on the reactor thread; ids start above `floor_ms`.
    /// Engines with sockets register them on `registry`.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub fn start(self, floor_ms: u64, registry: &mio::Registry) -> io::Result<(Box<dyn Engine>, Recovered)> {
        let engine: Box<dyn Engine> = match self.kind {
            Opening::Memory { limits } => Box::new(Memory::with_limits(limits, floor_ms)),
            Opening::Log(log) => Box::new(log.start(floor_ms, self.waker)),
            #[cfg(feature = "redis")]
            Opening::Redis(r) => Box::new(redis::Redis::start(redis::Opened { floor_ms, ..*r }, registry.try_clone()?, self.waker)),
            #[cfg(test)]
            Opening::Custom(make) => make(floor_ms),
        };
        Ok((engine, self.recovered))
    }
}
