//! The reactor: one mio `Poll`, the listeners, every connection in a slab
//! (token = key), the source registry, and the timer wheel; the loop that
//! drives them, and closing. Its parts: `accept`, `read` (the read loop
//! and the turn's budget for requests), `request` (one request, from its
//! head to its answer), `body` (bodies being read and their budget),
//! `delivery` (the writing half), `timers`, `handles` (the handles'
//! commands, key reloads), `start` (what the server is bound with and
//! holds before the first turn), `stop`, `tls`. See the crate docs for the
//! loop contract.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::access::Access;
use crate::api::reply::Answer;
use crate::auth::{AccountId, Keys};
use crate::bodies::{Budget, Floor};
use crate::commands::Shared;
use crate::config::Config;
use crate::conn::{Conn, Phase, Reason};
use crate::engine::{self, Ack, SourceKey, StorageError};
use crate::http::Head;
use crate::hub::Hub;
use crate::metrics::Stats;
use crate::notify::Notify;
use crate::proxy::Cidr;
use crate::sys::unix_ms;
use crate::throttle::{Throttles, throttled};
use crate::timer::{TimerId, Timers};

mod accept;
mod body;
mod delivery;
mod handles;
mod listing;
mod read;
mod request;
mod start;
mod stop;
#[cfg(test)]
mod tests;
mod timers;
#[cfg(feature = "tls")]
mod tls;
use delivery::{Handshakes, ToFlush};
use listing::Listings;
use read::REQUEST_TURN;
pub use start::Bound;
use stop::Drain;
use timers::{HEADER_TIMEOUT_MS, HEADER_TIMEOUT_VAR, SEND_TIMEOUT_MS, SEND_TIMEOUT_VAR};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const METRICS_LISTENER: Token = Token(usize::MAX - 3);

/// On shutdown: how long storage may take to acknowledge what it was
/// handed, and peers to take their answers.
const STOP_GRACE_MS: u64 = 500;
/// systemd's `STATUS=` (the streams count) is told at most this often.
const STATUS_EVERY_MS: u64 = 5_000;

/// Bytes written to one connection per turn (checked between writes): the
/// rest waits for the next turn.
const WRITE_BUDGET: usize = 256 * 1024;
const EVENTS_CAPACITY: usize = 1024;
/// Asked of listen(); the kernel caps it at net.core.somaxconn, so the
/// operator sizes the accept queue. A reconnect storm larger than the queue
/// loses SYNs, which clients retry only after 1 s (docs/reliability.md).
const LISTEN_BACKLOG: i32 = 65535;
/// Descriptors kept free under the connection limit: listener, epoll,
/// waker, the spare, stdio, log files, and `METRICS_EXTRA` scrapers.
const FD_RESERVE: u64 = 16;

/// What a timer is for.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// The connection's phase timeout (key, generation).
    Conn(u32, u32),
    Handshake,
    AcceptRetry,
    /// The first subscribe token expires.
    Tokens,
    /// The source's oldest event passes its age bound.
    Retention(SourceKey),
    /// The next streams of a drain are due, or its end.
    Drain,
    /// A deferred `STATUS=` to systemd.
    Status,
    /// The `--tls-cert` and `--tls-key` files are looked at.
    #[cfg(feature = "tls")]
    TlsFiles,
}

/// Who waits for storage's answer to a change (the hub carries it
/// without reading it).
pub(crate) enum Waiter {
    /// A connection's request, answered with `answer` in its `slot` of
    /// the connection's answers (if it is still the same connection).
    Conn { key: usize, generation: u32, slot: u32, answer: Answer },
    /// A library handle's call.
    Handle(Box<dyn FnOnce(Result<Ack, StorageError>)>),
}

pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    metrics_ready: bool,
    /// The default account's key (configured or generated), kept for reloads.
    default_key: Option<String>,
    /// Bytes reserved by request bodies being read (`--max-body-bytes-in-flight`), and by whom.
    bodies: Budget,
    /// The floor rate of a body being read.
    floor: Floor,
    /// The access log is on (`RUST_LOG` names `ssehub::access`).
    access_log: bool,
    shared: Arc<Shared>,
    conns: Slab<Conn>,
    hub: Hub<Waiter>,
    keys: Keys,
    default_account: AccountId,
    config: Config,
    max_connections: usize,
    /// `HEADER_TIMEOUT_MS`, or what `SSEHUB_HEAD_TIMEOUT_MS` sets (tests).
    header_timeout_ms: u64,
    /// `SEND_TIMEOUT_MS`, or what `SSEHUB_SEND_TIMEOUT_MS` sets (tests).
    send_timeout_ms: u64,
    timers: Timers<Due>,
    start: Instant,
    /// Reactor clock: milliseconds since start, read once per turn.
    now: u64,
    stats: Stats,
    throttles: Throttles,
    /// `--trusted-proxy`: whose `X-Forwarded-For` the access log believes.
    trusted_proxies: Vec<Cidr>,
    to_flush: ToFlush,
    to_read: Vec<(usize, u32)>,
    /// When this turn's `REQUEST_TURN` ends, whether a request was
    /// answered in it and whether a slice of a page of sources was built;
    /// turns are counted.
    turn_ends: Instant,
    turn_served: bool,
    turn_listed: bool,
    turn: u16,
    /// By connection key: the turn in which it last had a request answered
    /// (2 bytes a connection beside it; the count wraps, so a connection
    /// served 65,536 turns ago may wait one turn more).
    served_turn: Vec<u16>,
    /// Pages of sources asked for, the one being built first.
    listings: Listings,
    to_close: Vec<usize>,
    /// Parked connections answered this turn: (key, generation).
    to_resume: Vec<(usize, u32)>,
    accept_ready: bool,
    /// Closed to make room to accept-and-refuse when descriptors run out.
    spare_fd: Option<File>,
    last_fd_warning: Option<u64>,
    last_busy_warning: Option<u64>,
    generation: u32,
    handshakes: Handshakes,
    scratch: Vec<u8>,
    /// Lent to request handlers (no allocation per emit).
    handler_scratch: Vec<u8>,
    spare_effects: Vec<crate::hub::Effect<Waiter>>,
    spare_head: Head,
    /// Unix milliseconds, read once per turn (event ids, creation times).
    unix_now: u64,
    /// The one timer for token expiry: (reactor ms, id), armed for the
    /// earliest expiry; a later one fires and re-arms.
    token_timer: Option<(u64, TimerId)>,
    /// After the first stop request with `--drain`.
    drain: Option<Drain>,
    /// systemd (`$NOTIFY_SOCKET`), and the streams count it was last told,
    /// when (reactor ms), and whether a later telling is armed.
    notify: Notify,
    status_told: (u64, u64),
    status_armed: bool,
    /// `--tls-cert`: the main listener speaks TLS.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Server>,
    /// Handshake flights left this turn, and the connections whose
    /// handshake waits for the next (key, generation).
    #[cfg(feature = "tls")]
    flights_left: usize,
    #[cfg(feature = "tls")]
    to_handshake: std::collections::VecDeque<(usize, u32)>,
}

