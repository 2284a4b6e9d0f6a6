//! The core server over real sockets: the walk-through of docs/api.md, replay,
//! accounts, aliases, pipelining, slow subscribers, restarts, start-up
//! messages, `--metrics-listen` and the timing of periodic handshakes.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Frame, KEY, TempDir, TestServer, read_response, refused_start, send};

#[test]
fn walk_through_stream_then_emit() {
    let server = TestServer::start(&[]);
    let source = server.create_source("orders");
    let id = source["id"].as_str().unwrap();
    assert!(id.starts_with("dc_") && id.len() >= 17, "{id}");
    assert_eq!(source["sse_url"], format!("http://{}/sources/{id}/sse", server.addr));

    let mut sse = server.subscribe_raw("/sources/orders/sse", &format!("Authorization: Bearer {KEY}\r\n"));
    let head = sse.head();
    for line in
        ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-cache", "Connection: keep-alive", "X-Accel-Buffering: no"]
    {
        assert!(head.contains(line), "{line} missing in {head}");
    }
    assert!(!head.to_ascii_lowercase().contains("content-length") && !head.to_ascii_lowercase().contains("transfer-encoding"));
    let mut first = [0u8; 16];
    sse.r.read_exact(&mut first).unwrap();
    assert_eq!(&first, b":sse-handshake\n\n", "the body starts with the handshake");

    let event_id = server.emit("orders", "{\"total\": 12,\n \"note\": \"a  b\"}");
    let frame = sse.next_event();
    assert_eq!(frame.id(), event_id);
    let Frame::Event { data, .. } = &frame else { unreachable!() };
    let ms: u64 = event_id.split('-').next().unwrap().parse().unwrap();
    assert_eq!(
        data,
        &format!(
            "{{\"id\":\"{event_id}\",\"indexed_at_ms\":{ms},\"event\":{{\"total\":12,\"note\":\"a  b\"}},\
             \"metadata\":{{\"emitter_id\":\"{id}\",\"emit_id\":\"{event_id}\",\"name\":\"\"}}}}"
        )
    );
}

#[test]
fn handshake_comment_repeats_every_interval() {
    let server = TestServer::start(&["--handshake-interval", "200ms", "--source", "s"]);
    let mut sse = server.subscribe("/sources/s/sse", "");
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(sse.next(), Frame::Comment("sse-handshake".into()));
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "three handshakes took {took:?}");
}

#[test]
fn last_event_id_replays_exactly_the_missed_events() {
    let server = TestServer::start(&["--source", "orders"]);
    let mut sse = server.subscribe("/sources/orders/sse", "");
    let seen = server.emit("orders", "{\"n\":0}");
    assert_eq!(sse.next_event().id(), seen);
    drop(sse);
    let missed: Vec<String> = (1..=3).map(|n| server.emit("orders", &format!("{{\"n\":{n}}}"))).collect();

    let mut sse = server.subscribe("/sources/orders/sse", &format!("Last-Event-ID: {seen}\r\n"));
    for (n, id) in missed.iter().enumerate() {
        let frame = sse.next_event();
        assert_eq!(frame.id(), *id);
        assert_eq!(frame.envelope()["event"]["n"], n + 1);
    }
    let live = server.emit("orders", "{\"n\":4}");
    assert_eq!(sse.next_event().id(), live, "live follows replay with no duplicate");

    // ?last_event_id= for a first connection; an id older than all replays all.
    let mut sse = server.subscribe("/sources/orders/sse?last_event_id=1-0", "");
    let all: Vec<u64> = (0..5).map(|_| sse.next_event().envelope()["event"]["n"].as_u64().unwrap()).collect();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    let bad = server.subscribe_raw("/sources/orders/sse", &format!("Authorization: Bearer {KEY}\r\nLast-Event-ID: nonsense\r\n"));
    assert_eq!(read_response(&mut bad.r.into_inner().try_clone().map(BufReader::new).unwrap()).status, 400);
}

