//! Real clients against the real server. tests/js holds two scripts that
//! print what they receive as JSON lines: `eventsource.mjs` uses the npm
//! `eventsource` package (the client Pipedream's docs point to) with an
//! `Authorization: Bearer` header; `browser.mjs` opens a page of another
//! origin in headless Chromium, whose own `EventSource` connects with
//! `?access_token=`. The set-up installs tests/js's npm packages once;
//! Chromium must be on the machine (`.ci/run` installs it). Both run over
//! https too (module `https`, feature `tls`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::node::{CHROMIUM, gather, js_dir, npm_setup};
use support::{KEY, TestServer};

/// Longest wait for one line from a client script: long enough for
/// Chromium to start and for a client's 3 s reconnect delay.
const LINE_TIMEOUT: Duration = Duration::from_secs(15);
/// Line types the scripts print for the record; `Client::next` passes over them.
const RECORD_ONLY: &[&str] = &["page", "request", "response", "console"];

/// A client script's process: its JSON lines as they come, and a
/// transcript of them for failure messages. Killed on drop.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Client {
    /// `node tests/js/eventsource.mjs --url URL --key KEY <args>`.
    fn eventsource(url: &str, key: &str, args: &[&str]) -> Client {
        Self::spawn("eventsource.mjs", &[&["--url", url, "--key", key], args].concat())
    }

    /// `node tests/js/browser.mjs --url URL --key KEY <args>`.
    fn browser(url: &str, key: &str, args: &[&str]) -> Client {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the browser tests need Debian's Chromium (`apt-get install -y chromium`; .ci/run installs it)"
        );
        Self::spawn("browser.mjs", &[&["--url", url, "--key", key], args].concat())
    }

    fn spawn(script: &str, args: &[&str]) -> Client {
        Self::spawn_with_env(script, args, &[])
    }

    fn spawn_with_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> Client {
        npm_setup();
        let mut child = Command::new("node")
            .arg(js_dir().join(script))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {script}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = gather(child.stderr.take().unwrap());
        Client { stdin: child.stdin.take(), child, lines, seen: Vec::new(), stderr }
    }

    /// The next line of type `kind`, passing over record-only lines.
    fn next(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let line = match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no {kind:?} line within {LINE_TIMEOUT:?}\n{}", self.transcript()),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!("the client exited ({status}) while a {kind:?} line was awaited\n{}", self.transcript());
                }
            };
            self.seen.push(line.clone());
            let got = line["type"].as_str().unwrap_or("");
            if got == kind {
                return line;
            }
            assert!(RECORD_ONLY.contains(&got), "wanted a {kind:?} line, got {line}\n{}", self.transcript());
        }
    }

    /// The next `n` messages as (lastEventId, event).
    fn messages(&mut self, n: usize) -> Vec<(String, Value)> {
        (0..n)
            .map(|_| {
                let m = self.next("message");
                (m["lastEventId"].as_str().unwrap().to_string(), m["event"].clone())
            })
            .collect()
    }

    /// Waits for the script to exit, keeping the rest of its lines.
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LINE_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the client did not exit\n{}", self.transcript());
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        status
    }

    fn expect_exit(&mut self, code: i32) {
        let status = self.exit();
        assert_eq!(status.code(), Some(code), "exit status\n{}", self.transcript());
    }

    fn tell(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
    }

    /// The record-only lines of one type, such as the browser's requests.
    fn seen(&self, kind: &str) -> Vec<&Value> {
        self.seen.iter().filter(|l| l["type"] == kind).collect()
    }

    fn transcript(&self) -> String {
        let lines: Vec<String> = self.seen.iter().map(Value::to_string).collect();
        format!("lines so far:\n{}\nstderr:\n{}", lines.join("\n"), self.stderr.lock().unwrap())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP forwarder to the server whose connections the test can
/// cut, so that a client sees its stream drop as in a network failure and
/// reconnects by itself.
struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy { addr: listener.local_addr().unwrap(), open: Arc::default(), accepted: Arc::default(), stop: Arc::default() };
        let (open, accepted, stop) = (proxy.open.clone(), proxy.accepted.clone(), proxy.stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                open.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                forward(client.try_clone().unwrap(), server.try_clone().unwrap());
                forward(server, client);
            }
        });
        proxy
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Drops every connection open through the proxy, both sides.
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop to see `stop`
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Payloads that exercise the framing: strings with newlines and CRs,
/// non-ASCII and U+2028, scalars, nesting, text that looks like SSE fields,
/// and one big enough to arrive in many reads.
fn payloads() -> Vec<Value> {
    vec![
        json!({"n": 0, "total": 12}),
        json!("line one\nline two\r\nline three\r"),
        json!({"text": "Grüße, 東京, 🚀, \u{2028} end"}),
        json!([1, 2.5, -3, null, true, false, {}, []]),
        json!(null),
        json!(0),
        json!({"big": "x".repeat(100_000), "end": true}),
        json!({"nested": {"deep": [{"a": "data: no\n\nid: 1-0\nevent: nope"}]}}),
    ]
}

