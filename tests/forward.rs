//! `ssehub forward` end to end: the real binary as server and as
//! forwarder, and a receiver in this file (a std::net HTTP server on a
//! thread) that records every request it gets and answers from a script.
//! SSEHUB_FORWARD_BACKOFF_MS shortens the retry backoff to 100 ms.

mod support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Lines};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{KEY, TempDir, TestServer, endpoint_path, hex, hmac_sha256, is_event_id};

/// Longest wait for anything that should happen.
const WAIT: Duration = Duration::from_secs(15);
const SECRET: &[u8] = b"receiver-shared-secret";

// ---- the tests ------------------------------------------------------------

#[test]
fn webhooks_arrive_as_sent_and_their_signatures_verify_at_the_receiver() {
    let server = TestServer::start(&[]);
    server.create_source("hooks");
    let endpoint = endpoint_path(&server, "hooks");
    let receiver = Receiver::start();
    let mut fwd = Forward::start(&server, "hooks", &format!("{}/local/in", receiver.url()), &[]);

    let json_body = b"{\n  \"action\": \"opened\",\n  \"total\": 12.50\n}".to_vec();
    let form_body = b"payload=%7B%22a%22%3A1%7D&x=a+b".to_vec();
    let binary_body: Vec<u8> = (0..=255u8).rev().chain([0xff, 0xfe, 0x00, 0x80]).collect();
    let sent = [
        ("POST", "/github/push?a=1&b=x%20y&a=2", "Content-Type: application/json\r\nX-GitHub-Event: push\r\n", json_body),
        ("POST", "/form", "Content-Type: application/x-www-form-urlencoded\r\n", form_body),
        ("PUT", "/bin/blob", "Content-Type: application/octet-stream\r\n", binary_body),
        ("DELETE", "", "", Vec::new()),
    ];
    for (method, suffix, headers, body) in &sent {
        let sig = format!("sha256={}", hex(&hmac_sha256(SECRET, &[body])));
        // Hop-by-hop headers the sender used for its own connection stay behind.
        let extra =
            format!("{headers}X-Hub-Signature-256: {sig}\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n");
        send(&server, method, &format!("{endpoint}{suffix}"), &extra, body);
    }
    server.emit("hooks", r#"{"plain": [1, 2.50, "x"]}"#);

    let got = receiver.wait_for(5);
    let want_targets = ["/local/in/github/push?a=1&a=2&b=x%20y", "/local/in/form", "/local/in/bin/blob", "/local/in"];
    for (i, ((method, _, _, body), request)) in sent.iter().zip(&got).enumerate() {
        assert_eq!((request.method.as_str(), request.target.as_str()), (*method, want_targets[i]));
        assert_eq!(&request.body, body, "exact bytes of request {i}");
        let sig = request.header("x-hub-signature-256").unwrap();
        assert_eq!(sig, format!("sha256={}", hex(&hmac_sha256(SECRET, &[&request.body]))), "the receiver's own check passes");
        for gone in ["keep-alive", "x-hop"] {
            assert_eq!(request.header(gone), None, "{gone} is hop-by-hop");
        }
        assert_eq!(request.header("host").as_deref(), Some(receiver.authority().as_str()));
        assert_eq!(request.headers.iter().filter(|(n, _)| n == "content-length").count(), (i < 3) as usize);
        assert!(request.header("ssehub-event-id").is_some_and(|id| is_event_id(&id)), "{request:?}");
    }
    assert_eq!(got[0].header("x-github-event").as_deref(), Some("push"));
    assert_eq!(got[0].header("content-type").as_deref(), Some("application/json"));
    assert_eq!(got[1].header("content-type").as_deref(), Some("application/x-www-form-urlencoded"));
    // A plain event: POST of its JSON.
    assert_eq!((got[4].method.as_str(), got[4].target.as_str()), ("POST", "/local/in"));
    assert_eq!(got[4].body, br#"{"plain":[1,2.50,"x"]}"#);
    assert_eq!(got[4].header("content-type").as_deref(), Some("application/json"));

    // One line per request, with the ids the server gave.
    let summaries = server.request("GET", "/v1/sources/hooks/event_summaries?limit=5", None).json();
    let mut ids: Vec<String> = summaries["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    ids.reverse();
    for (i, id) in ids.iter().enumerate() {
        let line = fwd.line();
        let method = got[i].method.as_str();
        assert!(line.starts_with(&format!("{id} {method} {} -> 200 (", got[i].target)) && line.ends_with(" ms)"), "{line}");
        assert_eq!(got[i].header("ssehub-event-id").as_deref(), Some(id.as_str()));
    }
    fwd.stop();
}

/// The bodies the receiver got, as text.
fn bodies(got: &[Request]) -> Vec<String> {
    got.iter().map(|r| String::from_utf8(r.body.clone()).unwrap()).collect()
}

#[test]
fn fifty_events_arrive_in_order() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    let receiver = Receiver::start();
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &[]);
    for n in 0..50 {
        server.emit("s", &format!("{{\"n\":{n}}}"));
    }
    let got = receiver.wait_for(50);
    let bodies = bodies(&got);
    let want: Vec<String> = (0..50).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(bodies, want);
    receiver.assert_no_more(50);
    assert_eq!(fwd.lines(50).len(), 50);
    fwd.stop();
}

#[test]
fn a_receiver_down_for_3_s_loses_nothing() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    // A port with nobody listening, yet.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let fwd = Forward::start(&server, "s", &format!("http://127.0.0.1:{port}/in"), &[]);
    let down = Instant::now();
    for n in 0..5 {
        server.emit("s", &format!("{{\"n\":{n}}}"));
    }
    fwd.wait_for_notice("retry 1 of 10");
    while down.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(50));
    }
    let receiver = Receiver::on(port);
    let got = receiver.wait_for(5);
    let bodies = bodies(&got);
    assert_eq!(bodies, (0..5).map(|n| format!("{{\"n\":{n}}}")).collect::<Vec<_>>());
    receiver.assert_no_more(5);
    fwd.stop();
}

