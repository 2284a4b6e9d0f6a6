//! Issue 14, each defect over real sockets or a run of the binary:
//! lookups within the caller's account, SIGHUP, answers before bodies and
//! the bodies' budget, HTTP strictness, messages, observability, CORS and
//! a separate metrics listener, the first periodic handshake.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Frame, KEY, Response, TempDir, TestServer, read_response};

/// Sends `request` on a fresh connection; reads one response.
fn send(addr: SocketAddr, request: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(s))
}

/// Waits until the server's log holds `what`.
fn wait_log(server: &TestServer, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().contains(what) {
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the server binary with `args`, expecting it to refuse to start.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(support::bin()).args(args).env("RUST_LOG", "info").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_source_named_like_another_accounts_id_is_its_owners() {
    let dir = TempDir::new("keys");
    let keys = dir.0.join("keys");
    std::fs::write(&keys, "key-alice alice\nkey-bob bob\n").unwrap();
    let mut server = TestServer::start(&["--keys-file", keys.to_str().unwrap(), "--engine", "memory"]);
    server.key = "key-alice".into();
    let alice_id = server.create_source("orders")["id"].as_str().unwrap().to_string();

    // To bob, alice's id is exactly a missing source.
    server.key = "key-bob".into();
    let theirs = server.request("GET", &format!("/v1/sources/{alice_id}"), None);
    let missing = server.request("GET", "/v1/sources/dc_NoSuchSource0000", None);
    assert_eq!((theirs.status, &theirs.body), (404, &missing.body));

    // A source bob names like alice's id is bob's, by that name, everywhere.
    let bobs = server.create_source(&alice_id);
    let bobs_id = bobs["id"].as_str().unwrap();
    assert_ne!(bobs_id, alice_id);
    let r = server.request("GET", &format!("/v1/sources/{alice_id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.json()["data"]["id"].as_str(), r.json()["data"]["name"].as_str()), (Some(bobs_id), Some(alice_id.as_str())));
    let mut sse = server.subscribe(&format!("/sources/{alice_id}/sse"), "");
    let id = server.emit(&alice_id, "{\"to\":\"bob\"}");
    assert_eq!(sse.next_event().id(), id);

    // Alice still reaches her own source by its id.
    server.key = "key-alice".into();
    let r = server.request("GET", &format!("/v1/sources/{alice_id}"), None);
    assert_eq!(r.json()["data"]["name"], "orders");
    assert_eq!(server.request("GET", &format!("/v1/sources/{alice_id}/event_summaries"), None).json()["data"], serde_json::json!([]));
}

#[test]
fn sighup_reloads_the_keys_file_and_ends_streams_of_removed_keys() {
    let dir = TempDir::new("hup");
    let keys = dir.0.join("keys");
    std::fs::write(&keys, "key-alice alice\nkey-bob bob\nkey-moved alice\n").unwrap();
    let mut server = TestServer::start(&["--keys-file", keys.to_str().unwrap(), "--engine", "memory"]);
    server.key = "key-alice".into();
    server.create_source("a");
    let mut alice = server.subscribe("/sources/a/sse", "");
    let mut moved = server.subscribe_raw("/sources/a/sse", "Authorization: Bearer key-moved\r\n");
    assert!(moved.head().starts_with("HTTP/1.1 200"));
    server.key = "key-bob".into();
    server.create_source("b");
    let mut bob = server.subscribe("/sources/b/sse", "");

    // bob removed, carol added, key-moved now carol's.
    std::fs::write(&keys, "key-alice alice\nkey-carol carol\nkey-moved carol\n").unwrap();
    support::signal(server.pid(), "HUP");
    wait_log(&server, "SIGHUP: reloaded --keys-file");
    let line = server.logs().lines().filter(|l| l.contains("SIGHUP")).collect::<Vec<_>>().join("\n");
    assert!(line.ends_with("4 keys in 3 accounts; 2 streams of removed keys ended"), "{line}");
    assert!(!line.contains("key-"), "no key in the log: {line}");

    assert_eq!(bob.next_event(), Frame::End, "bob's stream ended");
    assert_eq!(moved.next_event(), Frame::End, "the stream of a key moved to another account ended");
    assert_eq!(server.request("GET", "/v1/sources", None).status, 401, "bob's key is gone");
    server.key = "key-carol".into();
    assert_eq!(server.request("GET", "/v1/sources", None).json()["data"], serde_json::json!([]));
    server.key = "key-moved".into();
    assert_eq!(server.request("GET", "/v1/sources/a", None).status, 404, "key-moved acts on carol's account now");
    server.key = "key-alice".into();
    let id = server.emit("a", "1");
    assert_eq!(alice.next_event().id(), id, "alice's stream stays open");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");

    // A keys file that no longer parses keeps the keys in use.
    std::fs::write(&keys, "lonely\n").unwrap();
    support::signal(server.pid(), "HUP");
    wait_log(&server, "keeping the keys in use");
    assert_eq!(server.request("GET", "/v1/sources/a", None).status, 200);
}

#[test]
fn sighup_without_a_keys_file_keeps_running() {
    let mut server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let mut sse = server.subscribe("/sources/s/sse", "");
    support::signal(server.pid(), "HUP");
    wait_log(&server, "SIGHUP: no --keys-file to reload");
    assert!(server.child.try_wait().unwrap().is_none(), "SIGHUP killed the server");
    let id = server.emit("s", "1");
    assert_eq!(sse.next_event().id(), id);
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn refusals_come_before_the_body_and_100_continue_only_when_accepted() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let endpoint = server.request("GET", "/v1/sources/s", None).json()["data"]["endpoint_url"].as_str().unwrap().to_string();
    let endpoint_path = &endpoint[endpoint.find("/e/").unwrap()..];
    let key = format!("Authorization: Bearer {KEY}\r\n");
    let heads = [
        ("POST /v1/sources/s/events", "Authorization: Bearer wrong\r\n", 401),
        ("POST /v1/sources/missing/events", key.as_str(), 404),
        ("PUT /v1/sources/s/events", key.as_str(), 405),
        ("POST /nowhere", "", 404),
        ("POST /e/NoSuchEndpointKey000000000/x", "", 404),
    ];
    for (line, auth, status) in heads {
        // The head alone: the answer must come without the body.
        let start = Instant::now();
        let r = send(server.addr, &format!("{line} HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n"));
        assert_eq!(r.status, status, "{line}: {}", r.body);
        assert!(r.json()["error"].is_string());
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{line}");
        assert!(start.elapsed() < Duration::from_secs(2), "{line} waited for its body");
    }
    assert_eq!(server.metric("ssehub_http_responses_total{class=\"1xx\"}"), 0, "no 100 Continue for a refused request");

    // Accepted: 100 Continue, then the body, then the answer; counted as 1xx.
    for (path, auth, status) in
        [("/v1/sources/s/events", format!("Authorization: Bearer {KEY}\r\n"), 202), (endpoint_path, String::new(), 200)]
    {
        let mut s = server.connect();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: 7\r\n\r\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_response(&mut r).status, 100, "{path}");
        s.write_all(b"{\"n\":1}").unwrap();
        assert_eq!(read_response(&mut r).status, status, "{path}");
    }
    server.wait_metric("ssehub_http_responses_total{class=\"1xx\"}", 2);
}

#[test]
fn request_bodies_in_flight_are_bounded() {
    let server =
        TestServer::start(&["--engine", "memory", "--source", "s", "--max-event-bytes", "800", "--max-body-bytes-in-flight", "1000"]);
    let head = |len: usize| {
        format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {len}\r\n\r\n")
    };
    // 800 bytes promised and not sent hold 800 of the 1000 (its 100 Continue
    // says the server has read the head).
    let mut first = server.connect();
    first.write_all(head(800).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n").as_bytes()).unwrap();
    let mut first_answers = BufReader::new(first.try_clone().unwrap());
    assert_eq!(read_response(&mut first_answers).status, 100);
    first.write_all(b"[").unwrap();
    let r = send(server.addr, &head(300));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "server busy: too many request bodies in flight");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // A chunked body counts as --max-event-bytes.
    let r = send(
        server.addr,
        &format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"),
    );
    assert_eq!(r.status, 503);
    // Bodies that fit still go, and the budget comes back once the first is read.
    let mut small = server.connect();
    small.write_all(head(3).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    small.write_all(b"[2]").unwrap();
    assert_eq!(read_response(&mut BufReader::new(small)).status, 202);
    first.write_all(format!("{} ]", vec!["1"; 399].join(",")).as_bytes()).unwrap();
    assert_eq!(read_response(&mut first_answers).status, 202);
    let mut again = server.connect();
    again.write_all(head(300).as_bytes()).unwrap();
    again.write_all(format!("\"{}\"", "x".repeat(298)).as_bytes()).unwrap();
    assert_eq!(read_response(&mut BufReader::new(again)).status, 202);
    assert!(server.logs().contains("reached --max-body-bytes-in-flight"), "{}", server.logs());
}

#[test]
fn host_and_authorization_are_checked_and_public_url_too() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let cases = [
        ("GET /healthz HTTP/1.1\r\n\r\n".to_string(), "malformed request: missing Host header"),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string(), "malformed request: more than one Host header"),
        (
            format!("GET /v1/sources HTTP/1.1\r\nHost: a\r\n{auth}Authorization: Bearer other\r\n\r\n"),
            "malformed request: more than one Authorization header",
        ),
        ("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), "malformed request: invalid character in the request target"),
    ];
    for (request, error) in cases {
        let r = send(server.addr, &request);
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some(error)), "{request:?}");
    }
    // Not UTF-8 in the path: not "invalid method" either.
    let mut s = server.connect();
    s.write_all(b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("malformed request: invalid character in the request target")));
    // HTTP/1.0 needs no Host.
    assert_eq!(send(server.addr, "GET /healthz HTTP/1.0\r\n\r\n").status, 200);

    let (code, stderr) = refused_start(&["serve", "--engine", "memory", "--listen", "127.0.0.1:0", "--public-url", "not a url"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr, "ssehub: --public-url: expected an http:// or https:// URL such as https://hooks.example.com\n");
}

#[test]
fn messages_say_what_is_wrong() {
    let (code, stderr) = refused_start(&["serve", "--engine", "memory", "--api-key", ""]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr, "ssehub: --api-key: the key is empty (give one, or leave --api-key out to have one generated)\n");

    let dir = TempDir::new("nostate");
    let missing = dir.0.join("state");
    let server = TestServer::start(&["--state-file", missing.to_str().unwrap()]);
    let logs = server.logs();
    assert!(logs.contains(&format!("--state-file {}: does not exist, nothing to import", missing.display())), "{logs}");
    assert!(!logs.contains("imported 0") && !logs.contains("restored"), "{logs}");
}

#[test]
fn close_lines_name_the_peer() {
    let server = TestServer::start(&["--engine", "memory"]);
    let mut s = server.connect();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r).status, 200);
    drop(r);
    drop(s);
    wait_log(&server, &format!("closed {me}: closed by peer"));
    assert!(!server.logs().contains("closed ?"));
}