/// Reconnects repeatedly while events are emitted back to back: the
/// events seen across all connections are each event exactly once.
#[test]
fn no_gap_or_duplicate_at_the_replay_seam() {
    const EVENTS: u64 = 400;
    let server = TestServer::start(&["--source", "seam", "--history", "1000"]);
    let mut sse = server.subscribe("/sources/seam/sse", "");
    let emitter = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            for n in 0..EVENTS {
                let body = format!("{{\"n\":{n}}}");
                write!(
                    w,
                    "POST /v1/sources/seam/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                assert_eq!(read_response(&mut r).status, 202);
            }
        })
    };
    let mut got = Vec::new();
    let mut last_id = String::new();
    while got.len() < EVENTS as usize {
        let frame = sse.next_event();
        last_id = frame.id();
        got.push(frame.envelope()["event"]["n"].as_u64().unwrap());
        if got.len() % 37 == 0 {
            sse = server.subscribe("/sources/seam/sse", &format!("Last-Event-ID: {last_id}\r\n"));
        }
    }
    emitter.join().unwrap();
    assert_eq!(got, (0..EVENTS).collect::<Vec<_>>(), "last id {last_id}");
}

#[test]
fn accounts_cannot_see_each_others_sources() {
    let dir = std::env::temp_dir().join(format!("ssehub-keys-{}", std::process::id()));
    std::fs::write(&dir, "# two accounts\nkey-alice alice\nkey-bob bob\n").unwrap();
    let mut server = TestServer::start(&["--keys-file", dir.to_str().unwrap()]);
    server.key = "key-alice".into();
    let alice = server.create_source("orders");
    server.key = "key-bob".into();
    let id = alice["id"].as_str().unwrap();
    for path in [format!("/v1/sources/{id}"), "/v1/sources/orders".into(), format!("/v1/sources/{id}/event_summaries")] {
        let r = server.request("GET", &path, None);
        assert_eq!(r.status, 404, "bob reads {path}");
        assert_eq!(r.json()["error"], "no such source");
    }
    assert_eq!(server.request("POST", &format!("/v1/sources/{id}/events"), Some("1")).status, 404);
    assert_eq!(server.request("DELETE", &format!("/v1/sources/{id}"), None).status, 404);
    let stream = server.subscribe_raw(&format!("/sources/{id}/sse"), "Authorization: Bearer key-bob\r\n");
    assert_eq!(read_response(&mut stream.r.into_inner().try_clone().map(BufReader::new).unwrap()).status, 404);
    assert_eq!(server.request("GET", "/v1/sources", None).json()["data"], serde_json::json!([]));
    // Bob may use the same name in his own account.
    server.create_source("orders");
    server.key = "key-alice".into();
    assert_eq!(server.request("GET", "/v1/sources", None).json()["data"].as_array().unwrap().len(), 1);
    std::fs::remove_file(dir).unwrap();
}

#[test]
fn access_token_query_and_alias_urls() {
    let server = TestServer::start(&["--source", "orders"]);
    let id = server.request("GET", "/v1/sources/orders", None).json()["data"]["id"].as_str().unwrap().to_string();
    let mut streams = vec![
        server.subscribe(&format!("/v1/sources/{id}/sse"), ""),
        server.subscribe(&format!("/sse/dc/{id}/emits"), ""),
        server.subscribe("/v1/sources/orders/sse", ""),
    ];
    let mut query = server.subscribe_raw(&format!("/sources/orders/sse?access_token={KEY}"), "");
    assert!(query.head().starts_with("HTTP/1.1 200"));
    streams.push(query);
    let event = server.emit("orders", "\"hi\"");
    for sse in &mut streams {
        assert_eq!(sse.next_event().id(), event);
    }
    let wrong = server.subscribe_raw("/sources/orders/sse?access_token=nope", "");
    let r = read_response(&mut wrong.r.into_inner().try_clone().map(BufReader::new).unwrap());
    assert_eq!((r.status, r.header("www-authenticate").as_deref()), (401, Some("Bearer")));
    assert_eq!(
        server.raw_request("GET", &format!("/v1/sources?access_token={KEY}"), "", None).status,
        401,
        "query keys are for streams only"
    );
}