#[test]
fn a_5xx_is_retried_and_a_404_is_not() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    let receiver = Receiver::start();
    receiver.script(&[500, 500, 200, 404, 200]);
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &[]);
    server.emit("s", "1");
    server.emit("s", "2");
    server.emit("s", "3");
    let got = receiver.wait_for(5);
    let bodies: Vec<&[u8]> = got.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [&b"1"[..], b"1", b"1", b"2", b"3"], "1 three times, 2 once (404 is final), then 3");
    receiver.assert_no_more(5);
    let lines = fwd.lines(3);
    assert!(lines[0].contains(" -> 200 (") && lines[1].contains(" -> 404 (") && lines[2].contains(" -> 200 ("), "{lines:?}");
    assert_eq!(fwd.stderr().matches("-> 500; retry").count(), 2, "{}", fwd.stderr());
    fwd.stop();
}

#[test]
fn a_status_that_will_not_change_is_final_at_once() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    let receiver = Receiver::start();
    receiver.script(&[501, 400, 505]);
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &[]);
    for n in 1..=4 {
        server.emit("s", &n.to_string());
    }
    let got = receiver.wait_for(4);
    assert_eq!(bodies(&got), ["1", "2", "3", "4"], "each event once: 501, 400 and 505 are final");
    receiver.assert_no_more(4);
    let lines = fwd.lines(4);
    for (line, status) in lines.iter().zip(["501", "400", "505", "200"]) {
        assert!(line.contains(&format!(" -> {status} (")), "{lines:?}");
    }
    assert!(!fwd.stderr().contains("retry"), "{}", fwd.stderr());
    fwd.stop();
}

#[test]
fn retry_after_sets_the_wait_before_the_retry() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    let receiver = Receiver::start();
    // The backoff is 100 ms here: the second try waits the 1 s asked for.
    receiver.script_with(&[(503, "Retry-After: 1\r\n"), (429, "Retry-After: 0\r\n")]);
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &[]);
    server.emit("s", "1");
    let got = receiver.wait_for(3);
    assert_eq!(bodies(&got), ["1", "1", "1"]);
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, not after the 1 s Retry-After asks");
    assert!(fwd.line().contains(" -> 200 ("));
    fwd.wait_for_notice("-> 503; retry 1 of 10 in 1000 ms");
    fwd.wait_for_notice("-> 429; retry 2 of 10 in 0 ms");
    fwd.stop();
}

#[test]
fn a_target_query_comes_before_the_event_query() {
    let server = TestServer::start(&[]);
    server.create_source("hooks");
    let endpoint = endpoint_path(&server, "hooks");
    let receiver = Receiver::start();
    let mut fwd = Forward::start(&server, "hooks", &format!("{}/in?token=abc&v=2", receiver.url()), &[]);
    send(&server, "POST", &format!("{endpoint}/gh?a=1&b=x%20y"), "", b"{}");
    send(&server, "GET", &endpoint, "", b"");
    server.emit("hooks", "1");
    let got = receiver.wait_for(3);
    let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/in/gh?token=abc&v=2&a=1&b=x%20y", "/in?token=abc&v=2", "/in?token=abc&v=2"]);
    fwd.lines(3);
    fwd.stop();
}