impl Reactor {
    pub fn new(bound: Bound) -> io::Result<Reactor> {
        let Bound {
            poll,
            listener,
            metrics_listener,
            default_key,
            shared,
            mut keys,
            default_account,
            config,
            max_connections,
            local_addr,
            engine,
            imported,
            key_to_keep,
            #[cfg(feature = "tls")]
            tls,
            ..
        } = bound;
        let now = unix_ms();
        let storage = start::storage_line(&config, &engine);
        let (engine, recovered) = engine.start(now, poll.registry())?;
        let mut hub = Hub::new(engine);
        start::restore(&mut hub, &mut keys, &config, default_account, recovered, imported, key_to_keep, now);
        let handshakes = Handshakes::new(config.handshake_interval);
        let trusted_proxies = config.trusted_proxies.iter().filter_map(|p| Cidr::parse(p)).collect();
        let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
        start::log_started(&keys, &storage, scheme, local_addr, metrics_listener.as_ref(), max_connections);
        let mut reactor = Reactor {
            poll,
            listener: Some(listener),
            metrics_ready: metrics_listener.is_some(),
            metrics_listener,
            default_key,
            bodies: Budget::new(config.max_body_bytes_in_flight, config.max_event_bytes),
            floor: Floor::from_env(),
            access_log: Access::enabled(),
            shared,
            conns: Slab::new(),
            hub,
            keys,
            default_account,
            config,
            max_connections,
            header_timeout_ms: std::env::var(HEADER_TIMEOUT_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(HEADER_TIMEOUT_MS),
            send_timeout_ms: std::env::var(SEND_TIMEOUT_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(SEND_TIMEOUT_MS),
            timers: Timers::new(0),
            start: Instant::now(),
            now: 0,
            stats: Stats { started_unix_ms: now, ..Stats::default() },
            throttles: Throttles::default(),
            trusted_proxies,
            to_flush: ToFlush::default(),
            to_read: Vec::new(),
            turn_ends: Instant::now(),
            turn_served: false,
            turn_listed: false,
            turn: 1,
            served_turn: Vec::new(),
            listings: Listings::new(),
            to_close: Vec::new(),
            to_resume: Vec::new(),
            accept_ready: true,
            spare_fd: File::open("/dev/null").ok(),
            last_fd_warning: None,
            last_busy_warning: None,
            generation: 0,
            handshakes,
            scratch: vec![0; 16 * 1024],
            spare_effects: Vec::new(),
            spare_head: Head::default(),
            handler_scratch: Vec::new(),
            unix_now: unix_ms(),
            token_timer: None,
            drain: None,
            notify: Notify::from_env(),
            status_told: (0, 0),
            status_armed: false,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "tls")]
            flights_left: 0,
            #[cfg(feature = "tls")]
            to_handshake: std::collections::VecDeque::new(),
        };
        #[cfg(feature = "tls")]
        if let Some(tls) = &reactor.tls {
            reactor.stats.tls_cert_not_after = tls.not_after.max(1) as u64;
            reactor.timers.insert(crate::tls::check_interval_ms(), Due::TlsFiles);
        }
        // Restored sources whose events expired while the server was down go at the first turn.
        reactor.arm_retention_timers();
        Ok(reactor)
    }

    /// Serves until shut down, stops, and frees everything.
    pub fn run(mut self) -> io::Result<()> {
        let result = self.serve();
        self.stop();
        result
    }

