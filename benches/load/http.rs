//! Minimal blocking HTTP/1.1 client for the REST calls and emits: one
//! keep-alive connection, Content-Length bodies, requests may be pipelined.
//! Over TLS the rustls state is shared by the two handles (one writes, one
//! reads): raw bytes are read without the lock, then fed to rustls under it.

use super::*;
use std::sync::{Arc, Mutex};

pub struct Http {
    stream: TcpStream,
    tls: Option<Arc<Mutex<rustls::ClientConnection>>>,
    host: String,
    key: String,
    buf: Vec<u8>,
}

impl Http {
    pub fn connect(o: &Opts) -> Res<Http> {
        let stream = TcpStream::connect(o.addr).map_err(|e| format!("{}: {e}", o.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let timeout = Some(Duration::from_secs(10));
        stream.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        let tls = match &o.tls {
            Some(config) => {
                let mut conn = tls::connection(config)?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut &stream).map_err(|e| format!("{} TLS handshake: {e}", o.addr))?;
                }
                Some(Arc::new(Mutex::new(conn)))
            }
            None => None,
        };
        Ok(Http { stream, tls, host: o.host.clone(), key: o.key.clone(), buf: Vec::new() })
    }

    /// A second handle on the same connection, to read answers while
    /// this one writes requests.
    pub fn try_clone(&self) -> Res<Http> {
        let stream = self.stream.try_clone().map_err(|e| e.to_string())?;
        let (host, key, tls) = (self.host.clone(), self.key.clone(), self.tls.clone());
        Ok(Http { stream, tls, host, key, buf: Vec::new() })
    }

    pub fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Res<(u16, Vec<u8>)> {
        self.send(method, path, body)?;
        self.recv()
    }

    pub fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Res<()> {
        let (host, auth, len) = (&self.host, auth_header(&self.key), body.len());
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(body);
        let err = |e: io::Error| format!("{method} {path}: {e}");
        let Some(tls) = &self.tls else { return self.stream.write_all(&req).map_err(err) };
        let mut conn = tls.lock().map_err(|_| "tls state poisoned")?;
        conn.writer().write_all(&req).map_err(err)?;
        while conn.wants_write() {
            conn.write_tls(&mut &self.stream).map_err(err)?;
        }
        Ok(())
    }

    /// Reads one response: (status, body).
    pub fn recv(&mut self) -> Res<(u16, Vec<u8>)> {
        let end = loop {
            match sys::find(&self.buf, b"\r\n\r\n") {
                Some(i) => break i,
                None => self.fill()?,
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok());
        let status = status.ok_or(format!("bad status line {head:?}"))?;
        if head.contains("transfer-encoding: chunked") {
            return Err("chunked responses are not supported".into());
        }
        let len = head.lines().find_map(|l| l.strip_prefix("content-length:"));
        let len: usize = len.map_or(Some(0), |v| v.trim().parse().ok()).ok_or("bad length")?;
        while self.buf.len() < end + 4 + len {
            self.fill()?;
        }
        let body = self.buf[end + 4..end + 4 + len].to_vec();
        self.buf.drain(..end + 4 + len);
        Ok((status, body))
    }

    fn fill(&mut self) -> Res<()> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("server closed the connection".into()),
            Ok(n) => match &self.tls {
                Some(tls) => tls::feed(&mut *tls.lock().map_err(|_| "tls state poisoned")?, &chunk[..n], &mut self.buf),
                None => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(())
                }
            },
            Err(e) => Err(format!("reading a response: {e}")),
        }
    }
}
