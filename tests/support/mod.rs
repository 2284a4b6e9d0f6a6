//! Test support: the real `ssehub` binary on 127.0.0.1:0, and small
//! clients over real sockets (HTTP requests, an SSE reader).
#![allow(dead_code)]

pub mod net;
pub mod node;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod sentinel;
#[cfg(feature = "tls")]
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "test-key";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ssehub")
}

/// A server process; killed on drop.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub key: String,
    /// The server's stderr goes to a file here, so that what it logged
    /// before an answer is read after the answer (a pipe read by a thread
    /// could still hold it).
    log_dir: TempDir,
    /// A data dir made for this server alone, removed on drop.
    own_dir: Option<TempDir>,
}

/// A fresh directory under the system's temporary dir; removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ssehub-test-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestServer {
    /// `ssehub serve --listen 127.0.0.1:0 --api-key test-key <args>`, with
    /// a data dir of its own unless `args` name one (or another engine).
    pub fn start(args: &[&str]) -> TestServer {
        Self::start_env(args, &[])
    }

    /// [`TestServer::start`] with more environment (the hidden timeouts of tests).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut command = Command::new(bin());
        command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY]).args(args).envs(env.iter().copied());
        let own_dir = (!args.iter().any(|a| a.starts_with("--data-dir") || a.starts_with("--engine"))).then(|| TempDir::new("data"));
        if let Some(dir) = &own_dir {
            command.args(["--data-dir", dir.path()]);
        }
        let mut server = Self::spawn(&mut command, KEY);
        server.own_dir = own_dir;
        server
    }

    /// Runs `command` (an ssehub server) and waits for its listening line;
    /// it logs at debug unless `command` sets its own `RUST_LOG`.
    pub fn spawn(command: &mut Command, key: &str) -> TestServer {
        let mut server = Self::launch(command, key);
        server.wait_listening();
        server
    }

    /// Runs `command` (an ssehub server) without waiting for it: its
    /// address is known after [`TestServer::wait_listening`].
    pub fn launch(command: &mut Command, key: &str) -> TestServer {
        // Debug unless the caller chose a level.
        if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "debug");
        }
        let log_dir = TempDir::new("log");
        let log = std::fs::File::create(log_dir.0.join("stderr")).unwrap();
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("spawn ssehub");
        TestServer { child, addr: ([0, 0, 0, 0], 0).into(), key: key.to_string(), log_dir, own_dir: None }
    }

    /// Waits for the listening line; sets `addr` from it.
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            let after = logs.split("listening on http").nth(1);
            if let Some(rest) = after.and_then(|r| r.strip_prefix("://").or_else(|| r.strip_prefix("s://"))) {
                self.addr = rest.split_whitespace().next().unwrap_or("").parse().unwrap();
                return;
            }
            let exited = self.child.try_wait().unwrap().is_some();
            assert!(!exited && Instant::now() < deadline, "server did not start:\n{logs}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_dir.0.join("stderr")).unwrap_or_default()
    }

    /// Waits until the server's log holds `what`.
    pub fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logs().contains(what) {
            assert!(Instant::now() < deadline, "no {what:?} in the log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// One request on a fresh connection (`Connection: close`), with the
    /// test key unless `auth` is false.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let auth = format!("Authorization: Bearer {}\r\n", self.key);
        self.raw_request(method, path, &auth, body)
    }

    pub fn raw_request(&self, method: &str, path: &str, headers: &str, body: Option<&str>) -> Response {
        let mut s = self.connect();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{headers}", self.addr);
        if let Some(body) = body {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        s.write_all(req.as_bytes()).unwrap();
        read_response(&mut BufReader::new(s))
    }

    /// `POST /v1/sources/<source>/events` with an `Idempotency-Key`.
    pub fn emit_keyed(&self, source: &str, key: &str, body: &str) -> Response {
        let headers = format!("Authorization: Bearer {}\r\nIdempotency-Key: {key}\r\n", self.key);
        self.raw_request("POST", &format!("/v1/sources/{source}/events"), &headers, Some(body))
    }

    pub fn create_source(&self, name: &str) -> serde_json::Value {
        let r = self.request("POST", "/v1/sources", Some(&format!("{{\"name\":\"{name}\"}}")));
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["data"].clone()
    }

    /// Makes a subscribe token of `source` (default expiry); returns it.
    pub fn create_token(&self, source: &str) -> String {
        let r = self.request("POST", &format!("/v1/sources/{source}/tokens"), Some("{}"));
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["data"]["token"].as_str().unwrap().to_string()
    }

    /// Emits `json`; returns the event id.
    pub fn emit(&self, source: &str, json: &str) -> String {
        let r = self.request("POST", &format!("/v1/sources/{source}/events"), Some(json));
        assert_eq!(r.status, 202, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// Opens `GET path` as a stream with the test key and extra headers;
    /// checks the 200 head and the first handshake.
    pub fn subscribe(&self, path: &str, headers: &str) -> Sse {
        let mut sse = self.subscribe_raw(path, &format!("Authorization: Bearer {}\r\n{headers}", self.key));
        let head = sse.head();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(sse.next(), Frame::Comment("sse-handshake".into()));
        sse
    }

    pub fn subscribe_raw(&self, path: &str, headers: &str) -> Sse {
        let mut s = self.connect();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{headers}\r\n", self.addr).unwrap();
        Sse { r: BufReader::new(s) }
    }

    /// The value of a `/metrics` line such as `ssehub_subscribers`.
    pub fn metric(&self, name: &str) -> u64 {
        metric_in(&self.request("GET", "/metrics", None).body, name)
    }

    /// Waits until `metric` equals `want` (the reactor publishes once per turn).
    pub fn wait_metric(&self, name: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.metric(name);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {got}, wanted {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        signal(self.pid(), "TERM");
        let status = self.child.wait().unwrap();
        (status, start.elapsed())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Reads one response with a Content-Length body (all the server sends).
pub fn read_response(r: &mut impl BufRead) -> Response {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("connection closed inside a response head: {head:?}");
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let response = Response { status, head, body: String::new() };
    let len: usize = response.header("content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Response { body: String::from_utf8(body).unwrap(), ..response }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Comment(String),
    Event {
        id: Option<String>,
        data: String,
    },
    /// A frame with an `event:` name (such as the `gap` signal).
    Named {
        event: String,
        data: String,
    },
    /// A frame of only `retry: N` (the client's reconnection delay).
    Retry(u64),
    /// The server closed the stream.
    End,
}

impl Frame {
    pub fn envelope(&self) -> serde_json::Value {
        match self {
            Frame::Event { data, .. } => serde_json::from_str(data).unwrap(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    pub fn id(&self) -> String {
        match self {
            Frame::Event { id: Some(id), .. } => id.clone(),
            other => panic!("expected an event with an id, got {other:?}"),
        }
    }
}

/// A minimal SSE reader over a real socket (or a TLS stream, `net::Stream`).
pub struct Sse<S = TcpStream> {
    pub r: BufReader<S>,
}

impl<S: Read> Sse<S> {
    /// The response head.
    pub fn head(&mut self) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(self.r.read_line(&mut line).unwrap() > 0, "closed in head: {head}");
            if line == "\r\n" {
                return head;
            }
            head.push_str(&line);
        }
    }

    /// The next comment or event (blank-line terminated).
    pub fn next(&mut self) -> Frame {
        let (mut id, mut data, mut comment): (Option<String>, Option<String>, Option<String>) = (None, None, None);
        let mut event: Option<String> = None;
        let mut retry: Option<u64> = None;
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) => return Frame::End,
                Ok(_) => {}
                // Over TLS, a close without close_notify reads as an unexpected end.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof) => return Frame::End,
                Err(e) => panic!("stream read: {e}"),
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let Some(c) = comment.take() {
                    return Frame::Comment(c);
                }
                if let (Some(event), Some(data)) = (event.take(), data.clone()) {
                    assert!(id.is_none(), "a named frame with an id");
                    return Frame::Named { event, data };
                }
                if let Some(data) = data.take() {
                    return Frame::Event { id, data };
                }
                if let Some(ms) = retry.take() {
                    return Frame::Retry(ms);
                }
                continue;
            }
            if let Some(c) = line.strip_prefix(':') {
                comment = Some(c.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("retry: ") {
                retry = Some(v.parse().unwrap_or_else(|_| panic!("retry: not a number: {line:?}")));
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(match data {
                    Some(d) => format!("{d}\n{v}"),
                    None => v.to_string(),
                });
            } else {
                panic!("unexpected line {line:?}");
            }
        }
    }

    /// The next event, skipping handshake comments.
    pub fn next_event(&mut self) -> Frame {
        loop {
            match self.next() {
                Frame::Comment(_) => continue,
                other => return other,
            }
        }
    }
}

/// Sends `request` (raw bytes of HTTP) on a fresh connection to `addr`;
/// reads one response.
pub fn send(addr: SocketAddr, request: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(s))
}

/// Runs the server binary with `args`, expecting it to refuse to start;
/// returns its exit code and stderr.
pub fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin()).args(args).env("RUST_LOG", "info").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The path part of `source`'s `endpoint_url` (`/e/<key>`), checking that
/// the URL is under the server's own address and that the key is 128+ bits
/// of base62.
pub fn endpoint_path(server: &TestServer, source: &str) -> String {
    let url = server.request("GET", &format!("/v1/sources/{source}"), None).json()["data"]["endpoint_url"].as_str().unwrap().to_string();
    let prefix = format!("http://{}", server.addr);
    let path = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url} is not under {prefix}")).to_string();
    let key = path.strip_prefix("/e/").unwrap();
    assert!(key.len() >= 22 && key.bytes().all(|b| b.is_ascii_alphanumeric()), "key {key:?} is not 128+ bits of base62");
    path
}

/// Whether `text` is an event id: `<unix ms, 13 digits>-<seq>`.
pub fn is_event_id(text: &str) -> bool {
    text.split_once('-')
        .is_some_and(|(ms, seq)| ms.len() == 13 && !seq.is_empty() && [ms, seq].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())))
}

/// Reads until the peer closes; returns what came.
pub fn read_to_close(s: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

/// [`read_to_close`] as text (lossy).
pub fn read_to_close_text(s: &mut impl Read) -> String {
    String::from_utf8_lossy(&read_to_close(s)).into_owned()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 under `key` over `parts` in order.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Waits until `check` holds, polling, within `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A real `redis-server` on a free loopback port with a dir of its own
/// (append-only, fsync always); killed on drop. `restart` starts it again
/// on the same port and dir (its AOF).
///
/// The unit tests have their own in src/engine/redis/testing.rs: that one
/// is part of the library (it pings through the engine's own client and
/// hands out the engine's RedisUrl and TempDir), while this one needs
/// nothing of the library and also restarts, kills and drives `redis-cli`.
/// What they share is the `redis-server` command line.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    /// More of its command line (`with`).
    extra: Vec<String>,
    /// TLS only: the CA file `redis-cli` checks it with.
    tls_ca: Option<String>,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::with(&[], None)
    }

    /// With more of its command line; `tls_ca`: it speaks TLS only (the
    /// `extra` arguments say how), and `redis-cli` checks it with this CA.
    pub fn with(extra: &[&str], tls_ca: Option<&str>) -> RedisServer {
        Self::on(free_port(), extra, tls_ca)
    }

    fn on(port: u16, extra: &[&str], tls_ca: Option<&str>) -> RedisServer {
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut r = RedisServer { child: None, port, dir: TempDir::new("redis"), extra, tls_ca: tls_ca.map(Into::into) };
        r.restart();
        r
    }

    /// TLS only on its port (`--tls-port`), with `cert`/`key` signed by
    /// `ca` (PEM files); on 127.0.0.2 too (an address its certificate may not name).
    pub fn tls(cert: &str, key: &str, ca: &str) -> RedisServer {
        let port = free_port();
        let p = port.to_string();
        let tls = ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no", "--tls-port", &p];
        let args = [&tls[..], &["--bind", "127.0.0.1", "127.0.0.2"]].concat();
        Self::on(port, &args, Some(ca))
    }

    pub fn restart(&mut self) {
        let plain = if self.tls_ca.is_some() { "0".to_string() } else { self.port.to_string() };
        let child = Command::new("redis-server")
            .args(["--port", &plain, "--bind", "127.0.0.1", "--dir", self.dir.path()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            // A replica's full sync starts at once (not after 5 s).
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis{}://127.0.0.1:{}", if self.tls_ca.is_some() { "s" } else { "" }, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One `redis-cli` command's output, trimmed ("" if it cannot connect).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cli = Command::new("redis-cli");
        cli.args(["-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            cli.args(["--tls", "--cacert", ca]);
        }
        let out = cli.args(args).stderr(Stdio::null()).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().map(Child::id) {
            // A stopped server must be continued to die promptly.
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
        self.kill();
    }
}

/// A keep-alive HTTP/1.1 client: one connection, requests one at a time.
pub struct KeepAlive {
    r: BufReader<TcpStream>,
    host: String,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive { r: BufReader::new(s), host: addr.to_string() }
    }

    pub fn request(&mut self, method: &str, path: &str, body: &str) -> Response {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        read_response(&mut self.r)
    }
}

/// The value of the line `name` of a `/metrics` body.
pub fn metric_in(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}
