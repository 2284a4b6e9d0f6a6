//! The `redis` engine with a node behind: partitions trimmed past a paused
//! node's position (caught up from history, or the gap frame), resumes on
//! a node that has not yet read the events, and a rolling restart with
//! `--drain` under subscribers that resume as `EventSource` does.
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use support::redis::{node, source_names, summary_ids};
use support::{Frame, KeepAlive, RedisServer, TestServer, wait_until};

/// A node paused (SIGSTOP) while its partition stream is trimmed past its
/// position catches up from the history stream after SIGCONT: its
/// subscriber gets every event, in order, no gap frame (history still
/// holds them all).
#[test]
fn a_paused_node_catches_up_from_history() {
    let redis = RedisServer::start();
    let (a, b, mut stream) = paused_pair(&redis, "1000");
    let (acked, _) = pause_and_emit(&redis, &a, &b, &mut stream, 400);
    assert_eq!(ids_after_the_first(&mut stream, &acked), acked);
    assert!(b.logs().contains("catching up from its history"), "{}", b.logs());
}

/// The same when the source's own `max_events` holds what b missed and
/// `--history` would not: b catches up from the source's longer history,
/// no gap.
#[test]
fn a_paused_node_catches_up_as_far_as_the_sources_own_count_bound() {
    let redis = RedisServer::start();
    let (a, b, mut stream) = paused_pair(&redis, "10");
    let r = a.request("PATCH", "/v1/sources/s", Some(r#"{"retention":{"max_events":1000}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(2), "b applies it", || {
        source_names(&b).len() == 1 && b.request("GET", "/v1/sources/s", None).json()["data"]["retention"]["max_events"] == 1000
    });
    let (acked, _) = pause_and_emit(&redis, &a, &b, &mut stream, 400);
    assert_eq!(ids_after_the_first(&mut stream, &acked), acked);
    assert_eq!(summary_ids(&b, "s").len(), 100, "summaries show at most 100 a page");
}

/// The ids `stream` gives as `acked` (its first already read), each an
/// event: no gap frame comes.
fn ids_after_the_first(stream: &mut support::Sse, acked: &[String]) -> Vec<String> {
    let mut got = vec![acked[0].clone()];
    while got.len() < acked.len() {
        match stream.next_event() {
            Frame::Event { id: Some(id), .. } => got.push(id),
            other => panic!("after {} events: {other:?}", got.len()),
        }
    }
    got
}

/// A node on Redis at `url` with one partition of 10 entries and
/// `--history history`: a short pause or freeze puts it past the partition.
fn short_partition_node(url: &str, history: &str) -> TestServer {
    let mut command = std::process::Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", support::KEY, "--redis", url, "--history", history]);
    command.env("SSEHUB_REDIS_PARTITION_LEN", "10").env("SSEHUB_REDIS_PARTITIONS", "1");
    TestServer::spawn(&mut command, support::KEY)
}

