//! The `redis` engine over real processes: several ssehub nodes on one
//! real `redis-server` (started per test on a free port, its own dir)
//! sharing sources: delivery across nodes, sources, retention, tokens and
//! signature checks, idempotency keys and `--reuse-port`. Redis going away
//! or refusing: tests/redis_links.rs; nodes behind and resumes across
//! restarts: tests/redis_catchup.rs; failovers: tests/redis_failover.rs.
#![cfg(feature = "redis")]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::redis::{healthz, node, source_names, summary_ids};
use support::{Frame, KeepAlive, RedisServer, TestServer, wait_until};

/// 3 nodes × 20 sources × 2 subscribers per source and node; 3,000 emits
/// spread over the nodes: every subscriber sees exactly its source's
/// history, in id order, with no loss and no duplicate.
#[test]
fn three_nodes_deliver_every_event_once_in_order() {
    const SOURCES: usize = 20;
    const PER_NODE: usize = 1000;
    let redis = RedisServer::start();
    let nodes: Vec<TestServer> = (0..3).map(|_| node(&redis, &["--history", "10000"])).collect();
    for s in 0..SOURCES {
        nodes[s % 3].create_source(&format!("s{s}"));
    }
    for n in &nodes {
        wait_until(Duration::from_secs(1), "every node knows every source", || source_names(n).len() == SOURCES);
    }
    let per_source = 3 * PER_NODE / SOURCES;
    let mut readers = Vec::new();
    for n in &nodes {
        for s in 0..SOURCES {
            for _ in 0..2 {
                let mut sse = n.subscribe(&format!("/sources/s{s}/sse"), "");
                readers.push(std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while got.len() < per_source {
                        match sse.next_event() {
                            Frame::Event { id, data } => {
                                let env: serde_json::Value = serde_json::from_str(&data).unwrap();
                                got.push((id.unwrap(), env["event"].to_string()));
                            }
                            other => panic!("stream s{s}: {other:?} after {} events", got.len()),
                        }
                    }
                    (s, got)
                }));
            }
        }
    }
    for n in &nodes {
        n.wait_metric("ssehub_subscribers", (SOURCES * 2) as u64);
    }
    let emitters: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let addr = n.addr;
            std::thread::spawn(move || {
                let mut c = KeepAlive::new(addr);
                let mut acked = Vec::new();
                for k in 0..PER_NODE {
                    let s = (k + i * 7) % SOURCES;
                    let payload = format!("{{\"node\":{i},\"k\":{k}}}");
                    let r = c.request("POST", &format!("/v1/sources/s{s}/events"), &payload);
                    assert_eq!(r.status, 202, "{}", r.body);
                    let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
                    acked.push((s, r.json()["id"].as_str().unwrap().to_string(), value.to_string()));
                }
                acked
            })
        })
        .collect();
    let mut history: HashMap<usize, Vec<(String, String)>> = HashMap::new();
    for e in emitters {
        for (s, id, payload) in e.join().unwrap() {
            history.entry(s).or_default().push((id, payload));
        }
    }
    let key = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    for list in history.values_mut() {
        list.sort_by_key(|(id, _)| key(id));
        assert!(list.windows(2).all(|w| key(&w[0].0) < key(&w[1].0)), "ids unique per source");
    }
    for r in readers {
        let (s, got) = r.join().unwrap();
        assert_eq!(got, history[&s], "subscriber of s{s}: exactly the history, in order");
    }
    // Every node's history agrees.
    for n in &nodes {
        let r = n.request("GET", "/v1/sources/s3/event_summaries?limit=5", None);
        let ids: Vec<String> = r.json()["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
        let want: Vec<String> = history[&3].iter().rev().take(5).map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, want);
    }
}

