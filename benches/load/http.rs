//! Minimal blocking HTTP/1.1 client for the REST calls and emits: one
//! keep-alive connection, Content-Length bodies, requests may be pipelined.

use super::*;

pub struct Http {
    stream: TcpStream,
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
        Ok(Http { stream, host: o.host.clone(), key: o.key.clone(), buf: Vec::new() })
    }

    /// A second handle on the same connection, to read answers while
    /// this one writes requests.
    pub fn try_clone(&self) -> Res<Http> {
        let stream = self.stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Http { stream, host: self.host.clone(), key: self.key.clone(), buf: Vec::new() })
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
        self.stream.write_all(&req).map_err(|e| format!("{method} {path}: {e}"))
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
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("reading a response: {e}")),
        }
    }
}