#[test]
fn an_endpoint_request_never_reaches_above_the_target_path() {
    let server = TestServer::start(&[]);
    server.create_source("hooks");
    let endpoint = endpoint_path(&server, "hooks");
    let receiver = Receiver::start();
    let mut fwd = Forward::start(&server, "hooks", &format!("{}/hooks", receiver.url()), &[]);
    let secrets = "Cookie: session=attacker\r\nAuthorization: Bearer attacker\r\n";
    let sent = ["/../../admin/users/1", "/%2e%2e/%2E%2E/admin/users/2", "/x/..\\..\\..\\admin/users/3", "/a/./b/../../../c"];
    for suffix in sent {
        send(&server, "DELETE", &format!("{endpoint}{suffix}"), secrets, b"");
    }
    let got = receiver.wait_for(4);
    let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/hooks/admin/users/1", "/hooks/admin/users/2", "/hooks/admin/users/3", "/hooks/c"]);
    fwd.lines(4);
    fwd.stop();
}

#[test]
fn a_target_with_credentials_or_a_fragment_is_refused_naming_to() {
    for (to, why) in [("http://u:p@localhost:3000/", "user:password in --to"), ("http://localhost:3000/in#x", "fragment")] {
        let out = Command::new(support::bin())
            .args(["forward", "s", "--to", to])
            .env("SSEHUB_URL", "http://127.0.0.1:1")
            .env("SSEHUB_API_KEY", KEY)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!((out.status.code(), stderr.lines().count()), (Some(2), 1), "{stderr}");
        assert!(stderr.contains(&format!("--to {to}: ")) && stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("--api-key") && !stderr.contains("server URL"), "advice for the server: {stderr}");
    }
}

#[test]
fn retries_run_out_and_the_event_is_skipped() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    let receiver = Receiver::start();
    receiver.script(&[503, 503, 503]);
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &["--max-retries", "2"]);
    server.emit("s", "1");
    server.emit("s", "2");
    let got = receiver.wait_for(4);
    let bodies: Vec<&[u8]> = got.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [&b"1"[..], b"1", b"1", b"2"]);
    assert!(fwd.line().contains(" -> 503 ("));
    assert!(fwd.line().contains(" -> 200 ("));
    fwd.wait_for_notice("still 503 after 2 retries; skipped");
    fwd.stop();
}

#[test]
fn a_restart_with_the_cursor_resumes_exactly_after_the_last_forwarded() {
    let server = TestServer::start(&[]);
    server.create_source("s");
    let receiver = Receiver::start();
    let dir = TempDir::new("cursor");
    let cursor = dir.0.join("cursor");
    let args = ["--cursor", cursor.to_str().unwrap()];
    server.emit("s", "\"before\"");

    let mut fwd = Forward::start(&server, "s", &receiver.url(), &args);
    let first = [server.emit("s", "1"), server.emit("s", "2")];
    receiver.wait_for(2);
    fwd.lines(2);
    fwd.stop();
    assert_eq!(std::fs::read_to_string(&cursor).unwrap().trim(), first[1], "the last id forwarded");

    let missed: Vec<String> = (3..8).map(|n| server.emit("s", &n.to_string())).collect();
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &args);
    let got = receiver.wait_for(7);
    let bodies = bodies(&got);
    assert_eq!(bodies, ["1", "2", "3", "4", "5", "6", "7"], "history after the cursor: those 5, no more, none twice");
    let ids: Vec<String> = got[2..].iter().map(|r| r.header("ssehub-event-id").unwrap()).collect();
    assert_eq!(ids, missed);
    let live = server.emit("s", "8");
    assert_eq!(receiver.wait_for(8)[7].body, b"8", "then live");
    receiver.assert_no_more(8);
    fwd.lines(6);
    assert_eq!(std::fs::read_to_string(&cursor).unwrap().trim(), live);
    fwd.stop();
}

