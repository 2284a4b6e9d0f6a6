//! Tenant limits (SPEC §12): what one account may hold and how fast it may
//! emit, refused with a JSON answer that says which limit, and counted;
//! other accounts are unaffected.

mod support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{KEY, Response, TestServer, endpoint_path, read_response, send};

/// A keys file in a fresh directory.
fn keys_file(dir: &support::TempDir, text: &str) -> String {
    let path = dir.0.join("keys");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn as_key(server: &TestServer, key: &str, method: &str, path: &str, body: Option<&str>) -> Response {
    server.raw_request(method, path, &format!("Authorization: Bearer {key}\r\n"), body)
}

/// A `429` of a rate: JSON saying so, and `Retry-After` in whole seconds.
fn assert_rate_limited(r: &Response, what: &str) -> u64 {
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with(what), "{error}");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    retry
}

fn limited(server: &TestServer, limit: &str) -> u64 {
    server.metric(&format!("ssehub_limited_total{{limit=\"{limit}\"}}"))
}

#[test]
fn an_emit_over_the_sources_rate_gets_429_then_passes_after_the_wait() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--source", "t", "--emit-rate", "2:2"]);
    server.emit("s", "1");
    server.emit("s", "2");
    let r = server.request("POST", "/v1/sources/s/events", Some("3"));
    let retry = assert_rate_limited(&r, "emit rate exceeded (2:2 events per second per source)");
    assert_eq!(server.metric("ssehub_events_emitted_total"), 2, "nothing emitted");
    let summaries = server.request("GET", "/v1/sources/s/event_summaries", None).json();
    assert_eq!(summaries["page_info"]["total_count"], 2);
    // Another source has its own bucket.
    server.emit("t", "1");
    std::thread::sleep(Duration::from_secs(retry));
    server.emit("s", "3");
    assert_eq!(limited(&server, "emit_rate"), 1);
    assert_eq!(server.metric("ssehub_http_responses_by_code_total{code=\"429\"}"), 1);
    server.wait_log("emit rate exceeded");
    assert!(!server.logs().lines().any(|l| l.contains("emit rate") && l.contains(KEY)), "no key in the log");
}

#[test]
fn fractional_rates_and_a_refused_emit_is_not_even_parsed() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--emit-rate", "0.5"]);
    server.emit("s", "1");
    // Not JSON, but refused for its rate before its body is looked at.
    let r = server.request("POST", "/v1/sources/s/events", Some("{not json"));
    assert_eq!(assert_rate_limited(&r, "emit rate exceeded (0.5:1 events per second per source)"), 2);
}

