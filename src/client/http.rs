//! A small blocking HTTP/1.1 client over std's `TcpStream`: one request per
//! connection (`Connection: close`). Reads wait at most `TICK` at a time,
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

/// A response whose head has been read and whose body is read on demand.
pub struct Exchange {
    pub head: Head,
    sock: TcpStream,
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
    let mut sock = connect(base)?;
    sock.set_write_timeout(Some(patience))?;
    sock.set_read_timeout(Some(TICK))?;
    if let Err(err) = sock.write_all(request) {
        // A server may answer (413, 401) and close before reading all of a
        // body; its answer says more than the broken pipe.
        return read_head(sock, Duration::ZERO).map_err(|_| Error::from(err));
    }
    read_head(sock, patience)
}

fn connect(base: &BaseUrl) -> Result<TcpStream, Error> {
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

fn read_head(mut sock: TcpStream, patience: Duration) -> Result<Exchange, Error> {
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        if let Some((head, used)) = response::parse_head(&buf).map_err(Error::Protocol)? {
            buf.drain(..used);
            // 1xx heads are interim; the real one follows.
            if head.status < 200 {
                continue;
            }
            let body = head.body().map_err(Error::Protocol)?;
            return Ok(Exchange { head, sock, body, early: buf });
        }
        match read_tick(&mut sock, &mut buf)? {
            Some(0) => {
                return Err(Error::Protocol("the server closed the connection without answering".into()));
            }
            None if start.elapsed() >= patience => return Err(Error::Timeout),
            _ => {}
        }
    }
}

/// One read that waits at most a tick: `Some(n)` bytes were appended
/// (0 at the end of the stream), `None` if the tick passed quietly.
fn read_tick(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, Error> {
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
