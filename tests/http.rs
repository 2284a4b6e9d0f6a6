//! HTTP strictness over real sockets: refusals answered from the head
//! before any body, `100 Continue` only for accepted requests, the budget
//! of request bodies in flight, the checks of `Host` and `Authorization`
//! (and of `--public-url` at start), and CORS for `/v1` and streams.

mod support;

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use support::{KEY, TestServer, read_response, refused_start, send};

#[test]
fn refusals_come_before_the_body_and_100_continue_only_when_accepted() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let endpoint = server.request("GET", "/v1/sources/s", None).json()["data"]["endpoint_url"].as_str().unwrap().to_string();
    let endpoint_path = &endpoint[endpoint.find("/e/").unwrap()..];
    let key = format!("Authorization: Bearer {KEY}\r\n");
    let heads = [
        ("POST /v1/sources/s/events", "Authorization: Bearer wrong\r\n", 401),
        ("POST /v1/sources/missing/events", key.as_str(), 404),
        ("PUT /v1/sources/s/events", key.as_str(), 405),
        ("POST /nowhere", "", 404),
        ("POST /e/NoSuchEndpointKey000000000/x", "", 404),
    ];
    for (line, auth, status) in heads {
        // The head alone: the answer must come without the body.
        let start = Instant::now();
        let r = send(server.addr, &format!("{line} HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n"));
        assert_eq!(r.status, status, "{line}: {}", r.body);
        assert!(r.json()["error"].is_string());
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{line}");
        assert!(start.elapsed() < Duration::from_secs(2), "{line} waited for its body");
    }
    assert_eq!(server.metric("ssehub_http_responses_total{class=\"1xx\"}"), 0, "no 100 Continue for a refused request");

    // Accepted: 100 Continue, then the body, then the answer; counted as 1xx.
    for (path, auth, status) in
        [("/v1/sources/s/events", format!("Authorization: Bearer {KEY}\r\n"), 202), (endpoint_path, String::new(), 200)]
    {
        let mut s = server.connect();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: 7\r\n\r\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_response(&mut r).status, 100, "{path}");
        s.write_all(b"{\"n\":1}").unwrap();
        assert_eq!(read_response(&mut r).status, status, "{path}");
    }
    server.wait_metric("ssehub_http_responses_total{class=\"1xx\"}", 2);
}

#[test]
fn request_bodies_in_flight_are_bounded() {
    let server = TestServer::start(&[
        "--engine",
        "memory",
        "--source",
        "s",
        "--max-event-bytes",
        "800",
        "--max-body-bytes-in-flight",
        "1000",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let head = |len: usize| {
        format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {len}\r\n\r\n")
    };
    // 800 bytes promised and not sent hold 800 of the 1000 (its 100 Continue
    // says the server has read the head). From another client address than
    // the rest: one address holds at most its share (tests/tenant_limits.rs).
    let mut first = server.connect();
    let other_client = "\r\nExpect: 100-continue\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
    first.write_all(head(800).replace("\r\n\r\n", other_client).as_bytes()).unwrap();
    let mut first_answers = BufReader::new(first.try_clone().unwrap());
    assert_eq!(read_response(&mut first_answers).status, 100);
    first.write_all(b"[").unwrap();
    let r = send(server.addr, &head(300));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "server busy: too many request bodies in flight");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // A chunked body counts as --max-event-bytes.
    let r = send(
        server.addr,
        &format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"),
    );
    assert_eq!(r.status, 503);
    // Bodies that fit still go, and the budget comes back once the first is read.
    let mut small = server.connect();
    small.write_all(head(3).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    small.write_all(b"[2]").unwrap();
    assert_eq!(read_response(&mut BufReader::new(small)).status, 202);
    first.write_all(format!("{} ]", vec!["1"; 399].join(",")).as_bytes()).unwrap();
    assert_eq!(read_response(&mut first_answers).status, 202);
    let mut again = server.connect();
    again.write_all(head(300).as_bytes()).unwrap();
    again.write_all(format!("\"{}\"", "x".repeat(298)).as_bytes()).unwrap();
    assert_eq!(read_response(&mut BufReader::new(again)).status, 202);
    assert!(server.logs().contains("reached --max-body-bytes-in-flight"), "{}", server.logs());
}

#[test]
fn host_and_authorization_are_checked_and_public_url_too() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let cases = [
        ("GET /healthz HTTP/1.1\r\n\r\n".to_string(), "malformed request: missing Host header"),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string(), "malformed request: more than one Host header"),
        (
            format!("GET /v1/sources HTTP/1.1\r\nHost: a\r\n{auth}Authorization: Bearer other\r\n\r\n"),
            "malformed request: more than one Authorization header",
        ),
        ("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), "malformed request: invalid character in the request target"),
    ];
    for (request, error) in cases {
        let r = send(server.addr, &request);
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some(error)), "{request:?}");
    }
    // Not UTF-8 in the path: not "invalid method" either.
    let mut s = server.connect();
    s.write_all(b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("malformed request: invalid character in the request target")));
    // HTTP/1.0 needs no Host.
    assert_eq!(send(server.addr, "GET /healthz HTTP/1.0\r\n\r\n").status, 200);

    let (code, stderr) = refused_start(&["serve", "--engine", "memory", "--listen", "127.0.0.1:0", "--public-url", "not a url"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr, "ssehub: --public-url: expected an http:// or https:// URL such as https://hooks.example.com\n");
}

