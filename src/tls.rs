//! HTTPS on the main listener (feature `tls`): the certificate pair loaded
//! into a rustls `ServerConfig` (and loaded again on SIGHUP), and one
//! adapter per connection, `TlsConn`, that owns the connection's rustls
//! state and drives rustls's buffered API from the reactor's reads and
//! flushes. The reactor, `Conn` and the output queue stay as for plain TCP:
//! frames stay shared, and are encrypted at write time, each flush's queued
//! frames written into rustls in one vectored call (one record per 16 KiB,
//! not one per frame).

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::{ServerConfig, ServerConnection};

/// TLS 1.2 session ids remembered (rustls's default size).
const SESSION_CACHE: usize = 256;
/// How often the two files are looked at (their mtime and size): a change
/// is loaded once two looks in a row see it (a pair half copied is not), so
/// within two intervals (SPEC §9: within 10 s).
const CHECK_MS: u64 = 3_000;
/// A hidden variable for tests that sets `CHECK_MS`.
const CHECK_VAR: &str = "SSEHUB_TLS_CHECK_MS";

/// What a change of a file is noticed by: its mtime and size (`None`: it
/// cannot be read).
type Stamp = Option<(std::time::SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The interval of the files' check (`SSEHUB_TLS_CHECK_MS` for tests).
pub fn check_interval_ms() -> u64 {
    std::env::var(CHECK_VAR).ok().and_then(|v| v.parse().ok()).filter(|&ms| ms > 0).unwrap_or(CHECK_MS)
}

/// The answer to plain HTTP on the TLS port (SPEC §9), sent in the clear.
pub const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
Content-Length: 48\r\nConnection: close\r\n\r\n{\"error\":\"this port speaks HTTPS; use https://\"}";

/// The server's side: the pair in use, and what resumption shares across reloads.
pub struct Server {
    pub cert: PathBuf,
    pub key: PathBuf,
    config: Arc<ServerConfig>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    /// The certificate's notAfter, in Unix seconds (0 if it could not be read).
    pub not_after: i64,
    /// The files as last loaded or tried (so a bad pair is logged once),
    /// and as the last check saw them.
    tried: [Stamp; 2],
    seen: [Stamp; 2],
}

impl Server {
    pub fn load(cert: &Path, key: &Path) -> Result<Server, String> {
        let ticketer = crate::provider::ticketer().map_err(|e| format!("TLS session tickets: {e}"))?;
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let tried = [stamp(cert), stamp(key)];
        let (config, not_after) = configure(cert, key, &ticketer, &sessions)?;
        Ok(Server { cert: cert.into(), key: key.into(), config, ticketer, sessions, not_after, tried, seen: tried })
    }

    /// Loads the pair again: new handshakes use it, open connections keep
    /// theirs. On an error the pair in use stays.
    pub fn reload(&mut self) -> Result<(), String> {
        self.tried = [stamp(&self.cert), stamp(&self.key)];
        self.seen = self.tried;
        let (config, not_after) = configure(&self.cert, &self.key, &self.ticketer, &self.sessions)?;
        self.config = config;
        self.not_after = not_after;
        Ok(())
    }

    /// The timer's check: the pair is loaded again (`Some`, with the
    /// outcome) when either file's mtime or size differs from the pair
    /// last loaded or tried, the same as at the check before (settled).
    pub fn check_files(&mut self) -> Option<Result<(), String>> {
        let now = [stamp(&self.cert), stamp(&self.key)];
        let settled = now == self.seen;
        self.seen = now;
        (settled && now != self.tried).then(|| self.reload())
    }

    pub fn accept(&self) -> io::Result<TlsConn> {
        let conn = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        Ok(TlsConn { conn, sniffed: false, counted: false })
    }
}

fn configure(
    cert: &Path,
    key: &Path,
    ticketer: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<(Arc<ServerConfig>, i64), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("--tls-cert {}: no certificate in the file", cert.display()));
    };
    let not_after = not_after(leaf).unwrap_or(0);
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(crate::provider::provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", cert.display(), key.display()))?;
    // Never h2: ssehub speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = ticketer.clone();
    config.session_storage = sessions.clone();
    Ok((Arc::new(config), not_after))
}

/// The first byte on the TLS port starts a plain HTTP request: a
/// handshake record starts with 0x16, a request with its method, in
/// upper-case letters. Anything else goes to rustls, which refuses what is
/// not TLS with an alert.
pub fn is_plain_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// What a read brought to a TLS connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// TLS records, processed (any plaintext appended to the read buffer).
    Records,
    /// The first bytes are a plain HTTP request, not a handshake.
    PlainHttp,
}