#[test]
fn the_access_log_is_off_by_default_and_never_holds_secrets() {
    let start = |rust_log: &str| {
        let dir = TempDir::new("access");
        let mut command = Command::new(support::bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--engine", "memory", "--source", "s"])
            .env("RUST_LOG", rust_log)
            .current_dir(&dir.0);
        (TestServer::spawn(&mut command, KEY), dir)
    };
    let traffic = |server: &TestServer| {
        let endpoint = server.request("GET", "/v1/sources/s", None).json()["data"]["endpoint_url"].as_str().unwrap().to_string();
        let endpoint_key = endpoint.rsplit('/').next().unwrap().to_string();
        assert_eq!(server.raw_request("POST", &format!("/e/{endpoint_key}/hook?sig=abc"), "", Some("{}")).status, 200);
        server.emit("s", "[1,2]");
        let mut sse = server.subscribe_raw("/sources/s/sse?access_token=test-key", "");
        assert!(sse.head().starts_with("HTTP/1.1 200"));
        drop(sse);
        endpoint_key
    };

    let (quiet, _dir) = start("info");
    traffic(&quiet);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!quiet.logs().contains("ssehub::access"), "{}", quiet.logs());

    let (server, _dir2) = start("ssehub::access=info");
    let endpoint_key = traffic(&server);
    wait_log(&server, " GET /sources/s/sse 200 ");
    let logs = server.logs();
    assert!(logs.contains("listening on"), "the rest of the log stays at info: {logs}");
    let access: Vec<&str> = logs.lines().filter(|l| l.contains("ssehub::access")).collect();
    let emit = access.iter().find(|l| l.contains(" POST /v1/sources/s/events 202 ")).unwrap_or_else(|| panic!("{logs}"));
    // PEER METHOD PATH STATUS BYTES DURATION
    let words: Vec<&str> = emit.split_whitespace().rev().take(6).collect();
    assert!(words[0].ends_with("ms") && words[1].parse::<u64>().unwrap() > 0, "{emit}");
    assert!(words[5].parse::<SocketAddr>().is_ok(), "{emit}");
    assert!(access.iter().any(|l| l.contains(" POST /e/*/hook 200 ")), "{logs}");
    for secret in [KEY, &endpoint_key, "sig=abc", "access_token"] {
        assert!(!logs.contains(secret), "{secret} in the log: {logs}");
    }
}

