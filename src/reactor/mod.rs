//! The reactor: one mio `Poll`, the listener, every connection in a slab
//! (token = key), the source registry, and the timer wheel; the loop that
//! drives them, and its reading half (accept, read, parse, dispatch,
//! close). The writing half is in `delivery`, what the server is bound
//! with and holds before the first turn in `start`. See the crate docs for
//! the loop contract.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access::Access;
use crate::api::reply::{Answer, CORS_ANY};
use crate::api::{self, Ctx, Reply};
use crate::auth::{AccountId, Keys};
use crate::bodies::{Budget, Busy, Floor, Pace};
use crate::commands::{Command, Emitted, Error, Shared, SourceInfo};
use crate::config::Config;
use crate::conn::{BodyRead, Conn, Fill, Phase, READ_BUDGET, Reason};
use crate::engine::{self, Ack, SourceKey, StorageError};
use crate::http::{self, BodyReader, Framing, Head, HttpError};
use crate::hub::{Hub, Repeat};
use crate::limits::Kind;
use crate::metrics::Stats;
use crate::notify::Notify;
use crate::outq::Buf;
use crate::proxy::{self, Cidr};
use crate::registry::CreateError;
use crate::sse::{self, EventId};
use crate::sys::unix_ms;
use crate::throttle::{Throttles, throttled};
use crate::timer::{TimerId, Timers};
use crate::tokens::Opener;

mod delivery;
mod start;
mod stop;
#[cfg(test)]
mod tests;
#[cfg(feature = "tls")]
mod tls;
use delivery::{Handshakes, ToFlush};
pub use start::Bound;
use stop::Drain;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const METRICS_LISTENER: Token = Token(usize::MAX - 3);

/// From accept until the first request head is complete (slowloris; a TLS
/// handshake included).
const HEADER_TIMEOUT_MS: u64 = 10_000;
/// A hidden variable for tests that sets `HEADER_TIMEOUT_MS`.
const HEADER_TIMEOUT_VAR: &str = "SSEHUB_HEAD_TIMEOUT_MS";
/// An idle keep-alive connection between requests.
const KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
/// From a complete head until its body is complete (and meanwhile at
/// least the floor rate, `bodies::Floor`).
const BODY_TIMEOUT_MS: u64 = 30_000;
/// A stream or a last answer with queued output whose peer takes no byte for this long is dropped.
const SEND_TIMEOUT_MS: u64 = 30_000;
/// A hidden variable for tests that sets `SEND_TIMEOUT_MS`.
const SEND_TIMEOUT_VAR: &str = "SSEHUB_SEND_TIMEOUT_MS";
/// After an answer that closes: how long to wait for the peer's FIN.
const LINGER_TIMEOUT_MS: u64 = 2_000;
/// Retry accepting after this when the process is out of descriptors.
const ACCEPT_RETRY_MS: u64 = 100;
/// On shutdown: how long storage may take to acknowledge what it was
/// handed, and peers to take their answers.
const STOP_GRACE_MS: u64 = 500;
/// systemd's `STATUS=` (the streams count) is told at most this often.
const STATUS_EVERY_MS: u64 = 5_000;

