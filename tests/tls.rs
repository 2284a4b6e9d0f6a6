//! HTTPS on the main listener (SPEC §9), with certificates this test makes
//! with `openssl`: REST, streams and webhooks over TLS, the protocol
//! versions and ALPN offered, plain HTTP and stalled handshakes on the TLS
//! port, the key formats, SIGHUP reloads and the TLS metrics.
#![cfg(feature = "tls")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::tls::{Certs, certs, openssl};
use support::{KEY, TestServer, read_response, signal};

fn tls_server(certs: &Certs, args: &[&str]) -> (TestServer, SocketAddr) {
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let mut all = vec!["--tls-cert", &cert, "--tls-key", &key, "--metrics-listen", "127.0.0.1:0", "--engine", "memory"];
    all.extend_from_slice(args);
    let server = TestServer::start(&all);
    let logs = server.logs();
    let metrics = logs.split("serving /metrics on http://").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    (server, metrics)
}

fn metric(metrics: SocketAddr, name: &str) -> u64 {
    support::metric_in(&support::send(metrics, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body, name)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

#[allow(deprecated)]
fn client_config(ca: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A verified TLS connection to 127.0.0.1 with the test CA.
fn connect(certs: &Certs, addr: SocketAddr) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(client_config(&certs.path("ca.pem"), &[]), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn request(certs: &Certs, addr: SocketAddr, method: &str, path: &str, body: &str) -> support::Response {
    let mut s = connect(certs, addr);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(&mut std::io::BufReader::new(s))
}

/// Reads until `bytes` ends with `end`.
fn read_until(s: &mut impl Read, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(end) {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed after {:?}", String::from_utf8_lossy(&got));
        got.push(b[0]);
    }
    got
}

fn subscribe(certs: &Certs, addr: SocketAddr, path: &str, headers: &str) -> Tls {
    let mut s = connect(certs, addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n{headers}\r\n").unwrap();
    s
}

const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\
X-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\r\n:sse-handshake\n\n";

#[test]
fn rest_streams_and_replay_over_https_with_https_urls() {
    let certs = certs();
    let (server, metrics) = tls_server(&certs, &[]);
    let created = request(&certs, server.addr, "POST", "/v1/sources", r#"{"name":"orders"}"#);
    assert_eq!(created.status, 201, "{}", created.body);
    let data = &created.json()["data"];
    let id = data["id"].as_str().unwrap();
    assert_eq!(data["sse_url"], format!("https://{}/sources/{id}/sse", server.addr));
    assert!(data["endpoint_url"].as_str().unwrap().starts_with(&format!("https://{}/e/", server.addr)));

    let mut sse = subscribe(&certs, server.addr, "/sources/orders/sse", "");
    let first = read_until(&mut sse, b":sse-handshake\n\n");
    assert_eq!(String::from_utf8(first).unwrap(), STREAM_HEAD, "the exact first bytes after the handshake");

    let emitted = request(&certs, server.addr, "POST", "/v1/sources/orders/events", r#"{"total":1}"#);
    assert_eq!(emitted.status, 202, "{}", emitted.body);
    let frame = String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap();
    assert!(frame.starts_with("id: ") && frame.contains(r#""total":1"#), "{frame}");
    let seen = frame.lines().next().unwrap().strip_prefix("id: ").unwrap().to_string();

    request(&certs, server.addr, "POST", "/v1/sources/orders/events", r#"{"total":2}"#);
    let mut again = subscribe(&certs, server.addr, "/sources/orders/sse", &format!("Last-Event-ID: {seen}\r\n"));
    read_until(&mut again, b":sse-handshake\n\n");
    let replayed = String::from_utf8(read_until(&mut again, b"\n\n")).unwrap();
    assert!(replayed.contains(r#""total":2"#) && !replayed.contains(r#""total":1"#), "only what came after: {replayed}");
    assert!(metric(metrics, "ssehub_tls_handshakes_total{result=\"ok\"}") >= 5);
}

#[test]
fn a_webhook_over_https_keeps_its_exact_body() {
    let certs = certs();
    let (server, _metrics) = tls_server(&certs, &["--source", "hook"]);
    let list = request(&certs, server.addr, "GET", "/v1/sources", "");
    let url = list.json()["data"][0]["endpoint_url"].as_str().unwrap().to_string();
    let path = url.strip_prefix(&format!("https://{}", server.addr)).expect("an https:// endpoint URL").to_string();
    let mut sse = subscribe(&certs, server.addr, "/sources/hook/sse", "");
    read_until(&mut sse, b":sse-handshake\n\n");
    let body = "{\"a\" : 1,\r\n  \"b\":\"é\"}";
    let mut s = connect(&certs, server.addr);
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let answer = read_response(&mut std::io::BufReader::new(s));
    assert!(answer.status < 300, "{} {}", answer.status, answer.body);
    let frame = String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap();
    let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["event"]["bodyRaw"], body, "{frame}");
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl")
}

#[test]
fn curl_with_the_ca_gets_answers_and_plain_http_gets_the_400() {
    let certs = certs();
    let (server, metrics) = tls_server(&certs, &[]);
    let url = format!("https://localhost:{}/healthz", server.addr.port());
    let ok = curl(&["--cacert", &certs.path("ca.pem"), &url]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let refused = curl(&[&url]);
    assert!(!refused.status.success(), "an unknown CA is refused by curl");
    assert_eq!(metric(metrics, "ssehub_tls_handshakes_total{result=\"failed\"}"), 1, "curl's alert ends the handshake");

    // Plain HTTP on the TLS port: one plain answer, then the close.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = support::read_to_close_text(&mut s);
    assert_eq!(
        got,
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 48\r\nConnection: close\r\n\r\n\
         {\"error\":\"this port speaks HTTPS; use https://\"}"
    );
    assert_eq!(metric(metrics, "ssehub_tls_handshakes_total{result=\"failed\"}"), 1, "plain HTTP is no handshake");
    assert_eq!(metric(metrics, "ssehub_tls_handshakes_total{result=\"ok\"}"), 1);
}

fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    // A request answered and closed: s_client reads what follows the
    // handshake (TLS 1.3 tickets among it) and ends with the connection.
    let _ = child.stdin.take().unwrap().write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("Verify return code: 0 (ok)"), text)
}

#[test]
fn tls_1_2_and_1_3_are_accepted_1_1_refused_and_alpn_is_http_1_1() {
    let certs = certs();
    let (server, metrics) = tls_server(&certs, &[]);
    let ca = certs.path("ca.pem");
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(server.addr, &[flag, "-CAfile", &ca]);
        assert!(ok && text.contains(&format!("Protocol  : {name}")) || text.contains(&format!("New, {name}")), "{flag}: {text}");
    }
    let (ok, text) = s_client(server.addr, &["-tls1_1", "-CAfile", &ca]);
    assert!(!ok && text.contains("alert handshake failure") && text.contains("Cipher is (NONE)"), "TLS 1.1 is refused: {text}");

    let (ok, text) = s_client(server.addr, &["-alpn", "h2,http/1.1", "-CAfile", &ca]);
    assert!(ok && text.contains("ALPN protocol: http/1.1"), "{text}");
    let (ok, text) = s_client(server.addr, &["-alpn", "h2", "-CAfile", &ca]);
    assert!(!ok && text.contains("no application protocol"), "h2 alone is refused: {text}");
    // Through rustls too: a client that offers h2 first gets http/1.1.
    let mut sock = TcpStream::connect(server.addr).unwrap();
    let mut conn =
        rustls::ClientConnection::new(client_config(&ca, &[b"h2", b"http/1.1"]), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = rustls::Stream::new(&mut conn, &mut sock);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(metric(metrics, "ssehub_tls_handshakes_total{result=\"failed\"}") >= 1, "the TLS 1.1 attempt failed");
}

#[test]
fn the_aes_gcm_suites_are_served_and_chacha20_poly1305_is_not() {
    let certs = certs();
    let (server, _metrics) = tls_server(&certs, &[]);
    let ca = certs.path("ca.pem");
    let tls13 = |suite: &str| s_client(server.addr, &["-tls1_3", "-ciphersuites", suite, "-CAfile", &ca]);
    let tls12 = |suite: &str| s_client(server.addr, &["-tls1_2", "-cipher", suite, "-CAfile", &ca]);
    for suite in ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"] {
        let (ok, text) = tls13(suite);
        assert!(ok && text.contains(suite), "{suite}: {text}");
    }
    let (ok, text) = tls12("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
    assert!(ok && text.contains("AES128-GCM-SHA256"), "{text}");
    let (ok, text) = tls13("TLS_CHACHA20_POLY1305_SHA256");
    assert!(!ok && text.contains("Cipher is (NONE)"), "TLS 1.3 ChaCha20-Poly1305 is refused: {text}");
    let (ok, text) = tls12("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
    assert!(!ok && text.contains("Cipher is (NONE)"), "TLS 1.2 ChaCha20-Poly1305 is refused: {text}");
}

#[test]
fn sessions_resume_with_tls_1_3_tickets_and_tls_1_2_ids() {
    let certs = certs();
    let (server, _metrics) = tls_server(&certs, &[]);
    let ca = certs.path("ca.pem");
    for (flag, extra) in [("-tls1_3", &[][..]), ("-tls1_2", &["-no_ticket"][..])] {
        let session = certs.path(&format!("session{flag}"));
        let (ok, text) = s_client(server.addr, &[&[flag, "-CAfile", &ca, "-sess_out", &session][..], extra].concat());
        assert!(ok, "{text}");
        let (ok, text) = s_client(server.addr, &[&[flag, "-CAfile", &ca, "-sess_in", &session][..], extra].concat());
        assert!(ok && text.contains("Reused, TLSv1."), "{flag}: resumed: {text}");
    }
}

#[test]
fn a_connection_that_never_handshakes_is_closed_by_the_head_timeout_while_a_stream_goes_on() {
    let certs = certs();
    let (server, _metrics) = tls_server(&certs, &["--source", "s"]);
    let mut sse = subscribe(&certs, server.addr, "/sources/s/sse", "");
    read_until(&mut sse, b":sse-handshake\n\n");
    // Silent, and the first bytes of a ClientHello, then nothing.
    let silent = TcpStream::connect(server.addr).unwrap();
    let mut partial = TcpStream::connect(server.addr).unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x00]).unwrap();
    let opened = Instant::now();
    request(&certs, server.addr, "POST", "/v1/sources/s/events", r#"{"n":1}"#);
    let frame = String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap();
    assert!(frame.contains(r#""n":1"#), "{frame}");
    for mut s in [silent, partial] {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let waited = opened.elapsed();
        assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(13), "closed after {waited:?}");
    }
    request(&certs, server.addr, "POST", "/v1/sources/s/events", r#"{"n":2}"#);
    let frame = String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap();
    assert!(frame.contains(r#""n":2"#), "the open stream goes on: {frame}");
}

#[test]
fn rsa_pkcs1_and_sec1_keys_serve_and_a_key_of_another_certificate_is_refused_at_start() {
    let certs = certs();
    let d = certs.dir.path();
    openssl(d, &["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    certs.sign("rsa", "IP:127.0.0.1", "30");
    assert!(std::fs::read_to_string(certs.path("rsa.key")).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY"));
    openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sec1.key"]);
    certs.sign("sec1", "IP:127.0.0.1", "30");
    assert!(std::fs::read_to_string(certs.path("sec1.key")).unwrap().starts_with("-----BEGIN EC PRIVATE KEY"));
    for name in ["rsa", "sec1"] {
        let (cert, key) = (certs.path(&format!("{name}.pem")), certs.path(&format!("{name}.key")));
        let server = TestServer::start(&["--tls-cert", &cert, "--tls-key", &key, "--engine", "memory"]);
        assert_eq!(request(&certs, server.addr, "GET", "/healthz", "").status, 200, "{name}");
    }
    let (cert, key) = (certs.path("rsa.pem"), certs.path("sec1.key"));
    let (code, stderr) = support::refused_start(&["--tls-cert", &cert, "--tls-key", &key, "--engine", "memory"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--tls-cert") && stderr.trim().lines().count() == 1, "one line: {stderr}");
}

/// The serial of the certificate the server presents now.
fn presented_serial(certs: &Certs, addr: SocketAddr) -> Vec<u8> {
    let mut s = connect(certs, addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let _ = support::read_to_close(&mut s);
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn sighup_loads_a_new_pair_keeps_open_streams_and_keeps_the_old_pair_when_the_new_is_broken() {
    let certs = certs();
    let (server, metrics) = tls_server(&certs, &["--source", "s"]);
    let first = presented_serial(&certs, server.addr);
    let expiry = metric(metrics, "ssehub_tls_cert_expiry_timestamp_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 29 * 86_400..now + 31 * 86_400).contains(&expiry), "notAfter {expiry} is 30 days from {now}");
    let mut sse = subscribe(&certs, server.addr, "/sources/s/sse", "");
    read_until(&mut sse, b":sse-handshake\n\n");

    // A renewal: a new certificate for 60 days, same key.
    certs.sign("server", "DNS:localhost,IP:127.0.0.1", "60");
    signal(server.pid(), "HUP");
    server.wait_log("SIGHUP: reloaded --tls-cert");
    let second = presented_serial(&certs, server.addr);
    assert_ne!(first, second, "new handshakes get the new certificate");
    let expiry = metric(metrics, "ssehub_tls_cert_expiry_timestamp_seconds");
    assert!((now + 59 * 86_400..now + 61 * 86_400).contains(&expiry), "notAfter {expiry}");
    request(&certs, server.addr, "POST", "/v1/sources/s/events", r#"{"n":1}"#);
    assert!(String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap().contains(r#""n":1"#), "the open stream goes on");

    // A broken key: one line, and the pair in use stays.
    std::fs::write(certs.path("server.key"), "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n").unwrap();
    signal(server.pid(), "HUP");
    server.wait_log("keeping the certificate in use");
    let lines: Vec<_> = server.logs().lines().filter(|l| l.contains("keeping the certificate in use")).map(String::from).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--tls-key"), "{}", lines[0]);
    assert_eq!(presented_serial(&certs, server.addr), second);
    request(&certs, server.addr, "POST", "/v1/sources/s/events", r#"{"n":2}"#);
    assert!(String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap().contains(r#""n":2"#));
}

#[test]
fn tls_flags_go_together() {
    let (code, stderr) = support::refused_start(&["--tls-cert", "/nonexistent.pem"]);
    assert_eq!(code, Some(2), "a usage error");
    assert!(stderr.contains("--tls-cert and --tls-key go together"), "{stderr}");
    let (code, stderr) = support::refused_start(&["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--tls-cert /nonexistent.pem") && stderr.trim().lines().count() == 1, "{stderr}");
}
