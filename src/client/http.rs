//! A small blocking HTTP/1.1 client over std's `TcpStream` (and TLS for
//! `https://`): one request per connection (`Connection: close`). Reads wait at most `TICK` at a time,
//! so a stop request (Ctrl-C while following) is seen promptly and the
//! caller of an endless stream can watch it for silence.

use super::error::Error;
use super::response::{self, Body, Head};
use super::signal;
use super::url::BaseUrl;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest single wait inside a read: the latency of Ctrl-C and of the
/// dead-connection check.
pub const TICK: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_BYTES: usize = 16 * 1024;
/// A JSON answer larger than this is not one ssehub sends.
const BODY_BYTES_MAX: usize = 256 * 1024 * 1024;

pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query below the base URL's prefix.
    pub path: String,
    /// Values must not contain CR or LF; config and the SSE parser see to it.
    pub headers: Vec<(&'static str, String)>,
    /// Sent as JSON with a Content-Length.
    pub body: Option<&'a [u8]>,
}

impl Request<'_> {
    fn encode(&self, base: &BaseUrl) -> Vec<u8> {
        let mut head = format!(
            "{} {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ssehub/{}\r\nConnection: close\r\n",
            self.method,
            base.prefix,
            self.path,
            base.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = self.body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.unwrap_or_default());
        bytes
    }
}

/// What one read of a body brought.
pub enum Progress {
    /// Bytes arrived (possibly only framing, so `out` may be unchanged).
    Bytes,
    /// A tick passed without a byte.
    Quiet,
    /// The body is complete.
    End,
}

/// A connection: plain, or TLS (boxed: rustls's state is large).
enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::Stream>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(sock) => sock,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(sock) => sock.read(buf),
            // A server that closes without close_notify after a complete answer is common.
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => match tls.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                read => read,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(sock) => sock.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(sock) => sock.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// A response whose head has been read and whose body is read on demand.
pub struct Exchange {
    pub head: Head,
    sock: Stream,
    body: Body,
    /// Body bytes that arrived together with the head.
    early: Vec<u8>,
}

/// Connects, sends `request` and waits up to `patience` for the head.
pub fn send(base: &BaseUrl, request: &Request, patience: Duration) -> Result<Exchange, Error> {
    send_bytes(base, &request.encode(base), patience)
}

/// Connects, sends a whole request as given and waits up to `patience` for the head.
pub fn send_bytes(base: &BaseUrl, request: &[u8], patience: Duration) -> Result<Exchange, Error> {
    let mut sock = connect(base, patience)?;
    sock.tcp().set_write_timeout(Some(patience))?;
    sock.tcp().set_read_timeout(Some(TICK))?;
    if let Err(err) = sock.write_all(request) {
        // A server may answer (413, 401) and close before reading all of a
        // body; its answer says more than the broken pipe.
        return read_head(sock, Duration::ZERO).map_err(|_| Error::from(err));
    }
    read_head(sock, patience)
}

fn connect(base: &BaseUrl, patience: Duration) -> Result<Stream, Error> {
    let sock = connect_tcp(base)?;
    match &base.tls {
        None => Ok(Stream::Plain(sock)),
        #[cfg(feature = "tls")]
        Some(tls) => {
            let stream = super::tls::connect(sock, base.bare_host(), tls, &base.to_string(), patience.min(CONNECT_TIMEOUT))?;
            Ok(Stream::Tls(Box::new(stream)))
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => {
            let _ = patience;
            unreachable!("https:// is refused when parsed")
        }
    }
}

fn connect_tcp(base: &BaseUrl) -> Result<TcpStream, Error> {
    let failed = |err| Error::Connect { url: base.to_string(), err };
    let addrs = (base.bare_host(), base.port).to_socket_addrs().map_err(failed)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(sock) => {
                sock.set_nodelay(true)?;
                return Ok(sock);
            }
            Err(err) => last = err,
        }
    }
    Err(failed(last))
}

fn read_head(mut sock: Stream, patience: Duration) -> Result<Exchange, Error> {
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        if let Some(what) = not_http(&buf) {
            return Err(Error::Protocol(what));
        }
        if let Some((head, used)) = response::parse_head(&buf).map_err(Error::Protocol)? {
            buf.drain(..used);
            // 1xx heads are interim; the real one follows.
            if head.status < 200 {
                continue;
            }
            let body = head.body().map_err(Error::Protocol)?;
            return Ok(Exchange { head, sock, body, early: buf });
        }
        let read = match read_tick(&mut sock, &mut buf) {
            // A TLS port may reset a plain request it did not read to the end.
            Err(Error::Io(err)) if err.kind() == io::ErrorKind::ConnectionReset && buf.is_empty() => Some(0),
            read => read?,
        };
        match read {
            Some(0) => {
                return Err(Error::Protocol(format!(
                    "the server closed the connection without answering (if that port speaks TLS, {WANTS_HTTPS})"
                )));
            }
            None if start.elapsed() >= patience => return Err(Error::Timeout),
            _ => {}
        }
    }
}

