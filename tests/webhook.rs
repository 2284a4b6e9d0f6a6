//! Webhook ingest (SPEC §2.4) over real sockets: every request to a
//! source's `endpoint_url` becomes one event on its stream, with the body's
//! exact bytes kept so a receiver can check the sender's signature. No
//! request here carries an API key unless it says so.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Frame, Response, Sse, TestServer, endpoint_path, hex, read_response, read_to_close};

type HmacSha256 = Hmac<Sha256>;

/// A server with a source `hook`, its ingest path `/e/<key>` and an open
/// stream on it.
fn start(args: &[&str]) -> (TestServer, String, Sse) {
    let server = TestServer::start(&[&["--source", "hook"], args].concat());
    let path = endpoint_path(&server, "hook");
    let sse = server.subscribe("/sources/hook/sse", "");
    (server, path, sse)
}

/// One request with no API key on a fresh connection (`Connection: close`);
/// a body gets a Content-Length.
fn send(server: &TestServer, method: &str, target: &str, headers: &str, body: Option<&[u8]>) -> Response {
    let mut s = server.connect();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{headers}", server.addr).into_bytes();
    if let Some(body) = body {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.unwrap_or_default());
    s.write_all(&req).unwrap();
    read_response(&mut BufReader::new(s))
}

fn assert_success(r: &Response) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.body, "{\"success\":true}");
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("*"));
}

fn assert_not_found(r: &Response) {
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.json(), json!({"error": "no such endpoint"}));
}

/// The payload of the next event on the stream.
fn next_payload(sse: &mut Sse) -> Value {
    sse.next_event().envelope()["event"].clone()
}

