//! Tenant limits (SPEC §12): what one account may hold and how fast it may
//! emit, refused with a JSON answer that says which limit, and counted;
//! other accounts are unaffected.

mod support;

use std::time::Duration;

use support::{KEY, Response, TestServer, endpoint_path, send};

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