#[test]
fn a_cursor_older_than_the_history_warns_of_the_gap_and_goes_on() {
    let server = TestServer::start(&["--history", "3"]);
    server.create_source("s");
    let receiver = Receiver::start();
    let dir = TempDir::new("gap-cursor");
    let cursor = dir.0.join("cursor");
    let args = ["--cursor", cursor.to_str().unwrap()];
    let mut fwd = Forward::start(&server, "s", &receiver.url(), &args);
    let first = server.emit("s", "1");
    receiver.wait_for(1);
    fwd.line();
    fwd.stop();
    for n in 2..=7 {
        server.emit("s", &n.to_string());
    }
    let fwd = Forward::start(&server, "s", &receiver.url(), &args);
    let got = receiver.wait_for(4);
    let bodies: Vec<&[u8]> = got.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [&b"1"[..], b"5", b"6", b"7"], "2 to 4 were evicted (--history 3)");
    fwd.wait_for_notice(&format!("warning: events after {first} were no longer kept by the server and are lost; resuming from "));
    receiver.assert_no_more(4);
    fwd.stop();
}

#[test]
fn forward_survives_a_server_restart_with_nothing_lost_or_repeated() {
    let dir = TempDir::new("forward-restart");
    let mut server = TestServer::start(&["--data-dir", dir.path()]);
    let port = server.addr.port();
    server.create_source("s");
    let receiver = Receiver::start();
    let fwd = Forward::start(&server, "s", &receiver.url(), &[]);
    for n in 0..3 {
        server.emit("s", &n.to_string());
    }
    receiver.wait_for(3);
    server.terminate();
    fwd.wait_for_notice("reconnecting");
    let listen = format!("127.0.0.1:{port}");
    let server = TestServer::start(&["--data-dir", dir.path(), "--listen", &listen]);
    // Emitted while the forwarder waits out its reconnect backoff: replayed from history.
    for n in 3..6 {
        server.emit("s", &n.to_string());
    }
    fwd.wait_for_notice("reconnected");
    for n in 6..9 {
        server.emit("s", &n.to_string());
    }
    let got = receiver.wait_for(9);
    let bodies = bodies(&got);
    assert_eq!(bodies, (0..9).map(|n| n.to_string()).collect::<Vec<_>>());
    receiver.assert_no_more(9);
    fwd.stop();
}