    /// `run`, leaving the memory to the process's exit, which follows (the
    /// binary: freeing a hundred thousand sources takes a while, and a
    /// supervisor that restarts at once wants the process gone). Storage
    /// was released in `stop`.
    pub fn run_without_freeing(mut self) -> io::Result<()> {
        let result = self.serve();
        self.stop();
        std::mem::forget(self);
        result
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // Listening, and storage recovered: systemd may start what needs us.
        self.notify.send("READY=1\nSTATUS=0 streams");
        loop {
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout()) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.start.elapsed().as_millis() as u64;
            self.unix_now = unix_ms();
            self.turn_ends = Instant::now() + REQUEST_TURN;
            (self.turn_served, self.turn_listed) = (false, false);
            self.turn = self.turn.wrapping_add(1);
            // Reads carried over from the last turn go first.
            self.resume_reads();
            let mut woken = false;
            // Handshakes deferred by last turn's budget go first.
            #[cfg(feature = "tls")]
            self.resume_handshakes();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready = true,
                    METRICS_LISTENER => self.metrics_ready = true,
                    WAKER => woken = true,
                    Token(t) if t >= engine::redis::TOKEN_BASE => self.hub.engine_ready(event),
                    Token(key) => self.on_event(key, event),
                }
            }
            // Draining: a command may have woken the loop while the drain
            // answered requests in flight.
            if (woken || self.drain.is_some()) && self.run_commands() {
                return Ok(());
            }
            self.accept();
            self.resume_reads();
            self.build_listing();
            self.expire_timers();
            // Storage writes what this turn submitted; what it acknowledged
            // is answered and fanned out before the sockets are written.
            self.hub.flush();
            self.settle();
            self.arm_token_timer();
            self.arm_retention_timers();
            self.resume_parked();
            self.flush_pending();
            self.free_closed();
            self.publish();
            if self.drained() {
                return Ok(());
            }
        }
    }

    /// Zero while work is carried over from a spent budget; else until the next timer.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.accept_ready
            || self.metrics_ready
            || !self.to_read.is_empty()
            || !self.to_flush.is_empty()
            || !self.listings.is_empty()
            || self.hub.wants_flush()
        {
            return Some(Duration::ZERO);
        }
        #[cfg(feature = "tls")]
        if !self.to_handshake.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.start.elapsed().as_millis() as u64;
        let timer = self.timers.next_expiry().map(|at| Duration::from_millis(at.saturating_sub(now)));
        let engine = self.hub.engine().next_wake().map(|at| at.saturating_duration_since(Instant::now()));
        match (timer, engine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_event(&mut self, key: usize, event: &mio::event::Event) {
        // Stale: the connection is closing or gone.
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) else { return };
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            conn.can_write = true;
            if conn.has_output() {
                self.to_flush.mark(conn, key);
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            conn.can_read = true;
            conn.fin_hint |= event.is_read_closed() || event.is_error();
            self.read(key);
        }
    }

    /// What the engine acknowledged: answers, fan-out, ended streams.
    fn settle(&mut self) {
        self.hub.settle();
        self.apply_effects();
    }

    // ---- closing ----

    /// Marks for closing; the slot is freed at the end of the turn.
    fn close(&mut self, key: usize, reason: Reason) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.closing.is_none()
        {
            conn.closing = Some(reason);
            self.to_close.push(key);
        }
    }

    fn free_closed(&mut self) {
        for key in std::mem::take(&mut self.to_close) {
            self.release_body(key);
            let conn = self.conns.remove(key);
            let reason = conn.closing.unwrap_or(Reason::Done);
            if let Some(id) = conn.timer {
                self.timers.remove(id);
            }
            if let Phase::Stream { source, index, .. } = conn.phase {
                self.drop_subscriber(source, index);
            }
            if let Some(access) = &conn.access {
                access.log(conn.peer, 200, access.sent, self.start.elapsed().as_micros() as u64);
            }
            match reason {
                Reason::SendTimeout | Reason::HeaderTimeout | Reason::BodyTimeout => {
                    self.stats.connections_timed_out += 1;
                    throttled!(self.throttles.timeouts, Info, "closed {}: {reason}", conn.peer);
                }
                _ => debug!("closed {}: {reason}", conn.peer),
            }
        }
    }

    /// Takes the stream at `index` off `source`'s subscribers.
    pub(super) fn drop_subscriber(&mut self, source: SourceKey, index: u32) {
        self.stats.subscribers -= 1;
        if let Some(moved) = self.hub.registry.unsubscribe(source, index)
            && let Some(Conn { phase: Phase::Stream { index: i, .. }, .. }) = self.conns.get_mut(moved as usize)
        {
            *i = index;
        }
    }

    // ---- metrics, systemd ----

    fn refresh_gauges(&mut self) {
        self.stats.connections_open = self.conns.len() as u64;
        self.stats.sources = self.hub.registry.len() as u64;
        self.stats.storage_failures = self.hub.failures;
        self.stats.storage_recoveries = self.hub.recoveries;
    }

    fn publish(&mut self) {
        self.refresh_gauges();
        self.shared.published.store(&self.stats);
        self.tell_status();
    }

    /// Tells systemd the streams count when it changed, at most every
    /// `STATUS_EVERY_MS` (a change sooner arms a timer for it).
    fn tell_status(&mut self) {
        let (at, told) = self.status_told;
        let streams = self.stats.subscribers;
        if streams == told || !self.notify.enabled() || self.drain.is_some() {
            return;
        }
        if self.now < at + STATUS_EVERY_MS {
            if !self.status_armed {
                self.status_armed = true;
                self.timers.insert(at + STATUS_EVERY_MS, Due::Status);
            }
            return;
        }
        self.notify.send_number("STATUS=", streams, " streams");
        self.status_told = (self.now, streams);
    }
}