/// A refused body (not JSON, a bad signature) takes nothing from the rate:
/// the good emit after it passes.
#[test]
fn a_malformed_emit_or_a_badly_signed_delivery_takes_nothing_from_the_rate() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--emit-rate", "0.5:1"]);
    assert_eq!(server.request("POST", "/v1/sources/s/events", Some("{not json")).status, 400);
    let r = server.raw_request("POST", "/v1/sources/s/events", &format!("Authorization: Bearer {KEY}\r\nIdempotency-Key: \r\n"), Some("1"));
    assert_eq!(r.status, 400, "a malformed key: {}", r.body);
    let patch = r#"{"verify":{"scheme":"github","secret":"s3cret","reject_invalid":true}}"#;
    assert_eq!(server.request("PATCH", "/v1/sources/s", Some(patch)).status, 200);
    let path = endpoint_path(&server, "s");
    let r = server.raw_request("POST", &path, "Content-Type: application/json\r\nX-Hub-Signature-256: sha256=00\r\n", Some("{}"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(server.request("PATCH", "/v1/sources/s", Some(r#"{"verify":null}"#)).status, 200);
    server.emit("s", "1");
    assert_rate_limited(&server.request("POST", "/v1/sources/s/events", Some("2")), "emit rate exceeded");
    assert_eq!(limited(&server, "emit_rate"), 1);
}

#[test]
fn webhook_deliveries_count_against_the_rate() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--emit-rate", "2:2"]);
    let path = endpoint_path(&server, "s");
    let deliver = || server.raw_request("POST", &path, "Content-Type: application/json\r\n", Some("{\"n\":1}"));
    assert_eq!(deliver().status, 200);
    server.emit("s", "2");
    let r = deliver();
    assert_rate_limited(&r, "emit rate exceeded");
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("*"), "a sender's page can read the answer");
    // A preflight is no delivery: answered, and it takes nothing.
    let r = server.raw_request("OPTIONS", &path, "Origin: https://x.example\r\nAccess-Control-Request-Method: POST\r\n", None);
    assert_eq!(r.status, 204);
    assert_eq!(server.metric("ssehub_events_emitted_total"), 2);
    assert_eq!(limited(&server, "emit_rate"), 1);
}

/// A body still to come is refused from its head when the rate is spent:
/// the sender gets 429 without sending it.
#[test]
fn a_body_still_to_come_is_refused_from_its_head() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--emit-rate", "1:1"]);
    server.emit("s", "1");
    let head =
        format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100000\r\n\r\n{{\"a\":");
    let r = send(server.addr, &head);
    assert_rate_limited(&r, "emit rate exceeded");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}

#[test]
fn the_account_rate_counts_all_its_sources_and_no_other_account() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-other other\n");
    let server = TestServer::start(&["--engine", "memory", "--keys-file", &keys, "--account-emit-rate", "3:3"]);
    server.create_source("a");
    server.create_source("b");
    server.emit("a", "1");
    server.emit("b", "1");
    server.emit("a", "2");
    let r = server.request("POST", "/v1/sources/b/events", Some("2"));
    assert_rate_limited(&r, "emit rate exceeded (3:3 events per second per account)");
    assert_eq!(limited(&server, "account_emit_rate"), 1);
    // The other account's bucket is its own.
    assert_eq!(as_key(&server, "k-other", "POST", "/v1/sources", Some("{\"name\":\"a\"}")).status, 201);
    for n in 0..3 {
        let r = as_key(&server, "k-other", "POST", "/v1/sources/a/events", Some(&n.to_string()));
        assert_eq!(r.status, 202, "{}", r.body);
    }
}

#[test]
fn no_rate_set_emits_as_fast_as_they_come() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    for n in 0..50 {
        server.emit("s", &n.to_string());
    }
    assert_eq!(limited(&server, "emit_rate") + limited(&server, "account_emit_rate"), 0);
}