/// One connection's TLS state (boxed in `Conn`, so a plain connection
/// pays one pointer).
pub struct TlsConn {
    conn: ServerConnection,
    /// The first bytes were looked at (plain HTTP or a handshake).
    sniffed: bool,
    /// The handshake's end was counted.
    counted: bool,
}

impl TlsConn {
    /// Feeds bytes read from the socket to rustls; the plaintext they
    /// carry is appended to `rbuf`. On a TLS error, the alert rustls
    /// queued is sent on a best-effort basis.
    /// `sock` is where the alert goes (the connection's socket; any writer for the fuzz target).
    pub fn receive(&mut self, sock: &mut impl Write, mut data: &[u8], rbuf: &mut Vec<u8>) -> io::Result<Received> {
        if !self.sniffed && !data.is_empty() {
            self.sniffed = true;
            if is_plain_http(data[0]) {
                return Ok(Received::PlainHttp);
            }
        }
        while !data.is_empty() {
            self.conn.read_tls(&mut data)?;
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    let _ = self.conn.write_tls(sock);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = rbuf.len();
                rbuf.resize(at + n, 0);
                self.conn.reader().read_exact(&mut rbuf[at..])?;
            }
        }
        Ok(Received::Records)
    }

    /// Still in the handshake.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once, when the handshake has just completed.
    pub fn just_established(&mut self) -> bool {
        let done = !self.counted && !self.conn.is_handshaking();
        self.counted |= done;
        done
    }

    /// TLS bytes wait to be written (handshake messages, records).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// A sink for the output queue: plaintext in, records to `sock`.
    pub fn sink<'a>(&'a mut self, sock: &'a mut TcpStream) -> Sink<'a> {
        Sink { conn: &mut self.conn, sock }
    }

    /// Writes pending records until none are left (true) or the socket is full (false).
    pub fn write_pending(&mut self, sock: &mut TcpStream) -> io::Result<bool> {
        drain(&mut self.conn, sock)
    }

    /// Queues a close_notify alert and sends it if the socket takes it.
    pub fn close_notify(&mut self, sock: &mut TcpStream) {
        self.conn.send_close_notify();
        let _ = drain(&mut self.conn, sock);
    }
}

/// Writes pending records: true when none are left, false when the socket is full.
fn drain(conn: &mut ServerConnection, sock: &mut TcpStream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The output queue's writer on a TLS connection. Plaintext is taken only
/// once earlier records are out, so rustls buffers at most one batch
/// (bounded by its buffer limit) and the queue stays the one measure of a
/// subscriber's backlog.
pub struct Sink<'a> {
    conn: &'a mut ServerConnection,
    sock: &'a mut TcpStream,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !drain(self.conn, self.sock)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write_vectored(bufs)?;
        // The records go now if the socket takes them; else the next call blocks.
        drain(self.conn, self.sock)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The certificate's notAfter in Unix seconds, read from its DER: the
/// fifth element of tbsCertificate after the optional version (serial,
/// signature algorithm, issuer, validity), validity's second time.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert, _) = der(cert)?;
    let (_, mut tbs, _) = der(cert)?;
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (_, validity, _) = der(tbs)?;
    let (_, _, validity) = der(validity)?;
    let (tag, time, _) = der(validity)?;
    parse_time(tag, time)
}

/// One DER element: (tag, contents, what follows).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, at) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        (b.get(2..2 + n)?.iter().fold(0usize, |l, &x| l << 8 | x as usize), 2 + n)
    };
    let end = at.checked_add(len)?;
    Some((tag, b.get(at..end)?, b.get(end..)?))
}

/// UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ).
fn parse_time(tag: u8, t: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| s.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + (d - b'0') as i64));
    let (year, rest) = match tag {
        0x17 => {
            let y = digits(t.get(..2)?)?;
            (if y < 50 { 2000 + y } else { 1900 + y }, t.get(2..)?)
        }
        0x18 => (digits(t.get(..4)?)?, t.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| digits(rest.get(i..i + 2)?);
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, b"20380119031408Z"), Some(2_147_483_648));
        assert_eq!(parse_time(0x17, b"2401x1000000Z"), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
    }

    #[test]
    fn only_a_method_s_first_letter_is_plain_http() {
        for b in 0..=u8::MAX {
            assert_eq!(is_plain_http(b), matches!(b, 0x41..=0x5a), "{b:#x}");
        }
        assert!(!is_plain_http(0x16), "a handshake record");
    }

    #[test]
    fn the_plain_answer_says_its_length() {
        let body = PLAIN_ON_TLS.split(|&b| b == b'\n').next_back().unwrap();
        assert_eq!(body.len(), 48);
    }
}