/// Proves that nothing was emitted since the last event read: an API emit
/// made now is the very next event.
fn assert_nothing_emitted(server: &TestServer, sse: &mut Sse) {
    let marker = server.emit("hook", "{\"marker\":true}");
    let frame = sse.next_event();
    assert_eq!(frame.id(), marker, "something was emitted before the marker: {frame:?}");
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// Standard base64 with padding; panics on anything else.
fn unbase64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert!(text.len().is_multiple_of(4), "base64 {text:?} is not padded");
    let mut out = Vec::new();
    for quad in text.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad.iter().fold(0u32, |n, &c| n << 6 | ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u32);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub's `X-Hub-Signature-256`.
fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// What a receiver does: recompute the HMAC over `raw` and compare it, in
/// constant time, with the signature header.
fn signature_verifies(secret: &[u8], raw: &[u8], header: &str) -> bool {
    let Some(sig) = header.strip_prefix("sha256=") else { return false };
    let mut mac = HmacSha256::new_from_slice(secret).unwrap();
    mac.update(raw);
    mac.verify_slice(&unhex(sig)).is_ok()
}

#[test]
fn json_post_has_parsed_body_and_exact_body_raw() {
    let (server, path, mut sse) = start(&[]);
    let body = "{\n  \"total\": 12.50,\n  \"note\": \"a  b \\u00e9 é\",\r\n  \"k\": 1, \"k\": 2,\n  \"list\": [ 1 , 2 ]\n}\n";
    let r = send(&server, "POST", &path, "Content-Type: application/json\r\nX-Request-Id: r-1\r\n", Some(body.as_bytes()));
    assert_success(&r);

    let frame = sse.next_event();
    let envelope = frame.envelope();
    assert_eq!(envelope["id"], frame.id());
    let event = &envelope["event"];
    assert_eq!(event["method"], "POST");
    assert_eq!(event["path"], "/");
    assert_eq!(event["query"], json!({}));
    assert_eq!(event["body"], json!({"total": 12.5, "note": "a  b é é", "k": 2, "list": [1, 2]}));
    assert_eq!(event["bodyRaw"], body, "bodyRaw is the exact bytes, whitespace and CRLF included");
    assert!(event.get("bodyRawEncoding").is_none());
    let headers = event["headers"].as_object().unwrap();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"], "r-1");
    assert_eq!(headers["content-length"], body.len().to_string());
    assert!(headers.keys().all(|k| *k == k.to_ascii_lowercase()), "header names are lower case: {headers:?}");

    // `body` is the payload compacted, nothing else changed: number
    // spelling, escapes and duplicate keys arrive as sent.
    let Frame::Event { data, .. } = &frame else { unreachable!() };
    assert!(
        data.contains(r#""body":{"total":12.50,"note":"a  b \u00e9 é","k":1,"k":2,"list":[1,2]},"bodyRaw":"#),
        "compacted body in {data}"
    );
    let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for key in ["method", "path", "query", "headers", "body", "bodyRaw"] {
        assert!(keys.contains(&key), "{key} missing in {keys:?}");
    }
}

/// However deep a JSON body is, every subscriber can parse the event:
/// a body nested deeper than payloads may be (100 levels) is given as text.
#[test]
fn deeply_nested_json_body_keeps_the_event_parseable() {
    let (server, path, mut sse) = start(&[]);
    for (levels, parsed) in [(99, true), (101, false), (100_000, false)] {
        let body = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_success(&send(&server, "POST", &path, "Content-Type: application/json\r\n", Some(body.as_bytes())));
        let event = next_payload(&mut sse);
        assert_eq!(event["bodyRaw"], body, "{levels} levels");
        assert_eq!(event["body"].is_array(), parsed, "{levels} levels: given as parsed JSON only while parseable");
        if !parsed {
            assert_eq!(event["body"], body, "{levels} levels: as text");
        }
    }
}

#[test]
fn form_post_body_is_the_text() {
    let (server, path, mut sse) = start(&[]);
    let body = "payload=%7B%22zen%22%3A%22hi%22%7D&note=hello+world&x=1&x=2";
    let r = send(&server, "POST", &path, "Content-Type: application/x-www-form-urlencoded\r\n", Some(body.as_bytes()));
    assert_success(&r);
    let event = next_payload(&mut sse);
    assert_eq!(event["headers"]["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(event["body"], body, "not JSON: the text, undecoded");
    assert_eq!(event["bodyRaw"], body);
    assert!(event.get("bodyRawEncoding").is_none());

    // Text that is not JSON stays text even when it claims to be JSON.
    let r = send(&server, "PUT", &format!("{path}/notes"), "Content-Type: application/json\r\n", Some(b"{not json}\n"));
    assert_success(&r);
    let event = next_payload(&mut sse);
    assert_eq!(
        (event["method"].as_str(), event["body"].as_str(), event["bodyRaw"].as_str()),
        (Some("PUT"), Some("{not json}\n"), Some("{not json}\n"))
    );
}

#[test]
fn binary_body_is_base64_and_still_verifiable() {
    let (server, path, mut sse) = start(&[]);
    let body: Vec<u8> = (0..=255u8).rev().chain(*b"\xff\xfe\x00\r\n").collect();
    let secret = b"whsec_binary";
    let signature = github_signature(secret, &body);
    let headers = format!("Content-Type: application/octet-stream\r\nX-Signature: {signature}\r\n");
    assert_success(&send(&server, "POST", &path, &headers, Some(&body)));
    let event = next_payload(&mut sse);
    assert_eq!(event["bodyRawEncoding"], "base64");
    let raw = event["bodyRaw"].as_str().unwrap();
    assert_eq!(unbase64(raw), body);
    assert_eq!(event["body"], raw, "a body that is not text is given as its base64 too");
    assert!(signature_verifies(secret, &unbase64(raw), event["headers"]["x-signature"].as_str().unwrap()));

    // Known vectors, and Latin-1 text (not UTF-8) is binary too.
    for (body, want) in [(&b"\xff"[..], "/w=="), (b"\x00\xff\x10", "AP8Q"), (b"caf\xe9", "Y2Fm6Q==")] {
        assert_success(&send(&server, "POST", &path, "", Some(body)));
        let event = next_payload(&mut sse);
        assert_eq!((event["bodyRaw"].as_str(), event["bodyRawEncoding"].as_str()), (Some(want), Some("base64")));
    }
}

#[test]
fn get_query_is_percent_decoded_and_repeated_keys_are_arrays() {
    let (server, path, mut sse) = start(&[]);
    let target = format!(
        "{path}/search?tag=a&tag=b&tag=c&q=hello+world&enc=%E2%98%83%20%26%3D%2B&empty=&flag&bad=%zz&%C3%A9t%C3%A9=summer&one=%41&&"
    );
    assert_success(&send(&server, "GET", &target, "", None));
    let event = next_payload(&mut sse);
    assert_eq!(event["method"], "GET");
    assert_eq!(event["path"], "/search");
    assert_eq!(
        event["query"],
        json!({
            "tag": ["a", "b", "c"],
            "q": "hello world",
            "enc": "☃ &=+",
            "empty": "",
            "flag": "",
            "bad": "%zz",
            "été": "summer",
            "one": "A",
        })
    );
    let order: Vec<&str> = event["query"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(order.len(), 8);
    assert_eq!((event["body"].as_str(), event["bodyRaw"].as_str()), (Some(""), Some("")), "no body: empty text");

    // Many distinct keys: linear work, so the reactor is not held up.
    let many: Vec<String> = (0..3500).map(|i| format!("{i:x}")).collect();
    let start = Instant::now();
    assert_success(&send(&server, "GET", &format!("{path}?{}&a=x", many.join("&")), "", None));
    let event = next_payload(&mut sse);
    assert_eq!(event["query"].as_object().unwrap().len(), 3500);
    assert_eq!(event["query"]["a"], json!(["", "x"]));
    assert!(start.elapsed() < Duration::from_secs(2), "3500 query keys took {:?}", start.elapsed());
}

#[test]
fn chunked_body_sent_in_pieces() {
    let (server, path, mut sse) = start(&[]);
    let mut s = server.connect();
    write!(s, "POST {path}/chunked HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let pieces = ["5\r\n{\"a\":\r\n", "6;ext=1\r\n [1, 2\r\n", "2\r\n]}", "\r\n0\r\nX-Trailer: t\r\n", "\r\n"];
    for piece in pieces {
        s.write_all(piece.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut r = BufReader::new(s);
    assert_success(&read_response(&mut r));
    let event = next_payload(&mut sse);
    assert_eq!(event["bodyRaw"], "{\"a\": [1, 2]}", "the chunks joined, framing and trailer gone");
    assert_eq!(event["body"], json!({"a": [1, 2]}));
    assert_eq!(event["headers"]["transfer-encoding"], "chunked");
    assert!(event["headers"].get("content-length").is_none());

    // The connection is kept alive: a second request on it.
    r.get_mut()
        .write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes())
        .unwrap();
    assert_success(&read_response(&mut r));
    assert_eq!(next_payload(&mut sse)["bodyRaw"], "abc");
}

#[test]
fn head_gets_the_same_head_without_a_body_and_is_emitted() {
    let (server, path, mut sse) = start(&[]);
    let get = send(&server, "GET", &path, "", None);
    assert_success(&get);
    assert_eq!(next_payload(&mut sse)["method"], "GET");

    let mut s = server.connect();
    write!(s, "HEAD {path}/ping?x=1 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed in head: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert_eq!(head, get.head, "HEAD and GET heads are identical");
    assert!(head.contains("Content-Length: 16\r\n"));
    assert_eq!(read_to_close(&mut r), b"", "no body after a HEAD head");

    let event = next_payload(&mut sse);
    assert_eq!((event["method"].as_str(), event["path"].as_str()), (Some("HEAD"), Some("/ping")));
    assert_eq!(event["query"], json!({"x": "1"}));
}

#[test]
fn options_preflight_is_answered_and_not_emitted() {
    let (server, path, mut sse) = start(&[]);
    let preflight = "Origin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\n\
                     Access-Control-Request-Headers: Content-Type, X-Hub-Signature-256\r\n";
    let r = send(&server, "OPTIONS", &format!("{path}/from/browser"), preflight, None);
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.head);
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("*"));
    let methods = r.header("access-control-allow-methods").unwrap();
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.split(", ").any(|m| m == method), "{method} not in {methods}");
    }
    assert_eq!(r.header("access-control-allow-headers").as_deref(), Some("Content-Type, X-Hub-Signature-256"), "requested headers echoed");
    assert_eq!(r.body, "");
    assert_nothing_emitted(&server, &mut sse);

    // A preflight that asks for no headers gets no empty header line.
    let r = send(&server, "OPTIONS", &path, "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n", None);
    assert!((200..300).contains(&r.status));
    assert!(!r.head.to_ascii_lowercase().contains("access-control-allow-headers"), "{}", r.head);
    assert_nothing_emitted(&server, &mut sse);

    // An OPTIONS that is not a preflight is an ordinary request: emitted.
    assert_success(&send(&server, "OPTIONS", &path, "", None));
    assert_eq!(next_payload(&mut sse)["method"], "OPTIONS");
}

#[test]
fn over_max_event_bytes_is_413_before_the_body_is_read() {
    let (server, path, mut sse) = start(&["--max-event-bytes", "1024"]);

    // Only a head announcing a huge body: refused at once, nothing read.
    for extra in ["", "Expect: 100-continue\r\n"] {
        let mut s = server.connect();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let start = Instant::now();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 1000000000000\r\n\r\n").unwrap();
        let r = read_response(&mut BufReader::new(s.try_clone().unwrap()));
        assert_eq!(r.status, 413, "{extra:?}: {}", r.head);
        assert!(start.elapsed() < Duration::from_secs(1), "413 took {:?}", start.elapsed());
        assert!(r.json()["error"].as_str().unwrap().contains("too large"));
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert_eq!(read_to_close(&mut s), b"", "then the connection ends");
    }

    // One byte over, as Content-Length and as chunks.
    assert_eq!(send(&server, "POST", &path, "", Some(&[b'a'; 1025])).status, 413);
    let mut s = server.connect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n{0}\r\n200\r\n{0}\r\n1\r\nz\r\n0\r\n\r\n",
        "c".repeat(512)
    )
    .unwrap();
    assert_eq!(read_response(&mut BufReader::new(s)).status, 413);
    assert_nothing_emitted(&server, &mut sse);

    // Exactly the limit is accepted.
    assert_success(&send(&server, "POST", &path, "", Some(&[b'a'; 1024])));
    assert_eq!(next_payload(&mut sse)["bodyRaw"].as_str().unwrap().len(), 1024);
}

#[test]
fn unknown_key_is_404_json() {
    let (server, path, mut sse) = start(&[]);
    let id = server.request("GET", "/v1/sources/hook", None).json()["data"]["id"].as_str().unwrap().to_string();
    let key = path.strip_prefix("/e/").unwrap();
    let wrong_key = format!("{}{}", &key[..key.len() - 1], if key.ends_with('A') { 'B' } else { 'A' });
    for target in [
        "/e/nope".to_string(),
        "/e/nope/github/push?x=1".into(),
        "/e/".into(),
        format!("/e/{wrong_key}"),
        format!("/e/{}", key.to_ascii_lowercase()),
        format!("/e/{id}"),
        "/e/hook".into(),
    ] {
        assert_not_found(&send(&server, "POST", &target, "Content-Type: application/json\r\n", Some(b"{}")));
    }
    let r = send(&server, "OPTIONS", "/e/nope", "Origin: https://a.example\r\nAccess-Control-Request-Method: POST\r\n", None);
    assert_eq!(r.status, 404);
    let r = send(&server, "GET", "/e", "", None);
    assert_eq!((r.status, r.json()["error"].as_str()), (404, Some("no such path")));
    assert_nothing_emitted(&server, &mut sse);
}

#[test]
fn a_deleted_sources_endpoint_is_404() {
    let (server, path, mut sse) = start(&[]);
    assert_success(&send(&server, "POST", &path, "", Some(b"1")));
    assert_eq!(next_payload(&mut sse)["body"], 1);
    assert_eq!(server.request("DELETE", "/v1/sources/hook", None).status, 204);
    assert_eq!(sse.next_event(), Frame::End, "deleting ends the stream");
    for target in [path.clone(), format!("{path}/sub/path")] {
        assert_not_found(&send(&server, "POST", &target, "", Some(b"2")));
    }
    // A new source of the same name has a new endpoint; the old stays dead.
    server.create_source("hook");
    let fresh = endpoint_path(&server, "hook");
    assert_ne!(fresh, path);
    assert_not_found(&send(&server, "GET", &path, "", None));
    assert_success(&send(&server, "GET", &fresh, "", None));
    assert_eq!(server.metric("ssehub_events_emitted_total"), 2);
}

#[test]
fn any_path_suffix_is_the_events_path() {
    let (server, path, mut sse) = start(&[]);
    let cases = [
        ("", "/"),
        ("/", "/"),
        ("/github/push", "/github/push"),
        ("/github/push/", "/github/push/"),
        ("/stripe//v1/a%20b", "/stripe//v1/a%20b"),
        ("/x?y=/z", "/x"),
    ];
    for (suffix, want) in cases {
        assert_success(&send(&server, "POST", &format!("{path}{suffix}"), "", Some(b"{}")));
        assert_eq!(next_payload(&mut sse)["path"], want, "suffix {suffix:?}");
    }
}

#[test]
fn no_api_key_is_needed_and_the_senders_headers_are_kept() {
    let (server, path, mut sse) = start(&[]);
    // A wrong key does not matter: the sender's Authorization header is
    // just one of its headers.
    let headers = "Authorization: Bearer not-an-ssehub-key\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\
                   X-GitHub-Event: ping\r\nUser-Agent: GitHub-Hookshot/1\r\n";
    assert_success(&send(&server, "POST", &path, headers, Some(b"{}")));
    let event = next_payload(&mut sse);
    let h = &event["headers"];
    assert_eq!(h["authorization"], "Bearer not-an-ssehub-key");
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2", "a repeated header is joined with \", \"");
    assert_eq!(h["x-github-event"], "ping");
    assert_eq!(h["user-agent"], "GitHub-Hookshot/1");
    assert_eq!(h["host"], server.addr.to_string());
    // The API itself still wants its key.
    assert_eq!(send(&server, "GET", "/v1/sources", "", None).status, 401);
}

#[test]
fn github_hmac_sha256_verifies_over_body_raw_from_the_stream() {
    // GitHub's documented test vector: the algorithm is theirs.
    assert_eq!(
        github_signature(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );

    let (server, path, mut sse) = start(&[]);
    let secret = b"s3cr3t-webhook-secret";
    // Pretty-printed, with escapes, non-ASCII, CRLF and a trailing newline:
    // any rewriting of the bytes would break the signature.
    let payload = "{\r\n  \"zen\": \"Design for failure. \u{1F600}\",\n  \"hook_id\": 12345678,\n  \"ratio\": 1.50,\n  \
                   \"url\": \"https:\\/\\/api.github.com\\/hooks\",\n  \"repository\": {\"full_name\": \"octo/hello\"}\n}\n";
    let signature = github_signature(secret, payload.as_bytes());
    let headers = format!(
        "User-Agent: GitHub-Hookshot/044aadd\r\nContent-Type: application/json\r\nX-GitHub-Event: ping\r\n\
         X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958\r\nX-Hub-Signature-256: {signature}\r\n"
    );
    assert_success(&send(&server, "POST", &format!("{path}/github"), &headers, Some(payload.as_bytes())));

    // The receiver's side: only what the stream carries.
    let frame = sse.next_event();
    let Frame::Event { data, .. } = &frame else { unreachable!() };
    let envelope: Value = serde_json::from_str(data).unwrap();
    let event = &envelope["event"];
    let header = event["headers"]["x-hub-signature-256"].as_str().unwrap();
    let raw = event["bodyRaw"].as_str().unwrap();
    assert_eq!(header, signature);
    assert!(signature_verifies(secret, raw.as_bytes(), header), "signature over bodyRaw verifies");
    assert_eq!(event["body"]["repository"]["full_name"], "octo/hello");
    assert_eq!(event["headers"]["x-github-event"], "ping");

    // What the signature guards against: other bytes, or another secret.
    assert!(!signature_verifies(secret, event["body"].to_string().as_bytes(), header), "re-serialised body must not verify");
    assert!(!signature_verifies(b"wrong secret", raw.as_bytes(), header));
    assert!(!signature_verifies(secret, raw.trim_end().as_bytes(), header));
}

#[test]
fn ingests_and_emits_share_one_id_sequence_and_replay() {
    let (server, path, mut sse) = start(&["--history", "10"]);
    let api_0 = server.emit("hook", "{\"n\":0}");
    assert_success(&send(&server, "POST", &path, "Content-Type: application/json\r\n", Some(b"{\"n\": 1}")));
    let api_2 = server.emit("hook", "{\"n\":2}");
    assert_success(&send(&server, "GET", &format!("{path}?n=3"), "", None));

    let frames: Vec<Frame> = (0..4).map(|_| sse.next_event()).collect();
    let ids: Vec<String> = frames.iter().map(Frame::id).collect();
    assert_eq!((&ids[0], &ids[2]), (&api_0, &api_2));
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    assert!(ids.windows(2).all(|w| parse(&w[0]) < parse(&w[1])), "one increasing sequence: {ids:?}");
    let source_id = server.request("GET", "/v1/sources/hook", None).json()["data"]["id"].clone();
    for frame in &frames {
        let envelope = frame.envelope();
        assert_eq!((&envelope["id"], &envelope["metadata"]["emit_id"]), (&json!(frame.id()), &json!(frame.id())));
        assert_eq!(envelope["metadata"]["emitter_id"], source_id);
    }
    assert_eq!(frames[1].envelope()["event"]["body"]["n"], 1);
    assert_eq!(frames[3].envelope()["event"]["query"]["n"], "3");

    // Resume after the first: the ingests are replayed in place, then live.
    drop(sse);
    let mut sse = server.subscribe("/sources/hook/sse", &format!("Last-Event-ID: {}\r\n", ids[0]));
    let replayed: Vec<String> = (0..3).map(|_| sse.next_event().id()).collect();
    assert_eq!(replayed, ids[1..]);
    assert_success(&send(&server, "DELETE", &format!("{path}/live"), "", None));
    let live = sse.next_event();
    assert!(parse(&live.id()) > parse(&ids[3]));
    assert_eq!(live.envelope()["event"]["method"], "DELETE");

    // And they are in the history the API shows, newest first.
    let summaries = server.request("GET", "/v1/sources/hook/event_summaries?limit=10", None).json();
    assert_eq!(summaries["page_info"]["total_count"], 5);
    let methods: Vec<Value> = summaries["data"].as_array().unwrap().iter().map(|e| e["event"]["method"].clone()).collect();
    assert_eq!(methods, [json!("DELETE"), json!("GET"), Value::Null, json!("POST"), Value::Null]);
}

#[test]
fn pipelined_ingests_on_one_connection_are_answered_in_order() {
    let (server, path, mut sse) = start(&[]);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut batch = String::new();
    for n in 0..3 {
        batch.push_str(&format!("POST {path}/{n} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{n}"));
    }
    batch.push_str(&format!("PATCH {path}/3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n3\r\n0\r\n\r\n"));
    batch.push_str(&format!("GET {path}/4 HTTP/1.1\r\nHost: x\r\n\r\n"));
    w.write_all(batch.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..5 {
        assert_success(&read_response(&mut r));
    }
    let paths: Vec<Value> = (0..5).map(|_| next_payload(&mut sse)["path"].clone()).collect();
    assert_eq!(paths, ["/0", "/1", "/2", "/3", "/4"].map(|p| json!(p)));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let (server, path, mut sse) = start(&[]);
    let body = "{\"big\":\"".to_string() + &"x".repeat(4000) + "\"}";
    let mut s = server.connect();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    assert_success(&read_response(&mut r));
    assert_eq!(next_payload(&mut sse)["bodyRaw"], body);
}

#[test]
fn real_curl_posts_a_file_and_sends_an_encoded_query() {
    let (server, path, mut sse) = start(&[]);
    let url = format!("http://{}{path}", server.addr);
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl").args(["-s", "--max-time", "10"]).args(args).output().expect("curl is installed");
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    // Over 1 KiB, so curl also sends `Expect: 100-continue`.
    let file = std::env::temp_dir().join(format!("ssehub-webhook-{}.json", std::process::id()));
    let items: Vec<String> =
        (0..40).map(|i| format!("    {{\"sku\": \"item-{i}\", \"price\": {i}.00, \"name\": \"Ünïcødé ✓\"}}")).collect();
    let contents = format!("{{\n  \"order\": 42,\n  \"items\": [\n{}\n  ]\n}}\n", items.join(",\n"));
    std::fs::write(&file, &contents).unwrap();
    let answer = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{url}/orders"),
    ]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(answer, "{\"success\":true}");
    let event = next_payload(&mut sse);
    assert_eq!(event["bodyRaw"], contents);
    assert_eq!(event["body"]["items"][39]["name"], "Ünïcødé ✓");
    assert_eq!((event["method"].as_str(), event["path"].as_str()), (Some("POST"), Some("/orders")));
    assert!(event["headers"]["user-agent"].as_str().unwrap().starts_with("curl/"));

    let answer = curl(&["-G", "--data-urlencode", "q=a b&c=d", "--data-urlencode", "q=☃ +1", "--data-urlencode", "page=2", &url]);
    assert_eq!(answer, "{\"success\":true}");
    let event = next_payload(&mut sse);
    assert_eq!(event["method"], "GET");
    assert_eq!(event["query"], json!({"q": ["a b&c=d", "☃ +1"], "page": "2"}));

    // A browser's preflight, from curl.
    let head = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: x-custom",
        &url,
    ]);
    assert!(head.contains("Access-Control-Allow-Origin: *\r\n") && head.contains("Access-Control-Allow-Headers: x-custom\r\n"), "{head}");
    assert_nothing_emitted(&server, &mut sse);
}

#[test]
fn the_endpoint_url_follows_public_url() {
    let server = TestServer::start(&["--source", "hook", "--public-url", "https://hooks.example.com/"]);
    let source = server.request("GET", "/v1/sources/hook", None).json()["data"].clone();
    let url = source["endpoint_url"].as_str().unwrap();
    let key = url.strip_prefix("https://hooks.example.com/e/").unwrap_or_else(|| panic!("{url}"));
    let mut sse = server.subscribe("/sources/hook/sse", "");
    assert_success(&send(&server, "POST", &format!("/e/{key}"), "", Some(b"ok")));
    assert_eq!(next_payload(&mut sse)["body"], "ok");
    // Each source has its own key.
    let other = server.create_source("other");
    assert_ne!(other["endpoint_url"], source["endpoint_url"]);
}