#[test]
fn bad_rates_are_refused_at_start() {
    for (flag, value) in
        [("--emit-rate", "0"), ("--emit-rate", "fast"), ("--account-emit-rate", "2:0.5"), ("--max-sources-per-account", "-1")]
    {
        let (code, stderr) = support::refused_start(&[flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[test]
fn a_source_beyond_the_accounts_limit_gets_403_and_another_account_is_unaffected() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-other other\n");
    let server = TestServer::start(&["--engine", "memory", "--keys-file", &keys, "--max-sources-per-account", "3"]);
    for name in ["a", "b", "c"] {
        server.create_source(name);
    }
    let r = server.request("POST", "/v1/sources", Some("{\"name\":\"d\"}"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "source limit reached (3 per account)");
    assert_eq!(server.request("GET", "/v1/sources/d", None).status, 404, "nothing created");
    for name in ["a", "b", "c"] {
        assert_eq!(as_key(&server, "k-other", "POST", "/v1/sources", Some(&format!("{{\"name\":\"{name}\"}}"))).status, 201);
    }
    // A delete makes room.
    assert_eq!(server.request("DELETE", "/v1/sources/a", None).status, 204);
    server.create_source("d");
    assert_eq!(limited(&server, "sources"), 1);
    server.wait_log("account default: source limit reached (3 per account) (answered 403)");
}

#[test]
fn a_token_beyond_the_sources_limit_gets_403() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--source", "t", "--max-tokens-per-source", "2"]);
    let first = server.create_token("s");
    server.create_token("s");
    let r = server.request("POST", "/v1/sources/s/tokens", Some("{}"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "token limit reached (2 live tokens per source)");
    server.create_token("t");
    // A revoked token no longer counts.
    assert_eq!(server.request("DELETE", &format!("/v1/sources/s/tokens/{first}"), None).status, 204);
    server.create_token("s");
    assert_eq!(limited(&server, "tokens"), 1);
}

#[test]
fn a_stream_beyond_the_accounts_limit_gets_429_json_never_a_stream() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-other other\n");
    let server = TestServer::start(&["--engine", "memory", "--keys-file", &keys, "--max-streams-per-account", "2"]);
    server.create_source("s");
    server.create_source("t");
    let token = server.create_token("t");
    let first = server.subscribe("/v1/sources/s/sse", "");
    // A stream opened with a token counts for the token's source's account.
    let mut by_token = server.subscribe_raw(&format!("/v1/sources/t/sse?access_token={token}"), "");
    assert!(by_token.head().starts_with("HTTP/1.1 200"));
    server.wait_metric("ssehub_subscribers", 2);
    let r = server.request("GET", "/v1/sources/s/sse", None);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.json()["error"], "stream limit reached (2 open streams per account)");
    let r = server.raw_request("GET", &format!("/v1/sources/t/sse?access_token={token}"), "", None);
    assert_eq!(r.status, 429);
    // Another account streams as it likes.
    assert_eq!(as_key(&server, "k-other", "POST", "/v1/sources", Some("{\"name\":\"s\"}")).status, 201);
    let mut other = server.subscribe_raw("/v1/sources/s/sse", "Authorization: Bearer k-other\r\n");
    assert!(other.head().starts_with("HTTP/1.1 200"));
    // A stream that ends makes room, as does a deleted source's.
    drop(first);
    server.wait_metric("ssehub_subscribers", 2);
    let _again = server.subscribe("/v1/sources/s/sse", "");
    assert_eq!(server.request("DELETE", "/v1/sources/t", None).status, 204);
    server.wait_metric("ssehub_subscribers", 2);
    let _third = server.subscribe("/v1/sources/s/sse", "");
    assert_eq!(limited(&server, "streams"), 2);
}

#[test]
fn keys_file_limits_per_account_and_a_sighup_that_changes_them() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-a alice sources=1 emit_rate=1:1 # alice is small\nk-b bob\nk-a2 alice tokens=none\n");
    let server = TestServer::start(&["--engine", "memory", "--keys-file", &keys]);
    let alice = |method: &str, path: &str, body: Option<&str>| as_key(&server, "k-a", method, path, body);
    assert_eq!(alice("POST", "/v1/sources", Some("{\"name\":\"s\"}")).status, 201);
    assert_eq!(alice("POST", "/v1/sources", Some("{\"name\":\"t\"}")).json()["error"], "source limit reached (1 per account)");
    assert_eq!(alice("POST", "/v1/sources/s/events", Some("1")).status, 202);
    assert_rate_limited(&alice("POST", "/v1/sources/s/events", Some("2")), "emit rate exceeded (1:1 events per second per source)");
    // Bob has the flags' limits.
    for name in ["s", "t"] {
        assert_eq!(as_key(&server, "k-b", "POST", "/v1/sources", Some(&format!("{{\"name\":\"{name}\"}}"))).status, 201);
    }
    for n in 0..3 {
        assert_eq!(as_key(&server, "k-b", "POST", "/v1/sources/s/events", Some(&n.to_string())).status, 202);
    }
    // Reloaded: alice may hold two sources and emit freely.
    std::fs::write(&keys, "k-a alice sources=2\nk-b bob streams=0\n").unwrap();
    support::signal(server.pid(), "HUP");
    server.wait_log("SIGHUP: reloaded --keys-file");
    assert_eq!(alice("POST", "/v1/sources", Some("{\"name\":\"t\"}")).status, 201);
    for n in 0..3 {
        assert_eq!(alice("POST", "/v1/sources/s/events", Some(&n.to_string())).status, 202);
    }
    assert_eq!(as_key(&server, "k-b", "GET", "/v1/sources/s/sse", None).status, 429, "bob may open no stream");
    // An unknown option is a load error: the file in use stays.
    std::fs::write(&keys, "k-a alice sources=5 colour=red\nk-b bob\n").unwrap();
    support::signal(server.pid(), "HUP");
    server.wait_log("keys file line 1: unknown option");
    assert!(server.logs().contains("keeping the keys in use"));
    assert_eq!(alice("POST", "/v1/sources", Some("{\"name\":\"u\"}")).status, 403, "still 2 sources");
}

#[test]
fn an_unknown_option_in_the_keys_file_refuses_to_start() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-a alice\nk-b bob sources=2 color=blue\n");
    let (code, stderr) = support::refused_start(&["--engine", "memory", "--keys-file", &keys]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("keys file line 2: unknown option"), "{stderr}");
}

