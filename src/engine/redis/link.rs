//! One connection to Redis on the reactor's poll: a non-blocking TCP or
//! Unix socket registered once for both directions, the commands queued
//! during a turn (written with one `write` before the reactor sleeps), and
//! the replies read and parsed as they complete. What each reply answers
//! is the owner's business (FIFO).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::resp::{self, Value};
use super::url::{Addr, RedisUrl};

/// Reconnect backoff: from this, doubling, up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
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
    /// Replies taken since the last connect (a link that accepts but
    /// never answers, a stopped Redis, is not healthy).
    pub answered: u64,
}

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
            answered: 0,
        }
    }

    /// Starts a non-blocking connect; commands sent from now on are queued.
    pub fn connect(&mut self, url: &RedisUrl, registry: &Registry) -> io::Result<()> {
        let mut sock = match &url.addr {
            Addr::Tcp(addr) => Sock::Tcp(TcpStream::connect(*addr)?),
            Addr::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
        };
        if let Sock::Tcp(s) = &sock {
            let _ = s.set_nodelay(true);
        }
        registry.register(sock.source(), self.token, Interest::READABLE | Interest::WRITABLE)?;
        self.sock = Some(sock);
        self.state = LinkState::Connecting;
        self.out.clear();
        self.written = 0;
        self.filled = 0;
        self.can_write = false;
        self.answered = 0;
        // AUTH and SELECT first; their replies come first (the caller counts `url.setup()`).
        for command in url.setup() {
            self.send(&command.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
        Ok(())
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

    /// True while queued bytes can be written now.
    pub fn wants_flush(&self) -> bool {
        self.written < self.out.len() && self.can_write && self.sock.is_some()
    }

    /// Writes what is queued, until done or the socket is full.
    pub fn flush(&mut self) -> Result<(), String> {
        let Some(sock) = &mut self.sock else { return Ok(()) };
        while self.written < self.out.len() && self.can_write {
            match sock.write(&self.out[self.written..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.can_write = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
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
        loop {
            if self.inbuf.len() < self.filled + READ_CHUNK {
                self.inbuf.resize(self.filled + READ_CHUNK, 0);
            }
            let room = self.inbuf.len() - self.filled;
            match sock.read(&mut self.inbuf[self.filled..]) {
                Ok(0) => return Got::Lost("closed by Redis".into()),
                Ok(n) => {
                    self.filled += n;
                    // Fewer than asked: drained (bytes that come later raise a new edge).
                    if n < room {
                        break;
                    }
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
