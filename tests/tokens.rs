//! Subscribe tokens (SPEC §2.1) over real sockets: what a token may read,
//! streams ending within a second of a token's expiry or revocation, a
//! deleted source's tokens, tokens across a restart, and never a token in
//! the log.

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Frame, KEY, Response, Sse, TempDir, TestServer};

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A token of `source` for `body` (`None`: no body); returns the answer.
fn create(server: &TestServer, source: &str, body: Option<&str>) -> Response {
    server.request("POST", &format!("/v1/sources/{source}/tokens"), body)
}

/// A token of `source` living `secs`: (token, expires_at).
fn token(server: &TestServer, source: &str, secs: u64) -> (String, u64) {
    let r = create(server, source, Some(&format!("{{\"expires_in_s\":{secs}}}")));
    assert_eq!(r.status, 201, "{}", r.body);
    let data = &r.json()["data"];
    (data["token"].as_str().unwrap().to_string(), data["expires_at"].as_u64().unwrap())
}

fn with_token(server: &TestServer, method: &str, path: &str, token: &str, body: Option<&str>) -> Response {
    server.raw_request(method, path, &format!("Authorization: Bearer {token}\r\n"), body)
}

/// A stream opened with `token` in the query: 200 and the handshake.
fn stream(server: &TestServer, path: &str, token: &str) -> Sse {
    let mut sse = server.subscribe_raw(&format!("{path}?access_token={token}"), "");
    let head = sse.head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(sse.next(), Frame::Comment("sse-handshake".into()));
    sse
}

/// Reads until the stream ends; when it did.
fn until_end(sse: &mut Sse) -> Instant {
    loop {
        if sse.next() == Frame::End {
            return Instant::now();
        }
    }
}