/// Refusals are counted by limit in `/metrics`, and logged at warn once a
/// minute per account and limit (the rest at debug), naming the account.
#[test]
fn refusals_are_counted_and_warned_once_a_minute_per_account_and_limit() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-other other\n");
    let server = TestServer::start(&["--engine", "memory", "--keys-file", &keys, "--max-sources-per-account", "0", "--emit-rate", "1"]);
    for _ in 0..3 {
        assert_eq!(server.request("POST", "/v1/sources", Some("{\"name\":\"s\"}")).status, 403);
    }
    assert_eq!(as_key(&server, "k-other", "POST", "/v1/sources", Some("{\"name\":\"s\"}")).status, 403);
    assert_eq!(limited(&server, "sources"), 4);
    for limit in ["tokens", "streams", "emit_rate", "account_emit_rate"] {
        assert_eq!(limited(&server, limit), 0, "{limit}");
    }
    let logs = server.logs();
    let warned = |account: &str| {
        logs.lines().filter(|l| l.contains(" WARN ") && l.contains(&format!("account {account}: source limit reached"))).count()
    };
    assert_eq!((warned("default"), warned("other")), (1, 1), "{logs}");
    let held = logs.lines().filter(|l| l.contains("DEBUG") && l.contains("source limit reached")).count();
    assert_eq!(held, 2, "{logs}");
    assert!(!logs.contains(KEY) && !logs.contains("k-other"), "no key is logged");
}

