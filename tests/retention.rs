//! Retention per source (SPEC §10) through the real binary: bounds by
//! count, age and bytes set at create and by PATCH, their defaults from
//! flags, the gap frame for what they evicted, and a restart of the log
//! engine.

mod support;

use std::time::{Duration, Instant};

use support::{Frame, TestServer};

fn create(server: &TestServer, body: &str) -> serde_json::Value {
    let r = server.request("POST", "/v1/sources", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["data"].clone()
}

fn summaries(server: &TestServer, source: &str) -> serde_json::Value {
    let r = server.request("GET", &format!("/v1/sources/{source}/event_summaries?limit=1000"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn retained(server: &TestServer, source: &str) -> u64 {
    summaries(server, source)["page_info"]["total_count"].as_u64().unwrap()
}

fn patch(server: &TestServer, source: &str, body: &str) -> serde_json::Value {
    let r = server.request("PATCH", &format!("/v1/sources/{source}"), Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"]["retention"].clone()
}

/// Waits until `source` retains `want` events; how long that took.
fn wait_retained(server: &TestServer, source: &str, want: u64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = retained(server, source);
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{source} still retains {got}, not {want}, after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gap frame a resume after `after` gets first.
fn gap_of_resume(server: &TestServer, source: &str, after: &str) -> serde_json::Value {
    let mut sse = server.subscribe(&format!("/sources/{source}/sse"), &format!("Last-Event-ID: {after}\r\n"));
    match sse.next_event() {
        Frame::Named { event, data } if event == "gap" => serde_json::from_str(&data).unwrap(),
        other => panic!("expected the gap frame, got {other:?}"),
    }
}

#[test]
fn an_age_bound_empties_summaries_on_time_and_a_resume_from_before_gets_the_gap() {
    let server = TestServer::start(&["--engine", "memory"]);
    let s = create(&server, r#"{"name":"aged","retention":{"max_age_s":2}}"#);
    assert_eq!(s["retention"], serde_json::json!({"max_events":100,"max_age_s":2,"max_bytes":null}), "the effective values");
    let id = s["id"].as_str().unwrap();
    let before = Instant::now();
    let first = server.emit(id, r#"{"n":1}"#);
    server.emit(id, r#"{"n":2}"#);
    assert_eq!(retained(&server, id), 2);
    wait_retained(&server, id, 0, Duration::from_secs(8));
    let took = before.elapsed();
    assert!(took >= Duration::from_millis(1900), "evicted after {took:?}, before its 2 s");
    assert_eq!(gap_of_resume(&server, id, &first), serde_json::json!({"after": first, "resumed_from": null, "lost": "unknown"}));
    // A source without an age bound keeps its events meanwhile.
    let kept = server.create_source("kept")["id"].as_str().unwrap().to_string();
    server.emit(&kept, "1");
    assert_eq!(retained(&server, &kept), 1);
}

#[test]
fn patched_bounds_take_effect_at_once_and_the_gap_tells_of_them() {
    let server = TestServer::start(&[]);
    let id = server.create_source("p")["id"].as_str().unwrap().to_string();
    let ids: Vec<String> = (0..10).map(|n| server.emit(&id, &format!("{{\"n\":{n}}}"))).collect();
    let r = patch(&server, &id, r#"{"retention":{"max_events":3}}"#);
    assert_eq!(r, serde_json::json!({"max_events":3,"max_age_s":null,"max_bytes":null}));
    assert_eq!(retained(&server, &id), 3, "at once, in the answer's turn");
    let gap = gap_of_resume(&server, &id, &ids[2]);
    assert_eq!((gap["after"].as_str(), gap["resumed_from"].as_str()), (Some(ids[2].as_str()), Some(ids[7].as_str())));
    // Bytes: a bound below what three retain keeps the newest that fit; the newest always.
    let big = format!("\"{}\"", "x".repeat(3000));
    let newest = server.emit(&id, &big);
    assert_eq!(patch(&server, &id, r#"{"retention":{"max_bytes":1024}}"#)["max_bytes"], 1024);
    let left = summaries(&server, &id);
    assert_eq!(left["page_info"]["total_count"], 1, "only the newest, larger than the bound: {left}");
    assert_eq!(left["data"][0]["id"], newest.as_str());
    // null: the server's defaults again (what was evicted stays evicted).
    let r = patch(&server, &id, r#"{"retention":null}"#);
    assert_eq!(r, serde_json::json!({"max_events":100,"max_age_s":null,"max_bytes":null}));
    assert_eq!(retained(&server, &id), 1);
    // Age: events older than a new bound go at once.
    server.emit(&id, "1");
    let before = Instant::now();
    patch(&server, &id, r#"{"retention":{"max_age_s":1}}"#);
    wait_retained(&server, &id, 0, Duration::from_secs(8));
    let took = before.elapsed();
    assert!(took <= Duration::from_secs(3), "evicted {took:?} after the bound was set, for an event a second old");
    // Setting the signature check alone leaves the retention as it is.
    let r = server.request("PATCH", &format!("/v1/sources/{id}"), Some(r#"{"verify":null}"#));
    assert_eq!(r.json()["data"]["retention"]["max_age_s"], 1);
}

#[test]
fn bounds_out_of_range_are_refused() {
    let server = TestServer::start(&["--engine", "memory"]);
    let id = server.create_source("r")["id"].as_str().unwrap().to_string();
    let table = [
        (r#"{"max_events":0}"#, "retention.max_events must be a whole number from 1 to 100000"),
        (r#"{"max_events":100001}"#, "retention.max_events must be a whole number from 1 to 100000"),
        (r#"{"max_age_s":0}"#, "retention.max_age_s must be a whole number from 1 to 31536000"),
        (r#"{"max_age_s":31536001}"#, "retention.max_age_s must be a whole number from 1 to 31536000"),
        (r#"{"max_bytes":1023}"#, "retention.max_bytes must be a whole number from 1024 to 2147483648"),
        (r#"{"max_bytes":2147483649}"#, "retention.max_bytes must be a whole number from 1024 to 2147483648"),
        (r#"{"max_events":-1}"#, "retention.max_events must be a whole number from 1 to 100000"),
        (r#"{"max_events":"5"}"#, "retention.max_events must be a whole number from 1 to 100000"),
        (r#"{"max_events":2.5}"#, "retention.max_events must be a whole number from 1 to 100000"),
        (r#"{"max_size":5}"#, "retention has no member \"max_size\" (max_events, max_age_s, max_bytes)"),
        ("5", "retention must be {\"max_events\":N,\"max_age_s\":S,\"max_bytes\":B} (each optional)"),
    ];
    for (retention, want) in table {
        let r = server.request("POST", "/v1/sources", Some(&format!(r#"{{"name":"x","retention":{retention}}}"#)));
        assert_eq!((r.status, r.json()["error"].as_str().unwrap_or_default()), (400, want), "create with {retention}");
        let r = server.request("PATCH", &format!("/v1/sources/{id}"), Some(&format!(r#"{{"retention":{retention}}}"#)));
        assert_eq!((r.status, r.json()["error"].as_str().unwrap_or_default()), (400, want), "PATCH with {retention}");
    }
    assert_eq!(server.request("GET", "/v1/sources/x", None).status, 404, "no source made by a refused create");
    let edges = create(&server, r#"{"name":"edges","retention":{"max_events":100000,"max_age_s":31536000,"max_bytes":2147483648}}"#);
    assert_eq!(edges["retention"], serde_json::json!({"max_events":100000,"max_age_s":31536000,"max_bytes":2147483648u64}));
}

#[test]
fn defaults_come_from_flags() {
    let server = TestServer::start(&["--engine", "memory", "--history", "7", "--history-max-age", "1h", "--history-max-bytes", "4096"]);
    let s = server.create_source("d");
    assert_eq!(s["retention"], serde_json::json!({"max_events":7,"max_age_s":3600,"max_bytes":4096}));
    let own = create(&server, r#"{"name":"own","retention":{"max_events":50,"max_bytes":null}}"#);
    assert_eq!(own["retention"], serde_json::json!({"max_events":50,"max_age_s":3600,"max_bytes":4096}), "null and absent: the defaults");
    let id = s["id"].as_str().unwrap();
    let payload = format!("\"{}\"", "y".repeat(1000));
    let ids: Vec<String> = (0..6).map(|_| server.emit(id, &payload)).collect();
    let left = summaries(&server, id);
    let bytes: usize = left["data"].as_array().unwrap().iter().map(|e| e.to_string().len()).sum();
    assert!(bytes <= 4096, "{bytes} bytes retained");
    assert_eq!(left["data"][0]["id"], ids[5].as_str(), "the newest stays");
    assert_eq!(left["page_info"]["total_count"], 3, "three envelopes of ~1.1 KB fit in 4096 bytes");
    let listed = server.request("GET", "/v1/sources", None).json();
    let listed_own = listed["data"].as_array().unwrap().iter().find(|s| s["name"] == "own").cloned().unwrap();
    assert_eq!(listed_own["retention"]["max_events"], 50, "the list shows them too");
}

#[test]
fn the_log_engine_keeps_retention_across_a_restart_and_evicts_what_expired_while_down() {
    let dir = support::TempDir::new("retention");
    let args = ["--data-dir", dir.path()];
    let (aged, counted, first, emitted) = {
        let mut server = TestServer::start(&args);
        let aged = create(&server, r#"{"name":"aged","retention":{"max_age_s":2,"max_events":50}}"#)["id"].as_str().unwrap().to_string();
        let counted = server.create_source("counted")["id"].as_str().unwrap().to_string();
        let emitted = Instant::now();
        let first = server.emit(&aged, "1");
        server.emit(&aged, "2");
        for n in 0..5 {
            server.emit(&counted, &n.to_string());
        }
        patch(&server, &counted, r#"{"retention":{"max_events":2}}"#);
        server.terminate();
        (aged, counted, first, emitted)
    };
    // Down past the age bound: the condition is the clock itself.
    while emitted.elapsed() < Duration::from_millis(2100) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = TestServer::start(&args);
    assert_eq!(retained(&server, &aged), 0, "what expired while down is gone before the first request");
    let s = server.request("GET", &format!("/v1/sources/{aged}"), None).json();
    assert_eq!(s["data"]["retention"], serde_json::json!({"max_events":50,"max_age_s":2,"max_bytes":null}), "the setting survives");
    assert_eq!(gap_of_resume(&server, &aged, &first)["resumed_from"], serde_json::Value::Null);
    let s = server.request("GET", &format!("/v1/sources/{counted}"), None).json();
    assert_eq!(s["data"]["retention"]["max_events"], 2);
    assert_eq!(retained(&server, &counted), 2);
    // The bound keeps working after the restart.
    server.emit(&aged, "3");
    assert_eq!(retained(&server, &aged), 1);
    wait_retained(&server, &aged, 0, Duration::from_secs(8));
}
