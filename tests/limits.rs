//! Bad input, faults and limits: each gets its clear answer and harms no
//! one else.

mod support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{KEY, TestServer, read_response, read_to_close_text as read_to_close};

#[test]
fn every_error_is_json_with_the_right_status() {
    let server = TestServer::start(&["--source", "s", "--max-event-bytes", "1000"]);
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/nope", None, 404, "no such path"),
        ("GET", "/v1/sources/missing", None, 404, "no such source"),
        ("PUT", "/v1/sources", Some("{}"), 405, "method not allowed; allowed: GET, HEAD, POST"),
        ("POST", "/v1/sources/s/events", Some("{\"a\":"), 400, ""),
        ("POST", "/v1/sources/s/events", Some(""), 400, ""),
        ("POST", "/v1/sources", Some("{\"name\":\"s\"}"), 409, "a source with this name already exists"),
        ("POST", "/v1/sources", Some("{\"name\":\"no spaces\"}"), 400, "a source name is 1 to 64 characters of A-Z a-z 0-9 _ -"),
        ("POST", "/v1/sources", Some("[]"), 400, "body must be {\"name\":\"<source name>\"}"),
        ("GET", "/v1/sources/s/event_summaries?limit=0", None, 400, "limit must be a positive number"),
    ];
    for (method, path, body, status, message) in cases {
        let r = server.request(method, path, *body);
        assert_eq!(r.status, *status, "{method} {path}: {}", r.body);
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.starts_with(message), "{method} {path}: {error}");
    }
    assert_eq!(server.request("PUT", "/v1/sources/s", None).header("allow").as_deref(), Some("GET, HEAD, PATCH, DELETE"));
    assert_eq!(server.request("PATCH", "/v1/sources/s", None).status, 411, "a PATCH needs its body");
    let r = server.raw_request("GET", "/v1/sources", "Authorization: Bearer wrong\r\n", None);
    assert_eq!((r.status, r.header("www-authenticate").as_deref()), (401, Some("Bearer")));
    assert_eq!(r.json()["error"], "invalid API key");
    let r = server.raw_request("POST", "/v1/sources/s/events", &format!("Authorization: Bearer {KEY}\r\n"), None);
    assert_eq!(r.status, 411);
    assert_eq!(server.metric("ssehub_events_emitted_total"), 0, "no bad request emitted anything");
}

/// 431 says which limit the head broke: its size, or its header count
/// (64 at most; 64 still pass).
#[test]
fn a_head_with_too_many_headers_gets_431_saying_so() {
    let server = TestServer::start(&[]);
    let head = |headers: usize| {
        let mut s = server.connect();
        let extra: String = (2..headers).map(|i| format!("X-{i}: v\r\n")).collect();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").unwrap();
        read_to_close(&mut s)
    };
    let answer = head(65);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.ends_with(r#"{"error":"request head has more than 64 headers"}"#), "{answer}");
    let answer = head(64);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let mut s = server.connect();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024)).unwrap();
    let answer = read_to_close(&mut s);
    assert!(answer.ends_with(r#"{"error":"request head larger than 16384 bytes"}"#), "{answer}");
}

#[test]
fn oversized_head_gets_431_and_oversized_body_413_unread() {
    let server = TestServer::start(&["--source", "s", "--max-event-bytes", "1000"]);
    let mut s = server.connect();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024)).unwrap();
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // The body is refused from its Content-Length, before a byte is sent.
    let mut s = server.connect();
    write!(s, "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100000000\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s.try_clone().unwrap()));
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("too large"));
    assert_eq!(read_to_close(&mut s), "", "then the connection ends");

    // Chunked: refused as soon as the chunks pass the limit.
    let mut s = server.connect();
    write!(s, "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        write!(s, "200\r\n{}\r\n", "1".repeat(512)).unwrap();
    }
    assert_eq!(read_response(&mut BufReader::new(s)).status, 413);
    assert_eq!(server.request("GET", "/healthz", None).status, 200);
}

#[test]
fn malformed_requests_get_400_and_close() {
    let server = TestServer::start(&[]);
    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
    ] {
        let mut s = server.connect();
        s.write_all(garbage.as_bytes()).unwrap();
        let answer = read_to_close(&mut s);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{garbage:?}: {answer}");
        assert!(answer.contains("Connection: close") && answer.contains("{\"error\":\"malformed request"), "{answer}");
    }
    assert_eq!(server.request("GET", "/healthz", None).body, "ok\n");
}