/// `GET /v1/sources` is paged: `limit` (1..1000, default 100), `after` a
/// source of the account (the page before's `end_cursor`), oldest first.
#[test]
fn listing_is_paged_with_limit_after_and_page_info() {
    let dir = support::TempDir::new("keys");
    let keys = keys_file(&dir, "k-other other\n");
    let server = TestServer::start(&["--engine", "memory", "--keys-file", &keys]);
    assert_eq!(as_key(&server, "k-other", "POST", "/v1/sources", Some("{\"name\":\"theirs\"}")).status, 201);
    let ids: Vec<String> = (0..101).map(|n| server.create_source(&format!("s{n}"))["id"].as_str().unwrap().to_string()).collect();
    let page = |query: &str| {
        let r = server.request("GET", &format!("/v1/sources{query}"), None);
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        r.json()
    };
    let ids_of = |page: &serde_json::Value| -> Vec<String> {
        page["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    let first = page("");
    assert_eq!(first["page_info"]["total_count"], 101);
    assert_eq!(first["page_info"]["count"], 100, "100 by default");
    assert_eq!(ids_of(&first), ids[..100]);
    let p = page("?limit=2");
    assert_eq!(p["page_info"], serde_json::json!({"total_count": 101, "count": 2, "start_cursor": ids[0], "end_cursor": ids[1]}));
    let p = page(&format!("?limit=2&after={}", ids[1]));
    assert_eq!(ids_of(&p), ids[2..4]);
    assert_eq!(ids_of(&page("?after=s98&limit=1000")), ids[99..], "after by name too");
    let end = page(&format!("?after={}", ids[100]));
    assert_eq!(end["page_info"], serde_json::json!({"total_count": 101, "count": 0, "start_cursor": null, "end_cursor": null}));
    // The other account's view is its own.
    let theirs = as_key(&server, "k-other", "GET", "/v1/sources?limit=5", None).json();
    assert_eq!((theirs["page_info"]["total_count"].as_u64(), ids_of(&theirs).len()), (Some(1), 1));
    let their_id = theirs["data"][0]["id"].as_str().unwrap().to_string();
    for (query, error) in [
        ("?limit=0", "limit must be a number from 1 to 1000"),
        ("?limit=1001", "limit must be a number from 1 to 1000"),
        ("?limit=ten", "limit must be a number from 1 to 1000"),
        ("?after=nope", "after must name one of this account's sources"),
        (&format!("?after={their_id}"), "after must name one of this account's sources"),
    ] {
        let r = server.request("GET", &format!("/v1/sources{query}"), None);
        assert_eq!(r.status, 400, "{query}");
        assert!(r.json()["error"].as_str().unwrap().starts_with(error), "{query}: {}", r.body);
    }
}

/// Sources come back from the data dir in any order; the listing is
/// still oldest first after a restart, and pages follow it.
#[test]
fn the_listing_keeps_its_order_across_a_restart() {
    let dir = support::TempDir::new("data");
    let start = || TestServer::start(&["--data-dir", dir.path()]);
    let mut server = start();
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(server.create_source(&format!("s{n}"))["id"].as_str().unwrap().to_string());
        if n % 10 == 0 {
            // Some in later milliseconds, some in the same one.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let listed = |server: &TestServer, query: &str| -> Vec<String> {
        let page = server.request("GET", &format!("/v1/sources{query}"), None).json();
        page["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    let before = listed(&server, "?limit=1000");
    assert_eq!(before.len(), 40);
    assert!(server.terminate().0.success());
    let server = start();
    let after = listed(&server, "?limit=1000");
    let created_at =
        |server: &TestServer, id: &str| server.request("GET", &format!("/v1/sources/{id}"), None).json()["data"]["created_at"].as_u64();
    let times: Vec<_> = after.iter().map(|id| created_at(&server, id)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    let mut paged = listed(&server, "?limit=7");
    while paged.len() < 40 {
        let more = listed(&server, &format!("?limit=7&after={}", paged.last().unwrap()));
        assert!(!more.is_empty());
        paged.extend(more);
    }
    assert_eq!(paged, after, "pages follow the listing");
}

/// What the server said to a body's head sent with `Expect: 100-continue`.
enum Opened {
    /// `100 Continue`: its body is read (and holds its length of the budget).
    Reading(TcpStream, BufReader<TcpStream>),
    Refused(Response),
}

/// A webhook delivery to `path` announcing `len` bytes, head only, from
/// the client `forwarded_for` names (through `--trusted-proxy 127.0.0.1`),
/// or from 127.0.0.1.
fn open_body(server: &TestServer, path: &str, len: usize, forwarded_for: Option<&str>) -> Opened {
    let mut s = server.connect();
    let xff = forwarded_for.map_or(String::new(), |ip| format!("X-Forwarded-For: {ip}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n{xff}\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut answers = BufReader::new(s.try_clone().unwrap());
    match read_response(&mut answers) {
        r if r.status == 100 => Opened::Reading(s, answers),
        r => Opened::Refused(r),
    }
}

/// The same `503` as a full budget: JSON, `Retry-After: 1`, closed.
fn assert_busy(r: &Response) {
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "server busy: too many request bodies in flight");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}

/// A 60 KB JSON webhook whose body comes after its head (so it holds its
/// length of the budget while it is read), from 127.0.0.1.
fn deliver_60_kb(server: &TestServer, path: &str) -> Response {
    let body = format!("{{\"commits\":\"{}\"}}", "x".repeat(60_000));
    match open_body(server, path, body.len(), None) {
        Opened::Reading(mut s, mut answers) => {
            s.write_all(body.as_bytes()).unwrap();
            read_response(&mut answers)
        }
        Opened::Refused(r) => r,
    }
}

const FLOOD: &[&str] = &["--engine", "memory", "--max-body-bytes-in-flight", "4194304", "--trusted-proxy", "127.0.0.1"];

/// The trial's repro: 40 senders announce 512 KiB bodies to one webhook
/// endpoint and trickle them. They hold a quarter of the 4 MiB budget (two
/// bodies), the others get 503 at once, and another source's 60 KB
/// delivery still gets through (before: eight held all 4 MiB, and it got 503).
#[test]
fn a_trickling_flood_on_one_endpoint_holds_a_quarter_and_another_sources_webhook_gets_through() {
    let server = TestServer::start(&[FLOOD, &["--source", "flood", "--source", "other"]].concat());
    let (flood, other) = (endpoint_path(&server, "flood"), endpoint_path(&server, "other"));
    let mut reading = Vec::new();
    for i in 0..40 {
        // Each from an address of its own: the endpoint's share bounds them.
        match open_body(&server, &flood, 512 * 1024, Some(&format!("10.0.0.{}", i + 1))) {
            Opened::Reading(mut s, answers) => {
                s.write_all(b"{").unwrap();
                reading.push((s, answers));
            }
            Opened::Refused(r) => assert_busy(&r),
        }
    }
    assert_eq!(reading.len(), 2, "a quarter of 4 MiB is two bodies of 512 KiB");
    for (s, _) in &mut reading {
        s.write_all(b"\"").unwrap();
    }
    let r = deliver_60_kb(&server, &other);
    assert_eq!((r.status, r.body.as_str()), (200, "{\"success\":true}"));
    assert_eq!(limited(&server, "body_share"), 38);
    server.wait_log("request bodies to the webhook endpoint of source");
    assert!(!server.logs().contains(flood.trim_start_matches("/e/")), "never the endpoint's key in the log");
    // Bodies that complete give their share back.
    for (mut s, mut answers) in reading {
        s.write_all(format!("{}\"}}", "x".repeat(512 * 1024 - 3)).as_bytes()).unwrap();
        assert_eq!(read_response(&mut answers).status, 200);
    }
    assert!(matches!(open_body(&server, &flood, 512 * 1024, Some("10.0.0.99")), Opened::Reading(..)));
}

/// One client address announcing bodies to two endpoints holds a quarter
/// of the budget over both; another address still gets through to either.
#[test]
fn one_client_address_holds_a_quarter_over_all_endpoints() {
    let server = TestServer::start(&[FLOOD, &["--source", "a", "--source", "b"]].concat());
    let (a, b) = (endpoint_path(&server, "a"), endpoint_path(&server, "b"));
    let mut reading = Vec::new();
    for i in 0..20 {
        let path = if i % 2 == 0 { &a } else { &b };
        match open_body(&server, path, 512 * 1024, Some("198.51.100.9")) {
            Opened::Reading(s, answers) => reading.push((s, answers)),
            Opened::Refused(r) => assert_busy(&r),
        }
    }
    assert_eq!(reading.len(), 2, "one address: two bodies of 512 KiB over both endpoints");
    assert_eq!(limited(&server, "body_share"), 18);
    server.wait_log("request bodies from 198.51.100.9 hold their share of --max-body-bytes-in-flight (1048576 bytes)");
    // Another address, to the endpoint that has room.
    let r = deliver_60_kb(&server, &b);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A body that trickles below the floor after its first seconds is cut
/// with 408; one that keeps up is read. The floor is 1 KiB/s after 5 s;
/// here `SSEHUB_BODY_FLOOR` (a hidden variable for tests) makes it apply
/// after 300 ms, so the test does not wait 5 s.
#[test]
fn a_trickled_body_is_cut_with_408_once_the_floor_applies() {
    let mut command = std::process::Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--engine", "memory", "--source", "s"]);
    let server = TestServer::spawn(command.env("SSEHUB_BODY_FLOOR", "300:1024"), KEY);
    let path = endpoint_path(&server, "s");
    let Opened::Reading(mut slow, mut slow_answers) = open_body(&server, &path, 10_000, None) else { panic!("refused") };
    let started = Instant::now();
    // A body at 10 KB/s: above the floor, read to the end.
    let Opened::Reading(mut steady, mut steady_answers) = open_body(&server, &path, 10_000, None) else { panic!("refused") };
    let cut = std::thread::spawn(move || {
        // A byte every 50 ms (20 B/s) until the answer comes.
        slow.set_nonblocking(true).unwrap();
        loop {
            let _ = slow.write(b" ");
            std::thread::sleep(Duration::from_millis(50));
            let mut peek = [0; 1];
            match slow.peek(&mut peek) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        slow.set_nonblocking(false).unwrap();
        (read_response(&mut slow_answers), started.elapsed())
    });
    let body = format!("[\"{}\"]", "x".repeat(9_996));
    for chunk in body.as_bytes().chunks(500) {
        steady.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read_response(&mut steady_answers).status, 200, "a body above the floor is read for as long as it takes");
    let (r, after) = cut.join().unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (408, Some("request body too slow")));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(after >= Duration::from_millis(300) && after < Duration::from_secs(5), "cut after {after:?}");
    assert_eq!(limited(&server, "body_rate"), 1);
    assert_eq!(server.metric("ssehub_http_responses_by_code_total{code=\"408\"}"), 1);
    assert_eq!(server.metric("ssehub_events_emitted_total"), 1, "the cut body emitted nothing");
    server.wait_log("too slow");
}