#[test]
fn cors_for_v1_follows_cors_origin_and_preflights_come_before_authentication() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--cors-origin", "https://app.example,https://b.example"]);
    let app = "Origin: https://app.example\r\n";
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let preflight = server.raw_request(
        "OPTIONS",
        "/v1/sources/s/events",
        &format!("{app}Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n"),
        None,
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin").as_deref(), Some("https://app.example"));
    assert_eq!(preflight.header("vary").as_deref(), Some("Origin"));
    assert_eq!(preflight.header("access-control-allow-methods").as_deref(), Some("POST, DELETE"));
    assert_eq!(preflight.header("access-control-allow-headers").as_deref(), Some("Authorization, Content-Type, Last-Event-ID"));
    for (headers, status) in [(format!("{app}{auth}"), 200), (format!("{app}Authorization: Bearer wrong\r\n"), 401)] {
        let r = server.raw_request("GET", "/v1/sources", &headers, None);
        assert_eq!(r.status, status);
        assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example"), "{status}");
        assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    }
    let r = server.raw_request("POST", "/v1/sources/s/events", &format!("{app}{auth}"), Some("1"));
    assert_eq!((r.status, r.header("access-control-allow-origin").as_deref()), (202, Some("https://app.example")));
    // An origin not listed gets no CORS header, on success or error.
    for headers in [format!("Origin: https://evil.example\r\n{auth}"), "Origin: https://evil.example\r\n".to_string()] {
        let r = server.raw_request("GET", "/v1/sources", &headers, None);
        assert_eq!(r.header("access-control-allow-origin"), None, "{}", r.head);
    }
    // Streams: any origin, and their preflight is answered too.
    let r = server.raw_request("OPTIONS", "/sources/s/sse", &format!("{app}Access-Control-Request-Method: GET\r\n"), None);
    assert_eq!((r.status, r.header("access-control-allow-origin").as_deref()), (204, Some("*")));
    assert_eq!(r.header("access-control-allow-methods").as_deref(), Some("GET"));

    // Without --cors-origin: none on /v1, success or error; streams and webhooks keep `*`.
    let plain = TestServer::start(&["--engine", "memory", "--source", "s"]);
    for (headers, status) in [(format!("{app}{auth}"), 200), (app.to_string(), 401)] {
        let r = plain.raw_request("GET", "/v1/sources", &headers, None);
        assert_eq!((r.status, r.header("access-control-allow-origin")), (status, None));
    }
    let r = plain.raw_request("OPTIONS", "/v1/sources", &format!("{app}Access-Control-Request-Method: POST\r\n"), None);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (204, None));
    let mut sse = plain.subscribe_raw("/sources/s/sse", &format!("{app}{auth}"));
    assert!(sse.head().contains("Access-Control-Allow-Origin: *"));
    let missing = plain.raw_request("GET", "/sources/missing/sse", &auth, None);
    assert_eq!((missing.status, missing.header("access-control-allow-origin").as_deref()), (404, Some("*")));

    let any = TestServer::start(&["--engine", "memory", "--cors-origin", "*"]);
    for headers in [format!("{app}{auth}"), app.to_string()] {
        assert_eq!(any.raw_request("GET", "/v1/sources", &headers, None).header("access-control-allow-origin").as_deref(), Some("*"));
    }
}