/// A subscriber reads part of a stream on B, goes, and resumes on C with
/// Last-Event-ID: the rest arrives, nothing twice, nothing missing.
#[test]
fn a_subscriber_moves_to_another_node_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis, &[]), node(&redis, &[]), node(&redis, &[]));
    a.create_source("moving");
    wait_until(Duration::from_secs(1), "b and c know the source", || source_names(&b).len() == 1 && source_names(&c).len() == 1);
    let mut on_b = b.subscribe("/sources/moving/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(if i % 2 == 0 { &a } else { &c }.emit("moving", &format!("{{\"i\":{i}}}")));
    }
    for id in &ids[..5] {
        assert_eq!(&on_b.next_event().id(), id);
    }
    drop(on_b);
    for i in 10..20 {
        ids.push(if i % 2 == 0 { &b } else { &a }.emit("moving", &format!("{{\"i\":{i}}}")));
    }
    let mut on_c = c.subscribe("/sources/moving/sse", &format!("Last-Event-ID: {}\r\n", ids[4]));
    for (i, id) in ids.iter().enumerate().skip(5) {
        let f = on_c.next_event();
        assert_eq!(&f.id(), id);
        assert_eq!(f.envelope()["event"]["i"], i);
    }
    // Then live, from any node.
    let last = a.emit("moving", "{\"i\":20}");
    assert_eq!(on_c.next_event().id(), last);
}

