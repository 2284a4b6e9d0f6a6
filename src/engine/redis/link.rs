//! One connection to Redis on the reactor's poll: a non-blocking TCP, TLS
//! or Unix socket registered once for both directions, the commands queued
//! during a turn (written with one `write` before the reactor sleeps), and
//! the replies read and parsed as they complete. Every connection first
//! sends AUTH and SELECT as the URL asks, and `ROLE`: a server that is not
//! a master is left at once (after a failover, an old master or a name
//! that still points at one). The link takes those replies itself; what
//! each later reply answers is the owner's business (FIFO).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::resp::{self, Value};
#[cfg(feature = "tls")]
use super::tls::{Connector, TlsSock};
use super::url::Addr;

/// Reconnect backoff: from this, doubling, up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// The first read of a wake-up asks for this much: an idle link's replies
/// (a blocked XREAD's nil, an acknowledgement) are small, and a node holds
/// one link per partition, so each keeping `READ_CHUNK` zeroed would cost
/// a node over a MiB before its first subscriber. A read that fills it
/// goes on with `READ_CHUNK`.
const FIRST_CHUNK: usize = 2 * 1024;

/// Where a link connects: the address (of the master as last found) and
/// what every connection sends first.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: Addr,
    /// AUTH and SELECT.
    pub setup: Vec<Vec<Vec<u8>>>,
    /// `ROLE` must say master (not so for a Sentinel).
    pub role: bool,
    #[cfg(feature = "tls")]
    pub tls: Option<Connector>,
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<TlsSock>),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
            #[cfg(feature = "tls")]
            Sock::Tls(s) => &mut s.tcp,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.write(buf),
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.tcp.take_error(),
        }
    }

    /// TLS records wait for the socket.
    fn pending(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.wants_write(),
            _ => false,
        }
    }

    /// A short read means the socket is drained (not so under TLS: the
    /// plaintext of one record may be short while more records wait).
    fn short_read_drains(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Sock::Tls(_) => false,
            _ => true,
        }
    }
}

/// Where a link is: what it waits for, what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No socket. Next: `connect` once `retry_at` has passed.
    Down { retry_at: Instant },
    /// Connecting; commands are queued. Next: `Up` on the first readiness.
    Connecting,
    /// Connected: commands are written, replies read.
    Up,
}

pub struct Link {
    pub token: Token,
    sock: Option<Sock>,
    pub state: LinkState,
    out: Vec<u8>,
    written: usize,
    /// Read bytes are `inbuf[..filled]`; the rest is room, zeroed once when it grew.
    inbuf: Vec<u8>,
    filled: usize,
    can_write: bool,
    backoff: Duration,
    /// Replies to the set-up (AUTH, SELECT, ROLE) still to come.
    setup: usize,
    /// The set-up ends with `ROLE`.
    role: bool,
    /// `out[..setup_end]` is the set-up (`sendable`).
    setup_end: usize,
    /// Replies taken since the set-up passed (a link that accepts but
    /// never answers, a stopped Redis, is not healthy).
    pub answered: u64,
    /// When the link last read a reply (or connected): the age `/metrics` shows.
    pub last_read: Instant,
    /// When the link last wrote bytes to its socket (a link judged late
    /// says how long ago, so a node that could not write is told apart
    /// from a server that did not answer).
    pub last_write: Instant,
}

/// Why a link is lost when the server closed it.
pub const CLOSED_BY_REDIS: &str = "closed by Redis";

/// What a read found.
pub enum Got {
    /// Replies (possibly none); the link is still up.
    Replies,
    /// The peer closed or failed: the link is down now.
    Lost(String),
}

impl Link {
    pub fn new(token: Token) -> Link {
        Link {
            token,
            sock: None,
            state: LinkState::Down { retry_at: Instant::now() },
            out: Vec::new(),
            written: 0,
            inbuf: Vec::new(),
            filled: 0,
            can_write: false,
            backoff: BACKOFF_MIN,
            setup: 0,
            role: false,
            setup_end: 0,
            answered: 0,
            last_read: Instant::now(),
            last_write: Instant::now(),
        }
    }