/// Two nodes on one partition of 10 entries with `--history history`,
/// source `s`, and a stream of it on b.
fn paused_pair(redis: &RedisServer, history: &str) -> (TestServer, TestServer, support::Sse) {
    let (a, b) = (short_partition_node(&redis.url(), history), short_partition_node(&redis.url(), history));
    a.create_source("s");
    wait_until(Duration::from_secs(1), "b knows s", || source_names(&b).len() == 1);
    let stream = b.subscribe("/sources/s/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    (a, b, stream)
}

/// Emits one event that `stream` (on b) sees, pauses b, emits `n - 1` more
/// on a (its partition is trimmed past b's position), continues b; the ids
/// acknowledged, and the entries left in the partition (`MAXLEN ~` keeps whole nodes).
fn pause_and_emit(redis: &RedisServer, a: &TestServer, b: &TestServer, stream: &mut support::Sse, n: usize) -> (Vec<String>, usize) {
    let first = a.emit("s", "0");
    assert_eq!(stream.next_event().id(), first);
    support::signal(b.pid(), "STOP");
    let mut client = KeepAlive::new(a.addr);
    let mut acked = vec![first];
    for i in 1..n {
        let r = client.request("POST", "/v1/sources/s/events", &i.to_string());
        assert_eq!(r.status, 202);
        acked.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let len: usize = redis.cli(&["XLEN", "ssehub:p:0"]).parse().unwrap();
    assert!(len < n * 3 / 4, "the partition was trimmed past b's position ({len} left)");
    support::signal(b.pid(), "CONT");
    (acked, len)
}

/// The same with a history too short to hold what b missed: b's stream
/// gets the gap frame, then what history still holds, in order.
#[test]
fn a_paused_node_past_its_history_sends_the_gap_frame() {
    let redis = RedisServer::start();
    let (a, b, mut stream) = paused_pair(&redis, "20");
    let (acked, partition_left) = pause_and_emit(&redis, &a, &b, &mut stream, 300);
    // What Redis had already pushed to b's blocked read comes first (in order), then the gap.
    let mut before = vec![acked[0].clone()];
    loop {
        match stream.next_event() {
            Frame::Named { event, data } => {
                assert_eq!(event, "gap");
                let gap: serde_json::Value = serde_json::from_str(&data).unwrap();
                assert_eq!(gap["after"], before.last().unwrap().as_str());
                break;
            }
            Frame::Event { id: Some(id), .. } => before.push(id),
            other => panic!("expected the gap frame, got {other:?}"),
        }
    }
    assert_eq!(before, acked[..before.len()], "in order before the gap");
    assert!(before.len() < 100, "most were missed: {}", before.len());
    let mut got = Vec::new();
    while got.last() != acked.last() {
        got.push(stream.next_event().id());
    }
    assert!(got.len() <= 21 + partition_left, "what history held, then what the partition held: {}", got.len());
    assert_eq!(got, acked[acked.len() - got.len()..], "in order, the newest last");
    // A resume from before the gap on b: the gap frame again, then its ring.
    let mut resumed = b.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", before.last().unwrap()));
    assert!(matches!(resumed.next_event(), Frame::Named { .. }));
}

/// A partition keeps at most about its length (`SSEHUB_REDIS_PARTITION_LEN`)
/// in events, not in records, though one record holds a script call's
/// events: 32 clients emitting at once leave no more than about twice that.
#[test]
fn a_partition_keeps_about_its_length_in_events() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut command = std::process::Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", support::KEY, "--redis", &url, "--redis-partitions", "1"]);
    let a = TestServer::spawn(command.env("SSEHUB_REDIS_PARTITION_LEN", "100"), support::KEY);
    a.create_source("s");
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (addr, body) = (a.addr, body.clone());
            std::thread::spawn(move || {
                let mut c = KeepAlive::new(addr);
                (0..50).all(|_| c.request("POST", "/v1/sources/s/events", &body).status == 202)
            })
        })
        .collect();
    assert!(clients.into_iter().all(|c| c.join().unwrap()), "every emit 202");
    let records: usize = redis.cli(&["XLEN", "ssehub:p:0"]).parse().unwrap();
    let events = redis.cli(&["XRANGE", "ssehub:p:0", "-", "+"]).lines().filter(|l| *l == "e").count();
    assert!((1..=2 * 100).contains(&events), "{events} events in {records} records");
}