/// Emits each payload (pretty-printed, so the server compacts it); returns the ids.
fn emit_all(server: &TestServer, source: &str, payloads: &[Value]) -> Vec<String> {
    payloads.iter().map(|p| server.emit(source, &serde_json::to_string_pretty(p).unwrap())).collect()
}

fn numbered(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(|n| json!({"n": n})).collect()
}

fn pairs(ids: &[String], payloads: &[Value]) -> Vec<(String, Value)> {
    ids.iter().cloned().zip(payloads.iter().cloned()).collect()
}

#[test]
fn eventsource_package_receives_every_event_once_in_order() {
    let server = TestServer::start(&["--source", "orders", "--history", "1000"]);
    let mut sent = payloads();
    sent.extend(numbered(0..200));
    let count = sent.len().to_string();
    let mut client = Client::eventsource(&format!("http://{}/sources/orders/sse", server.addr), KEY, &["--count", &count]);
    client.next("open");
    let ids = emit_all(&server, "orders", &sent);
    let got = client.messages(sent.len());
    assert_eq!(got, pairs(&ids, &sent));
    client.expect_exit(0);
}

/// The Node snippet of docs/api.md for the current `eventsource` major, as
/// written (only the server's address changes), prints each payload.
#[test]
fn the_documented_node_snippet_receives_events() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let after = page.split("From Node, the npm `eventsource` package.").nth(1).expect("the Node paragraph");
    let snippet = after.split("```js\n").nth(1).and_then(|b| b.split("```").next()).expect("a js block");
    assert!(snippet.contains("fetch:") && snippet.contains("import {EventSource} from 'eventsource'"), "{snippet}");
    let server = TestServer::start(&["--source", "orders"]);
    // Written next to tests/js's node_modules, so its import resolves there.
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let name = format!("docs-snippet-{}.mjs", std::process::id());
    let file = Removed(js_dir().join(&name));
    std::fs::write(&file.0, snippet.replace("localhost:8080", &server.addr.to_string())).unwrap();
    let client = Client::spawn_with_env(&name, &[], &[("SSEHUB_API_KEY", KEY)]);
    // No message before the stream is open: emit until one arrives.
    let deadline = Instant::now() + LINE_TIMEOUT;
    let mut emitted = 0;
    let line = loop {
        assert!(Instant::now() < deadline, "nothing printed\n{}", client.transcript());
        server.emit("orders", &format!("{{\"total\": {emitted}}}"));
        emitted += 1;
        if let Ok(line) = client.lines.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
    };
    // console.log of the parsed payload, as Node prints an object.
    assert!(line.as_str().is_some_and(|l| l.starts_with("{ total: ")), "{line}\n{}", client.transcript());
}

#[test]
fn eventsource_package_stops_on_401_and_404() {
    let server = TestServer::start(&["--source", "orders"]);
    let url = format!("http://{}/sources/orders/sse", server.addr);
    for (url, key, code) in [(url.as_str(), "wrong-key", 401), (&format!("http://{}/sources/missing/sse", server.addr), KEY, 404)] {
        let mut client = Client::eventsource(url, key, &["--count", "1"]);
        let error = client.next("error");
        assert_eq!((&error["code"], &error["readyState"]), (&json!(code), &json!(2)), "closed, no retry\n{}", client.transcript());
        client.expect_exit(2);
    }
}

/// The connection drops under the client; the package reconnects by itself
/// with `Last-Event-ID` and gets exactly what it missed, then live events.
#[test]
fn eventsource_package_resumes_after_a_dropped_connection() {
    let server = TestServer::start(&["--source", "orders"]);
    let proxy = Proxy::start(server.addr);
    let mut client = Client::eventsource(&proxy.url("/sources/orders/sse"), KEY, &["--count", "7"]);
    client.next("open");
    let (before, missed, live) = (numbered(0..2), numbered(2..5), numbered(5..7));
    let ids = emit_all(&server, "orders", &before);
    assert_eq!(client.messages(2), pairs(&ids, &before));

    proxy.cut();
    let ids = emit_all(&server, "orders", &missed);
    assert_eq!(client.next("error")["readyState"], 0, "reconnecting");
    client.next("open");
    assert_eq!(client.messages(3), pairs(&ids, &missed), "the replay is exactly the missed events");
    let ids = emit_all(&server, "orders", &live);
    assert_eq!(client.messages(2), pairs(&ids, &live), "then live, no duplicate");
    client.expect_exit(0);
    assert_eq!(proxy.accepted(), 2);
}