/// What a plain-HTTP request to a port that speaks TLS needs.
pub(super) const WANTS_HTTPS: &str = if cfg!(feature = "tls") {
    "the server may want https://; use an https:// URL"
} else {
    "the server may want https://, which this build (without the `tls` feature) does not speak; use its plain-HTTP address"
};

/// Says what the first bytes of an answer are when they cannot begin an
/// HTTP/1 response, as soon as they arrive: a TLS port answers a plain
/// request with an alert record (or with anything at all).
fn not_http(buf: &[u8]) -> Option<String> {
    let n = buf.len().min(5);
    if n == 0 || buf[..n] == b"HTTP/"[..n] {
        return None;
    }
    // A TLS record: content type 20 to 23, then version 3.x.
    if (0x14..=0x17).contains(&buf[0]) && buf.get(1).is_none_or(|&b| b == 3) {
        return Some(format!("TLS, not HTTP ({WANTS_HTTPS})"));
    }
    let start: Vec<String> = buf.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Some(format!("not HTTP (bytes {}); if that port speaks TLS, {WANTS_HTTPS}", start.join(" ")))
}

/// One read that waits at most a tick: `Some(n)` bytes were appended
/// (0 at the end of the stream), `None` if the tick passed quietly.
fn read_tick(sock: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<usize>, Error> {
    let mut chunk = [0; READ_BYTES];
    loop {
        // Checked before every read too, or a busy stream would never stop.
        if signal::stop_requested() {
            return Err(Error::Stopped);
        }
        match sock.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(Some(n));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        }
    }
}

impl Exchange {
    /// Reads what is there within a tick and appends the payload to `out`.
    pub fn read(&mut self, out: &mut Vec<u8>) -> Result<Progress, Error> {
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            self.body.feed(&early, out).map_err(Error::Protocol)?;
            return Ok(Progress::Bytes);
        }
        if self.body.is_done() {
            return Ok(Progress::End);
        }
        let mut raw = Vec::new();
        match read_tick(&mut self.sock, &mut raw)? {
            None => Ok(Progress::Quiet),
            Some(0) => {
                self.body.at_eof().map_err(Error::Protocol)?;
                Ok(Progress::End)
            }
            Some(_) => {
                self.body.feed(&raw, out).map_err(Error::Protocol)?;
                Ok(Progress::Bytes)
            }
        }
    }

    /// The whole body, failing if the server is silent for `patience`.
    pub fn read_body(mut self, patience: Duration) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut heard = Instant::now();
        loop {
            match self.read(&mut out)? {
                Progress::Bytes if out.len() > BODY_BYTES_MAX => {
                    return Err(Error::Protocol(format!("an answer over {BODY_BYTES_MAX} bytes")));
                }
                Progress::Bytes => heard = Instant::now(),
                Progress::Quiet if heard.elapsed() >= patience => return Err(Error::Timeout),
                Progress::Quiet => {}
                Progress::End => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_answers_that_are_not_http() {
        for start in [&b""[..], b"H", b"HTTP", b"HTTP/1.1 200 OK\r\n"] {
            assert_eq!(not_http(start), None, "{start:?}");
        }
        let tls = not_http(b"\x15\x03\x01\x00\x02\x02\x46").unwrap();
        assert!(tls.starts_with("TLS, not HTTP") && tls.contains("https://"), "{tls}");
        assert!(not_http(b"\x15").unwrap().starts_with("TLS"));
        let garbage = not_http(b"SSH-2.0-OpenSSH\r\n").unwrap();
        assert!(garbage.contains("53 53 48 2d") && garbage.contains("https://"), "{garbage}");
    }

    #[test]
    fn encodes_requests() {
        let base = BaseUrl::parse("http://h:81/pre").unwrap();
        let request =
            Request { method: "POST", path: "/v1/x".into(), headers: vec![("Authorization", "Bearer K".into())], body: Some(b"[1]") };
        let text = String::from_utf8(request.encode(&base)).unwrap();
        let want = format!(
            "POST /pre/v1/x HTTP/1.1\r\nHost: h:81\r\nUser-Agent: ssehub/{}\r\nConnection: close\r\nAuthorization: Bearer K\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n[1]",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(text, want);
    }
}
