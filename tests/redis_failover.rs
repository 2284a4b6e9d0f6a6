//! The `redis` engine through failovers: real `redis-server` masters,
//! replicas and three Sentinels (`redis-server --sentinel`) started by the
//! test on free loopback ports, and ssehub nodes that follow the master.
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use support::sentinel::Ha;
use support::{TestServer, wait_until};

fn node(url: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["--redis", url];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

/// One emit: its id, or the status it was answered with, and how long it took.
fn try_emit(n: &TestServer, source: &str, body: &str) -> (Result<String, u16>, Duration) {
    let at = Instant::now();
    let r = n.request("POST", &format!("/v1/sources/{source}/events"), Some(body));
    let took = at.elapsed();
    if r.status == 202 { (Ok(r.json()["id"].as_str().unwrap().to_string()), took) } else { (Err(r.status), took) }
}

/// Nodes started with a `redis-sentinel://` URL find the master through
/// the Sentinels; after a failover (`SENTINEL FAILOVER`) both write to the
/// new master within 5 s, a subscriber sees every acknowledged event once,
/// in order, and the old master (now a replica) gets no write. Each
/// node's Sentinel link is a row of `/metrics`.
#[test]
fn nodes_follow_a_sentinel_failover() {
    let ha = Ha::start(1);
    let url = ha.url();
    let (a, b) = (node(&url, &[]), node(&url, &[]));
    // Each listens to a Sentinel for +switch-master: a link of its own in /metrics.
    for n in [&a, &b] {
        n.wait_metric("ssehub_redis_link_up{link=\"sentinel\"}", 1);
    }
    a.create_source("s");
    wait_until(Duration::from_secs(2), "b knows the source", || b.request("GET", "/v1/sources/s", None).status == 200);
    let mut on_b = b.subscribe("/sources/s/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let mut acked = vec![a.emit("s", "1"), b.emit("s", "2")];
    assert_eq!(ha.sentinels[0].cli(&["SENTINEL", "FAILOVER", support::sentinel::MASTER]), "OK");
    wait_until(Duration::from_secs(10), "the Sentinels name the replica", || ha.master() == Some(1));
    let promoted = Instant::now();
    for n in [&a, &b] {
        loop {
            let (result, took) = try_emit(n, "s", "3");
            assert!(took < Duration::from_secs(2), "an emit during the failover took {took:?}");
            match result {
                Ok(id) => {
                    acked.push(id);
                    break;
                }
                Err(status) => assert_eq!(status, 503),
            }
            assert!(promoted.elapsed() < Duration::from_secs(5), "no emit taken within 5 s of the promotion");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for id in &acked {
        assert_eq!(&on_b.next_event().id(), id);
    }
    // Nothing writes to the old master (a master still, until the Sentinels make it a replica).
    let old_writes = script_calls(&ha.servers[0]);
    for _ in 0..10 {
        acked.push(a.emit("s", "4"));
        acked.push(b.emit("s", "5"));
    }
    for id in &acked[acked.len() - 20..] {
        assert_eq!(&on_b.next_event().id(), id);
    }
    assert_eq!(script_calls(&ha.servers[0]), old_writes, "the old master got writes");
}

/// Script calls a Redis server has run since it started (every change is one).
fn script_calls(redis: &support::RedisServer) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:"));
    line.and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// `--redis-replicas 1`: an emit is acknowledged once the replica has it;
/// with the replica stopped, changes answer `503` within 2 s (and with
/// `--redis-replicas 0` they are taken); once it is back, emits succeed.
#[test]
fn changes_wait_for_a_replica() {
    let master = support::RedisServer::start();
    let mut replica = support::RedisServer::with(&["--replicaof", "127.0.0.1", &master.port.to_string()], None);
    wait_until(Duration::from_secs(10), "the replica follows", || replica.cli(&["INFO", "replication"]).contains("master_link_status:up"));
    let (a, unwaiting) = (node(&master.url(), &["--redis-replicas", "1"]), node(&master.url(), &[]));
    let id = a.create_source("s")["id"].as_str().unwrap().to_string();
    let emitted = a.emit("s", "1");
    let history = format!("ssehub:h:{id}");
    assert!(replica.cli(&["XRANGE", &history, &emitted, &emitted]).contains(&emitted), "the replica has the acknowledged event");
    replica.kill();
    let (result, took) = try_emit(&a, "s", "2");
    assert_eq!(result, Err(503));
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    let (result, took) = (a.request("POST", "/v1/sources", Some(r#"{"name":"t"}"#)), Instant::now());
    assert_eq!(result.status, 503, "{}", result.body);
    assert!(took.elapsed() < Duration::from_secs(2));
    assert!(try_emit(&unwaiting, "s", "3").0.is_ok(), "without --redis-replicas an emit is taken");
    replica.restart();
    wait_until(Duration::from_secs(10), "emits are taken again", || try_emit(&a, "s", "4").0.is_ok());
    // (The create answered 503 was taken by Redis, unconfirmed: its fate was unknown.)
    a.create_source("u");
}

/// An emit answered `503` because `WAIT` found no replica was stored on
/// the master all the same (its fate was unknown): retried with its
/// `Idempotency-Key` once the replica is back, it answers the one stored
/// event's id with `Idempotent-Replayed: true`, and the source holds it
/// once (SPEC §10, §11).
#[test]
fn a_503_from_wait_retried_with_its_idempotency_key_stores_one_event() {
    let master = support::RedisServer::start();
    let mut replica = support::RedisServer::with(&["--replicaof", "127.0.0.1", &master.port.to_string()], None);
    wait_until(Duration::from_secs(10), "the replica follows", || replica.cli(&["INFO", "replication"]).contains("master_link_status:up"));
    let a = node(&master.url(), &["--redis-replicas", "1"]);
    a.create_source("s");
    let first = a.emit("s", "1");
    replica.kill();
    let keyed = |body: &str| {
        let headers = format!("Authorization: Bearer {}\r\nIdempotency-Key: retry-1\r\n", a.key);
        a.raw_request("POST", "/v1/sources/s/events", &headers, Some(body))
    };
    let unknown = keyed("2");
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    replica.restart();
    let retried = {
        let mut last = None;
        wait_until(Duration::from_secs(10), "the retry is answered 202", || {
            let r = keyed("2");
            let ok = r.status == 202;
            last = Some(r);
            ok
        });
        last.unwrap()
    };
    assert_eq!(retried.header("idempotent-replayed").as_deref(), Some("true"), "{}", retried.body);
    let id = retried.json()["id"].as_str().unwrap().to_string();
    assert!(id_key(&id) > id_key(&first));
    assert_eq!(summary_ids(&a, "s"), [first, id], "the retried event is stored once");
}

/// One emit's record: when it was sent, when answered, and its outcome.
struct Sent {
    at: Instant,
    done: Instant,
    result: Result<String, u16>,
}

fn summary_ids(n: &TestServer, source: &str) -> Vec<String> {
    let r = n.request("GET", &format!("/v1/sources/{source}/event_summaries?limit=10000"), None);
    let mut ids: Vec<String> = r.json()["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    ids.reverse();
    ids
}

/// An event id as a pair of numbers (`ms-seq`), for order.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// The master killed (`kill -9`) under load, with two replicas, three
/// Sentinels, `--redis-replicas 1`, and emits at a steady rate on two
/// nodes: emits meanwhile are answered `503` within 2 s, both nodes
/// acknowledge again within 5 s of the promotion; every acknowledged event
/// is there once, in order, and every open stream saw each event once with
/// no gap frame; the old master, back (as a replica), gets no write.
#[test]
fn a_killed_master_under_load_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let mut ha = Ha::start(2);
    let url = ha.url();
    let args = ["--redis-replicas", "1", "--history", "10000"];
    let (a, b) = (node(&url, &args), node(&url, &args));
    a.create_source("s");
    wait_until(Duration::from_secs(2), "b knows the source", || b.request("GET", "/v1/sources/s", None).status == 200);
    let (mut on_a, mut on_b) = (a.subscribe("/sources/s/sse", ""), b.subscribe("/sources/s/sse", ""));
    a.wait_metric("ssehub_subscribers", 1);
    b.wait_metric("ssehub_subscribers", 1);
    let stop = AtomicBool::new(false);
    let (mut promoted, mut old_master_writes) = (None, None);
    let sent: Vec<Vec<Sent>> = std::thread::scope(|scope| {
        let emitters: Vec<_> = [&a, &b]
            .into_iter()
            .map(|n| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut sent = Vec::new();
                    while !stop.load(SeqCst) {
                        let at = Instant::now();
                        let (result, _) = try_emit(n, "s", &format!("{{\"n\":{}}}", sent.len()));
                        sent.push(Sent { at, done: Instant::now(), result });
                        std::thread::sleep(Duration::from_millis(25));
                    }
                    sent
                })
            })
            .collect();
        // Under load for a while, then the master goes.
        std::thread::sleep(Duration::from_millis(500));
        ha.servers[0].kill();
        wait_until(Duration::from_secs(15), "a replica is promoted", || ha.master().is_some_and(|m| m != 0));
        promoted = Some(Instant::now());
        std::thread::sleep(Duration::from_secs(5));
        // The old master comes back (the Sentinels make it a replica): nothing writes to it.
        ha.servers[0].restart();
        std::thread::sleep(Duration::from_secs(1));
        old_master_writes = Some(script_calls(&ha.servers[0]));
        stop.store(true, SeqCst);
        emitters.into_iter().map(|e| e.join().unwrap()).collect()
    });
    let promoted = promoted.unwrap();
    assert_eq!(old_master_writes, Some(0), "the old master got writes");
    for (name, sent) in ["a", "b"].iter().zip(&sent) {
        for s in sent {
            let took = s.done - s.at;
            assert!(matches!(s.result, Ok(_) | Err(503)), "{name}: {:?}", s.result);
            assert!(took < Duration::from_secs(2), "{name}: an emit took {took:?}");
        }
        let again = sent.iter().find(|s| s.at > promoted && s.result.is_ok()).map(|s| s.done - promoted);
        assert!(again.is_some_and(|t| t < Duration::from_secs(5)), "{name} acknowledged again after {again:?}");
        assert!(sent.iter().any(|s| s.result.is_err()), "{name}: no emit was refused during the failover");
    }
    let history = summary_ids(&a, "s");
    assert_eq!(summary_ids(&b, "s"), history, "both nodes have the same history");
    assert!(history.windows(2).all(|w| id_key(&w[0]) < id_key(&w[1])), "in order, each once: {history:?}");
    let acked: Vec<&String> = sent.iter().flatten().filter_map(|s| s.result.as_ref().ok()).collect();
    for id in &acked {
        assert!(history.contains(id), "acknowledged {id} is lost");
    }
    for (name, stream) in [("a", &mut on_a), ("b", &mut on_b)] {
        for id in &history {
            match stream.next_event() {
                f @ support::Frame::Event { .. } => assert_eq!(&f.id(), id, "{name}'s stream"),
                other => panic!("{name}'s stream: {other:?} where {id} was due"),
            }
        }
    }
}

/// A TCP proxy in front of Redis, as a managed Redis's one address: new
/// connections go to the backend set last (`switch`); `hole` makes every
/// open connection a black hole (kept open, nothing forwarded either way).
struct Proxy {
    port: u16,
    backend: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Connections accepted before this generation forward nothing.
    hole: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    fn start(backend: u16) -> Proxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::SeqCst};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            backend: Arc::new(AtomicU16::new(backend)),
            hole: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(AtomicU64::new(0)),
        };
        let (backend, hole, accepted) = (proxy.backend.clone(), proxy.hole.clone(), proxy.accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let generation = accepted.fetch_add(1, SeqCst) + 1;
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", backend.load(SeqCst))) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)] {
                    let hole = hole.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            // A black hole keeps both sockets and forwards nothing, ever.
                            while hole.load(SeqCst) >= generation {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every open connection stops forwarding (new ones work).
    fn hole(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.hole.store(self.accepted.load(SeqCst), SeqCst);
    }

    /// New connections go to `backend`; open ones stay where they are.
    fn switch(&self, backend: u16) {
        self.backend.store(backend, std::sync::atomic::Ordering::SeqCst);
    }
}

fn healthz(n: &TestServer) -> u16 {
    n.request("GET", "/healthz", None).status
}

/// A node whose links are black-holed (the proxy keeps the connections
/// and forwards nothing) notices within the read deadline (block time
/// plus a margin; here a block of 1 s), says so on `/healthz` and in
/// `/metrics`, reconnects and resumes its stream from its cursor with
/// nothing lost or repeated.
#[test]
fn a_black_holed_link_is_dropped_within_its_deadline_and_resumed() {
    let redis = support::RedisServer::start();
    let proxy = Proxy::start(redis.port);
    let mut command = std::process::Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", support::KEY, "--redis", &proxy.url()]);
    let a = TestServer::spawn(command.env("SSEHUB_REDIS_BLOCK_MS", "1000"), support::KEY);
    let b = node(&redis.url(), &[]);
    a.create_source("s");
    wait_until(Duration::from_secs(2), "b knows the source", || b.request("GET", "/v1/sources/s", None).status == 200);
    let mut on_a = a.subscribe("/sources/s/sse", "");
    a.wait_metric("ssehub_subscribers", 1);
    let mut acked = vec![b.emit("s", "0")];
    assert_eq!(on_a.next_event().id(), acked[0]);
    let metrics = a.request("GET", "/metrics", None).body;
    assert!(metrics.contains("ssehub_redis_link_up{link=\"partition-0\"} 1"), "{metrics}");
    proxy.hole();
    let holed = Instant::now();
    acked.extend((1..=5).map(|i| b.emit("s", &i.to_string())));
    wait_until(Duration::from_secs(4), "a notices", || healthz(&a) == 503);
    let noticed = holed.elapsed();
    assert!(noticed < Duration::from_secs(3), "noticed after {noticed:?}");
    for id in &acked[1..] {
        assert_eq!(&on_a.next_event().id(), id);
    }
    // (Its command link is found out by its own deadline: a ping after 1 s idle, 1.5 s for its answer.)
    let mut live = None;
    wait_until(Duration::from_secs(5), "a acknowledges again", || {
        live = try_emit(&a, "s", "6").0.ok();
        live.is_some()
    });
    assert_eq!(healthz(&a), 200);
    assert_eq!(on_a.next_event().id(), live.unwrap());
    assert!(a.logs().contains("no answer within its deadline"), "{}", a.logs());
}

/// A managed-Redis style move behind one address: the replica is promoted,
/// the old primary follows it, and the address (the proxy) leads new
/// connections to the new primary while open ones stay on the old one.
/// The nodes leave the old one at its first `-READONLY` or `-UNBLOCKED`,
/// connect again through the address, and go on: emits meanwhile are
/// answered within 2 s, both nodes acknowledge within 5 s, a stream sees
/// every acknowledged event once, the old primary gets no write after.
#[test]
fn a_move_behind_one_address_is_followed() {
    let old = support::RedisServer::start();
    let new = support::RedisServer::with(&["--replicaof", "127.0.0.1", &old.port.to_string()], None);
    wait_until(Duration::from_secs(10), "the replica follows", || new.cli(&["INFO", "replication"]).contains("master_link_status:up"));
    let proxy = Proxy::start(old.port);
    let (a, b) = (node(&proxy.url(), &[]), node(&proxy.url(), &[]));
    a.create_source("s");
    wait_until(Duration::from_secs(2), "b knows the source", || b.request("GET", "/v1/sources/s", None).status == 200);
    let mut on_b = b.subscribe("/sources/s/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let mut acked = vec![a.emit("s", "1"), b.emit("s", "2")];
    // (Not `WAIT` from redis-cli: its own connection wrote nothing, so it returns at once.)
    let id = a.request("GET", "/v1/sources/s", None).json()["data"]["id"].as_str().unwrap().to_string();
    let history = format!("ssehub:h:{id}");
    wait_until(Duration::from_secs(10), "the replica has the events", || {
        new.cli(&["XRANGE", &history, &acked[1], &acked[1]]).contains(&acked[1])
    });
    assert_eq!(new.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    proxy.switch(new.port);
    assert_eq!(old.cli(&["REPLICAOF", "127.0.0.1", &new.port.to_string()]), "OK");
    let moved = Instant::now();
    for n in [&a, &b] {
        loop {
            let (result, took) = try_emit(n, "s", "3");
            assert!(took < Duration::from_secs(2), "an emit during the move took {took:?}");
            if let Ok(id) = result {
                acked.push(id);
                break;
            }
            assert!(moved.elapsed() < Duration::from_secs(5), "no emit taken within 5 s of the move");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let old_writes = script_calls(&old);
    for i in 0..10 {
        acked.push([&a, &b][i % 2].emit("s", "4"));
    }
    assert_eq!(script_calls(&old), old_writes, "the old primary got writes");
    for id in &acked {
        assert_eq!(&on_b.next_event().id(), id);
    }
}

/// A node starved of CPU (busy loops beside it on every core) is not a
/// Redis that went away: its deadlines pass while it waits for the CPU,
/// not for Redis, and it keeps acknowledging without declaring Redis
/// unreachable.
#[test]
fn a_node_beside_a_cpu_hog_does_not_call_redis_unreachable() {
    struct Hogs(Vec<std::process::Child>);
    impl Drop for Hogs {
        fn drop(&mut self) {
            for h in &mut self.0 {
                let _ = h.kill();
                let _ = h.wait();
            }
        }
    }
    let redis = support::RedisServer::start();
    let a = node(&redis.url(), &[]);
    a.create_source("s");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _hogs =
        Hogs((0..cores * 2).map(|_| std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()).collect());
    let until = Instant::now() + Duration::from_secs(4);
    let mut emits = 0;
    while Instant::now() < until {
        a.emit("s", "1");
        emits += 1;
    }
    assert!(emits > 0);
    assert!(!a.logs().contains("unreachable"), "{}", a.logs());
    assert_eq!(healthz(&a), 200);
}

/// `--redis-replicas 0` and a failover to a replica that missed the last
/// acknowledged events (its replication went through a proxy that stopped
/// forwarding while they were written; the address then moved to it): the
/// node notices (the new master's partition lacks the newest record it
/// read or its emits wrote) and handles it as a data loss: ids go on above every id
/// served, and a subscriber who missed those events (resuming on a node
/// started afterwards, which never saw them) gets the gap frame, also
/// when another node's emit reached the new master before the write-back.
#[test]
fn a_failover_to_a_replica_that_missed_events_raises_the_floor() {
    let mut old = support::RedisServer::start();
    let replication = Proxy::start(old.port);
    let replica = support::RedisServer::with(&["--replicaof", "127.0.0.1", &replication.port.to_string()], None);
    wait_until(Duration::from_secs(10), "the replica follows", || replica.cli(&["INFO", "replication"]).contains("master_link_status:up"));
    let proxy = Proxy::start(old.port);
    let a = node(&proxy.url(), &[]);
    a.create_source("s");
    let before = a.emit("s", "0");
    // (Not `WAIT` from redis-cli: its own connection wrote nothing, so it returns at once.)
    let id = a.request("GET", "/v1/sources/s", None).json()["data"]["id"].as_str().unwrap().to_string();
    let history = format!("ssehub:h:{id}");
    wait_until(Duration::from_secs(10), "the replica has the first event", || {
        replica.cli(&["XRANGE", &history, &before, &before]).contains(&before)
    });
    replication.hole();
    let missed: Vec<String> = (1..=3).map(|i| a.emit("s", &i.to_string())).collect();
    old.kill();
    assert_eq!(replica.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    // Another node's emit reaches the new master before a's write-back.
    let b = node(&replica.url(), &[]);
    let early = b.emit("s", "\"early\"");
    proxy.switch(replica.port);
    // (Noticed on the command link's connect.)
    // (Its log in the failure: this failed once in CI, cause not found.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.logs().contains("lost data") {
        assert!(Instant::now() < deadline, "a did not notice the loss within 10 s; its log:\n{}", a.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut after = None;
    wait_until(Duration::from_secs(10), "a acknowledges again", || {
        after = try_emit(&a, "s", "4").0.ok();
        after.is_some()
    });
    let after = after.unwrap();
    assert!(id_key(&after) > id_key(&missed[2]), "ids never go back: {after} after {}", missed[2]);
    // A node started now never saw the missed events; a resume from before them gets the gap frame.
    let c = node(&replica.url(), &[]);
    let mut stream = c.subscribe("/sources/s/sse", &format!("Last-Event-ID: {before}\r\n"));
    match stream.next_event() {
        support::Frame::Named { event, .. } => assert_eq!(event, "gap"),
        other => panic!("expected the gap frame, got {other:?}"),
    }
    assert_eq!(stream.next_event().id(), early);
    assert_eq!(stream.next_event().id(), after);
}