#[test]
#[cfg(not(feature = "tls"))]
fn an_https_target_is_refused_in_one_line() {
    let out = Command::new(support::bin())
        .args(["forward", "s", "--to", "https://localhost:3000/hooks"])
        .env("SSEHUB_URL", "http://127.0.0.1:1")
        .env("SSEHUB_API_KEY", KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!((out.status.code(), stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("built without TLS"), "{stderr}");
}

/// An HTTPS receiver (Python's http.server over ssl with `cert`): prints
/// `METHOD PATH HEXBODY` per request on stdout, answers 200.
#[cfg(feature = "tls")]
struct HttpsReceiver {
    child: Child,
    port: u16,
    lines: Lines<String>,
}

#[cfg(feature = "tls")]
impl HttpsReceiver {
    const SCRIPT: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        pass
    def any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        print(self.command, self.path, body.hex(), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    do_POST = do_PUT = do_GET = any
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

    fn start(certs: &support::tls::Certs) -> HttpsReceiver {
        let mut child = Command::new("python3")
            .args(["-c", Self::SCRIPT, &certs.path("server.pem"), &certs.path("server.key")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = lines.recv_timeout(WAIT).expect("the receiver's port").parse().unwrap();
        HttpsReceiver { child, port, lines }
    }
}

#[cfg(feature = "tls")]
impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg(feature = "tls")]
fn forward_to_an_https_receiver_verified_with_to_cacert_or_not_with_to_insecure() {
    let certs = support::tls::certs();
    let receiver = HttpsReceiver::start(&certs);
    let server = TestServer::start(&[]);
    server.create_source("hooks");
    let endpoint = endpoint_path(&server, "hooks");
    let to = format!("https://127.0.0.1:{}/in", receiver.port);
    let mut fwd = Forward::start(&server, "hooks", &to, &["--to-cacert", &certs.path("ca.pem")]);
    let body = b"{\"a\" :  1,\r\n \"b\": \"\xc3\xa9\"}";
    send(&server, "POST", &format!("{endpoint}/gh?x=1"), "Content-Type: application/json\r\n", body);
    let got = receiver.lines.recv_timeout(WAIT).expect("a request at the receiver");
    assert_eq!(got, format!("POST /in/gh?x=1 {}", hex(body)), "the exact body bytes");
    assert!(fwd.line().contains(" POST /in/gh?x=1 -> 200 ("));
    fwd.stop();

    let mut fwd = Forward::start(&server, "hooks", &to, &["--to-insecure"]);
    server.emit("hooks", r#"{"n":2}"#);
    let got = receiver.lines.recv_timeout(WAIT).expect("a request at the receiver");
    assert_eq!(got, format!("POST /in {}", hex(br#"{"n":2}"#)));
    assert!(fwd.line().contains(" POST /in -> 200 ("));
    let stderr = fwd.stderr();
    fwd.stop();
    assert_eq!(stderr.matches("--to-insecure: the certificate of").count(), 1, "{stderr}");
}

// ---- support ----------------------------------------------------------------

/// One delivery to an endpoint, with no API key.
fn send(server: &TestServer, method: &str, target: &str, headers: &str, body: &[u8]) {
    let mut s = server.connect();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n{headers}", server.addr).into_bytes();
    if !body.is_empty() {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let response = support::read_response(&mut BufReader::new(s));
    assert_eq!(response.status, 200, "{response:?}");
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    /// Lower-case names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// When its head had been read.
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// The local server `forward` sends to: records each request, answers the
/// next status (and extra header lines) of its script (200 once the script
/// is used up).
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Request>>>,
    statuses: Arc<Mutex<VecDeque<(u16, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::serve(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(port: u16) -> Receiver {
        Receiver::serve(TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn serve(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (got, statuses, stop) =
            (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(VecDeque::new())), Arc::new(AtomicBool::new(false)));
        let (g, s, st) = (got.clone(), statuses.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        if let Some(request) = read_request(&sock) {
                            let (status, headers) = s.lock().unwrap().pop_front().unwrap_or((200, String::new()));
                            g.lock().unwrap().push(request);
                            let answer = format!("HTTP/1.1 {status} X\r\n{headers}Content-Length: 2\r\nConnection: close\r\n\r\nok");
                            let _ = (&sock).write_all(answer.as_bytes());
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver { addr, got, statuses, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn authority(&self) -> String {
        self.addr.to_string()
    }

    fn script(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses.iter().map(|&s| (s, String::new())));
    }

    /// Answers with header lines (`Name: value\r\n` each) of their own.
    fn script_with(&self, answers: &[(u16, &str)]) {
        self.statuses.lock().unwrap().extend(answers.iter().map(|&(s, h)| (s, h.to_string())));
    }

    /// Waits until `n` requests came; returns them.
    fn wait_for(&self, n: usize) -> Vec<Request> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} requests, not {n}: {got:?}", got.len());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// No request beyond the first `n`, for a while (a repeat would show).
    fn assert_no_more(&self, n: usize) {
        thread::sleep(Duration::from_millis(500));
        let got = self.got.lock().unwrap();
        assert_eq!(got.len(), n, "{:?}", &got[n.min(got.len())..]);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(sock: &TcpStream) -> Option<Request> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let at = Instant::now();
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request { method, target, headers, body, at })
}

/// A running `ssehub forward`: its stdout line by line, its stderr as a whole.
struct Forward {
    child: Child,
    lines: Lines<String>,
    stderr: Arc<Mutex<String>>,
}

impl Forward {
    /// Starts it and waits until it follows the stream (it forwards events from then on).
    fn start(server: &TestServer, source: &str, to: &str, args: &[&str]) -> Forward {
        let before = server.metric("ssehub_subscribers");
        let mut child = Command::new(support::bin())
            .args(["forward", source, "--to", to])
            .args(args)
            .env("SSEHUB_URL", format!("http://{}", server.addr))
            .env("SSEHUB_API_KEY", KEY)
            .env("SSEHUB_FORWARD_BACKOFF_MS", "100")
            .env("XDG_CONFIG_HOME", std::env::temp_dir().join("ssehub-forward-test-no-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sink, mut pipe) = (stderr.clone(), child.stderr.take().unwrap());
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let fwd = Forward { child, lines, stderr };
        let deadline = Instant::now() + WAIT;
        while server.metric("ssehub_subscribers") <= before {
            assert!(Instant::now() < deadline, "forward does not follow the stream: {}", fwd.stderr());
            thread::sleep(Duration::from_millis(20));
        }
        fwd
    }

    fn line(&mut self) -> String {
        self.lines.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no line from forward; stderr: {}", self.stderr()))
    }

    fn lines(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.line()).collect()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_for_notice(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} on stderr: {}", self.stderr());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: exits 0.
    fn stop(mut self) {
        support::signal(self.child.id(), "INT");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{}", self.stderr());
                return;
            }
            assert!(Instant::now() < deadline, "forward ignores SIGINT: {}", self.stderr());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
