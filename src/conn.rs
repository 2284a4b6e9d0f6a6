//! One client connection: what it waits for (`Phase`) and every change of
//! it, its read buffer, its output queue, and the two I/O loops — `fill`
//! and `flush` — that are the only places it touches its socket. The
//! reactor asks a connection to move on; it never sets the phase itself.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::access::{Access, Peer};
use crate::engine::SourceKey;
use crate::http::{BodyReader, Head};
use crate::outq::{Buf, Flushed, OutQ};
use crate::timer::TimerId;
use crate::tokens::Opener;

/// Bytes read from one socket per `fill` call before others get a turn.
pub const READ_BUDGET: usize = 64 * 1024;

pub enum Phase {
    /// Waits for a request head (header or keep-alive timer armed).
    /// Next: `Body` (`begin_body`), `Waiting` (`park`), `Stream`
    /// (`subscribe`), `Linger` (`linger`), or `Head` again after an answer.
    Head,
    /// Reads the body of a request whose head is parsed (body timer armed).
    /// Next: `Head` (`take_body`), then as from `Head`.
    Body(Box<BodyRead>),
    /// Reads and parses nothing more until every answer awaited from
    /// storage is in (`awaited`): the next request must see what those
    /// changed (a `GET`), or none may follow (`Connection: close`, the
    /// peer's FIN), or enough are in flight. Pipelined changes behind an
    /// awaited one are read and submitted in `Head` meanwhile; their
    /// answers queue in request order.
    /// Next: `Head` or `Linger` (`answered`).
    Waiting,
    /// An SSE subscriber at `index` in `source`'s subscriber list (opened
    /// at `request_at`, by `opener`).
    /// Next: `Linger` (`end_stream`: the source, the key or the token is gone), or closed.
    Stream { source: SourceKey, index: u32 },
    /// The last response is queued: once flushed, shut down our side and
    /// read until the peer closes (so it gets the response, not a reset).
    /// Next: closed.
    Linger,
}

pub struct BodyRead {
    pub head: Head,
    pub reader: BodyReader,
    pub body: Vec<u8>,
    /// When its head was complete (reactor ms), and the bytes of it (with
    /// any chunk framing) read since: its pace (`bodies::Floor`).
    pub started: u64,
    pub received: u64,
}

/// Why a connection closed; logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    PeerClosed,
    Done,
    HeaderTimeout,
    IdleTimeout,
    BodyTimeout,
    SendTimeout,
    SlowSubscriber,
    Io(io::ErrorKind),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::PeerClosed => write!(f, "closed by peer"),
            Reason::Done => write!(f, "response sent"),
            Reason::HeaderTimeout => write!(f, "request head not complete in time"),
            Reason::IdleTimeout => write!(f, "idle keep-alive connection"),
            Reason::BodyTimeout => write!(f, "request body not complete in time"),
            Reason::SendTimeout => write!(f, "peer stopped reading"),
            Reason::SlowSubscriber => write!(f, "subscriber over --max-subscriber-buffer"),
            Reason::Io(kind) => write!(f, "I/O error: {kind}"),
        }
    }
}

/// What few connections need, boxed when first needed and kept, so a
/// plain stream never pays for it: answers of pipelined requests in
/// request order, from the oldest one still awaited from storage (`None`)
/// on (the front is slot `front_slot`); and the TLS state of a connection
/// on the TLS listener (boxed with them, as `Conn` has no byte to spare).
#[derive(Default)]
struct Extra {
    answers: VecDeque<Option<(Vec<u8>, bool)>>,
    front_slot: u32,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConn>,
}

pub struct Conn {
    pub sock: TcpStream,
    /// The peer's address, kept from accept (the socket forgets it once closed).
    pub peer: Peer,
    /// Accepted on `--metrics-listen`, which serves only `/metrics` and `/healthz`.
    pub on_metrics: bool,
    /// When the last request head was complete (reactor clock, in
    /// microseconds; to the millisecond unless the access log is on); for
    /// a stream, when it opened.
    pub request_at_us: u64,
    /// A stream's line for the access log, written when it ends.
    pub access: Option<Box<Access>>,
    /// Bytes of `--max-body-bytes-in-flight` the body being read holds
    /// (the reactor's `bodies::Budget` knows whose they are); the reactor
    /// gives them back (`release_body`) when it leaves `Body`.
    pub body_reserved: u32,
    /// What a stream was opened by: it ends with it.
    pub opener: Opener,
    /// Distinguishes this connection from an earlier one with the same key.
    pub generation: u32,
    pub phase: Phase,
    /// Received bytes not yet parsed (heads and bodies only).
    pub rbuf: Vec<u8>,
    pub out: OutQ,
    /// The socket was writable when last tried (readiness kept in user space).
    pub can_write: bool,
    /// Data may be waiting in the socket: a read budget ran out, or reading
    /// paused while the output queue was full.
    pub can_read: bool,
    /// Listed in the reactor's flush list.
    pub pending_write: bool,
    pub timer: Option<TimerId>,
    /// When the phase's timeout is due; the armed timer may fire before
    /// it (re-armed lazily, so a request costs no timer-wheel work).
    pub deadline: u64,
    /// Milliseconds (reactor clock) of the last write that made progress.
    pub last_progress: u64,
    /// The peer has closed its side.
    pub peer_eof: bool,
    /// An event said the peer may have closed its side (RDHUP, HUP, error).
    pub fin_hint: bool,
    /// At least one request was answered (so a quiet head is keep-alive idling).
    pub served: bool,
    extra: Option<Box<Extra>>,
    pub closing: Option<Reason>,
}