#[test]
fn a_head_not_complete_in_10s_is_closed_while_others_are_served() {
    let server = TestServer::start(&["--source", "s"]);
    let mut slow = server.connect();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let start = Instant::now();
    let mut sse = server.subscribe("/sources/s/sse", "");
    let closer = std::thread::spawn(move || (read_to_close(&mut slow), start.elapsed()));
    for n in 0..5 {
        std::thread::sleep(Duration::from_secs(2));
        server.emit("s", &n.to_string());
        assert_eq!(sse.next_event().envelope()["event"], n);
    }
    let (answer, took) = closer.join().unwrap();
    assert_eq!(answer, "", "closed without an answer");
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(13), "closed after {took:?}");
}

#[test]
fn connections_beyond_the_limit_are_refused_without_harm() {
    let server = TestServer::start(&["--source", "s", "--max-connections", "4"]);
    let mut streams: Vec<_> = (0..4).map(|_| server.subscribe("/sources/s/sse", "")).collect();
    let mut extra = server.connect();
    let answer = read_to_close(&mut extra);
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("connection limit"), "{answer}");
    drop(streams.pop());
    // The freed slot is usable again (the close is seen within a turn).
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let mut s = server.connect();
        s.write_all(
            format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 2\r\n\r\n42")
                .as_bytes(),
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut first = String::new();
        let _ = std::io::BufRead::read_line(&mut r, &mut first);
        if first.contains("202") || Instant::now() > deadline {
            break first;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.contains("202"), "{status}");
    for sse in &mut streams {
        assert_eq!(sse.next_event().envelope()["event"], 42, "open streams were not disturbed");
    }
}

/// At `--max-connections` on the main port, scrapes on `--metrics-listen`
/// still get through (a few past the limit, kept open here); the next one
/// is refused like any connection, and the main port still refuses.
#[test]
fn a_metrics_scrape_gets_through_when_the_main_port_is_full() {
    let server = TestServer::start(&["--source", "s", "--max-connections", "2", "--metrics-listen", "127.0.0.1:0"]);
    let logs = server.logs();
    let metrics: std::net::SocketAddr =
        logs.split("serving /metrics on http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    let _streams: Vec<_> = (0..2).map(|_| server.subscribe("/sources/s/sse", "")).collect();
    let answer = read_to_close(&mut server.connect());
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("connection limit"), "{answer}");
    let scrapers: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut s = TcpStream::connect(metrics).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let r = read_response(&mut BufReader::new(s.try_clone().unwrap()));
            assert_eq!(r.status, 200, "scrape {i}: {}", r.body);
            let open: u64 = r.body.lines().find_map(|l| l.strip_prefix("ssehub_connections_open ")).unwrap().parse().unwrap();
            assert!(open >= 2, "{}", r.body);
            s
        })
        .collect();
    let answer = read_to_close(&mut TcpStream::connect(metrics).unwrap());
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("connection limit"), "{answer}");
    drop(scrapers);
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn out_of_descriptors_refuses_without_spinning_and_recovers() {
    let mut command = Command::new(support::bin());
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--source",
        "s",
        "--max-connections",
        "10000",
        "--engine",
        "memory",
    ]);
    // SAFETY: setrlimit is async-signal-safe; the child runs it before exec.
    unsafe {
        command.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = TestServer::spawn(&mut command, KEY);
    let mut sse = server.subscribe("/sources/s/sse", "");
    let mut keepalive = server.connect();
    let cpu_before = cpu_seconds(server.pid());
    let flood: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(server.addr).ok()).collect();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    assert!(cpu < 0.5, "the server spun: {cpu} CPU-s over a 2 s flood");
    assert!(server.logs().contains("refusing new connections until descriptors are free"));
    // Open connections still work.
    write!(keepalive, "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 1\r\n\r\n7")
        .unwrap();
    assert_eq!(read_response(&mut BufReader::new(keepalive.try_clone().unwrap())).status, 202);
    assert_eq!(sse.next_event().envelope()["event"], 7);
    drop(flood);
    // Once descriptors are free it accepts again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = server.connect();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if read_to_close(&mut s).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never accepted again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
