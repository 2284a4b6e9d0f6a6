//! What the server logs about connections and requests: close lines that
//! name the peer, and the access log under `ssehub::access` (off by
//! default; one line per request, never a key, token or endpoint key).

mod support;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::{KEY, TempDir, TestServer, read_response};

#[test]
fn close_lines_name_the_peer() {
    let server = TestServer::start(&["--engine", "memory"]);
    let mut s = server.connect();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r).status, 200);
    drop(r);
    drop(s);
    server.wait_log(&format!("closed {me}: closed by peer"));
    assert!(!server.logs().contains("closed ?"));
}

#[test]
fn the_access_log_is_off_by_default_and_never_holds_secrets() {
    let start = |rust_log: &str| {
        let dir = TempDir::new("access");
        let mut command = Command::new(support::bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--engine", "memory", "--source", "s"])
            .env("RUST_LOG", rust_log)
            .current_dir(&dir.0);
        (TestServer::spawn(&mut command, KEY), dir)
    };
    let traffic = |server: &TestServer| {
        let endpoint = server.request("GET", "/v1/sources/s", None).json()["data"]["endpoint_url"].as_str().unwrap().to_string();
        let endpoint_key = endpoint.rsplit('/').next().unwrap().to_string();
        assert_eq!(server.raw_request("POST", &format!("/e/{endpoint_key}/hook?sig=abc"), "", Some("{}")).status, 200);
        server.emit("s", "[1,2]");
        let mut sse = server.subscribe_raw("/sources/s/sse?access_token=test-key", "");
        assert!(sse.head().starts_with("HTTP/1.1 200"));
        drop(sse);
        endpoint_key
    };

    let (quiet, _dir) = start("info");
    traffic(&quiet);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!quiet.logs().contains("ssehub::access"), "{}", quiet.logs());

    let (server, _dir2) = start("ssehub::access=info");
    let endpoint_key = traffic(&server);
    server.wait_log(" GET /sources/s/sse 200 ");
    let logs = server.logs();
    assert!(logs.contains("listening on"), "the rest of the log stays at info: {logs}");
    let access: Vec<&str> = logs.lines().filter(|l| l.contains("ssehub::access")).collect();
    let emit = access.iter().find(|l| l.contains(" POST /v1/sources/s/events 202 ")).unwrap_or_else(|| panic!("{logs}"));
    // PEER METHOD PATH STATUS BYTES DURATION
    let words: Vec<&str> = emit.split_whitespace().rev().take(6).collect();
    assert!(words[0].ends_with("ms") && words[1].parse::<u64>().unwrap() > 0, "{emit}");
    assert!(words[5].parse::<SocketAddr>().is_ok(), "{emit}");
    assert!(access.iter().any(|l| l.contains(" POST /e/*/hook 200 ")), "{logs}");
    for secret in [KEY, &endpoint_key, "sig=abc", "access_token"] {
        assert!(!logs.contains(secret), "{secret} in the log: {logs}");
    }
}