/// What one read brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    Read(usize),
    /// Read fewer bytes than asked: the socket had no more. Another read
    /// would only say `WouldBlock`; bytes that arrive later raise a new
    /// edge, as nginx relies on too (one syscall less per request).
    Last(usize),
    /// Nothing left: `WouldBlock`.
    Drained,
    /// The peer closed its side.
    Eof,
    /// Plain HTTP came to the TLS port.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    PlainOnTls,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: SocketAddr, generation: u32, now: u64) -> Conn {
        Conn {
            sock,
            peer: peer.into(),
            on_metrics: false,
            body_reserved: 0,
            opener: Opener::Key(0),
            request_at_us: now * 1000,
            access: None,
            generation,
            phase: Phase::Head,
            rbuf: Vec::new(),
            out: OutQ::default(),
            can_write: true,
            can_read: false,
            pending_write: false,
            timer: None,
            deadline: 0,
            last_progress: now,
            peer_eof: false,
            fin_hint: false,
            served: false,
            extra: None,
            closing: None,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.phase, Phase::Stream { .. })
    }

    /// Reads and parses requests (a head or a body).
    pub fn reads_requests(&self) -> bool {
        matches!(self.phase, Phase::Head | Phase::Body(_))
    }

    /// `Head` → `Body`: the head is parsed, its body is still to come;
    /// it holds `reserved` bytes of the bodies' budget meanwhile.
    pub fn begin_body(&mut self, read: BodyRead, reserved: u32) {
        debug_assert!(matches!(self.phase, Phase::Head));
        self.phase = Phase::Body(Box::new(read));
        self.body_reserved = reserved;
    }

    /// `Body` → `Head`: the body is complete; the request is the caller's.
    pub fn take_body(&mut self) -> Option<BodyRead> {
        match std::mem::replace(&mut self.phase, Phase::Head) {
            Phase::Body(read) => Some(*read),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The request just read is answered by storage later: its slot in
    /// the order of answers.
    pub fn await_answer(&mut self) -> u32 {
        let a = self.extra.get_or_insert_default();
        a.answers.push_back(None);
        a.front_slot.wrapping_add(a.answers.len() as u32 - 1)
    }

    /// Answers still awaited from storage.
    pub fn awaiting(&self) -> usize {
        self.extra.as_ref().map_or(0, |a| a.answers.len())
    }

    /// `Head` → `Waiting`: nothing more is read until the awaited answers are in.
    pub fn park(&mut self) {
        self.phase = Phase::Waiting;
    }

    /// An answer: to the request just read (`slot` None) or to an awaited
    /// one. It goes out once every earlier answer has; then the connection
    /// reads its next request (`Head`), or lingers after the last one.
    pub fn answered(&mut self, slot: Option<u32>, answer: Vec<u8>, close: bool) {
        match slot {
            None if self.awaiting() == 0 => return self.send_answer(answer, close),
            None => self.extra.get_or_insert_default().answers.push_back(Some((answer, close))),
            Some(slot) => {
                let Some(a) = self.extra.as_mut() else { return };
                match a.answers.get_mut(slot.wrapping_sub(a.front_slot) as usize) {
                    Some(at @ None) => *at = Some((answer, close)),
                    _ => return,
                }
            }
        }
        while let Some(a) = self.extra.as_mut()
            && let Some(Some(_)) = a.answers.front()
        {
            let Some(Some((answer, close))) = a.answers.pop_front() else { break };
            a.front_slot = a.front_slot.wrapping_add(1);
            if close {
                // Nothing after a closing answer was read (it parked).
                a.answers.clear();
                return self.send_answer(answer, true);
            }
            // Requests read before the end of input and not yet parsed
            // (parked behind this one) are still answered.
            let last = a.answers.is_empty() && self.peer_eof && self.rbuf.is_empty();
            self.send_answer(answer, last);
        }
    }

    fn send_answer(&mut self, answer: Vec<u8>, close: bool) {
        self.push(Buf::Owned(answer));
        self.served = true;
        if close {
            self.linger();
        } else if self.awaiting() == 0 && matches!(self.phase, Phase::Waiting) {
            self.phase = Phase::Head;
        }
    }

    /// → `Linger`: only what is queued is still to go.
    pub fn linger(&mut self) {
        self.phase = Phase::Linger;
        self.rbuf = Vec::new();
    }

    /// → `Stream`: a subscriber from now on (its read buffer is dropped).
    pub fn subscribe(&mut self, source: SourceKey, index: u32, opener: Opener) {
        self.phase = Phase::Stream { source, index };
        self.opener = opener;
        self.rbuf = Vec::new();
    }

    /// `Stream` → `Linger`: the source, the key or the token is gone; what is queued still goes.
    pub fn end_stream(&mut self) {
        self.phase = Phase::Linger;
    }

    /// The peer closed its side: true if answers already queued still go
    /// out (then `Linger`), false if the connection is done.
    pub fn peer_closed(&mut self) -> bool {
        self.peer_eof = true;
        if self.awaiting() != 0 && !matches!(self.phase, Phase::Linger) {
            // Awaited answers still go out; the last one then lingers.
            self.phase = Phase::Waiting;
            return true;
        }
        match self.phase {
            Phase::Head | Phase::Body(_) if !self.out.is_empty() => {
                self.phase = Phase::Linger;
                true
            }
            // The parked request is still answered; the answer then lingers.
            Phase::Waiting => true,
            Phase::Linger => !self.out.is_empty(),
            _ => false,
        }
    }

    /// One read into `scratch`, kept in `rbuf` while a request is being
    /// read, discarded otherwise. The reactor's read loop calls it until
    /// `Drained`, `Eof` or its budget.
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<Fill> {
        loop {
            return match self.sock.read(scratch) {
                Ok(0) => Ok(Fill::Eof),
                Ok(n) => {
                    #[cfg(feature = "tls")]
                    if let Some(tls) = self.extra.as_mut().and_then(|e| e.tls.as_mut()) {
                        if tls.receive(&mut self.sock, &scratch[..n], &mut self.rbuf)? == crate::tls::Received::PlainHttp {
                            return Ok(Fill::PlainOnTls);
                        }
                        if !self.reads_requests() && self.rbuf.capacity() > 0 {
                            self.rbuf = Vec::new();
                        }
                    }
                    // Copying what came costs less than zeroing room for
                    // a read in `rbuf` each time.
                    if self.reads_requests() && !self.is_tls() {
                        self.rbuf.extend_from_slice(&scratch[..n]);
                    }
                    // A FIN that came with the data raised no edge of its own: read on to see it.
                    if n < scratch.len() && !self.fin_hint {
                        self.can_read = false;
                        return Ok(Fill::Last(n));
                    }
                    Ok(Fill::Read(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.can_read = false;
                    Ok(Fill::Drained)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    pub fn push(&mut self, buf: Buf) {
        self.out.push(buf);
    }

    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls().is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// From accept on: the connection speaks TLS.
    #[cfg(feature = "tls")]
    pub fn set_tls(&mut self, tls: crate::tls::TlsConn) {
        self.extra.get_or_insert_default().tls = Some(tls);
    }

    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::tls::TlsConn> {
        self.extra.as_ref().and_then(|e| e.tls.as_ref())
    }

    #[cfg(feature = "tls")]
    pub fn tls_mut(&mut self) -> Option<&mut crate::tls::TlsConn> {
        self.extra.as_mut().and_then(|e| e.tls.as_mut())
    }

    /// Output waits: queued plaintext, or TLS records (a handshake's too).
    pub fn has_output(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls() {
            return !self.out.is_empty() || tls.wants_write();
        }
        !self.out.is_empty()
    }

    /// Plain HTTP on the TLS port: one plain answer, then the connection closes.
    pub fn refuse_plain_on_tls(&mut self) {
        #[cfg(feature = "tls")]
        {
            if let Some(e) = &mut self.extra {
                e.tls = None;
            }
            self.push(Buf::Static(crate::tls::PLAIN_ON_TLS));
            self.linger();
        }
    }

    /// Our side is done: a TLS connection says so (close_notify) before the FIN.
    pub fn shutdown_write(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.extra.as_mut().and_then(|e| e.tls.as_mut()) {
            tls.close_notify(&mut self.sock);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    /// Writes queued output, up to `budget` bytes.
    pub fn flush(&mut self, budget: usize, now: u64) -> io::Result<(Flushed, usize)> {
        #[cfg(feature = "tls")]
        let (flushed, n) = match self.extra.as_mut().and_then(|e| e.tls.as_mut()) {
            Some(tls) => match self.out.flush(&mut tls.sink(&mut self.sock), budget)? {
                (Flushed::Empty, n) if !tls.write_pending(&mut self.sock)? => (Flushed::Blocked, n),
                done => done,
            },
            None => self.out.flush(&mut self.sock, budget)?,
        };
        #[cfg(not(feature = "tls"))]
        let (flushed, n) = self.out.flush(&mut self.sock, budget)?;
        if let Some(access) = &mut self.access {
            access.sent += n as u64;
        }
        if n > 0 {
            self.last_progress = now;
        }
        if flushed == Flushed::Blocked {
            self.can_write = false;
        }
        Ok((flushed, n))
    }
}

#[cfg(test)]
mod size_tests {
    /// Every idle subscriber costs one of these (docs/benchmarks.md): a field
    /// that grows it should be worth about a kilobyte per 20 subscribers.
    #[test]
    fn a_connection_stays_small() {
        assert!(std::mem::size_of::<super::Conn>() <= 200, "Conn is {} bytes", std::mem::size_of::<super::Conn>());
    }
}
