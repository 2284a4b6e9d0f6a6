//! The `redis` engine over real processes: several ssehub nodes on one
//! real `redis-server` (started per test on a free port, its own dir).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{Frame, KeepAlive, RedisServer, TestServer};

fn node(redis: &RedisServer, extra: &[&str]) -> TestServer {
    let mut args = vec!["--redis", &*Box::leak(redis.url().into_boxed_str())];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

/// Waits until `check` holds, polling, within `limit`.
fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn source_names(node: &TestServer) -> Vec<String> {
    let r = node.request("GET", "/v1/sources", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

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