/// Per-turn budgets: work beyond them waits for the next turn.
const ACCEPT_BUDGET: usize = 1024;
const WRITE_BUDGET: usize = 256 * 1024;
/// Pipelined requests awaiting storage on one connection before it stops reading.
const MAX_AWAITED: usize = 64;
/// Requests read and answered per turn: any number until this long after
/// the turn began (once one is answered), then one more per connection
/// that has had none this turn, and one page of sources (the costliest
/// answer, up to 1,000 sources) per turn in all. What is left is carried
/// over, first in line next turn, after this turn's answers and fan-out
/// are written: one account's many connections (a flood of emits, pages
/// of sources) delay another's emit by about one page and one request per
/// connection, not by all of their work.
const REQUEST_TURN: Duration = Duration::from_millis(1);
const TIMER_BUDGET: usize = 4096;
const EVENTS_CAPACITY: usize = 1024;
/// Asked of listen(); the kernel caps it at net.core.somaxconn, so the
/// operator sizes the accept queue. A reconnect storm larger than the queue
/// loses SYNs, which clients retry only after 1 s (docs/reliability.md).
const LISTEN_BACKLOG: i32 = 65535;
/// Descriptors kept free under the connection limit: listener, epoll,
/// waker, the spare, stdio, log files, and `METRICS_EXTRA` scrapers.
const FD_RESERVE: u64 = 16;
/// Connections on `--metrics-listen` admitted past `--max-connections`:
/// a main port full of clients must not blind the monitoring that would
/// show it (nor the probe of `/healthz` there). A scraper or two is the
/// use; these few come out of `FD_RESERVE`, which has room for them, and
/// beyond them a scrape is refused like any other connection.
const METRICS_EXTRA: usize = 4;

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 48\r\nConnection: close\r\n\r\n{\"error\":\"server is at its connection limit\"}\n\n\n";

/// After one step of reading requests: parse again, or wait for more bytes
/// (or for storage, or for the connection's next phase).
enum Step {
    Again,
    Wait,
}

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
    /// When this turn's `REQUEST_TURN` ends, and whether a request (or a
    /// page of sources) was answered in it; turns are counted.
    turn_ends: Instant,
    turn_served: bool,
    turn_listed: bool,
    turn: u16,
    /// By connection key: the turn in which it last had a request answered
    /// (2 bytes a connection beside it; the count wraps, so a connection
    /// served 65,536 turns ago may wait one turn more).
    served_turn: Vec<u16>,
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
        if self.accept_ready || self.metrics_ready || !self.to_read.is_empty() || !self.to_flush.is_empty() || self.hub.wants_flush() {
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

    // ---- connections: accept, read, parse, dispatch ----

    fn accept(&mut self) {
        if self.metrics_ready {
            self.accept_metrics();
        }
        if !self.accept_ready {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else { return self.accept_ready = false };
            match listener.accept() {
                Ok((sock, addr)) => self.admit(sock, addr, false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                    self.out_of_descriptors(&e);
                    return;
                }
                // The peer gave up before we accepted (ECONNABORTED and kin).
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    /// `--metrics-listen`: a few scrapers, so no spare descriptor to
    /// refuse with; out of descriptors, it retries on the accept timer.
    fn accept_metrics(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.metrics_listener else { return self.metrics_ready = false };
            match listener.accept() {
                Ok((sock, addr)) => self.admit(sock, addr, true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.metrics_ready = false,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                    self.timers.insert(self.now + ACCEPT_RETRY_MS, Due::AcceptRetry);
                    return self.metrics_ready = false;
                }
                Err(e) => debug!("accept on --metrics-listen: {e}"),
            }
        }
    }

    /// Out of descriptors: free the spare one to accept and refuse a
    /// waiting connection (rather than leave it hanging in the backlog),
    /// then retry on a timer, not in a busy loop.
    fn out_of_descriptors(&mut self, e: &io::Error) {
        if self.last_fd_warning.is_none_or(|at| self.now >= at + 1000) {
            warn!("accept failed: {e}; refusing new connections until descriptors are free");
            self.last_fd_warning = Some(self.now);
        }
        if self.spare_fd.take().is_some() {
            if let Some(Ok((sock, _))) = self.listener.as_ref().map(TcpListener::accept) {
                self.refuse_connection(sock, false);
            }
            self.spare_fd = File::open("/dev/null").ok();
        }
        self.accept_ready = false;
        self.timers.insert(self.now + ACCEPT_RETRY_MS, Due::AcceptRetry);
    }

    /// A connection over the limit: the plain-HTTP `503`, or on the TLS
    /// port a close at once (a TLS client could not read a plain answer,
    /// and a handshake to send it costs what the limit is there to save;
    /// docs/operations.md).
    fn refuse_connection(&mut self, mut sock: TcpStream, on_metrics: bool) {
        self.stats.connections_refused += 1;
        #[cfg(feature = "tls")]
        if self.tls.is_some() && !on_metrics {
            return drop(sock);
        }
        let _ = on_metrics;
        // Best effort: a fresh socket's send buffer is empty.
        let _ = sock.write(REFUSED);
    }

    fn admit(&mut self, mut sock: TcpStream, addr: SocketAddr, on_metrics: bool) {
        let limit = self.max_connections + if on_metrics { METRICS_EXTRA } else { 0 };
        if self.conns.len() >= limit {
            self.refuse_connection(sock, on_metrics);
            let max = self.max_connections;
            throttled!(self.throttles.limit, Warn, "{max} connections open (--max-connections): refusing {addr}");
            return;
        }
        let key = self.conns.vacant_key();
        let _ = sock.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            warn!("register: {e}");
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let mut conn = Conn::new(sock, addr, self.generation, self.now);
        conn.on_metrics = on_metrics;
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref().filter(|_| !on_metrics) {
            match tls.accept() {
                Ok(t) => conn.set_tls(t),
                Err(e) => return warn!("TLS: {e}"),
            }
        }
        self.conns.insert(conn);
        self.stats.connections_accepted += 1;
        self.arm(key, self.now + self.header_timeout_ms);
    }

    /// The connection's one read loop: until drained, closed, or its budget.
    fn read(&mut self, key: usize) {
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
    fn turn_spent(&self) -> bool {
        self.turn_served && Instant::now() >= self.turn_ends
    }

    /// Reads (and requests already read) of `key` wait for the next turn
    /// (listed once: a request carried is followed by its read loop's).
    fn carry(&mut self, key: usize) {
        let entry = (key, self.conns[key].generation);
        if self.to_read.last() != Some(&entry) {
            self.to_read.push(entry);
        }
    }

    /// Carried-over connections, in order: the requests they have read,
    /// then what waits in their sockets.
    fn resume_reads(&mut self) {
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

    fn on_eof(&mut self, key: usize) {
        self.release_body(key);
        let conn = &mut self.conns[key];
        // Requests read before the FIN but carried over to the next turn
        // (a spent turn, or a page of sources already built in this one)
        // are still answered; the last answer then closes.
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
    fn process(&mut self, key: usize) {
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
                Phase::Head if spent || (self.turn_listed && is_listing(&conn.rbuf)) => {
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

    /// The read buffer may hold a request head: parsed, and answered now
    /// if its body (if any) is here too; else its body is read next.
    fn on_head(&mut self, key: usize) -> Step {
        let conn = &mut self.conns[key];
        let len = match http::parse_head_into(&conn.rbuf, &mut self.spare_head) {
            Ok(None) => return Step::Wait,
            Err(e) => {
                self.refuse(key, &e);
                return Step::Wait;
            }
            Ok(Some(len)) => len,
        };
        // Reused request after request: its buffers stay allocated.
        let head = std::mem::take(&mut self.spare_head);
        // A second clock read per request only for the access log's durations.
        conn.request_at_us = if self.access_log { self.start.elapsed().as_micros() as u64 } else { self.now * 1000 };
        conn.rbuf.drain(..len);
        let reader = match BodyReader::new(head.framing, self.config.max_event_bytes) {
            Err(e) => {
                self.refuse(key, &e);
                return Step::Wait;
            }
            Ok(reader) => reader,
        };
        match (reader, head.framing) {
            (None, _) => self.dispatch(key, head, &[]),
            // The common case, a whole Content-Length body already read, is
            // answered from the read buffer.
            (Some(_), Framing::Length(n)) if n as usize <= conn.rbuf.len() => {
                let n = n as usize;
                let mut rbuf = std::mem::take(&mut conn.rbuf);
                self.dispatch(key, head, &rbuf[..n]);
                // Kept only if the connection still reads requests.
                if let Some(conn) = self.conns.get_mut(key).filter(|c| matches!(c.phase, Phase::Head | Phase::Waiting)) {
                    rbuf.drain(..n);
                    conn.rbuf = rbuf;
                }
            }
            (Some(reader), _) => self.begin_body(key, head, reader),
        }
        Step::Again
    }

    /// Feeds what was read to the body being read; a complete one is answered.
    fn on_body(&mut self, key: usize) -> Step {
        let conn = &mut self.conns[key];
        let Phase::Body(read) = &mut conn.phase else { return Step::Wait };
        match read.reader.feed(&conn.rbuf, &mut read.body) {
            Err(e) => {
                self.refuse(key, &e);
                Step::Wait
            }
            Ok(n) => {
                conn.rbuf.drain(..n);
                read.received += n as u64;
                if !read.reader.is_done() {
                    return Step::Wait;
                }
                let Some(BodyRead { head, body, .. }) = conn.take_body() else { return Step::Wait };
                self.release_body(key);
                self.dispatch(key, head, &body);
                Step::Again
            }
        }
    }

    /// A head whose body is still to come. Refused at once if it would be
    /// whatever its body (401, 404, 405: no `100 Continue`, the body is not
    /// read), or if bodies being read already hold `--max-body-bytes-in-flight`,
    /// or the senders of its webhook endpoint or its client address hold
    /// their share of it (503, `bodies::Budget`); else its body is read,
    /// holding its length (a chunked one: the most it may be) of that budget.
    fn begin_body(&mut self, key: usize, head: Head, reader: BodyReader) {
        // At most --max-event-bytes (a longer Content-Length got its 413).
        let max = self.config.max_event_bytes as u64;
        let reserve = u32::try_from(match head.framing {
            Framing::Length(n) => n.min(max),
            _ => max,
        })
        .unwrap_or(u32::MAX);
        let source = api::ingest_source(&self.ctx(key), &head);
        let client = self.client(key, &head);
        let taken = self.bodies.take(key, reserve, source, client);
        if let Some(Reply::Response { status, bytes, .. }) = api::check(&mut self.ctx(key), &head, taken.is_err()) {
            // Taken only to be refused for another reason: given back.
            self.bodies.release(key);
            if status == 503 {
                self.body_busy(taken, source, client);
            }
            if self.access_log {
                let access = self.access(key, &head);
                access.log(self.conns[key].peer, status, bytes.len() as u64, self.clock_us());
            }
            self.spare_head = head;
            self.answer(key, None, status, bytes, true);
            let conn = &mut self.conns[key];
            // The body that may follow is not a request: nothing more is parsed.
            if conn.awaiting() > 0 {
                conn.park();
            }
            return;
        }
        let conn = &mut self.conns[key];
        if head.expect_continue && head.minor >= 1 {
            // Interim answers too keep their place behind awaited ones.
            if conn.awaiting() > 0 {
                conn.answered(None, http::CONTINUE.to_vec(), false);
            } else {
                conn.push(Buf::Static(http::CONTINUE));
            }
            self.to_flush.mark(conn, key);
            self.stats.count_response(100);
        }
        let started = self.now;
        conn.begin_body(BodyRead { head, reader, body: Vec::new(), started, received: 0 }, reserve);
        self.arm(key, self.floor.first_check(started).min(started + BODY_TIMEOUT_MS));
    }

    /// A body refused (503) because the budget, or its share, is held:
    /// one line a second at most of each.
    fn body_busy(&mut self, busy: Result<(), Busy>, source: Option<engine::SourceKey>, client: IpAddr) {
        let holder = match busy {
            Ok(()) => return,
            Err(Busy::Full) => {
                if self.last_busy_warning.is_none_or(|at| self.now >= at + 1000) {
                    warn!("request bodies being read reached --max-body-bytes-in-flight; new ones get 503");
                    self.last_busy_warning = Some(self.now);
                }
                return;
            }
            Err(Busy::Endpoint) => match source.and_then(|s| self.hub.registry.get(s)) {
                Some(s) => format!("to the webhook endpoint of source {} (account {})", s.id, self.keys.account_name(s.account)),
                None => "to a webhook endpoint".to_string(),
            },
            Err(Busy::Client) => format!("from {client}"),
        };
        self.stats.count_limited(Kind::BodyShare);
        let share = self.bodies.share();
        throttled!(
            self.throttles.body_share,
            Warn,
            "request bodies {holder} hold their share of --max-body-bytes-in-flight ({share} bytes); new ones get 503"
        );
    }

    /// The connection's body, if it was reading one, no longer holds its share.
    fn release_body(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && std::mem::take(&mut conn.body_reserved) != 0
        {
            self.bodies.release(key);
        }
    }

    /// A body below the floor rate: answered `408` and closed.
    fn too_slow(&mut self, key: usize) {
        let conn = &self.conns[key];
        let peer = conn.peer;
        let (received, ms) = match &conn.phase {
            Phase::Body(read) => (read.received, self.now - read.started),
            _ => (0, 0),
        };
        self.stats.count_limited(Kind::BodyRate);
        let Floor { after_ms, bytes_per_s } = self.floor;
        // Tenths of seconds by hand: printing an f64 would link core's float formatting.
        throttled!(
            self.throttles.body_rate,
            Info,
            "request body from {peer} too slow: {received} bytes in {}.{} s (the floor is {bytes_per_s} bytes/s after {}.{} s); answered 408",
            ms / 1000,
            ms % 1000 / 100,
            after_ms / 1000,
            after_ms % 1000 / 100
        );
        self.refuse(key, &HttpError::BodyTooSlow);
    }

    /// Answers a request that cannot be read any further, then closes.
    fn refuse(&mut self, key: usize, e: &HttpError) {
        self.release_body(key);
        let status = e.status();
        let conn = &mut self.conns[key];
        let body = crate::json::error_body(&e.to_string());
        let bytes = http::response(status, "application/json", CORS_ANY, &body, false, false);
        if self.access_log {
            let access =
                Access { account: "-".to_string(), client: None, request: "- -".to_string(), since_us: conn.request_at_us, sent: 0 };
            access.log(conn.peer, status, bytes.len() as u64, self.start.elapsed().as_micros() as u64);
        }
        // After the answers still awaited, if any; nothing more is read.
        conn.answered(None, bytes, true);
        if conn.awaiting() > 0 {
            conn.park();
        }
        self.to_flush.mark(conn, key);
        self.stats.count_response(status);
        self.disarm(key);
    }

    /// What the API may read and change for connection `key`'s request.
    fn ctx(&mut self, key: usize) -> Ctx<'_, Waiter> {
        Ctx {
            hub: &mut self.hub,
            keys: &self.keys,
            config: &self.config,
            stats: &mut self.stats,
            throttles: &mut self.throttles,
            now_ms: self.unix_now,
            clock_ms: self.now,
            scratch: &mut self.handler_scratch,
            metrics_listener: self.conns[key].on_metrics,
        }
    }

    /// The reactor clock read now, in microseconds (the access log's durations).
    pub(super) fn clock_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The access log's record of connection `key`'s request `head`: its
    /// account, and its client if the peer is a trusted proxy.
    fn access(&mut self, key: usize, head: &Head) -> Box<Access> {
        let since = self.conns[key].request_at_us;
        let client = self.forwarded_client(key, head);
        let account = api::account_name(&self.ctx(key), head);
        Access::of(head, since, account.as_deref(), client)
    }

    /// The client of connection `key`'s request `head` if the peer is a
    /// trusted proxy (`--trusted-proxy`) that names it; `None`: the peer.
    fn forwarded_client(&self, key: usize, head: &Head) -> Option<IpAddr> {
        if self.trusted_proxies.is_empty() {
            return None;
        }
        proxy::client(
            &self.trusted_proxies,
            self.conns[key].peer.ip(),
            head.headers().filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for")).map(|(_, v)| v),
        )
    }

    /// The client address of connection `key`'s request `head`: the peer,
    /// or the client a trusted proxy names.
    fn client(&self, key: usize, head: &Head) -> IpAddr {
        self.forwarded_client(key, head).unwrap_or_else(|| self.conns[key].peer.ip())
    }

    /// Answers one complete request; its head goes back to be reused.
    fn dispatch(&mut self, key: usize, head: Head, body: &[u8]) {
        self.turn_served = true;
        self.turn_listed |= head.method() == "GET" && head.path() == "/v1/sources";
        if self.served_turn.len() <= key {
            self.served_turn.resize(key + 1, 0);
        }
        self.served_turn[key] = self.turn;
        self.refresh_gauges();
        // Before the request is handled: it may revoke the token it names.
        let access = self.access_log.then(|| self.access(key, &head));
        let reply = api::handle(&mut self.ctx(key), &head, body);
        self.spare_head = head;
        match reply {
            Reply::Response { status, bytes, close } => {
                if let Some(access) = access {
                    access.log(self.conns[key].peer, status, bytes.len() as u64, self.clock_us());
                }
                self.answer(key, None, status, bytes, close);
            }
            Reply::Stream { source, after, opener } => {
                self.stats.count_response(200);
                self.subscribe(key, source, after, opener);
                self.conns[key].access = access;
            }
            Reply::Wait { ticket, mut answer } => {
                answer.access = access;
                let conn = &mut self.conns[key];
                let slot = conn.await_answer();
                // Later changes are read meanwhile (their answers queue
                // behind this one), unless none may follow.
                if !answer.keep_alive() || conn.peer_eof || conn.awaiting() >= MAX_AWAITED {
                    conn.park();
                }
                let generation = conn.generation;
                self.disarm(key);
                self.hub.wait(ticket, Waiter::Conn { key, generation, slot, answer });
            }
        }
        // An engine that acknowledges at once (memory) answers before the
        // next pipelined request is parsed.
        self.settle();
    }

    /// Queues an answer (to the request just read, or to the awaited one
    /// in `slot`); the connection reads its next request or lingers.
    fn answer(&mut self, key: usize, slot: Option<u32>, status: u16, bytes: Vec<u8>, close: bool) {
        self.stats.count_response(status);
        let conn = &mut self.conns[key];
        if status == 401 {
            self.stats.auth_failures += 1;
            throttled!(self.throttles.auth, Warn, "failed authentication from {}", conn.peer);
        }
        let was_parked = matches!(conn.phase, Phase::Waiting);
        // After the end of input, the answer to the last request read closes.
        let close = close || (conn.peer_eof && conn.rbuf.is_empty());
        conn.answered(slot, bytes, close);
        self.to_flush.mark(conn, key);
        let generation = conn.generation;
        match conn.phase {
            Phase::Linger => self.disarm(key),
            Phase::Head if conn.awaiting() == 0 => {
                if was_parked {
                    self.to_resume.push((key, generation));
                }
                self.arm(key, self.now + KEEPALIVE_TIMEOUT_MS);
            }
            _ => {}
        }
    }

    /// What the engine acknowledged: answers, fan-out, ended streams.
    fn settle(&mut self) {
        self.hub.settle();
        self.apply_effects();
    }

    /// Parked connections answered this turn read and parse again.
    fn resume_parked(&mut self) {
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

    fn subscribe(&mut self, key: usize, source: SourceKey, after: Option<EventId>, opener: Opener) {
        let conn = &mut self.conns[key];
        conn.push(Buf::Static(http::STREAM_HEAD));
        conn.push(Buf::Static(sse::HANDSHAKE));
        if let Some(range) = &self.config.client_retry {
            conn.push(Buf::Owned(sse::retry_frame(crate::sys::random_in(range))));
        }
        if let Some(after) = after {
            let (gap, events) = self.hub.replay(source, after);
            if let Some(gap) = gap {
                conn.push(Buf::Owned(sse::gap_frame(&gap)));
            }
            for event in events {
                conn.push(Buf::Shared(event.frame.clone()));
                self.stats.frames_delivered += 1;
            }
        }
        let index = self.hub.registry.subscribe(source, key as u32);
        if let Some(after) = after.filter(|&after| self.hub.is_ahead(source, after)) {
            self.hub.registry.resumed_ahead(source, key as u32, after);
        }
        conn.subscribe(source, index, opener);
        self.to_flush.mark(conn, key);
        self.stats.subscribers += 1;
        self.disarm(key);
        self.start_handshakes();
    }

    // ---- timers ----

    /// Sets the connection's deadline. A later deadline keeps the armed
    /// timer, which re-arms itself when it fires early.
    fn arm(&mut self, key: usize, at: u64) {
        let conn = &mut self.conns[key];
        let later = at >= conn.deadline;
        conn.deadline = at;
        if later && conn.timer.is_some() {
            return;
        }
        if let Some(id) = conn.timer.take() {
            self.timers.remove(id);
        }
        conn.timer = Some(self.timers.insert(at, Due::Conn(key as u32, conn.generation)));
    }

    fn disarm(&mut self, key: usize) {
        if let Some(id) = self.conns[key].timer.take() {
            self.timers.remove(id);
        }
    }

    fn expire_timers(&mut self) {
        let mut due = Vec::new();
        self.timers.expire(self.now, TIMER_BUDGET, &mut due);
        for d in due {
            match d {
                Due::Handshake => self.handshake_tick(),
                Due::AcceptRetry => {
                    self.accept_ready = true;
                    self.metrics_ready = self.metrics_listener.is_some();
                }
                Due::Tokens => {
                    self.token_timer = None;
                    self.hub.expire_tokens(self.unix_now);
                    self.apply_effects();
                }
                Due::Conn(key, generation) => self.on_conn_timer(key as usize, generation),
                Due::Retention(key) => {
                    let Some(source) = self.hub.registry.get_mut(key) else { continue };
                    source.age_timer = None;
                    if let Some(next) = self.hub.expire(key, self.unix_now) {
                        self.arm_retention_timer(key, next);
                    }
                }
                Due::Drain => self.drain_tick(),
                // Told in `publish`, at the end of this turn.
                Due::Status => self.status_armed = false,
                #[cfg(feature = "tls")]
                Due::TlsFiles => self.check_tls_files(),
            }
        }
    }

    /// Arms the age timer of each source whose deadline may have come nearer.
    fn arm_retention_timers(&mut self) {
        let mut aging = std::mem::take(&mut self.hub.aging);
        for key in aging.drain(..) {
            if let Some(deadline) = self.hub.engine().rings().deadline(key) {
                self.arm_retention_timer(key, deadline);
            }
        }
        self.hub.aging = aging;
    }

    /// Arms `key`'s timer (one per source with an age bound and events,
    /// `Source::age_timer`) for `deadline` (unix ms) unless it is armed for
    /// that or earlier (an early one re-arms when it fires); a deadline passed (a bound just made smaller, a
    /// restart after the events expired) evicts at once. Unix time is
    /// mapped onto the reactor's clock.
    fn arm_retention_timer(&mut self, key: SourceKey, mut deadline: u64) {
        while deadline <= self.unix_now {
            let Some(next) = self.hub.expire(key, self.unix_now) else { return };
            deadline = next;
        }
        let Some(source) = self.hub.registry.get_mut(key) else { return };
        if source.age_timer.is_some_and(|(armed, _)| armed <= deadline) {
            return;
        }
        if let Some((_, id)) = source.age_timer.take() {
            self.timers.remove(id);
        }
        let at = self.now + deadline.saturating_sub(self.unix_now);
        source.age_timer = Some((deadline, self.timers.insert(at, Due::Retention(key))));
    }

    /// Arms the token timer for the earliest expiry, unless it is armed
    /// for that or earlier. Unix time is mapped onto the reactor's clock.
    fn arm_token_timer(&mut self) {
        let Some(expires_at) = self.hub.tokens.next_expiry() else { return };
        let at = self.now + expires_at.saturating_sub(self.unix_now);
        if self.token_timer.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        if let Some((_, id)) = self.token_timer.take() {
            self.timers.remove(id);
        }
        self.token_timer = Some((at, self.timers.insert(at, Due::Tokens)));
    }

    fn on_conn_timer(&mut self, key: usize, generation: u32) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.generation == generation) else { return };
        conn.timer = None;
        if self.now < conn.deadline {
            let at = conn.deadline;
            return self.arm(key, at);
        }
        let reason = match &conn.phase {
            // Storage answers in its own time; the last answer re-arms.
            Phase::Head | Phase::Waiting if conn.awaiting() > 0 => return,
            Phase::Head if conn.served && conn.rbuf.is_empty() => Reason::IdleTimeout,
            Phase::Head => Reason::HeaderTimeout,
            Phase::Body(read) if self.now >= read.started + BODY_TIMEOUT_MS => Reason::BodyTimeout,
            Phase::Body(read) => match self.floor.pace(read.started, read.received, self.now) {
                Pace::TooSlow => return self.too_slow(key),
                Pace::CheckAt(at) => {
                    let at = at.min(read.started + BODY_TIMEOUT_MS);
                    return self.arm(key, at);
                }
            },
            // Storage answers in its own time (and fails what it cannot take).
            Phase::Waiting => return,
            // Flushed (over TLS, records rustls holds are output too): the peer's FIN did not come in time.
            Phase::Linger if !conn.has_output() => Reason::Done,
            // Lazily re-armed: progress since arming moves the deadline.
            Phase::Stream { .. } if !conn.has_output() => return,
            Phase::Stream { .. } | Phase::Linger if self.now < conn.last_progress + self.send_timeout_ms => {
                let at = conn.last_progress + self.send_timeout_ms;
                return self.arm(key, at);
            }
            Phase::Stream { .. } | Phase::Linger => Reason::SendTimeout,
        };
        self.close(key, reason);
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

    // ---- handles, metrics, stopping ----

    /// Runs queued handle commands; true when asked to stop.
    fn run_commands(&mut self) -> bool {
        let account = self.default_account;
        let now = self.unix_now;
        for command in self.shared.take_commands() {
            match command {
                Command::Shutdown if self.on_shutdown() => return true,
                Command::Shutdown => {}
                Command::ReloadKeys => {
                    self.reload_keys();
                    #[cfg(feature = "tls")]
                    self.reload_tls();
                }
                Command::Create { name, reply } => {
                    match self.hub.create(account, self.keys.account_name(account), &name, None, Default::default(), now) {
                        Ok((key, ticket)) => {
                            let s = self.hub.source(key);
                            let info =
                                SourceInfo { id: s.id.clone(), name: s.name.clone(), endpoint_path: format!("/e/{}", s.endpoint_key) };
                            let waiter = Waiter::Handle(Box::new(move |result| {
                                let _ = reply.send(result.map(|_| info).map_err(|e| match e {
                                    engine::StorageError::Conflict => Error::NameTaken,
                                    _ => Error::Unavailable,
                                }));
                            }));
                            self.hub.wait(ticket, waiter);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(match e {
                                CreateError::BadName => Error::BadName,
                                CreateError::Taken => Error::NameTaken,
                            }));
                        }
                    }
                }
                Command::Delete { source, reply } => match self.hub.registry.find(account, &source) {
                    Some(key) => {
                        let ticket = self.hub.delete(key, now);
                        let waiter = Waiter::Handle(Box::new(move |result| {
                            let _ = reply.send(result.map(|_| ()).map_err(|_| Error::Unavailable));
                        }));
                        self.hub.wait(ticket, waiter);
                    }
                    None => {
                        let _ = reply.send(Err(Error::NotFound));
                    }
                },
                Command::Emit { source, payload, idem, reply } => match self.hub.registry.find(account, &source) {
                    Some(key) => {
                        let ticket = match idem {
                            None => self.hub.emit(key, &payload, now),
                            Some(idem) => match self.hub.emit_idempotent(key, &payload, idem, now) {
                                Ok(ticket) => ticket,
                                Err(repeat) => {
                                    let _ = reply.send(match repeat {
                                        Repeat::Replayed(id) => Ok(Emitted { id: id.to_string(), replayed: true }),
                                        Repeat::OtherBody => Err(Error::IdempotencyKeyReused),
                                        Repeat::InFlight => Err(Error::IdempotencyKeyInFlight),
                                    });
                                    continue;
                                }
                            },
                        };
                        let waiter = Waiter::Handle(Box::new(move |result| {
                            let _ = reply.send(match result {
                                Ok(Ack::Appended(id)) => Ok(Emitted { id: id.to_string(), replayed: false }),
                                Ok(Ack::Stored) => Err(Error::NotFound),
                                Ok(Ack::Replayed(id)) => Ok(Emitted { id: id.to_string(), replayed: true }),
                                Err(StorageError::KeyReused) => Err(Error::IdempotencyKeyReused),
                                Err(_) => Err(Error::Unavailable),
                            });
                        }));
                        self.hub.wait(ticket, waiter);
                    }
                    None => {
                        let _ = reply.send(Err(Error::NotFound));
                    }
                },
            }
            self.settle();
        }
        false
    }

    /// SIGHUP: the keys file read again; streams of keys no longer there
    /// (or now naming another account) end after what is queued.
    fn reload_keys(&mut self) {
        self.notify.send_number("RELOADING=1\nMONOTONIC_USEC=", crate::sys::monotonic_micros(), "");
        self.reload_keys_file();
        self.notify.send_number("READY=1\nSTATUS=", self.stats.subscribers, " streams");
    }

    fn reload_keys_file(&mut self) {
        let Some(path) = self.config.keys_file.clone() else {
            return info!("SIGHUP: no --keys-file to reload; keys unchanged");
        };
        let keys = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| self.keys.reloaded(self.default_key.as_deref(), &text).map_err(|e| e.to_string()));
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => return warn!("SIGHUP: --keys-file {}: {e}; keeping the keys in use", path.display()),
        };
        let mut ended = 0;
        for key in 0..self.conns.capacity() {
            let Some(conn) = self.conns.get(key).filter(|c| c.closing.is_none() && c.is_stream()) else { continue };
            match conn.opener {
                Opener::Key(id) if !keys.has(id) => {}
                _ => continue,
            }
            self.unsubscribe(key);
            ended += 1;
        }
        let (n_keys, accounts) = keys.counts();
        self.keys = keys;
        info!(
            "SIGHUP: reloaded --keys-file {}: {n_keys} keys in {accounts} accounts; {ended} streams of removed keys ended",
            path.display()
        );
    }

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

/// A page of sources asked for (at the head of `rbuf`): the costliest answer.
fn is_listing(rbuf: &[u8]) -> bool {
    rbuf.strip_prefix(b"GET /v1/sources").is_some_and(|rest| rest.starts_with(b" ") || rest.starts_with(b"?"))
}