#[test]
fn metrics_listen_moves_metrics_off_the_main_port() {
    let server = TestServer::start(&["--engine", "memory", "--metrics-listen", "127.0.0.1:0"]);
    let logs = server.logs();
    let addr: SocketAddr = logs
        .split("serving /metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{logs}"))
        .parse()
        .unwrap();
    let main = server.request("GET", "/metrics", None);
    assert_eq!((main.status, main.json()["error"].as_str()), (404, Some("no such path")));
    let metrics = send(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("ssehub_connections_open "), "{}", metrics.body);
    assert_eq!(send(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    let other = send(addr, &format!("GET /v1/sources HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"));
    assert_eq!(other.status, 404, "the metrics listener serves no API");
}

#[test]
fn the_first_periodic_handshake_waits_half_an_interval() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--handshake-interval", "1s"]);
    let streams: Vec<_> = (0..8)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(130));
            let mut sse = server.subscribe("/sources/s/sse", "");
            let opened = Instant::now();
            std::thread::spawn(move || {
                assert_eq!(sse.next(), Frame::Comment("sse-handshake".into()));
                (i, opened.elapsed())
            })
        })
        .collect();
    for t in streams {
        let (i, after) = t.join().unwrap();
        // The opening comment was read just after the server sent it: allow for that.
        assert!(after >= Duration::from_millis(480), "stream {i}: periodic handshake {after:?} after the opening one");
        assert!(after <= Duration::from_millis(1700), "stream {i}: {after:?}");
    }
}

/// Reads what comes until the server closes.
#[allow(dead_code)]
fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}