/// A consumer that closes and later opens a new `EventSource` resumes from
/// the last id it saw, sent as `Last-Event-ID`.
#[test]
fn eventsource_package_reopened_with_last_event_id_gets_the_missed_events() {
    let server = TestServer::start(&["--source", "orders"]);
    let url = format!("http://{}/sources/orders/sse", server.addr);
    let mut client = Client::eventsource(&url, KEY, &["--count", "7", "--reopen-after", "2"]);
    client.next("open");
    let (before, missed, live) = (numbered(0..2), numbered(2..5), numbered(5..7));
    let ids = emit_all(&server, "orders", &before);
    assert_eq!(client.messages(2), pairs(&ids, &before));
    assert_eq!(client.next("closed")["lastEventId"], ids[1]);

    let ids = emit_all(&server, "orders", &missed);
    client.tell();
    client.next("open");
    assert_eq!(client.messages(3), pairs(&ids, &missed));
    let ids = emit_all(&server, "orders", &live);
    assert_eq!(client.messages(2), pairs(&ids, &live));
    client.expect_exit(0);
}

/// The gap signal (SPEC §2.2) as the npm package sees it: `onmessage`
/// gets only the retained events, `addEventListener("gap")` the gap.
#[test]
fn eventsource_package_sees_the_gap_only_through_its_listener() {
    let server = TestServer::start(&["--source", "orders", "--history", "5"]);
    let sent = numbered(0..12);
    let ids = emit_all(&server, "orders", &sent);
    let url = format!("http://{}/sources/orders/sse", server.addr);
    let mut client = Client::eventsource(&url, KEY, &["--count", "5", "--last-event-id", &ids[1]]);
    client.next("open");
    let gap = client.next("gap");
    assert_eq!(gap["data"], json!({"after": ids[1], "resumed_from": ids[7], "lost": "unknown"}));
    assert_eq!(client.messages(5), pairs(&ids[7..], &sent[7..]), "then the 5 retained, to onmessage");
    client.expect_exit(0);
    assert_eq!(client.seen("gap").len(), 1);
}

/// The browser's own `EventSource`, on a page of another origin, with
/// `?access_token=`: a real CORS request that the stream's
/// `Access-Control-Allow-Origin: *` lets through.
#[test]
fn browser_page_of_another_origin_receives_events_with_access_token() {
    let server = TestServer::start(&["--source", "orders"]);
    let sent = payloads();
    let mut client = Client::browser(&format!("http://{}/sources/orders/sse", server.addr), KEY, &["--count", &sent.len().to_string()]);
    client.next("open");
    let ids = emit_all(&server, "orders", &sent);
    assert_eq!(client.messages(sent.len()), pairs(&ids, &sent));
    client.expect_exit(0);

    let page = client.seen("page")[0]["origin"].as_str().unwrap().to_string();
    assert_ne!(page, format!("http://{}", server.addr), "the page is of another origin");
    let requests = client.seen("request");
    assert_eq!(requests.len(), 1, "{}", client.transcript());
    assert_eq!(requests[0]["origin"], page, "a CORS request, from the page's origin");
    assert_eq!(client.seen("response").first().map(|r| (&r["status"], &r["allowOrigin"])), Some((&json!(200), &json!("*"))));
    assert!(client.seen("console").is_empty(), "the page logged something\n{}", client.transcript());
    assert!(!server.logs().contains(KEY), "a key from ?access_token= reached the log");
}

/// The browser reconnects by itself after a drop, sending `Last-Event-ID`
/// across origins, and gets exactly the missed events.
#[test]
fn browser_resumes_with_last_event_id_after_a_dropped_connection() {
    let server = TestServer::start(&["--source", "orders"]);
    let proxy = Proxy::start(server.addr);
    let mut client = Client::browser(&proxy.url("/sources/orders/sse"), KEY, &["--count", "6"]);
    client.next("open");
    let (before, missed, live) = (numbered(0..2), numbered(2..5), numbered(5..6));
    let ids = emit_all(&server, "orders", &before);
    assert_eq!(client.messages(2), pairs(&ids, &before));
    let last_seen = ids[1].clone();

    proxy.cut();
    let ids = emit_all(&server, "orders", &missed);
    assert_eq!(client.next("error")["readyState"], 0, "reconnecting");
    client.next("open");
    assert_eq!(client.messages(3), pairs(&ids, &missed));
    let ids = emit_all(&server, "orders", &live);
    assert_eq!(client.messages(1), pairs(&ids, &live));
    client.expect_exit(0);

    let requests = client.seen("request");
    let resumed: Vec<&Value> = requests.iter().map(|r| &r["lastEventId"]).collect();
    assert_eq!(resumed, [&Value::Null, &json!(last_seen)], "{}", client.transcript());
    assert_eq!(proxy.accepted(), 2, "no preflight or retry beyond the one reconnect");
}