/// Creates, deletes and clears on one node take effect on the others
/// within a second; a deleted source's streams end everywhere; a name is
/// unique across nodes.
#[test]
fn sources_change_everywhere_within_a_second() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let created = a.create_source("orders");
    let id = created["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(1), "b knows the source", || b.request("GET", &format!("/v1/sources/{id}"), None).status == 200);
    let on_b = b.request("GET", "/v1/sources/orders", None).json()["data"].clone();
    assert_eq!(on_b["endpoint_url"].as_str().unwrap().rsplit('/').next(), created["endpoint_url"].as_str().unwrap().rsplit('/').next());
    let r = b.request("POST", "/v1/sources", Some("{\"name\":\"orders\"}"));
    assert_eq!(r.status, 409, "{}", r.body);
    // Webhooks work on any node.
    let endpoint = created["endpoint_url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let r = b.raw_request("POST", &format!("/e/{endpoint}/hook"), "", Some("{\"x\":1}"));
    assert_eq!(r.status, 200, "{}", r.body);
    a.emit("orders", "{\"y\":2}");
    let summaries =
        |n: &TestServer| n.request("GET", "/v1/sources/orders/event_summaries", None).json()["page_info"]["total_count"].clone();
    wait_until(Duration::from_secs(1), "both events on both nodes", || summaries(&a) == 2 && summaries(&b) == 2);
    // Clear on b: a's history empties.
    assert_eq!(b.request("DELETE", "/v1/sources/orders/events", None).status, 202);
    wait_until(Duration::from_secs(1), "a's history cleared", || summaries(&a) == 0);
    // Delete on a: b's stream ends.
    let mut stream = b.subscribe("/sources/orders/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let started = Instant::now();
    assert_eq!(a.request("DELETE", "/v1/sources/orders", None).status, 204);
    assert_eq!(stream.next_event(), Frame::End);
    assert!(started.elapsed() < Duration::from_secs(1), "ended in {:?}", started.elapsed());
    assert_eq!(b.request("GET", "/v1/sources/orders", None).status, 404);
    // The name is free again, and a restarted node loads what Redis holds.
    a.create_source("orders");
    let c = node(&redis, &[]);
    assert_eq!(source_names(&c), ["orders"]);
}

/// `kill -9` of a node while events are emitted on another: its
/// subscriber resumes on a third node with Last-Event-ID and gets every
/// acknowledged event exactly once.
#[test]
fn a_killed_nodes_subscriber_resumes_elsewhere() {
    let redis = RedisServer::start();
    let (a, mut b, c) = (node(&redis, &[]), node(&redis, &[]), node(&redis, &[]));
    a.create_source("s");
    wait_until(Duration::from_secs(1), "b and c know s", || source_names(&b).len() == 1 && source_names(&c).len() == 1);
    let mut stream = b.subscribe("/sources/s/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let addr = a.addr;
    let emitter = std::thread::spawn(move || {
        let mut client = KeepAlive::new(addr);
        (0..400)
            .map(|i| {
                let r = client.request("POST", "/v1/sources/s/events", &format!("{{\"i\":{i}}}"));
                assert_eq!(r.status, 202);
                r.json()["id"].as_str().unwrap().to_string()
            })
            .collect::<Vec<String>>()
    });
    let mut seen = Vec::new();
    while seen.len() < 50 {
        seen.push(stream.next_event().id());
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    loop {
        match stream.next_event() {
            Frame::Event { id: Some(id), .. } => seen.push(id),
            Frame::End => break,
            other => panic!("{other:?}"),
        }
    }
    let mut resumed = c.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", seen.last().unwrap()));
    let acked = emitter.join().unwrap();
    while seen.len() < acked.len() {
        seen.push(resumed.next_event().id());
    }
    assert_eq!(seen, acked, "every acknowledged event exactly once, in order");
}

/// Sockets a process holds (its open descriptors that are sockets).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// `--reuse-port`: three processes listen on one port; the kernel spreads
/// 60 streams over all three, and an emit on any reaches every stream.
#[test]
fn three_processes_share_one_port() {
    let redis = RedisServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let nodes: Vec<TestServer> = (0..3).map(|_| node(&redis, &["--reuse-port", "--listen", &listen])).collect();
    for n in &nodes {
        assert_eq!(n.addr.port(), port);
    }
    // Without --reuse-port the port is refused.
    let taken = std::process::Command::new(support::bin())
        .args(["serve", "--engine", "memory", "--api-key", "k", "--listen", &listen])
        .output()
        .unwrap();
    assert!(!taken.status.success());
    // The port reaches any of the three: the two that did not create s say when they have it.
    nodes[0].create_source("s");
    wait_until(Duration::from_secs(1), "every node knows s", || {
        nodes.iter().filter(|n| n.logs().lines().any(|l| l.contains("source s (") && l.contains("created on another node"))).count() == 2
    });
    // Each node's own sockets: the listener, the command link and 16 partition readers.
    const OWN: usize = 1 + 1 + 16;
    let mut streams: Vec<_> = (0..60).map(|_| nodes[0].subscribe("/sources/s/sse", "")).collect();
    let mut spread = Vec::new();
    wait_until(Duration::from_secs(5), "60 streams held", || {
        spread = nodes.iter().map(|n| sockets(n.pid()).saturating_sub(OWN)).collect();
        spread.iter().sum::<usize>() == 60
    });
    assert!(spread.iter().all(|&k| k > 0), "spread over all three: {spread:?}");
    let id = nodes[0].emit("s", "{\"to\":\"all\"}");
    for s in &mut streams {
        assert_eq!(s.next_event().id(), id);
    }
}

/// An `Idempotency-Key` is decided in Redis, for every node: a repeat on
/// another node answers the first emit's id with `Idempotent-Replayed`,
/// another body is a 422 there too, and each node shows one event.
#[test]
fn an_idempotency_key_is_the_same_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    a.create_source("s");
    wait_until(Duration::from_secs(5), "b has the source", || source_names(&b) == ["s"]);
    let first = a.emit_keyed("s", "order-1042", r#"{"total":12}"#);
    assert_eq!((first.status, first.header("idempotent-replayed")), (202, None), "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    for n in [&a, &b] {
        let again = n.emit_keyed("s", "order-1042", r#"{"total":12}"#);
        assert_eq!((again.status, again.json()["id"].as_str()), (202, Some(id.as_str())), "{}", again.body);
        assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
        let other = n.emit_keyed("s", "order-1042", r#"{"total":13}"#);
        assert_eq!(
            (other.status, other.json()["error"].as_str()),
            (422, Some("this Idempotency-Key was used with another body on this source"))
        );
    }
    // Per source: the same key on another source is its own emit.
    a.create_source("t");
    wait_until(Duration::from_secs(5), "b has the second source", || source_names(&b).len() == 2);
    let r = b.emit_keyed("t", "order-1042", r#"{"total":12}"#);
    assert_eq!((r.status, r.header("idempotent-replayed")), (202, None), "{}", r.body);
    let last = b.emit("s", "{}");
    for n in [&a, &b] {
        wait_until(Duration::from_secs(5), "both events on both nodes", || summary_ids(n, "s").len() == 2);
        assert_eq!(summary_ids(n, "s"), [id.clone(), last.clone()], "one event for the key");
    }
}

/// Two nodes given the same key at the same moment, many times: one
/// event per key, and both answers name it.
#[test]
fn two_nodes_given_the_same_key_at_once_store_one_event() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    a.create_source("s");
    wait_until(Duration::from_secs(5), "b has the source", || source_names(&b) == ["s"]);
    let rounds = 30;
    for round in 0..rounds {
        let key = format!("k-{round}");
        let body = format!("{{\"round\":{round}}}");
        let start = std::sync::Barrier::new(2);
        let (ra, rb) = std::thread::scope(|scope| {
            let (start, key, body) = (&start, &key, &body);
            let ta = scope.spawn(|| {
                start.wait();
                a.emit_keyed("s", key, body)
            });
            let tb = scope.spawn(|| {
                start.wait();
                b.emit_keyed("s", key, body)
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert_eq!((ra.status, rb.status), (202, 202), "{} / {}", ra.body, rb.body);
        assert_eq!(ra.json()["id"], rb.json()["id"], "round {round}: both answers name one event");
        let replays = [&ra, &rb].iter().filter(|r| r.header("idempotent-replayed").is_some()).count();
        assert_eq!(replays, 1, "round {round}: one of them is the replay");
    }
    for n in [&a, &b] {
        wait_until(Duration::from_secs(5), "every event on both nodes", || summary_ids(n, "s").len() >= rounds);
        assert_eq!(summary_ids(n, "s").len(), rounds, "one event per key");
    }
}

fn source_json(n: &TestServer, source: &str) -> serde_json::Value {
    let r = n.request("GET", &format!("/v1/sources/{source}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].clone()
}

fn gap_frame(n: &TestServer, source: &str, after: &str) -> serde_json::Value {
    let mut sse = n.subscribe(&format!("/sources/{source}/sse"), &format!("Last-Event-ID: {after}\r\n"));
    match sse.next_event() {
        Frame::Named { event, data } if event == "gap" => serde_json::from_str(&data).unwrap(),
        other => panic!("expected the gap frame, got {other:?}"),
    }
}

/// A source's retention set on one node is every node's: shown in its
/// JSON, and in effect at once on the other node too (a smaller count
/// evicts there, with the gap frame for a resume from before); a node
/// started later loads it.
#[test]
fn a_retention_set_on_one_node_takes_effect_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let r = a.request("POST", "/v1/sources", Some(r#"{"name":"s","retention":{"max_events":8,"max_bytes":100000}}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    let want = serde_json::json!({"max_events":8,"max_age_s":null,"max_bytes":100000});
    wait_until(Duration::from_secs(5), "b has the source", || source_names(&b) == ["s"]);
    assert_eq!(source_json(&b, "s")["retention"], want, "created with it on the other node");
    let ids: Vec<String> = (0..10).map(|n| a.emit("s", &format!("{{\"n\":{n}}}"))).collect();
    for n in [&a, &b] {
        wait_until(Duration::from_secs(5), "the events on both nodes", || summary_ids(n, "s").last() == ids.last());
        assert_eq!(summary_ids(n, "s"), ids[2..], "8, not the server's 100");
    }
    let r = a.request("PATCH", "/v1/sources/s", Some(r#"{"retention":{"max_events":3}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let want = serde_json::json!({"max_events":3,"max_age_s":null,"max_bytes":null});
    wait_until(Duration::from_secs(2), "b applies the PATCH", || source_json(&b, "s")["retention"] == want);
    for n in [&a, &b] {
        assert_eq!(summary_ids(n, "s"), ids[7..], "in effect at once");
        assert_eq!(gap_frame(n, "s", &ids[0]), serde_json::json!({"after":ids[0],"resumed_from":ids[7],"lost":"unknown"}));
    }
    // A node started now loads the setting and what it keeps.
    let c = node(&redis, &[]);
    assert_eq!(source_json(&c, "s")["retention"], want);
    assert_eq!(summary_ids(&c, "s"), ids[7..]);
    let more = b.emit("s", "{}");
    for n in [&a, &b, &c] {
        wait_until(Duration::from_secs(5), "the new event everywhere", || summary_ids(n, "s").last() == Some(&more));
        assert_eq!(summary_ids(n, "s"), [&ids[8..], &[more.clone()][..]].concat());
    }
}

/// With `max_age_s 2` two nodes agree after the eviction: their summaries
/// empty within about two seconds of the emits, and a resume from before
/// gets the gap frame on either; `--history-max-age` is a default there too.
#[test]
fn two_redis_nodes_agree_after_an_age_eviction() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &["--history-max-age", "1h"]), node(&redis, &["--history-max-age", "1h"]));
    let r = a.request("POST", "/v1/sources", Some(r#"{"name":"aged","retention":{"max_age_s":2}}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    let plain = a.create_source("plain");
    assert_eq!(plain["retention"]["max_age_s"], 3600, "the flag's default");
    wait_until(Duration::from_secs(5), "b has the sources", || source_names(&b).len() == 2);
    let ids: Vec<String> = (0..3).map(|n| a.emit("aged", &format!("{{\"n\":{n}}}"))).collect();
    let kept = b.emit("plain", "{}");
    let emitted = Instant::now();
    for n in [&a, &b] {
        wait_until(Duration::from_secs(5), "the events on both nodes", || summary_ids(n, "aged").len() == 3);
    }
    for n in [&a, &b] {
        wait_until(Duration::from_secs(4), "evicted on both nodes", || summary_ids(n, "aged").is_empty());
    }
    assert!(emitted.elapsed() >= Duration::from_millis(1900), "not before its age: {:?}", emitted.elapsed());
    for n in [&a, &b] {
        assert_eq!(gap_frame(n, "aged", &ids[0]), serde_json::json!({"after":ids[0],"resumed_from":null,"lost":"unknown"}));
        assert_eq!(summary_ids(n, "plain"), [kept.as_str()], "an hour is not yet");
    }
    // Redis's copy is trimmed too (XTRIM MINID at the nodes' deadline), the newest evicted kept for later loads.
    let id = source_json(&a, "aged")["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(2), "the history stream trimmed", || redis.cli(&["XLEN", &format!("ssehub:h:{id}")]).trim() == "0");
    assert_eq!(redis.cli(&["HGET", &format!("ssehub:src:{id}"), "evicted"]).trim(), ids[2]);
    let c = node(&redis, &[]);
    assert!(summary_ids(&c, "aged").is_empty());
    assert_eq!(gap_frame(&c, "aged", &ids[0]), serde_json::json!({"after":ids[0],"resumed_from":null,"lost":"unknown"}));
}

/// Nodes started at once with the same `--source` agree on one source
/// (within a second: a node whose create lost the race drops its own).
#[test]
fn nodes_started_with_the_same_source_agree() {
    let redis = RedisServer::start();
    let nodes: Vec<TestServer> = (0..3).map(|_| node(&redis, &["--source", "orders"])).collect();
    let id = |n: &TestServer| {
        let r = n.request("GET", "/v1/sources", None).json();
        let list = r["data"].as_array().unwrap().clone();
        (list.len() == 1).then(|| list[0]["id"].clone())
    };
    wait_until(Duration::from_secs(1), "one source, the same everywhere", || {
        let ids: Vec<_> = nodes.iter().map(id).collect();
        ids[0].is_some() && ids.iter().all(|i| *i == ids[0])
    });
    for n in &nodes {
        assert!(!n.logs().contains("storage unavailable"), "{}", n.logs());
    }
}

/// Two nodes create the same name at the same moment (Redis stopped while
/// both creates wait): neither lists or finds its own source before Redis
/// answers; then one create is `201`, the other `409`, and both nodes show
/// the winner's source, the same id.
#[test]
fn a_name_created_on_two_nodes_at_once_shows_only_the_winner() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    support::signal(redis.pid(), "STOP");
    let creates: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| {
            std::thread::spawn(move || {
                let r = KeepAlive::new(addr).request("POST", "/v1/sources", r#"{"name":"x"}"#);
                (r.status, r.json())
            })
        })
        .collect();
    // While both wait (well within the command timeout of 1.5 s): nothing shows.
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        for n in [&a, &b] {
            assert!(source_names(n).is_empty(), "a create not yet stored is listed");
            assert_eq!(n.request("GET", "/v1/sources/x", None).status, 404);
        }
    }
    support::signal(redis.pid(), "CONT");
    let mut answers: Vec<(u16, serde_json::Value)> = creates.into_iter().map(|c| c.join().unwrap()).collect();
    answers.sort_by_key(|a| a.0);
    assert_eq!((answers[0].0, answers[1].0), (201, 409), "{answers:?}");
    let winner = answers[0].1["data"]["id"].clone();
    wait_until(Duration::from_secs(1), "both nodes show the winner", || {
        [&a, &b].iter().all(|n| {
            let list = n.request("GET", "/v1/sources", None).json()["data"].clone();
            list.as_array().is_some_and(|l| l.len() == 1 && l[0]["id"] == winner)
        })
    });
}

/// Signature checks and subscribe tokens are kept in Redis and reach every
/// node: a check set on one node judges webhooks on another; a token made
/// on one node reads a stream on another, and revoking it there ends that
/// stream within a second; a restarted node loads both.
#[test]
fn signature_checks_and_tokens_are_shared_by_every_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let created = a.create_source("hooks");
    let id = created["id"].as_str().unwrap().to_string();
    let endpoint = created["endpoint_url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    wait_until(Duration::from_secs(1), "b knows the source", || b.request("GET", &format!("/v1/sources/{id}"), None).status == 200);

    let verify = r#"{"verify":{"scheme":"hmac-sha256","secret":"s3cret","header":"x-sig","reject_invalid":true}}"#;
    let r = a.request("PATCH", "/v1/sources/hooks", Some(verify));
    assert_eq!(r.status, 200, "{}", r.body);
    let scheme = |n: &TestServer| n.request("GET", "/v1/sources/hooks", None).json()["data"]["verify"]["scheme"].clone();
    wait_until(Duration::from_secs(1), "b has the check", || scheme(&b) == "hmac-sha256");
    // b judges a delivery by the check a set: unsigned is refused.
    let r = b.raw_request("POST", &format!("/e/{endpoint}"), "", Some("{\"x\":1}"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!b.request("GET", "/v1/sources/hooks", None).body.contains("s3cret"), "the secret never leaves");

    // A token made on a opens a stream on b; revoked on a, b's stream ends.
    let r = a.request("POST", "/v1/sources/hooks/tokens", Some("{\"expires_in_s\":600}"));
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["data"]["token"].as_str().unwrap().to_string();
    let stream_path = format!("/sources/hooks/sse?access_token={token}");
    wait_until(Duration::from_secs(1), "b accepts the token", || {
        b.raw_request("GET", &format!("/v1/sources/hooks/event_summaries?access_token={token}"), "", None).status == 200
    });
    let mut stream = b.subscribe_raw(&stream_path, "");
    assert!(stream.head().starts_with("HTTP/1.1 200"));
    b.wait_metric("ssehub_subscribers", 1);
    let started = Instant::now();
    assert_eq!(a.request("DELETE", &format!("/v1/sources/hooks/tokens/{token}"), None).status, 204);
    loop {
        match stream.next() {
            Frame::End => break,
            Frame::Comment(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(1), "ended in {:?}", started.elapsed());
    assert_eq!(b.raw_request("GET", &stream_path, "", None).status, 401);

    // A new node loads the check and a live token from Redis.
    let r = a.request("POST", "/v1/sources/hooks/tokens", None);
    let live = r.json()["data"]["token"].as_str().unwrap().to_string();
    let c = node(&redis, &[]);
    assert_eq!(scheme(&c), "hmac-sha256");
    let r = c.raw_request("GET", &format!("/v1/sources/hooks/event_summaries?access_token={live}"), "", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.raw_request("GET", &format!("/v1/sources/hooks/event_summaries?access_token={token}"), "", None);
    assert_eq!(r.status, 401, "the revoked one stays revoked");
    // Redis keeps a hash of the token, not the token: nothing in it can be presented.
    let id = created["id"].as_str().unwrap();
    let hash = redis.cli(&["HGETALL", &format!("ssehub:src:{id}")]);
    assert!(hash.contains("tok:st_") && !hash.contains(&live[3 + 12..]), "{hash}");

    // Deleted on a: its tokens are revoked on c too, which goes on serving.
    assert_eq!(a.request("DELETE", "/v1/sources/hooks", None).status, 204);
    wait_until(Duration::from_secs(1), "c forgets the source", || c.request("GET", "/v1/sources/hooks", None).status == 404);
    let r = c.raw_request("GET", &format!("/sources/hooks/sse?access_token={live}"), "", None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(c.request("GET", "/healthz", None).status, 200);
}

/// `RssAnon` of a process in KiB: its private memory, without the binary's
/// pages that every ssehub process shares.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A node's private memory before any subscriber stays small: a million
/// subscribers take some 56 nodes here, and each holds 17 Redis links (the
/// command link and 16 partition readers), which once kept a 64 KiB read
/// buffer each, zeroed: 1.1 MiB a node before its first subscriber.
#[test]
fn a_node_keeps_little_private_memory_before_any_subscriber() {
    let redis = RedisServer::start();
    let n = node(&redis, &[]);
    n.create_source("s");
    wait_until(Duration::from_secs(5), "every link up", || healthz(&n) == 200);
    let r = n.request("POST", "/v1/sources/s/events", Some(r#"{"a":1}"#));
    assert_eq!(r.status, 202, "{}", r.body);
    let anon = rss_anon_kib(n.pid());
    assert!(anon < 1024, "a node with no subscriber holds {anon} KiB of its own");
}
