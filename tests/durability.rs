//! The `log` engine through the real binary, real files and real signals:
//! `kill -9` during concurrent emits in every `--fsync` mode, a simulated
//! power loss, damage in an earlier segment, a write failure under
//! `RLIMIT_FSIZE`, bounded disk across compactions, the lock and the modes
//! of the data dir.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{KEY, TempDir, TestServer, read_response};

/// An event id as a comparable pair.
fn id(s: &str) -> (u64, u64) {
    let (ms, seq) = s.split_once('-').unwrap_or_else(|| panic!("not an id: {s}"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// `ssehub serve` on `listen` with `dir` as its data dir and no key given
/// (so one is generated and kept), plus `args`; returns it with its key.
fn serve(dir: &TempDir, listen: &str, args: &[&str]) -> TestServer {
    serve_with(Command::new(support::bin()), dir, listen, args)
}

fn serve_with(mut command: Command, dir: &TempDir, listen: &str, args: &[&str]) -> TestServer {
    command.args(["serve", "--listen", listen, "--data-dir", dir.path()]).args(args);
    let mut server = TestServer::spawn(&mut command, "");
    server.key = generated_key(&server, dir);
    server
}

/// The generated key, once the server has said it uses one, as a user
/// reads it: `ssehub key --data-dir DIR` (the whole key is logged only by
/// the start that generated it).
fn generated_key(server: &TestServer, dir: &TempDir) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.logs().lines().any(|l| l.contains("generated")) {
        assert!(Instant::now() < deadline, "no generated key in the log:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = Command::new(support::bin()).args(["key", "--data-dir", dir.path()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits for the child to exit after SIGKILL.
fn kill9(server: &mut TestServer) {
    support::signal(server.pid(), "KILL");
    server.child.wait().unwrap();
}

/// The sources of the server's account as (id, name, endpoint_url, sse_url), sorted.
fn sources(server: &TestServer) -> Vec<(String, String, String, String)> {
    let r = server.request("GET", "/v1/sources", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut all: Vec<_> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap().to_string();
            (f("id"), f("name"), f("endpoint_url"), f("sse_url"))
        })
        .collect();
    all.sort();
    all
}

/// The retained events of `source`, oldest first, as (id, payload).
fn retained(server: &TestServer, source: &str, history: usize) -> Vec<(String, serde_json::Value)> {
    let r = server.request("GET", &format!("/v1/sources/{source}/event_summaries?limit={history}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut events: Vec<_> =
        r.json()["data"].as_array().unwrap().iter().map(|e| (e["id"].as_str().unwrap().to_string(), e["event"].clone())).collect();
    events.reverse();
    events
}

/// The replay of a stream from id 0 (every retained event), as (id, payload).
fn replay(server: &TestServer, source: &str, count: usize) -> Vec<(String, serde_json::Value)> {
    let mut sse = server.subscribe(&format!("/v1/sources/{source}/sse"), "Last-Event-ID: 0-0\r\n");
    let mut out = Vec::new();
    while out.len() < count {
        match sse.next_event() {
            support::Frame::Named { .. } => continue,
            frame => {
                let id = frame.id();
                out.push((id, frame.envelope()["event"].clone()));
            }
        }
    }
    out
}

/// Emits on one keep-alive connection, `depth` requests in flight,
/// recording every acknowledged (source, id, n) until `stop` or an error.
fn emitter(
    addr: SocketAddr,
    key: &str,
    sources: Vec<String>,
    depth: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String, u64)>>>,
) {
    let Ok(mut s) = TcpStream::connect(addr) else { return };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<(String, u64)> = (0..depth).map(|i| (sources[(n as usize + i * 7) % sources.len()].clone(), n + i as u64)).collect();
        n += depth as u64;
        let mut req = String::new();
        for (source, k) in &batch {
            let body = format!("{{\"n\":{k},\"pad\":\"{}\"}}", "x".repeat(40));
            req.push_str(&format!(
                "POST /v1/sources/{source}/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        if s.write_all(req.as_bytes()).is_err() {
            return;
        }
        for (source, k) in batch {
            let Some(resp) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_response(&mut r))).ok() else { return };
            if resp.status != 202 {
                return;
            }
            acked.lock().unwrap().push((source, resp.json()["id"].as_str().unwrap().to_string(), k));
        }
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    files.sort();
    files
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn kill_9_during_concurrent_emits_loses_no_acknowledged_event_in_any_fsync_mode() {
    const SOURCES: usize = 50;
    const HISTORY: usize = 40;
    for fsync in ["always", "everysec", "never"] {
        let dir = TempDir::new("kill9");
        let listen = free_port();
        let args = ["--fsync", fsync, "--history", "40"];
        let mut server = serve(&dir, &listen, &args);
        let key = server.key.clone();
        let names: Vec<String> = (0..SOURCES).map(|i| format!("s{i}")).collect();
        for name in &names {
            server.create_source(name);
        }
        let before = sources(&server);
        assert_eq!(before.len(), SOURCES);

        let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (stop, acked, names) = (stop.clone(), acked.clone(), names[t..].iter().chain(&names[..t]).cloned().collect());
                let addr = server.addr;
                let key = key.clone();
                std::thread::spawn(move || emitter(addr, &key, names, 8, stop, acked))
            })
            .collect();
        // Killed in the middle: once enough is acknowledged, emitters still running.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < 3000 {
            assert!(Instant::now() < deadline, "{fsync}: emits too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill9(&mut server);
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        let acked = acked.lock().unwrap().clone();

        let server = serve(&dir, &listen, &args);
        assert_eq!(server.key, key, "{fsync}: the generated key is kept");
        assert!(server.logs().contains("using the generated key kept in"), "{}", server.logs());
        assert_eq!(sources(&server), before, "{fsync}: sources and endpoint URLs are unchanged");

        let mut by_source: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for (source, i, _) in &acked {
            by_source.entry(source).or_default().push(id(i));
        }
        for name in &names {
            let events = retained(&server, name, HISTORY);
            let ids: Vec<(u64, u64)> = events.iter().map(|(i, _)| id(i)).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{fsync}: {name}: ids increase, none twice: {ids:?}");
            assert_eq!(replay(&server, name, ids.len()).iter().map(|(i, _)| id(i)).collect::<Vec<_>>(), ids, "{fsync}: {name}: replay");
            let mine = by_source.get(name.as_str()).cloned().unwrap_or_default();
            let floor = if ids.len() == HISTORY { ids[0] } else { (0, 0) };
            let replayed: HashSet<_> = ids.iter().collect();
            for a in mine.iter().filter(|a| **a >= floor) {
                assert!(replayed.contains(a), "{fsync}: {name}: acknowledged {a:?} not replayed");
            }
            let newest = mine.iter().chain(&ids).max().copied().unwrap_or((0, 0));
            let next = id(&server.emit(name, "{\"after\":true}"));
            assert!(next > newest, "{fsync}: {name}: the next id {next:?} is greater than {newest:?}");
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0), 0o700, "{fsync}: the data dir is private");
        for f in std::fs::read_dir(&dir.0).unwrap() {
            let p = f.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{fsync}: {} is private", p.display());
        }
    }
}

#[test]
fn a_simulated_power_loss_keeps_what_was_synced_and_serves_no_corrupt_event() {
    for fsync in ["always", "everysec", "never"] {
        let dir = TempDir::new("power");
        let listen = free_port();
        let args = ["--fsync", fsync, "--api-key", KEY, "--history", "1000"];
        let mut command = Command::new(support::bin());
        command.args(["serve", "--listen", &listen, "--data-dir", dir.path()]).args(args);
        let mut server = TestServer::spawn(&mut command, KEY);
        let names = ["a", "b", "c"];
        for name in names {
            server.create_source(name);
        }
        let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (stop, acked, addr) = (stop.clone(), acked.clone(), server.addr);
                std::thread::spawn(move || emitter(addr, KEY, names.iter().map(|s| s.to_string()).collect(), 4, stop, acked))
            })
            .collect();
        while acked.lock().unwrap().len() < 600 {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        // What the server last reported as synced; then the machine "loses power".
        let synced = server.metric("ssehub_log_synced_bytes_total");
        assert_eq!(server.metric("ssehub_log_compactions_total"), 0);
        kill9(&mut server);
        let acked = acked.lock().unwrap().clone();
        let files = segment_files(&dir.0);
        assert_eq!(files.len(), 1, "one segment: {files:?}");
        let keep = 8 + synced; // the segment's magic, then everything synced since start
        let file = std::fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
        assert!(file.metadata().unwrap().len() >= keep);
        file.set_len(keep).unwrap();
        // A partial record: a header promising more than follows, then noise.
        let mut torn = 400u32.to_le_bytes().to_vec();
        torn.extend_from_slice(&[0xA5, 0x5A, 0x3C, 0xC3, 3, 1, 0, 0, 0, b'a', 9, 9]);
        drop(file);
        std::fs::OpenOptions::new().append(true).open(&files[0]).unwrap().write_all(&torn).unwrap();

        let mut command = Command::new(support::bin());
        command.args(["serve", "--listen", &listen, "--data-dir", dir.path()]).args(args);
        let server = TestServer::spawn(&mut command, KEY);
        let logs = server.logs();
        assert!(logs.contains("cut"), "{fsync}: the cut is reported:\n{logs}");
        assert_eq!(server.metric("ssehub_log_cut_bytes_total"), torn.len() as u64, "{fsync}");
        let have: Vec<_> = sources(&server).into_iter().map(|s| s.1).collect();
        for name in have.iter().filter(|n| names.contains(&n.as_str())) {
            for (i, payload) in retained(&server, name, 1000) {
                // Every event served is one that was emitted, whole.
                let n = payload["n"].as_u64().unwrap_or_else(|| panic!("{fsync}: corrupt event {i}: {payload}"));
                assert_eq!(payload["pad"].as_str().map(str::len), Some(40), "{fsync}: corrupt event {i}");
                assert!(n < 1_000_000, "{fsync}: event {i} is one that was emitted");
            }
        }
        if fsync == "always" {
            assert_eq!(have.len(), names.len(), "always: every source survives");
            for name in names {
                let got: HashSet<String> = retained(&server, name, 1000).into_iter().map(|(i, _)| i).collect();
                for (s, i, _) in acked.iter().filter(|(s, _, _)| s == name) {
                    assert!(got.contains(i), "always: acknowledged {s}/{i} lost");
                }
            }
        }
    }
}

/// Starts a server that fills its log past one compaction; returns the
/// data dir with two segments (the snapshot, then the active one).
fn two_segments() -> TempDir {
    let dir = TempDir::new("segments");
    let listen = free_port();
    let mut server = serve(&dir, &listen, &["--history", "5", "--max-event-bytes", "70000"]);
    server.create_source("big");
    let body = format!("{{\"blob\":\"{}\"}}", "y".repeat(60_000));
    let mut s = server.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..80 {
        write!(
            s,
            "POST /v1/sources/big/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
            server.key,
            body.len()
        )
        .unwrap();
        assert_eq!(read_response(&mut r).status, 202);
    }
    server.wait_metric("ssehub_log_compactions_total", 1);
    server.emit("big", "{\"after\":\"compaction\"}");
    server.terminate();
    dir
}

#[test]
fn damage_in_an_earlier_segment_refuses_to_start_unless_repair() {
    let dir = two_segments();
    let files = segment_files(&dir.0);
    assert_eq!(files.len(), 2, "{files:?}");
    // One bit flipped in the middle of the snapshot (an event's payload).
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&files[0], &bytes).unwrap();

    let out = Command::new(support::bin()).args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR") || l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(errors[0].contains(name) && errors[0].contains("offset") && errors[0].contains("--repair"), "{stderr}");

    let server = serve(&dir, "127.0.0.1:0", &["--repair", "--history", "5"]);
    let logs = server.logs();
    assert!(logs.contains("repair") && logs.contains(name), "what was cut is said:\n{logs}");
    assert!(server.metric("ssehub_log_cut_bytes_total") > 0);
    // The segment after the damage still counts: the newest event is there.
    let events = retained(&server, "big", 5);
    assert_eq!(events.last().unwrap().1["after"], "compaction", "{events:?}");
}

#[test]
fn a_write_failure_answers_503_keeps_streams_open_and_loses_nothing_acknowledged() {
    let dir = TempDir::new("fsize");
    let listen = free_port();
    // RLIMIT_FSIZE of 64 KiB for the server alone (SIGXFSZ is ignored by it).
    let mut command = Command::new("prlimit");
    command.args(["--fsize=65536", "--", support::bin()]);
    let server = serve_with(command, &dir, &listen, &["--handshake-interval", "100ms"]);
    server.create_source("full");
    let mut sse = server.subscribe("/v1/sources/full/sse", "");
    let body = format!("{{\"pad\":\"{}\"}}", "z".repeat(1000));
    let mut acked = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let r = server.request("POST", "/v1/sources/full/events", Some(&body));
        match r.status {
            202 => acked.push(r.json()["id"].as_str().unwrap().to_string()),
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let refused = refused.expect("the log filled up");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json(), serde_json::json!({"error": "storage unavailable"}));
    assert!(acked.len() > 10, "{} acknowledged before the limit", acked.len());
    // Refused again, with one error line for all of them.
    assert_eq!(server.request("POST", "/v1/sources/full/events", Some(&body)).status, 503);
    let endpoint = sources(&server)[0].2.clone();
    let path = endpoint.split_once("/e/").map(|(_, k)| format!("/e/{k}")).unwrap();
    assert_eq!(server.raw_request("POST", &path, "", Some(&body)).status, 503, "the webhook is refused too");
    let logs = server.logs();
    assert_eq!(logs.lines().filter(|l| l.contains("write to the log")).count(), 1, "{logs}");
    // The stream is open: it got every acknowledged event, then still handshakes.
    for want in &acked {
        assert_eq!(&sse.next_event().id(), want);
    }
    assert_eq!(sse.next(), support::Frame::Comment("sse-handshake".into()));
    drop(server);

    let server = serve(&dir, &listen, &[]);
    let got: Vec<String> = retained(&server, "full", 1000).into_iter().map(|(i, _)| i).collect();
    assert_eq!(got, acked, "exactly the acknowledged events survive");
    server.emit("full", "{\"room\":true}");
}

/// `/healthz` says what emits find: `503` while writes to the log fail, so
/// that a load balancer moves traffic away, and `200` again once they
/// succeed, without any emit to find it out (the traffic is elsewhere).
#[test]
fn healthz_answers_503_while_writes_fail_and_200_once_they_succeed() {
    let dir = TempDir::new("fsize-health");
    let listen = free_port();
    // A soft limit of 64 KiB, raised below (the hard one stays unlimited).
    let mut command = Command::new("prlimit");
    command.args(["--fsize=65536:unlimited", "--", support::bin()]);
    let server = serve_with(command, &dir, &listen, &[]);
    server.create_source("full");
    let health = || server.raw_request("GET", "/healthz", "", None);
    assert_eq!(health().status, 200);
    let body = format!("{{\"pad\":\"{}\"}}", "z".repeat(1000));
    let refused = (0..200).map(|_| server.request("POST", "/v1/sources/full/events", Some(&body)).status).find(|&s| s != 202);
    assert_eq!(refused, Some(503), "the log filled up");
    let r = health();
    assert_eq!((r.status, r.body.as_str()), (503, r#"{"error":"storage unavailable"}"#), "while writes fail");

    let status = Command::new("prlimit").args(["--pid", &server.pid().to_string(), "--fsize=unlimited:unlimited"]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while health().status != 200 {
        assert!(Instant::now() < deadline, "/healthz still 503 with room to write:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.logs().contains("writes to the log succeed again"), "{}", server.logs());
    assert_eq!(server.request("POST", "/v1/sources/full/events", Some(&body)).status, 202);
    assert_eq!(health().status, 200);
}

/// Changes refused because the log cannot be written are taken back: a
/// `503` leaves the source, its history, its token and its signature check
/// as they were, here and after a restart, and a refused create leaves no
/// source behind.
#[test]
fn changes_a_full_log_refuses_are_taken_back_here_and_after_a_restart() {
    let dir = TempDir::new("fsize-undo");
    let listen = free_port();
    let mut command = Command::new("prlimit");
    command.args(["--fsize=65536", "--", support::bin()]);
    let server = serve_with(command, &dir, &listen, &[]);
    server.create_source("full");
    let r = server.request("PATCH", "/v1/sources/full", Some(r#"{"verify":{"scheme":"github","secret":"s"}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let token = server.create_token("full");
    // The log is filled to its last byte, so that even the smallest record
    // (a delete's) cannot be written: each event's record is its payload
    // plus a fixed overhead, measured once.
    const LIMIT: u64 = 65536;
    let log_len = || segment_files(&dir.0).last().unwrap().metadata().unwrap().len();
    let mut acked = Vec::new();
    let mut emit_sized = |len: u64| {
        let r = server.request("POST", "/v1/sources/full/events", Some(&format!("\"{}\"", "z".repeat(len as usize - 2))));
        assert_eq!(r.status, 202, "{}", r.body);
        acked.push(r.json()["id"].as_str().unwrap().to_string());
    };
    let before = log_len();
    emit_sized(100);
    let overhead = log_len() - before - 100;
    let smallest = overhead + 2;
    loop {
        let room = LIMIT - log_len();
        let record = match room {
            0 => break,
            r if r > 1000 + smallest => 1000,
            r if r <= 1000 => r,
            r => r - smallest,
        };
        emit_sized(record - overhead);
    }
    let r = server.request("POST", "/v1/sources/full/events", Some("1"));
    assert_eq!(r.status, 503, "the log is full: {}", r.body);
    let with_token = |server: &TestServer| {
        server.raw_request("GET", "/v1/sources/full/event_summaries?limit=1", &format!("Authorization: Bearer {token}\r\n"), None).status
    };
    let unchanged = |server: &TestServer, when: &str| {
        let r = server.request("GET", "/v1/sources/full", None);
        assert_eq!(r.status, 200, "{when}: the source is there: {}", r.body);
        assert_eq!(r.json()["data"]["verify"]["scheme"], "github", "{when}: its signature check");
        let got: Vec<String> = retained(server, "full", 1000).into_iter().map(|(i, _)| i).collect();
        assert_eq!(got, acked, "{when}: its history");
        assert_eq!(with_token(server), 200, "{when}: its token");
        let names: Vec<String> = sources(server).into_iter().map(|s| s.1).collect();
        assert_eq!(names, ["full"], "{when}: no other source");
    };
    for (method, path, change) in [
        ("DELETE", "/v1/sources/full", None),
        ("DELETE", "/v1/sources/full/events", None),
        ("DELETE", &format!("/v1/sources/full/tokens/{token}"), None),
        ("PATCH", "/v1/sources/full", Some(r#"{"verify":null}"#)),
        ("POST", "/v1/sources", Some(r#"{"name":"ghost"}"#)),
    ] {
        let r = server.request(method, path, change);
        assert_eq!((r.status, r.body.as_str()), (503, r#"{"error":"storage unavailable"}"#), "{method} {path}");
        unchanged(&server, &format!("after the refused {method} {path}"));
    }
    drop(server);
    let server = serve(&dir, &listen, &[]);
    unchanged(&server, "after a restart");
    // And with room again, the same changes are made.
    assert_eq!(server.request("DELETE", &format!("/v1/sources/full/tokens/{token}"), None).status, 204);
    assert_eq!(with_token(&server), 401);
    assert_eq!(server.request("DELETE", "/v1/sources/full", None).status, 204);
    assert_eq!(server.request("GET", "/v1/sources/full", None).status, 404);
}

#[test]
fn the_disk_stays_bounded_and_a_restart_after_compaction_yields_identical_rings() {
    const SOURCES: usize = 1000;
    const EVENTS: usize = 1_000_000;
    const HISTORY: usize = 100;
    let dir = TempDir::new("bounded");
    let listen = free_port();
    let args = ["--history", "100", "--fsync", "never"];
    let mut server = serve(&dir, &listen, &args);
    let names: Vec<String> = (0..SOURCES).map(|i| format!("b{i}")).collect();
    for name in &names {
        server.create_source(name);
    }
    // Pipelined emits on two connections; the payload is small and fixed.
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (names, addr, key) = (names.clone(), server.addr, server.key.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let body = "{\"k\":1}";
                for chunk in (t..EVENTS).step_by(2).collect::<Vec<_>>().chunks(500) {
                    let mut req = String::with_capacity(chunk.len() * 120);
                    for &i in chunk {
                        req.push_str(&format!(
                            "POST /v1/sources/{}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 7\r\n\r\n{body}",
                            names[i % SOURCES]
                        ));
                    }
                    s.write_all(req.as_bytes()).unwrap();
                    for _ in chunk {
                        assert_eq!(read_response(&mut r).status, 202);
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert!(server.metric("ssehub_log_compactions_total") >= 2);
    // Live bytes: each retained event's record (header, type, source id, id, payload).
    let source_id_len = sources(&server)[0].0.len();
    let live = (SOURCES * HISTORY * (8 + 1 + 4 + source_id_len + 16 + 4 + 7)) as u64;
    // Within 3x once the compaction in flight ends (it runs below the
    // reactor's priority, so on a busy machine it may still be writing).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut on_disk = dir_bytes(&dir.0);
    while on_disk > 3 * live && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        on_disk = dir_bytes(&dir.0);
    }
    assert!(on_disk <= 3 * live, "{on_disk} bytes on disk for {live} live");
    let before: Vec<_> = names.iter().map(|n| retained(&server, n, HISTORY)).collect();
    assert!(before.iter().all(|r| r.len() == HISTORY));
    kill9(&mut server);
    let server = serve(&dir, &listen, &args);
    for (name, want) in names.iter().zip(&before) {
        assert_eq!(&retained(&server, name, HISTORY), want, "{name}");
    }
}

#[test]
fn a_second_process_on_the_same_data_dir_exits_1_naming_it() {
    let dir = TempDir::new("lock");
    let _first = serve(&dir, "127.0.0.1:0", &[]);
    let out = Command::new(support::bin()).args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].ends_with(&format!("data dir {} is in use by another ssehub process", dir.path())), "{stderr}");
}