#[test]
fn cors_for_v1_follows_cors_origin_and_preflights_come_before_authentication() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s", "--cors-origin", "https://app.example,https://b.example"]);
    let app = "Origin: https://app.example\r\n";
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let preflight = server.raw_request(
        "OPTIONS",
        "/v1/sources/s/events",
        &format!("{app}Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n"),
        None,
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin").as_deref(), Some("https://app.example"));
    assert_eq!(preflight.header("vary").as_deref(), Some("Origin"));
    assert_eq!(preflight.header("access-control-allow-methods").as_deref(), Some("POST, DELETE"));
    assert_eq!(
        preflight.header("access-control-allow-headers").as_deref(),
        Some("Authorization, Content-Type, Last-Event-ID, Idempotency-Key")
    );
    for (headers, status) in [(format!("{app}{auth}"), 200), (format!("{app}Authorization: Bearer wrong\r\n"), 401)] {
        let r = server.raw_request("GET", "/v1/sources", &headers, None);
        assert_eq!(r.status, status);
        assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example"), "{status}");
        assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    }
    let r = server.raw_request("POST", "/v1/sources/s/events", &format!("{app}{auth}"), Some("1"));
    assert_eq!((r.status, r.header("access-control-allow-origin").as_deref()), (202, Some("https://app.example")));
    // An origin not listed gets no CORS header, on success or error.
    for headers in [format!("Origin: https://evil.example\r\n{auth}"), "Origin: https://evil.example\r\n".to_string()] {
        let r = server.raw_request("GET", "/v1/sources", &headers, None);
        assert_eq!(r.header("access-control-allow-origin"), None, "{}", r.head);
    }
    // Streams: any origin, and their preflight is answered too.
    let r = server.raw_request("OPTIONS", "/sources/s/sse", &format!("{app}Access-Control-Request-Method: GET\r\n"), None);
    assert_eq!((r.status, r.header("access-control-allow-origin").as_deref()), (204, Some("*")));
    assert_eq!(r.header("access-control-allow-methods").as_deref(), Some("GET"));

    // Without --cors-origin: none on /v1, success or error; streams and webhooks keep `*`.
    let plain = TestServer::start(&["--engine", "memory", "--source", "s"]);
    for (headers, status) in [(format!("{app}{auth}"), 200), (app.to_string(), 401)] {
        let r = plain.raw_request("GET", "/v1/sources", &headers, None);
        assert_eq!((r.status, r.header("access-control-allow-origin")), (status, None));
    }
    let r = plain.raw_request("OPTIONS", "/v1/sources", &format!("{app}Access-Control-Request-Method: POST\r\n"), None);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (204, None));
    let mut sse = plain.subscribe_raw("/sources/s/sse", &format!("{app}{auth}"));
    assert!(sse.head().contains("Access-Control-Allow-Origin: *"));
    let missing = plain.raw_request("GET", "/sources/missing/sse", &auth, None);
    assert_eq!((missing.status, missing.header("access-control-allow-origin").as_deref()), (404, Some("*")));

    let any = TestServer::start(&["--engine", "memory", "--cors-origin", "*"]);
    for headers in [format!("{app}{auth}"), app.to_string()] {
        assert_eq!(any.raw_request("GET", "/v1/sources", &headers, None).header("access-control-allow-origin").as_deref(), Some("*"));
    }
}
