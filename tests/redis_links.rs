//! The `redis` engine's links to a real `redis-server`: Redis killed,
//! stopped, flushed, read-only or refusing writes; replies lost on the way;
//! host names resolved again, Unix sockets; what `/healthz`, `/metrics` and
//! the log say meanwhile.
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use support::redis::{healthz, node, source_names, summary_ids};
use support::{Frame, KeepAlive, RedisServer, TestServer, wait_until};

/// Redis killed, then back on the same AOF: emits answer 503 within 2 s
/// meanwhile (none hangs), streams stay open with their handshakes,
/// /healthz is 503; the nodes come back by themselves; every acknowledged
/// event is there once.
#[test]
fn redis_down_and_back() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, &["--handshake-interval", "200ms"]), node(&redis, &["--handshake-interval", "200ms"]));
    a.create_source("s");
    wait_until(Duration::from_secs(1), "b knows s", || source_names(&b).len() == 1);
    let mut stream = b.subscribe("/sources/s/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let mut acked: Vec<String> = (0..5).map(|i| a.emit("s", &format!("{{\"before\":{i}}}"))).collect();
    for id in &acked {
        assert_eq!(&stream.next_event().id(), id);
    }
    redis.kill();
    for n in [&a, &b] {
        for i in 0..3 {
            let started = Instant::now();
            let r = n.request("POST", "/v1/sources/s/events", Some(&format!("{{\"down\":{i}}}")));
            assert_eq!(r.status, 503, "{}", r.body);
            assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());
        }
        wait_until(Duration::from_secs(3), "/healthz 503", || healthz(n) == 503);
        // A delete or a clear is refused, not done here and undone later.
        assert_eq!(n.request("DELETE", "/v1/sources/s/events", None).status, 503);
        assert_eq!(n.request("DELETE", "/v1/sources/s", None).status, 503);
        assert_eq!(n.request("GET", "/v1/sources/s", None).status, 200);
        assert_eq!(summary_ids(n, "s"), acked, "the history is still there");
    }
    // The stream stays open: handshakes go on.
    for _ in 0..3 {
        assert_eq!(stream.next(), Frame::Comment("sse-handshake".into()));
    }
    redis.restart();
    for n in [&a, &b] {
        wait_until(Duration::from_secs(10), "/healthz 200 again", || healthz(n) == 200);
    }
    for i in 0..5 {
        let n = if i % 2 == 0 { &a } else { &b };
        acked.push(n.emit("s", &format!("{{\"after\":{i}}}")));
    }
    for id in &acked[5..] {
        assert_eq!(&stream.next_event().id(), id, "the same stream goes on");
    }
    for n in [&a, &b] {
        assert_eq!(summary_ids(n, "s"), acked, "every acknowledged event once");
        assert!(n.metric("ssehub_redis_reconnects_total") >= 1);
    }
}

/// `redis://localhost:…`: the name is resolved at start, and again (off
/// the loop) when the links reconnect after Redis went away.
#[test]
fn a_host_name_is_resolved_again_when_the_links_reconnect() {
    let mut redis = RedisServer::start();
    let url = redis.url().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("redis://localhost:"), "{url}");
    let a = TestServer::start(&["--redis", &url]);
    a.create_source("s");
    let mut stream = a.subscribe("/sources/s/sse", "");
    a.wait_metric("ssehub_subscribers", 1);
    let first = a.emit("s", "{\"n\":1}");
    assert_eq!(stream.next_event().id(), first);
    redis.kill();
    wait_until(Duration::from_secs(3), "/healthz 503", || healthz(&a) == 503);
    redis.restart();
    wait_until(Duration::from_secs(10), "/healthz 200 again", || healthz(&a) == 200);
    let second = a.emit("s", "{\"n\":2}");
    assert_eq!(stream.next_event().id(), second);
    assert!(a.metric("ssehub_redis_reconnects_total") >= 1);
}