/// A TCP proxy in front of Redis that, while `frozen`, holds what Redis
/// sends (the node behind it falls behind; nothing is lost).
struct FreezingProxy {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingProxy {
    fn start(redis_port: u16) -> FreezingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let frozen2 = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut upstream) = std::net::TcpStream::connect(("127.0.0.1", redis_port)) else { continue };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let frozen3 = frozen2.clone();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = upstream.read(&mut buf) {
                        while frozen3.load(SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        if n == 0 || client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FreezingProxy { port, frozen }
    }
}

/// A subscriber resumes on a node that has not yet read the events up to
/// its Last-Event-ID: when they reach that node, they are not sent again;
/// the stream goes on with the first event after the resume point.
#[test]
fn a_resume_on_a_node_that_is_behind_repeats_nothing() {
    use std::sync::atomic::Ordering::SeqCst;
    let redis = RedisServer::start();
    let proxy = FreezingProxy::start(redis.port);
    let a = node(&redis, &[]);
    let c = TestServer::start(&["--redis", &format!("redis://127.0.0.1:{}", proxy.port)]);
    a.create_source("s");
    wait_until(Duration::from_secs(1), "c knows s", || source_names(&c).len() == 1);
    let first = a.emit("s", "0");
    wait_until(Duration::from_secs(2), "c has the first event", || summary_ids(&c, "s") == [first.clone()]);
    proxy.frozen.store(true, SeqCst);
    let behind: Vec<String> = (1..=5).map(|i| a.emit("s", &i.to_string())).collect();
    assert_eq!(summary_ids(&c, "s"), [first], "c is behind");
    let mut resumed = c.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", behind.last().unwrap()));
    c.wait_metric("ssehub_subscribers", 1);
    proxy.frozen.store(false, SeqCst);
    wait_until(Duration::from_secs(2), "c caught up", || summary_ids(&c, "s").len() == 6);
    let next = a.emit("s", "6");
    assert_eq!(resumed.next_event().id(), next, "the first event after the resume point, nothing again");
}

/// A node behind by more than its partition and history hold sends the
/// gap frame to its streams when it catches up, but not to a subscriber
/// that resumed there from an id past the lost events (it had them from
/// another node): that one just goes on with the next event.
#[test]
fn a_resume_past_what_a_node_behind_lost_gets_no_gap_frame() {
    use std::sync::atomic::Ordering::SeqCst;
    let redis = RedisServer::start();
    let proxy = FreezingProxy::start(redis.port);
    let (a, c) = (short_partition_node(&redis.url(), "20"), short_partition_node(&format!("redis://127.0.0.1:{}", proxy.port), "20"));
    a.create_source("s");
    wait_until(Duration::from_secs(1), "c knows s", || source_names(&c).len() == 1);
    let first = a.emit("s", "0");
    wait_until(Duration::from_secs(2), "c has the first event", || summary_ids(&c, "s") == [first.clone()]);
    let mut behind = c.subscribe("/sources/s/sse", "");
    c.wait_metric("ssehub_subscribers", 1);
    proxy.frozen.store(true, SeqCst);
    let mut client = KeepAlive::new(a.addr);
    let acked: Vec<String> = (1..300)
        .map(|i| {
            let r = client.request("POST", "/v1/sources/s/events", &i.to_string());
            assert_eq!(r.status, 202);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut resumed = c.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", acked.last().unwrap()));
    c.wait_metric("ssehub_subscribers", 2);
    proxy.frozen.store(false, SeqCst);
    // What reached c before the freeze comes first, then the gap frame.
    loop {
        match behind.next_event() {
            Frame::Event { .. } => {}
            Frame::Named { event, .. } if event == "gap" => break,
            other => panic!("expected the gap frame, got {other:?}"),
        }
    }
    let next = a.emit("s", "300");
    match resumed.next_event() {
        Frame::Event { id, .. } => assert_eq!(id, Some(next), "the next event, nothing before it"),
        other => panic!("expected the next event, got {other:?}"),
    }
}

/// An `EventSource` of the test: connects to the first node of `nodes`
/// that answers 200 (from `first` on, so clients spread), resumes with the
/// last id it saw, waits what `retry:` told it (3 s before any) after each
/// end, and records every event's (n, try) and when each reconnect came.
struct Resuming {
    seen: Vec<(u64, u64)>,
    reconnects: Vec<Instant>,
    /// Per event seen: its id, the node that sent it, and the `Last-Event-ID` its stream resumed from.
    from: Vec<(String, std::net::SocketAddr, Option<String>)>,
}

fn resuming_subscriber(
    nodes: Vec<std::net::SocketAddr>,
    first: usize,
    record: std::sync::Arc<std::sync::Mutex<Resuming>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    subscribed: std::sync::mpsc::Sender<()>,
) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let open = |addr: std::net::SocketAddr, last: Option<&str>| -> Option<support::Sse> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        let resume = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        write!(s, "GET /sources/s/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{resume}\r\n", support::KEY).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        if !line.starts_with("HTTP/1.1 200") {
            return None;
        }
        while line != "\r\n" {
            line.clear();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
        }
        Some(support::Sse { r })
    };
    let (mut last, mut retry_ms, mut attempt) = (None::<String>, 3000, first);
    let mut connected_before = false;
    while !stop.load(Ordering::Relaxed) {
        let addr = nodes[attempt % nodes.len()];
        let resumed = last.clone();
        let Some(mut sse) = open(addr, last.as_deref()) else {
            attempt += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if connected_before {
            record.lock().unwrap().reconnects.push(Instant::now());
        } else {
            connected_before = true;
            let _ = subscribed.send(());
        }
        loop {
            match sse.next() {
                Frame::Retry(ms) => retry_ms = ms,
                Frame::Event { id: Some(id), data } => {
                    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
                    let event = &v["event"];
                    let mut record = record.lock().unwrap();
                    record.seen.push((event["n"].as_u64().unwrap(), event["try"].as_u64().unwrap()));
                    record.from.push((id.clone(), addr, resumed.clone()));
                    drop(record);
                    last = Some(id);
                }
                Frame::End => break,
                other => assert!(matches!(other, Frame::Comment(_)), "unexpected {other:?}"),
            }
        }
        // The next connect goes to the next node: a load balancer's spread.
        attempt += 1;
        std::thread::sleep(Duration::from_millis(retry_ms));
    }
}

/// Three nodes restarted one after another, each stopped with `--drain
/// 2s`, while events are emitted to whichever node accepts: every
/// subscriber (resuming as `EventSource` does, honouring `retry:`) gets
/// every acknowledged event exactly once, and their reconnects are spread
/// (a tenth of them in any 100 ms at most, where without a drain a node's
/// streams all come back in the same instant).
#[test]
fn a_rolling_restart_with_drain_loses_nothing_and_spreads_the_reconnects() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    const SUBSCRIBERS: usize = 60;
    let redis = RedisServer::start();
    let args = ["--drain", "2s", "--history", "100000"];
    let mut nodes: Vec<TestServer> = (0..3).map(|_| node(&redis, &args)).collect();
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    nodes[0].create_source("s");
    for n in &nodes {
        wait_until(Duration::from_secs(2), "every node knows s", || source_names(n).len() == 1);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (subscribed, all_subscribed) = mpsc::channel();
    let records: Vec<Arc<Mutex<Resuming>>> =
        (0..SUBSCRIBERS).map(|_| Arc::new(Mutex::new(Resuming { seen: Vec::new(), reconnects: Vec::new(), from: Vec::new() }))).collect();
    let subscribers: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let (addrs, record, stop, subscribed) = (addrs.clone(), record.clone(), stop.clone(), subscribed.clone());
            std::thread::spawn(move || resuming_subscriber(addrs, i, record, stop, subscribed))
        })
        .collect();
    for _ in 0..SUBSCRIBERS {
        all_subscribed.recv_timeout(Duration::from_secs(10)).expect("every subscriber connects");
    }
    for n in &nodes {
        n.wait_metric("ssehub_subscribers", (SUBSCRIBERS / 3) as u64);
    }