#[test]
fn deleting_a_source_ends_its_streams() {
    let server = TestServer::start(&["--source", "doomed", "--source", "kept"]);
    let mut doomed = server.subscribe("/sources/doomed/sse", "");
    let mut kept = server.subscribe("/sources/kept/sse", "");
    assert_eq!(server.request("DELETE", "/v1/sources/doomed", None).status, 204);
    assert_eq!(doomed.next_event(), Frame::End);
    assert_eq!(server.request("GET", "/v1/sources/doomed", None).status, 404);
    let id = server.emit("kept", "1");
    assert_eq!(kept.next_event().id(), id);
    server.wait_metric("ssehub_subscribers", 1);
}

#[test]
fn one_byte_at_a_time() {
    let server = TestServer::start(&["--source", "s"]);
    let mut sse = server.subscribe("/sources/s/sse", "");
    let mut s = server.connect();
    let body = "{\"slow\": true}";
    let req = format!(
        "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for b in req.bytes() {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(sse.next_event().envelope()["event"]["slow"], true);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(&["--source", "s"]);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let mut batch = String::new();
    for n in 0..5 {
        batch.push_str(&format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\n\r\n{n}"));
    }
    batch.push_str("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    batch.push_str(&format!(
        "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n2\r\n[5\r\n1\r\n]\r\n0\r\n\r\n"
    ));
    batch.push_str(&format!("GET /v1/sources/s/event_summaries?limit=100 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"));
    w.write_all(batch.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let statuses: Vec<u16> = (0..8).map(|_| read_response(&mut r).status).collect();
    assert_eq!(statuses[..7], [202, 202, 202, 202, 202, 200, 202]);
    w.write_all(format!("GET /v1/sources/s/event_summaries HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes()).unwrap();
    let summaries = read_response(&mut r).json();
    let events: Vec<String> = summaries["data"].as_array().unwrap().iter().map(|e| e["event"].to_string()).collect();
    assert_eq!(events, ["[5]", "4", "3", "2", "1", "0"], "newest first");
    assert_eq!(summaries["page_info"]["total_count"], 6);
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_and_others_get_everything() {
    const EVENTS: usize = 1000;
    let server = TestServer::start(&["--source", "s", "--max-subscriber-buffer", "65536"]);
    let stalled = server.subscribe("/sources/s/sse", "");
    stalled.r.get_ref().set_read_timeout(None).unwrap();
    let mut healthy = server.subscribe("/sources/s/sse", "");
    let reader = std::thread::spawn(move || {
        (0..EVENTS).map(|_| healthy.next_event().envelope()["event"]["n"].as_u64().unwrap()).collect::<Vec<_>>()
    });
    let pad = "x".repeat(20_000);
    for n in 0..EVENTS {
        server.emit("s", &format!("{{\"n\":{n},\"pad\":\"{pad}\"}}"));
    }
    assert_eq!(reader.join().unwrap(), (0..EVENTS as u64).collect::<Vec<_>>());
    assert_eq!(server.metric("ssehub_subscribers_dropped_slow_total"), 1);
    assert!(server.logs().contains("over --max-subscriber-buffer"), "one warn line says why");
    drop(stalled);
}

#[test]
fn event_ids_increase_across_a_restart() {
    let mut server = TestServer::start(&["--source", "s"]);
    let before = server.emit("s", "1");
    let (status, took) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    let server = TestServer::start(&["--source", "s", "--listen", &server.addr.to_string()]);
    let after = server.emit("s", "2");
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    assert!(parse(&after) > parse(&before), "{after} after {before}");
}

#[test]
fn sigterm_ends_open_streams_cleanly() {
    let mut server = TestServer::start(&["--source", "s"]);
    let mut sse = server.subscribe("/sources/s/sse", "");
    let (status, took) = server.terminate();
    assert!(status.success());
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    assert_eq!(sse.next_event(), Frame::End);
}

#[test]
fn a_state_file_of_the_version_before_is_imported() {
    let state = std::env::temp_dir().join(format!("ssehub-state-{}", std::process::id()));
    let envelope = |id: &str, n: u64| {
        format!(
            "{{\"id\":\"{id}\",\"indexed_at_ms\":1700000000000,\"event\":{{\"n\": {n}}},\"metadata\":{{\"emitter_id\":\"dc_kept0000000000000\",\"emit_id\":\"{id}\",\"name\":\"\"}}}}"
        )
    };
    let text = format!(
        "ssehub-state 1\nsource dc_kept0000000000000 default kept ENDPOINTKEY0000000000000 1700000000000 1700000000000-4\n\
         event dc_kept0000000000000 1700000000000-3 {}\nevent dc_kept0000000000000 1700000000000-4 {}\n",
        envelope("1700000000000-3", 3),
        envelope("1700000000000-4", 4)
    );
    std::fs::write(&state, text).unwrap();
    let server = TestServer::start(&["--state-file", state.to_str().unwrap(), "--history", "3"]);
    assert!(server.logs().contains("imported 1 sources and 2 events"), "{}", server.logs());
    let again = server.request("GET", "/v1/sources/kept", None).json()["data"].clone();
    assert_eq!((again["id"].as_str(), again["created_at"].as_u64()), (Some("dc_kept0000000000000"), Some(1700000000000)));
    assert!(again["endpoint_url"].as_str().unwrap().ends_with("/e/ENDPOINTKEY0000000000000"));
    let mut sse = server.subscribe("/sources/kept/sse", "Last-Event-ID: 1700000000000-3\r\n");
    let replayed = sse.next_event();
    assert_eq!(replayed.id(), "1700000000000-4");
    assert_eq!(replayed.envelope()["event"], serde_json::json!({"n": 4}), "payloads compacted as before");
    let next = server.emit("kept", "5");
    assert_eq!(sse.next_event().id(), next);
    assert!(next.as_str() > "1700000000000-4");
    assert_eq!(server.raw_request("POST", "/e/ENDPOINTKEY0000000000000", "", Some("{}")).status, 200, "the webhook URL still works");
    std::fs::remove_file(&state).unwrap();
}

#[test]
fn a_damaged_state_file_stops_the_start_with_one_line() {
    let state = std::env::temp_dir().join(format!("ssehub-bad-state-{}", std::process::id()));
    std::fs::write(&state, "not a state file\n").unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", "k", "--engine", "memory", "--state-file", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an ssehub state file"), "{stderr}");
    std::fs::remove_file(&state).unwrap();
}

/// `/metrics` as Prometheus's conventions want it: units last
/// (`_bytes_total`), the `process_*` figures its client libraries export,
/// a build info series, and responses by code beside their class.
#[test]
fn metrics_follow_prometheus_conventions() {
    let server = TestServer::start(&["--engine", "memory"]);
    server.create_source("s");
    let mut sse = server.subscribe("/sources/s/sse", "");
    server.emit("s", "{\"a\":1}");
    assert!(matches!(sse.next(), Frame::Event { .. }));
    assert_eq!(server.request("GET", "/v1/sources/nope", None).status, 404);
    server.wait_metric("ssehub_http_responses_total{class=\"4xx\"}", 1);
    let body = server.request("GET", "/metrics", None).body;
    let value = |name: &str| -> f64 {
        let line = body.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')));
        line.unwrap_or_else(|| panic!("no {name} in {body}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("ssehub_delivered_bytes_total") > 0.0, "{body}");
    assert!(!body.contains("ssehub_bytes_delivered_total"), "{body}");
    assert_eq!(value("ssehub_http_responses_by_code_total{code=\"404\"}"), 1.0, "{body}");
    assert_eq!(value("ssehub_http_responses_by_code_total{code=\"201\"}"), 1.0, "{body}");
    assert_eq!(value(&format!("ssehub_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0, "{body}");
    let fds = value("process_open_fds");
    assert!(fds >= 5.0 && fds <= value("process_max_fds"), "{body}");
    assert!(value("process_resident_memory_bytes") > 100_000.0, "{body}");
    assert!(value("process_cpu_seconds_total") >= 0.0, "{body}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now && started > now - 60.0, "{started} {now}");
    for family in ["process_open_fds", "process_cpu_seconds_total", "ssehub_delivered_bytes_total", "ssehub_http_responses_by_code_total"] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family}: {body}");
    }
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