/// Redis stopped (SIGSTOP): connections stay up but nothing answers;
/// emits still answer 503 within 2 s; after SIGCONT the nodes resume.
#[test]
fn redis_stopped_and_continued() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    a.create_source("s");
    let mut acked = vec![a.emit("s", "1")];
    support::signal(redis.pid(), "STOP");
    let emits: Vec<_> = (0..4)
        .map(|i| {
            let addr = a.addr;
            std::thread::spawn(move || {
                let mut c = KeepAlive::new(addr);
                let started = Instant::now();
                let r = c.request("POST", "/v1/sources/s/events", &format!("{{\"stopped\":{i}}}"));
                (r.status, started.elapsed())
            })
        })
        .collect();
    for e in emits {
        let (status, took) = e.join().unwrap();
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
    }
    wait_until(Duration::from_secs(3), "/healthz 503", || healthz(&a) == 503);
    support::signal(redis.pid(), "CONT");
    wait_until(Duration::from_secs(10), "/healthz 200 again", || healthz(&a) == 200);
    acked.push(a.emit("s", "2"));
    let ids = summary_ids(&a, "s");
    for id in &acked {
        assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id} once in {ids:?}");
    }
}

/// Unix socket, a password and a db number.
#[test]
fn unix_socket_with_password_and_db() {
    let dir = support::TempDir::new("redis-unix");
    let sock = dir.0.join("redis.sock");
    let mut child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--unixsocket", sock.to_str().unwrap(), "--dir", dir.path(), "--save", "", "--requirepass", "s3cret"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "redis-server listens", || sock.exists());
    let url = format!("unix://{}?db=3", sock.display());
    let refused = std::process::Command::new(support::bin())
        .args(["serve", "--api-key", "k", "--listen", "127.0.0.1:0", "--redis", &url])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "no password: refused at start");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot load from Redis"), "{}", String::from_utf8_lossy(&refused.stderr));
    // Unix URLs take the password (and a user) in the query.
    let mut command = std::process::Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", support::KEY, "--redis", &format!("{url}&password=s3cret")]);
    let a = TestServer::spawn(&mut command, support::KEY);
    a.create_source("s");
    let id = a.emit("s", "1");
    assert_eq!(summary_ids(&a, "s"), [id]);
    let _ = child.kill();
    let _ = child.wait();
}