    /// Starts a non-blocking connect; commands sent from now on are queued.
    pub fn connect(&mut self, at: &Endpoint, registry: &Registry) -> io::Result<()> {
        let mut sock = match &at.addr {
            Addr::Tcp(addr, _name) => {
                let s = TcpStream::connect(*addr)?;
                let _ = s.set_nodelay(true);
                #[cfg(feature = "tls")]
                if let Some(tls) = &at.tls {
                    Sock::Tls(Box::new(TlsSock::new(s, tls, _name)?))
                } else {
                    Sock::Tcp(s)
                }
                #[cfg(not(feature = "tls"))]
                Sock::Tcp(s)
            }
            Addr::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
        };
        registry.register(sock.source(), self.token, Interest::READABLE | Interest::WRITABLE)?;
        self.sock = Some(sock);
        self.state = LinkState::Connecting;
        self.out.clear();
        self.written = 0;
        self.filled = 0;
        self.can_write = false;
        self.answered = 0;
        self.last_read = Instant::now();
        // AUTH, SELECT and ROLE first; the link takes their replies.
        for command in &at.setup {
            self.send(&command.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
        if at.role {
            self.send(&[b"ROLE"]);
        }
        self.setup = at.setup.len() + usize::from(at.role);
        self.role = at.role;
        self.setup_end = self.out.len();
        Ok(())
    }

    /// Down, and its backoff has passed.
    pub fn due(&self, now: Instant) -> bool {
        matches!(self.state, LinkState::Down { retry_at } if retry_at <= now)
    }

    /// The master moved: a link that waits for its backoff connects now.
    pub fn retry_now(&mut self, now: Instant) {
        if let LinkState::Down { .. } = self.state {
            self.state = LinkState::Down { retry_at: now };
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Closes the socket; the next connect is after the backoff.
    pub fn lose(&mut self, registry: &Registry) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(sock.source());
        }
        self.state = LinkState::Down { retry_at: Instant::now() + self.backoff };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.out.clear();
        self.written = 0;
        self.filled = 0;
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        resp::command(&mut self.out, args);
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.written
    }

    /// True while queued bytes can be written now.
    pub fn wants_flush(&self) -> bool {
        self.can_write && self.sock.as_ref().is_some_and(|s| self.written < self.sendable() || s.pending())
    }

    /// The queued bytes that may go now: only the set-up's until it passed
    /// (a command sent to a server that turns out not to be the master
    /// would have an unknown fate; held, it surely did not run).
    fn sendable(&self) -> usize {
        if self.setup > 0 { self.setup_end } else { self.out.len() }
    }

    /// Connected, and the set-up passed: commands go out.
    pub fn passed_setup(&self) -> bool {
        self.state == LinkState::Up && self.setup == 0
    }

    /// Writes what is queued, until done or the socket is full.
    pub fn flush(&mut self) -> Result<(), String> {
        let limit = self.sendable();
        let Some(sock) = &mut self.sock else { return Ok(()) };
        while self.written < limit && self.can_write {
            match sock.write(&self.out[self.written..limit]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => {
                    self.written += n;
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.can_write = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            self.setup_end = 0;
        }
        #[cfg(feature = "tls")]
        if let Sock::Tls(s) = sock
            && self.can_write
        {
            s.drain().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Readiness: marks the link writable, and reads every reply that is
    /// whole into `replies`.
    pub fn ready(&mut self, event: &mio::event::Event, replies: &mut Vec<Value>) -> Got {
        let Some(sock) = &mut self.sock else { return Got::Replies };
        if self.state == LinkState::Connecting {
            if let Ok(Some(e)) | Err(e) = sock.take_error() {
                return Got::Lost(format!("connect: {e}"));
            }
            if event.is_error() || (event.is_write_closed() && !event.is_writable()) {
                return Got::Lost("connect refused".into());
            }
            if !event.is_writable() {
                return Got::Replies;
            }
            self.state = LinkState::Up;
        }
        if event.is_writable() || event.is_error() {
            self.can_write = true;
        }
        self.read(replies)
    }

    /// Reads until the socket is drained (also called without readiness): a
    /// short read says so, one syscall less per wake-up.
    pub fn read(&mut self, replies: &mut Vec<Value>) -> Got {
        let Some(sock) = &mut self.sock else { return Got::Replies };
        if self.state != LinkState::Up {
            return Got::Replies;
        }
        let short_read_drains = sock.short_read_drains();
        let mut chunk = FIRST_CHUNK;
        loop {
            if self.inbuf.len() < self.filled + chunk {
                self.inbuf.resize(self.filled + chunk, 0);
            }
            let room = self.inbuf.len() - self.filled;
            match sock.read(&mut self.inbuf[self.filled..]) {
                Ok(0) => return Got::Lost(CLOSED_BY_REDIS.into()),
                Ok(n) => {
                    self.filled += n;
                    // Fewer than asked: drained (bytes that come later raise a new edge).
                    if n < room && short_read_drains {
                        break;
                    }
                    chunk = READ_CHUNK;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Got::Lost(e.to_string()),
            }
        }
        let mut used = 0;
        loop {
            match resp::parse(&self.inbuf[used..self.filled]) {
                Ok(Some((value, n))) => {
                    used += n;
                    self.last_read = Instant::now();
                    if self.setup > 0 {
                        self.setup -= 1;
                        if let Err(why) = set_up(&value, self.role && self.setup == 0) {
                            return Got::Lost(why);
                        }
                        continue;
                    }
                    self.answered += 1;
                    self.backoff = BACKOFF_MIN;
                    replies.push(value);
                }
                Ok(None) => break,
                Err(e) => return Got::Lost(e.to_string()),
            }
        }
        self.inbuf.copy_within(used..self.filled, 0);
        self.filled -= used;
        // A large reply's room is given back once it is taken.
        if self.inbuf.len() > 4 * READ_CHUNK && self.filled < READ_CHUNK {
            self.inbuf.truncate(READ_CHUNK);
            self.inbuf.shrink_to_fit();
        }
        Got::Replies
    }
}

/// A reply to the set-up: AUTH and SELECT must pass; `ROLE` (the last)
/// must say master (a server that may not run it is taken at its word).
fn set_up(reply: &Value, role: bool) -> Result<(), String> {
    match reply {
        Value::Error(e) if role => {
            log::debug!("ROLE refused ({}): the server is taken for the master", String::from_utf8_lossy(e));
            Ok(())
        }
        Value::Error(e) => {
            log::error!("Redis refused the connection's set-up: {}", String::from_utf8_lossy(e));
            Err("set-up refused".into())
        }
        Value::Array(parts) if role => match parts.first().and_then(Value::as_bytes) {
            Some(b"master") => Ok(()),
            Some(other) => Err(format!("not the master (its ROLE is {})", String::from_utf8_lossy(other))),
            None => Err("an unexpected answer to ROLE".into()),
        },
        _ => Ok(()),
    }
}
