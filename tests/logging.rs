//! What the server logs (SPEC §2): one start-up line; the generated key
//! whole only once; what any client can cause in bulk counted in
//! `/metrics` and logged at most once a second per kind; the node's name
//! in every line.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{KEY, KeepAlive, TempDir, TestServer};

/// `ssehub serve` on a free port with `args`, logging at `info` (what an
/// operator sees by default), no key unless `args` give one.
fn serve(args: &[&str]) -> TestServer {
    let mut command = Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0"]).args(args).env("RUST_LOG", "info");
    let key = if args.contains(&"--api-key") { KEY } else { "" };
    TestServer::spawn(&mut command, key)
}

/// Lines of `logs` at `level` that contain `what`.
fn lines(logs: &str, level: &str, what: &str) -> usize {
    logs.lines().filter(|l| l.contains(&format!(" {level} ")) && l.contains(what)).count()
}

/// `ssehub key` with `args` (and `env`): (exit code, stdout, stderr).
fn key_command(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(support::bin()).arg("key").args(args).env_remove("SSEHUB_DATA_DIR").envs(env.iter().copied()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn the_start_up_line_says_what_runs_where() {
    let dir = TempDir::new("startline");
    let keys = dir.0.join("keys");
    std::fs::write(&keys, "k1 alice\nk2 alice\nk3 bob\n").unwrap();
    let server =
        serve(&["--data-dir", dir.path(), "--fsync", "always", "--keys-file", keys.to_str().unwrap(), "--metrics-listen", "127.0.0.1:0"]);
    let logs = server.logs();
    let started: Vec<&str> = logs.lines().filter(|l| l.contains(" started: ")).collect();
    assert_eq!(started.len(), 1, "{logs}");
    let line = started[0];
    for want in [
        &format!("ssehub {} started: ", env!("CARGO_PKG_VERSION")),
        "engine log",
        &format!("data dir {}", dir.path()),
        "fsync always",
        "3 keys in 2 accounts",
        &format!("listening on http://{} ", server.addr),
        "serving /metrics on http://127.0.0.1:",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
    assert!(!logs.contains("k1") && !logs.contains("k3"), "keys are never logged: {logs}");

    let server = serve(&["--engine", "memory", "--api-key", KEY]);
    let logs = server.logs();
    let line = logs.lines().find(|l| l.contains(" started: ")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("engine memory; 1 key in 1 account; listening on http://"), "{line}");
}

/// The whole generated key is logged by the start that generated it;
/// later starts log its first characters and where to read it (`ssehub
/// key`, or the `key` file), and a start with `--api-key` says that the
/// kept key is not in use.
#[test]
fn the_generated_key_is_logged_whole_once_and_read_with_ssehub_key() {
    let dir = TempDir::new("keylog");
    let data = dir.0.join("data");
    let data = data.to_str().unwrap();
    let (code, out, err) = key_command(&["--data-dir", data], &[]);
    assert_eq!((code, out.as_str()), (1, ""), "no key kept yet");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no generated key kept in"), "{err}");

    let mut first = serve(&["--data-dir", data]);
    let logs = first.logs();
    let key = logs.split("generated one, kept in ").nth(1).and_then(|l| l.lines().next()).and_then(|l| l.rsplit(": ").next());
    let key = key.unwrap_or_else(|| panic!("{logs}")).to_string();
    assert!(key.starts_with("sk_") && key.len() == 35, "{key}");
    let file = std::path::Path::new(data).join("key");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{key}\n"));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(key_command(&["--data-dir", data], &[]), (0, format!("{key}\n"), String::new()));
    assert_eq!(key_command(&[], &[("SSEHUB_DATA_DIR", data)]), (0, format!("{key}\n"), String::new()));
    first.terminate();

    let mut second = serve(&["--data-dir", data]);
    let logs = second.logs();
    assert!(!logs.contains(&key), "the whole key is logged only by the start that generated it: {logs}");
    assert_eq!(
        lines(&logs, "WARN", &format!("using the generated key kept in {data} ({}…; `ssehub key` prints it", &key[..7])),
        1,
        "{logs}"
    );
    second.key = key.clone();
    assert_eq!(second.request("GET", "/v1/sources", None).status, 200, "the kept key works");
    second.terminate();

    let third = serve(&["--data-dir", data, "--api-key", KEY]);
    let logs = third.logs();
    assert!(!logs.contains(&key), "{logs}");
    assert_eq!(lines(&logs, "WARN", &format!("the generated key kept in {data} ({}…) is not in use", &key[..7])), 1, "{logs}");
    let r = third.raw_request("GET", "/v1/sources", &format!("Authorization: Bearer {key}\r\n"), None);
    assert_eq!(r.status, 401, "as the log says, the kept key does not work here");
}

/// Sources, tokens and failed authentication, caused in bulk by one
/// client: each counted in `/metrics`, each kind logged at info (or warn)
/// at most once a second, the rest at debug.
#[test]
fn what_a_client_causes_in_bulk_is_counted_and_logged_once_a_second() {
    let server = serve(&["--engine", "memory", "--api-key", KEY]);
    const N: usize = 40;
    let started = Instant::now();
    let mut client = KeepAlive::new(server.addr);
    for i in 0..N {
        assert_eq!(client.request("POST", "/v1/sources", &format!("{{\"name\":\"s{i}\"}}")).status, 201);
        assert_eq!(client.request("POST", "/v1/sources/s0/tokens", "{}").status, 201);
        let r = server.raw_request("GET", "/v1/sources", "Authorization: Bearer wrong\r\n", None);
        assert_eq!(r.status, 401);
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    server.wait_metric("ssehub_sources_created_total", N as u64);
    server.wait_metric("ssehub_tokens_created_total", N as u64);
    server.wait_metric("ssehub_auth_failures_total", N as u64);
    let logs = server.logs();
    for (level, what) in
        [("INFO", "created in account"), ("INFO", "subscribe token for source"), ("WARN", "failed authentication from 127.0.0.1:")]
    {
        let n = lines(&logs, level, what);
        assert!((1..=seconds).contains(&n), "{n} lines of {what:?} in {seconds} s:\n{logs}");
    }
    // A line after a held-back burst says how many were held back.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(client.request("POST", "/v1/sources", "{\"name\":\"late\"}").status, 201);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.logs().contains("source late") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs = server.logs();
    let late = logs.lines().find(|l| l.contains("source late")).unwrap();
    assert!(late.contains(" INFO ") && late.contains(" more like it since the last such line"), "{late}");
}

/// Reaching `--max-connections` is logged (once a second) and counted.
#[test]
fn the_connection_limit_reached_is_logged_and_counted() {
    let server = serve(&["--engine", "memory", "--api-key", KEY, "--max-connections", "2", "--metrics-listen", "127.0.0.1:0"]);
    let logs = server.logs();
    let metrics: std::net::SocketAddr =
        logs.split("serving /metrics on http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    // Accepted in the order they connect: these two take the places.
    let held: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    // `None` while the scraper itself is refused (and reset) at the limit.
    let scrape = || {
        let mut s = TcpStream::connect(metrics).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")))?.parse::<u64>().ok();
        Some((value("ssehub_connections_open")?, value("ssehub_connections_refused_total")?))
    };
    let started = Instant::now();
    for _ in 0..10 {
        let mut s = server.connect();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let logs = server.logs();
    let n = lines(&logs, "WARN", "connections open (--max-connections): refusing 127.0.0.1:");
    assert!((1..=seconds).contains(&n), "{n} lines in {seconds} s:\n{logs}");
    // (Scrapes get through meanwhile: a few past the limit.)
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match scrape() {
            // The ten, and any scrape refused before the two were closed.
            Some((open, refused)) if open < 2 => break assert!(refused >= 10, "{refused}"),
            _ => assert!(Instant::now() < deadline),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A disk that fails and recovers many times a second (here a file size
/// limit, and events too big and small enough in turn) is not logged
/// line for line: each kind at most once a second, all counted.
#[test]
fn a_flapping_disk_is_logged_once_a_second_and_counted() {
    const LIMIT: u64 = 65536;
    let dir = TempDir::new("flap");
    let mut command = Command::new("prlimit");
    command.args([&format!("--fsize={LIMIT}"), "--", support::bin()]);
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--data-dir", dir.path()]).env("RUST_LOG", "info");
    let server = TestServer::spawn(&mut command, KEY);
    server.create_source("s");
    let segment = dir.0.join("00000000000000000001.log");
    let mut client = KeepAlive::new(server.addr);
    let pad = |n: usize| format!("{{\"pad\":\"{}\"}}", "z".repeat(n));
    // Filled to 2 to 3 KiB below the limit: a 3 KiB event never fits, a small one does.
    while std::fs::metadata(&segment).unwrap().len() < LIMIT - 3000 {
        assert_eq!(client.request("POST", "/v1/sources/s/events", &pad(900)).status, 202);
    }
    const FLAPS: u64 = 10;
    let started = Instant::now();
    for _ in 0..FLAPS {
        assert_eq!(client.request("POST", "/v1/sources/s/events", &pad(3000)).status, 503);
        assert_eq!(client.request("POST", "/v1/sources/s/events", "1").status, 202);
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    server.wait_metric("ssehub_storage_failures_total", FLAPS);
    server.wait_metric("ssehub_storage_recoveries_total", FLAPS);
    let logs = server.logs();
    for (level, what) in [("ERROR", "write to the log in"), ("ERROR", "storage unavailable"), ("INFO", "storage recovered")] {
        let n = lines(&logs, level, what);
        assert!((1..=seconds).contains(&n), "{n} lines of {what:?} in {seconds} s:\n{logs}");
    }
    assert_eq!(lines(&logs, "INFO", "writes to the log succeed again"), 0, "{logs}");
}

/// `--node-name` (or the pid, with `--reuse-port`) is in every line, so
/// the logs of processes sharing a port can be told apart.
#[test]
fn every_line_names_the_node() {
    let server = serve(&["--engine", "memory", "--api-key", KEY, "--node-name", "edge-7"]);
    server.create_source("s");
    let logs = server.logs();
    assert!(logs.lines().count() >= 2 && logs.lines().all(|l| l.contains(" node=edge-7] ")), "{logs}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let servers: Vec<TestServer> =
        (0..2).map(|_| serve(&["--engine", "memory", "--api-key", KEY, "--reuse-port", "--listen", &listen])).collect();
    for server in &servers {
        let logs = server.logs();
        let node = format!(" node={}] ", server.pid());
        assert!(logs.lines().all(|l| l.contains(&node)), "{node}: {logs}");
    }

    let quiet = serve(&["--engine", "memory", "--api-key", KEY]);
    assert!(!quiet.logs().contains(" node="), "no name without --node-name or --reuse-port: {}", quiet.logs());
    let out = Command::new(support::bin()).args(["serve", "--node-name", "a b"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "ssehub: --node-name: expected 1 to 64 visible characters, no spaces\n");
}

/// Behind a reverse proxy named by `--trusted-proxy`, the access log's
/// client is the right-most untrusted address of `X-Forwarded-For`; each
/// line names the account and gives the duration to the microsecond.
#[test]
fn the_access_log_names_the_client_behind_a_trusted_proxy_and_the_account() {
    let dir = TempDir::new("access");
    let keys = dir.0.join("keys");
    std::fs::write(&keys, "alice-key alice\n").unwrap();
    let start = |trusted: &str| {
        let mut command = Command::new(support::bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--engine", "memory", "--api-key", KEY, "--keys-file", keys.to_str().unwrap()])
            .args(["--source", "s"])
            .env("RUST_LOG", "ssehub::access=info");
        if !trusted.is_empty() {
            command.env("SSEHUB_TRUSTED_PROXY", trusted);
        }
        TestServer::spawn(&mut command, KEY)
    };
    let access_line = |server: &TestServer, what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = server.logs().lines().find(|l| l.contains("ssehub::access") && l.contains(what)) {
                return line.split("] ").nth(1).unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no access line with {what:?}:\n{}", server.logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let forwarded = "X-Forwarded-For: 198.51.100.9, 203.0.113.7, 10.1.2.3\r\n";

    let server = start("10.0.0.0/8, 127.0.0.1");
    let r = server.raw_request("GET", "/v1/sources?a=1", &format!("Authorization: Bearer {KEY}\r\n{forwarded}"), None);
    assert_eq!(r.status, 200);
    let r = server.raw_request("POST", "/v1/sources", &format!("Authorization: Bearer alice-key\r\n{forwarded}"), Some("{\"name\":\"a\"}"));
    assert_eq!(r.status, 201);
    assert_eq!(server.raw_request("GET", "/v1/sources", "Authorization: Bearer nope\r\n", None).status, 401);
    let token = server.create_token("s");
    let mut sse = server.subscribe_raw(&format!("/sources/s/sse?access_token={token}"), forwarded);
    assert!(sse.head().starts_with("HTTP/1.1 200"));
    drop(sse);

    // ACCOUNT CLIENT METHOD PATH STATUS BYTES DURATION
    let line = access_line(&server, " GET /v1/sources 200 ");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..5], ["default", "203.0.113.7", "GET", "/v1/sources", "200"], "{line}");
    let duration = words[6].strip_suffix("ms").unwrap();
    let (ms, us) = duration.split_once('.').unwrap_or_else(|| panic!("{line}"));
    assert!(ms.parse::<u64>().is_ok() && us.len() == 3 && us.parse::<u64>().is_ok(), "{line}");
    assert!(access_line(&server, " POST /v1/sources 201 ").starts_with("alice 203.0.113.7 POST "));
    assert!(access_line(&server, " GET /v1/sources 401 ").starts_with("- 127.0.0.1:"), "no header: the peer");
    assert!(access_line(&server, " GET /sources/s/sse 200 ").starts_with("default 203.0.113.7 GET "), "a token's account");

    // Not a trusted proxy: the header is not believed.
    let server = start("");
    let r = server.raw_request("GET", "/v1/sources", &format!("Authorization: Bearer {KEY}\r\n{forwarded}"), None);
    assert_eq!(r.status, 200);
    assert!(access_line(&server, " GET /v1/sources 200 ").starts_with("default 127.0.0.1:"));

    let out = Command::new(support::bin()).args(["serve", "--trusted-proxy", "10.0.0.0/40"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ssehub: --trusted-proxy: expected a comma list of addresses or networks such as 127.0.0.1,10.0.0.0/8\n"
    );
}