#[test]
fn a_token_reads_its_source_only() {
    let server = TestServer::start(&["--engine", "memory"]);
    let a = server.create_source("a");
    server.create_source("b");
    let id = a["id"].as_str().unwrap();
    let r = create(&server, "a", None);
    assert_eq!(r.status, 201, "{}", r.body);
    let data = &r.json()["data"];
    let tok = data["token"].as_str().unwrap().to_string();
    assert!(tok.starts_with("st_"), "{tok}");
    assert_eq!(data["source_id"], id);
    let life = data["expires_at"].as_u64().unwrap() as i64 - unix_ms() as i64;
    assert!((3_595_000..=3_600_000).contains(&life), "the default is an hour: {life} ms");

    // Its source's three stream routes, as Bearer and in the query; its summaries.
    for path in ["/sources/a/sse".to_string(), format!("/v1/sources/{id}/sse"), format!("/sse/dc/{id}/emits")] {
        stream(&server, &path, &tok);
        let mut sse = server.subscribe_raw(&path, &format!("Authorization: Bearer {tok}\r\n"));
        assert!(sse.head().starts_with("HTTP/1.1 200"));
    }
    let emitted = server.emit("a", "{\"n\":1}");
    let r = with_token(&server, "GET", "/v1/sources/a/event_summaries", &tok, None);
    assert_eq!((r.status, r.json()["data"][0]["id"].as_str()), (200, Some(emitted.as_str())));
    let r = server.raw_request("GET", &format!("/v1/sources/{id}/event_summaries?access_token={tok}"), "", None);
    assert_eq!(r.status, 200, "{}", r.body);

    // Everything else: 403, another source whether it exists or not too.
    for (method, path, body) in [
        ("GET", "/sources/b/sse", None),
        ("GET", "/sources/nope/sse", None),
        ("GET", "/v1/sources/b/event_summaries", None),
        ("POST", "/v1/sources/a/events", Some("{}")),
        ("DELETE", "/v1/sources/a/events", None),
        ("GET", "/v1/sources", None),
        ("POST", "/v1/sources", Some("{\"name\":\"c\"}")),
        ("GET", "/v1/sources/a", None),
        ("DELETE", "/v1/sources/a", None),
        ("POST", "/v1/sources/a/tokens", Some("{}")),
    ] {
        let r = with_token(&server, method, path, &tok, body);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    // A wrong token is a 401 like a wrong key.
    let mut wrong = tok.clone();
    wrong.pop();
    wrong.push('!');
    for t in [wrong.as_str(), "st_x"] {
        let r = with_token(&server, "GET", "/sources/a/sse", t, None);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    assert!(!server.emit("a", "{\"n\":2}").is_empty(), "the key still works");
}

#[test]
fn token_requests_are_checked() {
    let server = TestServer::start(&["--engine", "memory"]);
    server.create_source("a");
    for body in ["{\"expires_in_s\":0}", "{\"expires_in_s\":2592001}", "{\"expires_in_s\":\"60\"}", "{\"expires_in_s\":1.5}", "[]", "nope"]
    {
        let r = create(&server, "a", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let (_, at) = token(&server, "a", 2_592_000);
    assert!(at > unix_ms() + 2_591_990_000, "30 days is allowed");
    assert_eq!(create(&server, "a", Some("{}")).status, 201);
    assert_eq!(create(&server, "nope", None).status, 404);
    let r = server.raw_request("POST", "/v1/sources/a/tokens", "", Some("{}"));
    assert_eq!(r.status, 401, "a key is needed to make one");
    assert_eq!(server.request("GET", "/v1/sources/a/tokens", None).status, 405);

    let b = server.create_source("b");
    let (tok, _) = token(&server, "a", 60);
    assert_eq!(server.request("DELETE", &format!("/v1/sources/b/tokens/{tok}"), None).status, 404, "not b's token");
    assert_eq!(server.request("DELETE", "/v1/sources/a/tokens/st_unknown", None).status, 404);
    assert_eq!(server.request("DELETE", &format!("/v1/sources/a/tokens/{tok}"), None).status, 204);
    assert_eq!(server.request("DELETE", &format!("/v1/sources/a/tokens/{tok}"), None).status, 404, "already revoked");
    let r = with_token(&server, "GET", "/sources/a/sse", &tok, None);
    assert_eq!(r.status, 401, "revoked: {}", r.body);
    assert!(b["id"].is_string());
}

#[test]
fn a_stream_ends_within_a_second_of_its_tokens_expiry() {
    let server = TestServer::start(&["--engine", "memory", "--handshake-interval", "200ms"]);
    server.create_source("a");
    let (short, expires_at) = token(&server, "a", 2);
    let (long, _) = token(&server, "a", 60);
    let mut expiring = stream(&server, "/sources/a/sse", &short);
    let mut staying = stream(&server, "/sources/a/sse", &long);
    let mut keyed = server.subscribe("/sources/a/sse", "");
    server.emit("a", "{\"n\":1}");
    assert_eq!(expiring.next_event().envelope()["event"]["n"], 1, "it streams until then");
    until_end(&mut expiring);
    let late = unix_ms() as i64 - expires_at as i64;
    assert!((-50..1000).contains(&late), "ended {late} ms after the expiry");
    let r = with_token(&server, "GET", "/sources/a/sse", &short, None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired") || r.body.contains("invalid"), "{}", r.body);

    // The other streams go on and get what follows.
    let id = server.emit("a", "{\"n\":2}");
    assert_eq!(staying.next_event().envelope()["event"]["n"], 1);
    assert_eq!(staying.next_event().id(), id);
    assert_eq!(keyed.next_event().envelope()["event"]["n"], 1);
    assert_eq!(keyed.next_event().id(), id);
    server.wait_metric("ssehub_subscribers", 2);
}

#[test]
fn revoking_a_token_ends_its_streams() {
    let server = TestServer::start(&["--engine", "memory"]);
    server.create_source("a");
    let (tok, _) = token(&server, "a", 600);
    let (other, _) = token(&server, "a", 600);
    let mut streams: Vec<Sse> = (0..3).map(|_| stream(&server, "/sources/a/sse", &tok)).collect();
    let mut staying = stream(&server, "/sources/a/sse", &other);
    server.wait_metric("ssehub_subscribers", 4);
    let start = Instant::now();
    assert_eq!(server.request("DELETE", &format!("/v1/sources/a/tokens/{tok}"), None).status, 204);
    for sse in &mut streams {
        assert!(until_end(sse) - start < Duration::from_secs(1));
    }
    server.wait_metric("ssehub_subscribers", 1);
    let id = server.emit("a", "{}");
    assert_eq!(staying.next_event().id(), id);
    assert_eq!(with_token(&server, "GET", "/v1/sources/a/event_summaries", &tok, None).status, 401);
}

#[test]
fn deleting_a_source_revokes_its_tokens() {
    let server = TestServer::start(&["--engine", "memory"]);
    server.create_source("a");
    let (tok, _) = token(&server, "a", 600);
    let mut sse = stream(&server, "/sources/a/sse", &tok);
    assert_eq!(server.request("DELETE", "/v1/sources/a", None).status, 204);
    until_end(&mut sse);
    server.create_source("a");
    let r = with_token(&server, "GET", "/sources/a/sse", &tok, None);
    assert_eq!(r.status, 401, "not a token of the new source a: {}", r.body);
}

#[test]
fn tokens_survive_a_restart_and_never_reach_the_log_or_the_disk() {
    let dir = TempDir::new("tokens");
    let start = || {
        let mut command = Command::new(support::bin());
        command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--data-dir", dir.path()]).env("RUST_LOG", "trace");
        TestServer::spawn(&mut command, KEY)
    };
    let mut server = start();
    server.create_source("a");
    server.create_source("b");
    let (kept, _) = token(&server, "a", 600);
    let (revoked, _) = token(&server, "a", 600);
    let (of_deleted, _) = token(&server, "b", 600);
    let (expiring, expiry) = token(&server, "a", 1);
    assert_eq!(server.request("DELETE", &format!("/v1/sources/a/tokens/{revoked}"), None).status, 204);
    assert_eq!(server.request("DELETE", "/v1/sources/b", None).status, 204);
    let id = server.emit("a", "{\"n\":1}");
    let mut sse = server.subscribe_raw(&format!("/sources/a/sse?last_event_id=0&access_token={kept}"), "");
    assert!(sse.head().starts_with("HTTP/1.1 200"));
    assert_eq!(sse.next_event().id(), id);
    drop(sse);
    let r = server.raw_request("GET", &format!("/v1/sources/a/event_summaries?access_token={kept}"), "", None);
    assert_eq!(r.status, 200);
    let mut logs = server.logs();
    let (status, _) = server.terminate();
    assert!(status.success());
    // What the data dir keeps is a hash: no token's verifier is in any file.
    let files = files_under(std::path::Path::new(dir.path()));
    assert!(!files.is_empty());
    for tok in [&kept, &revoked, &of_deleted, &expiring] {
        let verifier = &tok.as_bytes()[tok.len() - 32..];
        for (path, bytes) in &files {
            assert!(!bytes.windows(verifier.len()).any(|w| w == verifier), "a token's verifier in {path:?}");
        }
    }
    // Start again once the short token has expired.
    while unix_ms() <= expiry {
        std::thread::sleep(Duration::from_millis(20));
    }

    let server = start();
    let mut sse = server.subscribe_raw(&format!("/sources/a/sse?access_token={kept}"), "Last-Event-ID: 0\r\n");
    assert!(sse.head().starts_with("HTTP/1.1 200"), "the token is kept");
    assert_eq!(sse.next(), Frame::Comment("sse-handshake".into()));
    assert_eq!(sse.next_event().id(), id);
    for (tok, why) in [(&revoked, "revoked"), (&of_deleted, "its source was deleted"), (&expiring, "expired")] {
        let r = with_token(&server, "GET", "/sources/a/sse", tok, None);
        assert_eq!(r.status, 401, "{why}: {}", r.body);
    }
    logs.push_str(&server.logs());
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "logged at trace:\n{logs}");
    for secret in [kept.as_str(), &revoked, &of_deleted, &expiring, KEY, "access_token"] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }
}

/// Every file below `dir`, with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}