/// A TCP proxy in front of Redis that, once armed, cuts the connection
/// that carries a command holding `marker` after forwarding it, before
/// Redis's reply gets back.
struct CuttingProxy {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl CuttingProxy {
    fn start(redis_port: u16, marker: &'static [u8]) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (armed2, cuts2) = (armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut upstream) = std::net::TcpStream::connect(("127.0.0.1", redis_port)) else { continue };
                let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (cut2, armed3, cuts3) = (cut.clone(), armed2.clone(), cuts2.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = c2.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if armed3.load(SeqCst) && buf[..n].windows(marker.len()).any(|w| w == marker) {
                            armed3.store(false, SeqCst);
                            cut2.store(true, SeqCst);
                            cuts3.fetch_add(1, SeqCst);
                        }
                        if u2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u2.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = upstream.read(&mut buf) {
                        if n == 0 || cut.load(SeqCst) {
                            break;
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = upstream.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { port, armed, cuts }
    }
}

/// An emit whose script ran in Redis but whose reply was lost (the proxy
/// cuts the connection in between): the event exists exactly once, and
/// the emit is answered 202 with its id (its record in the partition
/// proves it landed) or 503, never stored twice.
#[test]
fn a_lost_reply_is_not_stored_twice() {
    use std::sync::atomic::Ordering::SeqCst;
    let redis = RedisServer::start();
    let proxy = CuttingProxy::start(redis.port, b"LOST-REPLY");
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let a = TestServer::start(&["--redis", &url]);
    a.create_source("s");
    let first = a.emit("s", "{\"n\":1}");
    proxy.armed.store(true, SeqCst);
    let r = a.request("POST", "/v1/sources/s/events", Some("{\"marker\":\"LOST-REPLY\"}"));
    assert_eq!(proxy.cuts.load(SeqCst), 1, "the proxy cut the reply");
    // The answer may come (from the partition's record) before the node
    // sees the cut link: healthy counts only once the loss is seen.
    a.wait_metric("ssehub_redis_reconnects_total", 1);
    wait_until(Duration::from_secs(10), "the node reconnects", || healthz(&a) == 200);
    let last = a.emit("s", "{\"n\":3}");
    let ids = summary_ids(&a, "s");
    let lost_reply: Vec<String> = {
        let r = a.request("GET", "/v1/sources/s/event_summaries?limit=100", None);
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["marker"] == "LOST-REPLY")
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(lost_reply.len(), 1, "stored exactly once: {ids:?}");
    match r.status {
        202 => assert_eq!(r.json()["id"].as_str().unwrap(), lost_reply[0]),
        503 => {}
        other => panic!("{other}: {}", r.body),
    }
    eprintln!("lost reply answered {}", r.status);
    assert_eq!(ids, [first, lost_reply[0].clone(), last]);
}

/// An emit with a key whose reply is lost (the proxy cuts it), then the
/// client's retry with the same key, on the same node and on another
/// (which only Redis can answer): one event, and each retry answers its id.
#[test]
fn a_lost_reply_then_a_retry_with_the_key_stores_one_event() {
    use std::sync::atomic::Ordering::SeqCst;
    let redis = RedisServer::start();
    let proxy = CuttingProxy::start(redis.port, b"LOST-REPLY");
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let a = TestServer::start(&["--redis", &url]);
    let b = node(&redis, &[]);
    a.create_source("s");
    wait_until(Duration::from_secs(5), "b has the source", || source_names(&b) == ["s"]);
    let body = r#"{"marker":"LOST-REPLY"}"#;
    proxy.armed.store(true, SeqCst);
    let r = a.emit_keyed("s", "retry-me", body);
    assert_eq!(proxy.cuts.load(SeqCst), 1, "the proxy cut the reply");
    assert!(matches!(r.status, 202 | 503), "{}: {}", r.status, r.body);
    a.wait_metric("ssehub_redis_reconnects_total", 1);
    wait_until(Duration::from_secs(10), "the node reconnects", || healthz(&a) == 200);
    let retry = b.emit_keyed("s", "retry-me", body);
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed").as_deref(), Some("true"));
    let id = retry.json()["id"].as_str().unwrap().to_string();
    let again = a.emit_keyed("s", "retry-me", body);
    assert_eq!((again.status, again.json()["id"].as_str()), (202, Some(id.as_str())), "{}", again.body);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    for n in [&a, &b] {
        wait_until(Duration::from_secs(5), "the event on both nodes", || !summary_ids(n, "s").is_empty());
        assert_eq!(summary_ids(n, "s"), [id.as_str()], "stored once");
    }
    if r.status == 202 {
        assert_eq!(r.json()["id"], retry.json()["id"]);
    }
    eprintln!("lost reply answered {}", r.status);
}

/// Redis loses its data (FLUSHALL; then a restart without its files):
/// the nodes notice, write back the sources they know (same ids and
/// endpoint keys), new ids are above every id served, and a subscriber
/// resuming from before on a node that has not the events gets the gap frame.
#[test]
fn redis_data_loss_is_survived() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let created = a.create_source("s");
    wait_until(Duration::from_secs(1), "b knows s", || source_names(&b).len() == 1);
    let mut stream = b.subscribe("/sources/s/sse", "");
    b.wait_metric("ssehub_subscribers", 1);
    let before: Vec<String> = (0..3).map(|i| a.emit("s", &format!("{{\"before\":{i}}}"))).collect();
    for id in &before {
        assert_eq!(&stream.next_event().id(), id);
    }
    let key = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    let mut served = before.clone();
    for round in 0..2 {
        if round == 0 {
            assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
        } else {
            redis.kill();
            for f in std::fs::read_dir(&redis.dir.0).unwrap() {
                let p = f.unwrap().path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            redis.restart();
        }
        // The first emits may meet the loss (503, nothing stored); then it works again.
        let mut id = None;
        wait_until(Duration::from_secs(10), "emits accepted again", || {
            let r = a.request("POST", "/v1/sources/s/events", Some(&format!("{{\"round\":{round}}}")));
            if r.status == 202 {
                id = Some(r.json()["id"].as_str().unwrap().to_string());
            }
            r.status == 202
        });
        let id = id.unwrap();
        assert!(key(&id) > key(served.last().unwrap()), "{id} above every id served");
        assert_eq!(stream.next_event().id(), id, "b's live stream goes on");
        served.push(id);
        // The source is back in Redis as it was.
        let c = node(&redis, &[]);
        let on_c = c.request("GET", "/v1/sources/s", None).json()["data"].clone();
        assert_eq!(on_c["id"], created["id"]);
        assert_eq!(on_c["endpoint_url"].as_str().unwrap().rsplit('/').next(), created["endpoint_url"].as_str().unwrap().rsplit('/').next());
        // c never had the events before the loss: a resume from before gets the gap frame.
        let mut resumed = c.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", before[0]));
        match resumed.next_event() {
            Frame::Named { event, data } => {
                assert_eq!(event, "gap");
                let gap: serde_json::Value = serde_json::from_str(&data).unwrap();
                assert_eq!(gap["after"], before[0].as_str());
            }
            other => panic!("expected the gap frame, got {other:?}"),
        }
        assert_eq!(resumed.next_event().id(), *served.last().unwrap());
    }
}

/// Redis refuses writes (it became a replica, as an old master does after
/// a failover): a delete, a clear, a revocation or a signature change
/// answered `503` is not done on the node either, and no node shows it
/// (the node leaves the replica at its first `-READONLY`, and its `ROLE`
/// keeps it away); all of them work once Redis is a master again. (A Redis with its
/// memory full refuses only what adds: deletes still go through there.)
#[test]
fn changes_a_read_only_redis_refuses_are_taken_back() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    a.create_source("s");
    let r = a.request("PATCH", "/v1/sources/s", Some(r#"{"verify":{"scheme":"github","secret":"s"}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let token = a.create_token("s");
    let events = vec![a.emit("s", "{\"n\":1}"), a.emit("s", "{\"n\":2}")];
    let with_token =
        |n: &TestServer| n.raw_request("GET", "/v1/sources/s/event_summaries", &format!("Authorization: Bearer {token}\r\n"), None).status;
    let unchanged = |n: &TestServer, when: &str| {
        let r = n.request("GET", "/v1/sources/s", None);
        assert_eq!(r.status, 200, "{when}: the source is there: {}", r.body);
        assert_eq!(r.json()["data"]["verify"]["scheme"], "github", "{when}: its signature check");
        assert_eq!(summary_ids(n, "s"), events, "{when}: its history");
        assert_eq!(with_token(n), 200, "{when}: its token");
    };
    wait_until(Duration::from_secs(2), "b has it all", || {
        b.request("GET", "/v1/sources/s", None).status == 200 && with_token(&b) == 200 && summary_ids(&b, "s") == events
    });
    // A replica of a master that is not there: it keeps its data and refuses writes.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(redis.cli(&["REPLICAOF", "127.0.0.1", &nobody.to_string()]), "OK");
    for (method, path, change) in [
        ("DELETE", "/v1/sources/s", None),
        ("DELETE", "/v1/sources/s/events", None),
        ("DELETE", &*format!("/v1/sources/s/tokens/{token}"), None),
        ("PATCH", "/v1/sources/s", Some(r#"{"verify":null}"#)),
    ] {
        let r = a.request(method, path, change);
        assert_eq!((r.status, r.body.as_str()), (503, r#"{"error":"storage unavailable"}"#), "{method} {path}");
        unchanged(&a, &format!("a, after the refused {method} {path}"));
    }
    assert_eq!(a.request("POST", "/v1/sources/s/events", Some("3")).status, 503);
    unchanged(&b, "b");
    assert_eq!(redis.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    // The node left the replica to find the master again: back within its reconnect backoff.
    wait_until(Duration::from_secs(3), "a is back on the master", || healthz(&a) == 200);
    assert_eq!(a.request("DELETE", &format!("/v1/sources/s/tokens/{token}"), None).status, 204);
    assert_eq!(with_token(&a), 401);
    assert_eq!(a.request("DELETE", "/v1/sources/s", None).status, 204);
    wait_until(Duration::from_secs(2), "s gone everywhere", || {
        [&a, &b].iter().all(|n| n.request("GET", "/v1/sources/s", None).status == 404)
    });
}

/// The round trip to Redis is a Prometheus histogram in seconds: after
/// some emits its buckets count up cumulatively, in order, and end with
/// `le="+Inf"` equal to `_count`; the old mean in microseconds is gone.
#[test]
fn the_redis_round_trip_is_a_histogram_in_seconds() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    a.create_source("s");
    for i in 0..20 {
        a.emit("s", &i.to_string());
    }
    let body = a.request("GET", "/metrics", None).body;
    let name = "ssehub_redis_round_trip_seconds";
    assert!(body.contains(&format!("# TYPE {name} histogram\n")), "{body}");
    assert!(!body.contains("round_trip_microseconds"), "{body}");
    let buckets: Vec<(String, u64)> = body
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .map(|rest| {
            let (le, count) = rest.split_once("\"} ").unwrap();
            (le.to_string(), count.parse().unwrap())
        })
        .collect();
    let value = |suffix: &str| body.lines().find_map(|l| l.strip_prefix(&format!("{name}{suffix} "))).unwrap_or_else(|| panic!("{body}"));
    let count: u64 = value("_count").parse().unwrap();
    // (An emit acknowledged by its partition record before its reply is not yet counted.)
    assert!(count > 0, "{body}");
    let les: Vec<f64> = buckets[..buckets.len() - 1].iter().map(|(le, _)| le.parse().unwrap()).collect();
    assert!(les.len() >= 10 && les.windows(2).all(|w| w[0] < w[1]), "{les:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
    assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), count));
    let sum: f64 = value("_sum").parse().unwrap();
    assert!(sum > 0.0 && sum < count as f64, "{sum}");
}

/// Calls of the script that failed in Redis, from `INFO commandstats`.
fn failed_script_calls(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    let line = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap_or("");
    line.split(',').find_map(|f| f.strip_prefix("failed_calls=")).map_or(0, |n| n.parse().unwrap())
}

/// Redis refusing writes (memory full under `noeviction`; too few
/// replicas for `min-replicas-to-write`): from the first refused emit on,
/// `/healthz` is 503, also across the engine's probes, so a load balancer
/// stops sending traffic; a clear is still tried (a full memory takes it,
/// which does not make the node healthy); once Redis takes writes again,
/// `/healthz` is 200 within about 2 s with no change sent, and emits
/// succeed.
#[test]
fn healthz_is_503_while_redis_refuses_writes_and_200_again_without_traffic() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    a.create_source("s");
    a.emit("s", "1");
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]), "OK");
    for (setting, refusing, taking, clear) in [("maxmemory", "1", "0", 202), ("min-replicas-to-write", "1", "0", 503)] {
        assert_eq!(redis.cli(&["CONFIG", "SET", setting, refusing]), "OK");
        let r = a.request("POST", "/v1/sources/s/events", Some("2"));
        assert_eq!((r.status, r.body.as_str()), (503, r#"{"error":"storage unavailable"}"#), "{setting}");
        assert_eq!(healthz(&a), 503, "{setting}: unhealthy from the first refused change");
        assert_eq!(a.request("DELETE", "/v1/sources/s/events", None).status, clear, "{setting}: a clear");
        assert_eq!(healthz(&a), 503, "{setting}");
        let failed = failed_script_calls(&redis);
        wait_until(Duration::from_secs(3), "a probe refused", || failed_script_calls(&redis) > failed);
        assert_eq!(healthz(&a), 503, "{setting}: a refused probe keeps it unhealthy");
        assert_eq!(redis.cli(&["CONFIG", "SET", setting, taking]), "OK");
        wait_until(Duration::from_millis(2500), "/healthz 200 again with no change sent", || healthz(&a) == 200);
        a.emit("s", "3");
    }
}

/// Lines of `logs` that contain `what`, at `level` (any level: "").
fn log_lines(logs: &str, level: &str, what: &str) -> usize {
    logs.lines().filter(|l| l.contains(&format!(" {level}")) && l.contains(what)).count()
}

/// Redis refusing and taking writes many times a second, and its links
/// cut many times over: each kind of the engine's lines is logged at its
/// level at most once a second; the others go to debug, each still there.
#[test]
fn a_flapping_redis_is_logged_once_a_second_per_kind() {
    const FLAPS: usize = 8;
    let redis = RedisServer::start();
    // One partition reader, which an emit answers (a reply resets its reconnect backoff).
    let a = node(&redis, &["--redis-partitions", "1"]);
    a.create_source("s");
    let started = Instant::now();
    for _ in 0..FLAPS {
        assert_eq!(redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "1"]), "OK");
        assert_eq!(a.request("POST", "/v1/sources/s/events", Some("1")).status, 503);
        assert_eq!(redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "0"]), "OK");
        a.emit("s", "2");
    }
    for i in 1..=FLAPS {
        redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        wait_until(Duration::from_secs(5), "reachable again", || log_lines(&a.logs(), "", "reachable again after") == i);
        a.emit("s", "3");
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let logs = a.logs();
    for (level, what) in [
        ("WARN", "Redis refused a change: NOREPLICAS"),
        ("INFO", "takes changes again"),
        ("ERROR", "unreachable ("),
        ("INFO", "reachable again after"),
    ] {
        let n = log_lines(&logs, level, what);
        assert!((1..=seconds).contains(&n), "{n} lines of {what:?} at {level} in {seconds} s:\n{logs}");
        assert_eq!(log_lines(&logs, "", what), FLAPS, "each one is there, the others at debug:\n{logs}");
    }
}
