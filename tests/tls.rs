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
    tls_server_env(certs, args, &[])
}

/// `tls_server` with environment variables (the hidden ones that shorten intervals for tests).
fn tls_server_env(certs: &Certs, args: &[&str], env: &[(&str, &str)]) -> (TestServer, SocketAddr) {
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let mut command = Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY]);
    command.args(["--tls-cert", &cert, "--tls-key", &key, "--metrics-listen", "127.0.0.1:0", "--engine", "memory"]);
    command.args(args).envs(env.iter().copied());
    let server = TestServer::spawn(&mut command, KEY);
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
    // The head timeout shortened from 10 s to 2 s.
    let (server, _metrics) = tls_server_env(&certs, &["--source", "s"], &[("SSEHUB_HEAD_TIMEOUT_MS", "2000")]);
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
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let waited = opened.elapsed();
        assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4), "closed after {waited:?}");
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

/// Lines of the server's log that contain `what`.
fn log_lines(server: &TestServer, what: &str) -> Vec<String> {
    server.logs().lines().filter(|l| l.contains(what)).map(String::from).collect()
}

#[test]
fn a_pair_changed_on_disk_is_loaded_without_a_signal_and_a_broken_key_keeps_the_old_pair() {
    let certs = certs();
    // The files are looked at every 100 ms rather than every 3 s.
    let (server, metrics) = tls_server_env(&certs, &["--source", "s"], &[("SSEHUB_TLS_CHECK_MS", "100")]);
    let first = presented_serial(&certs, server.addr);
    let mut sse = subscribe(&certs, server.addr, "/sources/s/sse", "");
    read_until(&mut sse, b":sse-handshake\n\n");

    // A renewal written over the certificate file, as certbot's deploy hook does: no signal.
    certs.sign("server", "DNS:localhost,IP:127.0.0.1", "60");
    server.wait_log("changed: reloaded");
    let second = presented_serial(&certs, server.addr);
    assert_ne!(first, second, "new handshakes get the new certificate");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry = metric(metrics, "ssehub_tls_cert_expiry_timestamp_seconds");
    assert!((now + 59 * 86_400..now + 61 * 86_400).contains(&expiry), "notAfter {expiry}");
    request(&certs, server.addr, "POST", "/v1/sources/s/events", r#"{"n":1}"#);
    assert!(String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap().contains(r#""n":1"#), "the open stream goes on");

    // A broken key written over the key file: one line, and the pair in use stays.
    std::fs::write(certs.path("server.key"), "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n").unwrap();
    server.wait_log("keeping the certificate in use");
    // Twenty checks more see the same broken file: still the one line.
    std::thread::sleep(Duration::from_secs(2));
    let lines = log_lines(&server, "keeping the certificate in use");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("changed") && lines[0].contains("--tls-key"), "{}", lines[0]);
    assert_eq!(presented_serial(&certs, server.addr), second, "the pair in use stays");
    request(&certs, server.addr, "POST", "/v1/sources/s/events", r#"{"n":2}"#);
    assert!(String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap().contains(r#""n":2"#));
    assert_eq!(log_lines(&server, "changed: reloaded").len(), 1, "nothing loaded but the renewal");
}

#[test]
fn at_the_connection_limit_a_tls_connection_is_closed_at_once_and_counted() {
    let certs = certs();
    let (server, metrics) = tls_server(&certs, &["--max-connections", "2"]);
    let held: Vec<Tls> = (0..2)
        .map(|_| {
            let mut s = connect(&certs, server.addr);
            // A completed handshake and an answer: the connection is in.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            read_until(&mut s, b"\r\n\r\n");
            s
        })
        .collect();
    // A TLS client: no plain-text answer it would misread, a close at once.
    let mut refused = connect(&certs, server.addr);
    let started = Instant::now();
    let err = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").and_then(|_| refused.read(&mut [0u8; 64]));
    assert!(matches!(err, Err(_) | Ok(0)), "refused: {err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once, not by a timeout: {:?}", started.elapsed());
    // On the wire: no byte at all.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = raw.write_all(&[0x16, 0x03, 0x01]);
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "nothing sent in the clear: {got:?}");
    assert_eq!(metric(metrics, "ssehub_connections_refused_total"), 2);
    drop(held);
    // Their slots are free again (the scrape's own connection is the one left).
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(metrics, "ssehub_connections_open") > 1 {
        assert!(Instant::now() < deadline, "the held connections' slots were not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(request(&certs, server.addr, "GET", "/healthz", "").status, 200);
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

/// Raises this process's soft open-file limit to its hard limit (the
/// server it starts inherits it); returns the limit.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain calls with a valid pointer to a local.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Connections of the storm and of the stalled handshakes.
const MANY: usize = 1000;

/// A new TCP connection to `addr` and the ClientHello a rustls client would send on it.
fn client_hello(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let sock = TcpStream::connect(addr).unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    (sock, hello)
}

/// An emit on a kept-alive connection; its answer is read by `answered`.
fn emit_on(publisher: &mut Tls, n: usize) {
    let body = format!(r#"{{"n":{n}}}"#);
    write!(
        publisher,
        "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

fn answered(publisher: &mut Tls) {
    let head = String::from_utf8(read_until(publisher, b"\r\n\r\n")).unwrap();
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
    publisher.read_exact(&mut vec![0; len]).unwrap();
}

/// An open TLS stream on source `s` that has received event 0, and the
/// keep-alive connection that emitted it.
fn stream_and_publisher(certs: &Certs, addr: SocketAddr) -> (Tls, Tls) {
    let mut sse = subscribe(certs, addr, "/sources/s/sse", "");
    read_until(&mut sse, b":sse-handshake\n\n");
    let mut publisher = connect(certs, addr);
    emit_on(&mut publisher, 0);
    answered(&mut publisher);
    read_until(&mut sse, b"\n\n");
    (sse, publisher)
}

#[test]
fn a_storm_of_handshakes_does_not_stall_delivery_to_open_streams() {
    assert!(raise_open_files() >= 2 * MANY as u64 + 64, "the test needs {} descriptors", 2 * MANY + 64);
    let certs = certs();
    // A head timeout of 60 s rather than 10: the debug build on a busy machine may take longer than 10 s over the storm.
    let (server, metrics) = tls_server_env(&certs, &["--source", "s"], &[("SSEHUB_HEAD_TIMEOUT_MS", "60000")]);
    let (mut sse, mut publisher) = stream_and_publisher(&certs, server.addr);

    // A thousand connections, each with its ClientHello ready, all sent at once.
    let config = client_config(&certs.path("ca.pem"), &[]);
    let mut storm: Vec<(TcpStream, Vec<u8>)> = (0..MANY).map(|_| client_hello(&config, server.addr)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics, "ssehub_connections_open") < MANY as u64 + 3 {
        assert!(Instant::now() < deadline, "the storm's connections were not all accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (sock, hello) in &mut storm {
        sock.write_all(hello).unwrap();
    }
    let sent = Instant::now();
    emit_on(&mut publisher, 1);
    let frame = String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap();
    let delivered = sent.elapsed();
    assert!(frame.contains(r#""n":1"#), "{frame}");
    answered(&mut publisher);
    // Every ClientHello was answered: the storm was real work.
    for (sock, _) in &mut storm {
        sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let n = sock.read(&mut [0u8; 4096]).unwrap();
        assert!(n > 0, "a ClientHello got its answer");
    }
    let stormed = sent.elapsed();
    // Without the budget the event waits behind the whole storm's signing (both took 5.4 s).
    assert!(delivered * 4 < stormed, "an event took {delivered:?} to arrive while {MANY} handshakes took {stormed:?}");
    eprintln!("delivered in {delivered:?} while {MANY} handshakes took {stormed:?}");
}

#[test]
fn a_thousand_handshakes_trickled_byte_by_byte_are_closed_by_the_head_timeout_while_a_stream_goes_on() {
    assert!(raise_open_files() >= 2 * MANY as u64 + 64, "the test needs {} descriptors", 2 * MANY + 64);
    const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
    let certs = certs();
    let (server, metrics) = tls_server_env(&certs, &["--source", "s"], &[("SSEHUB_HEAD_TIMEOUT_MS", "2000")]);
    let config = client_config(&certs.path("ca.pem"), &[]);
    let (mut sse, mut publisher) = stream_and_publisher(&certs, server.addr);

    // Each sends a ClientHello one byte every 100 ms, so never all of it in time.
    let (first, hello) = client_hello(&config, server.addr);
    let trickled: Vec<(TcpStream, Instant, usize)> = std::iter::once(first)
        .chain((1..MANY).map(|_| TcpStream::connect(server.addr).unwrap()))
        .map(|sock| {
            sock.set_nonblocking(true).unwrap();
            (sock, Instant::now(), 0)
        })
        .collect();
    let trickler = std::thread::spawn(move || {
        let mut open = trickled;
        let started = Instant::now();
        // How long each lived, from its connect to the close it saw.
        let mut lived = Vec::new();
        while !open.is_empty() && started.elapsed() < HEAD_TIMEOUT * 3 {
            open.retain_mut(|(sock, opened, at)| {
                let gone = match sock.read(&mut [0u8; 64]) {
                    Ok(_) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let gone = sock.write(&hello[*at..*at + 1]).is_err();
                        *at += 1;
                        gone
                    }
                    Err(_) => true,
                };
                if gone {
                    lived.push(opened.elapsed());
                }
                !gone
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        (lived, open.len())
    });

    // Meanwhile events go on reaching the open stream.
    let mut n = 1;
    while !trickler.is_finished() {
        let t = Instant::now();
        emit_on(&mut publisher, n);
        let frame = String::from_utf8(read_until(&mut sse, b"\n\n")).unwrap();
        assert!(frame.contains(&format!(r#""n":{n}}}"#)), "{frame}");
        assert!(t.elapsed() < Duration::from_millis(500), "an event took {:?}", t.elapsed());
        answered(&mut publisher);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (lived, still_open) = trickler.join().unwrap();
    assert_eq!(still_open, 0, "open after {:?}", HEAD_TIMEOUT * 3);
    assert_eq!(lived.len(), MANY);
    // Seen closed up to one round of the trickler (100 ms and its writes) late.
    let (shortest, longest) = (lived.iter().min().unwrap(), lived.iter().max().unwrap());
    assert!(*shortest >= HEAD_TIMEOUT - Duration::from_millis(50), "one closed after {shortest:?}");
    assert!(*longest < HEAD_TIMEOUT + Duration::from_millis(800), "one closed after {longest:?}");
    eprintln!("{MANY} trickled handshakes closed {shortest:?} to {longest:?} after their connect; {n} events delivered meanwhile");
    assert_eq!(metric(metrics, "ssehub_connections_timed_out_total"), MANY as u64);
    assert!(n > 5, "events were sent throughout ({n})");
}