/// The same clients over HTTPS (SPEC §9): the server with `--tls-cert` from
/// a test CA, which Node trusts through `NODE_EXTRA_CA_CERTS`; Chromium
/// accepts the server's certificate by its key's hash (it has no flag for
/// a CA file); events are emitted with curl trusting the CA.
#[cfg(feature = "tls")]
mod https {
    use super::*;
    use support::tls::{Certs, certs};

    fn server(certs: &Certs) -> TestServer {
        TestServer::start(&["--source", "orders", "--tls-cert", &certs.path("server.pem"), "--tls-key", &certs.path("server.key")])
    }

    /// Emits each payload over https; returns the ids.
    fn emit_all(certs: &Certs, server: &TestServer, payloads: &[Value]) -> Vec<String> {
        let url = format!("https://127.0.0.1:{}/v1/sources/orders/events", server.addr.port());
        let auth = format!("Authorization: Bearer {KEY}");
        payloads
            .iter()
            .map(|p| {
                let out = Command::new("curl")
                    .args([
                        "-sS",
                        "--max-time",
                        "10",
                        "--cacert",
                        &certs.path("ca.pem"),
                        "-H",
                        &auth,
                        "--data-binary",
                        &p.to_string(),
                        &url,
                    ])
                    .output()
                    .expect("curl");
                let answer: Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
                answer["id"].as_str().unwrap_or_else(|| panic!("no id in {answer}")).to_string()
            })
            .collect()
    }

    /// The base64 SHA-256 of the server certificate's SubjectPublicKeyInfo
    /// (Chromium's `--ignore-certificate-errors-spki-list`).
    fn server_spki(certs: &Certs) -> String {
        let pipeline =
            "openssl x509 -in server.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64";
        let out = Command::new("sh").args(["-c", pipeline]).current_dir(certs.dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn https_url(addr: SocketAddr) -> String {
        format!("https://127.0.0.1:{}/sources/orders/sse", addr.port())
    }

    /// Through a TCP forwarder the test cuts: the package reconnects by
    /// itself over https with `Last-Event-ID` and gets what it missed.
    #[test]
    fn eventsource_package_over_https_receives_events_and_resumes_after_a_dropped_connection() {
        let certs = certs();
        let server = server(&certs);
        let proxy = Proxy::start(server.addr);
        let ca = certs.path("ca.pem");
        let args = ["--url", &https_url(proxy.addr), "--key", KEY, "--count", "7"];
        let mut client = Client::spawn_with_env("eventsource.mjs", &args, &[("NODE_EXTRA_CA_CERTS", &ca)]);
        client.next("open");
        let (before, missed, live) = (numbered(0..2), numbered(2..5), numbered(5..7));
        let ids = emit_all(&certs, &server, &before);
        assert_eq!(client.messages(2), pairs(&ids, &before));

        proxy.cut();
        let ids = emit_all(&certs, &server, &missed);
        assert_eq!(client.next("error")["readyState"], 0, "reconnecting");
        client.next("open");
        assert_eq!(client.messages(3), pairs(&ids, &missed), "the replay is exactly the missed events");
        let ids = emit_all(&certs, &server, &live);
        assert_eq!(client.messages(2), pairs(&ids, &live), "then live, no duplicate");
        client.expect_exit(0);
        assert_eq!(proxy.accepted(), 2);
    }

    #[test]
    fn browser_over_https_receives_events_and_resumes_with_last_event_id() {
        let certs = certs();
        let server = server(&certs);
        let proxy = Proxy::start(server.addr);
        let spki = server_spki(&certs);
        let mut client = Client::browser(&https_url(proxy.addr), KEY, &["--count", "6", "--trust-spki", &spki]);
        client.next("open");
        let (before, missed, live) = (numbered(0..2), numbered(2..5), numbered(5..6));
        let ids = emit_all(&certs, &server, &before);
        assert_eq!(client.messages(2), pairs(&ids, &before));
        let last_seen = ids[1].clone();

        proxy.cut();
        let ids = emit_all(&certs, &server, &missed);
        assert_eq!(client.next("error")["readyState"], 0, "reconnecting");
        client.next("open");
        assert_eq!(client.messages(3), pairs(&ids, &missed));
        let ids = emit_all(&certs, &server, &live);
        assert_eq!(client.messages(1), pairs(&ids, &live));
        client.expect_exit(0);

        let requests = client.seen("request");
        let resumed: Vec<&Value> = requests.iter().map(|r| &r["lastEventId"]).collect();
        assert_eq!(resumed, [&Value::Null, &json!(last_seen)], "{}", client.transcript());
        assert!(client.seen("console").is_empty(), "the page logged something\n{}", client.transcript());
    }
}