    // Emits to the nodes in turn, the next one when one does not answer 202.
    let (acked, emitting) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(true)));
    let emitter = {
        let (addrs, acked, emitting) = (addrs.clone(), acked.clone(), emitting.clone());
        std::thread::spawn(move || {
            let mut node = 0;
            for n in 0.. {
                if !emitting.load(Ordering::Relaxed) {
                    return;
                }
                for t in 0.. {
                    let body = format!("{{\"n\":{n},\"try\":{t}}}");
                    let request = format!(
                        "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                        support::KEY,
                        body.len()
                    );
                    let ok = std::net::TcpStream::connect(addrs[node % 3]).ok().and_then(|mut s| {
                        use std::io::{Read, Write};
                        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                        s.write_all(request.as_bytes()).ok()?;
                        let mut answer = String::new();
                        s.read_to_string(&mut answer).ok()?;
                        answer.starts_with("HTTP/1.1 202").then_some(())
                    });
                    node += 1;
                    if ok.is_some() {
                        acked.lock().unwrap().push((n, t));
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();

    for i in 0..3 {
        let before = acked_count();
        wait_until(Duration::from_secs(10), "events are acknowledged between restarts", || acked_count() >= before + 100);
        let listen = addrs[i].to_string();
        let signalled = Instant::now();
        let (status, _) = nodes[i].terminate();
        assert!(status.success(), "node {i}: {status}");
        assert!(signalled.elapsed() < Duration::from_secs(3), "node {i} took {:?} to drain", signalled.elapsed());
        nodes[i] = node(&redis, &[&args[..], &["--listen", &listen]].concat());
    }
    let before = acked_count();
    wait_until(Duration::from_secs(10), "events are acknowledged after the last restart", || acked_count() >= before + 100);
    emitting.store(false, Ordering::Relaxed);
    emitter.join().unwrap();

    let acked = acked.lock().unwrap().clone();
    let everyone_has_all = || records.iter().all(|r| acked.iter().all(|a| r.lock().unwrap().seen.contains(a)));
    wait_until(Duration::from_secs(30), "every subscriber has every acknowledged event", everyone_has_all);
    stop.store(true, Ordering::Relaxed);
    drop(nodes);
    for s in subscribers {
        s.join().unwrap();
    }

    let mut reconnects = Vec::new();
    for record in &records {
        let record = record.lock().unwrap();
        // Each repeat named with its id, the node that sent it and where that stream resumed.
        let mut once = std::collections::HashSet::new();
        let twice: Vec<String> = (record.seen.iter().zip(&record.from))
            .filter(|(event, _)| !once.insert(**event))
            .map(|(event, (id, node, after))| format!("{event:?} as {id} from {node} (its stream resumed after {after:?})"))
            .collect();
        assert!(twice.is_empty(), "a subscriber got {} events twice: {}", twice.len(), twice.join("; "));
        reconnects.extend(record.reconnects.iter().copied());
    }
    // Every stream of a stopped node reconnected at least once.
    assert!(reconnects.len() >= SUBSCRIBERS, "{} reconnects", reconnects.len());
    reconnects.sort();
    let densest = (0..reconnects.len())
        .map(|i| reconnects[i..].iter().take_while(|t| **t < reconnects[i] + Duration::from_millis(100)).count())
        .max()
        .unwrap();
    println!("{} events acknowledged; {} reconnects, at most {densest} in any 100 ms", acked.len(), reconnects.len());
    // Measured: 5 of about 85 (6 %); without --drain, 20 of 60 (a whole node's streams at once).
    assert!(densest * 10 <= reconnects.len(), "{densest} of {} reconnects within 100 ms", reconnects.len());
}
