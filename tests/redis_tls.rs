//! The `redis` engine over TLS (`rediss://`): Debian's `redis-server`
//! speaking TLS only (`--port 0 --tls-port P`), with certificates made by
//! the test with `openssl`, verified as the CLI verifies.
#![cfg(all(feature = "redis", feature = "tls"))]

mod support;

use std::time::{Duration, Instant};

use support::{RedisServer, TestServer};

fn tls_redis(certs: &support::tls::Certs) -> RedisServer {
    RedisServer::tls(&certs.path("server.pem"), &certs.path("server.key"), &certs.path("ca.pem"))
}

/// Two nodes on one TLS-only Redis share a source: created on one, seen
/// on the other; each one's emits reach the other's subscriber, in order;
/// Redis has no plain port open.
#[test]
fn two_nodes_share_a_source_over_rediss() {
    let certs = support::tls::certs();
    let redis = tls_redis(&certs);
    let (url, ca) = (redis.url(), certs.path("ca.pem"));
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    let a = TestServer::start(&["--redis", &url, "--redis-cacert", &ca]);
    // By name too (the certificate names localhost and 127.0.0.1).
    let by_name = url.replace("127.0.0.1", "localhost");
    let b = TestServer::start(&["--redis", &by_name, "--redis-cacert", &ca]);
    a.create_source("orders");
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.request("GET", "/v1/sources/orders", None).status != 200 {
        assert!(Instant::now() < deadline, "b never saw the source");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut on_a, mut on_b) = (a.subscribe("/sources/orders/sse", ""), b.subscribe("/sources/orders/sse", ""));
    a.wait_metric("ssehub_subscribers", 1);
    b.wait_metric("ssehub_subscribers", 1);
    let ids: Vec<String> = (0..20).map(|i| if i % 2 == 0 { &a } else { &b }.emit("orders", &format!("{{\"i\":{i}}}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        for stream in [&mut on_a, &mut on_b] {
            let f = stream.next_event();
            assert_eq!((&f.id(), &f.envelope()["event"]["i"]), (id, &serde_json::json!(i)));
        }
    }
    for n in [&a, &b] {
        assert_eq!(n.request("GET", "/healthz", None).status, 200);
        assert_eq!(n.metric("ssehub_redis_up"), 1);
    }
    // The TLS port is the only one: a plain client gets nothing from it.
    let plain = std::process::Command::new("redis-cli").args(["-p", &redis.port.to_string(), "PING"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("PONG"));
}

/// A Redis whose certificate the node cannot verify is refused at start
/// with one line that names the cause: an issuer it does not know (no
/// `--redis-cacert`), another CA's certificate, or a certificate for
/// another name.
#[test]
fn a_redis_certificate_that_does_not_verify_is_refused_in_one_line() {
    let certs = support::tls::certs();
    let redis = tls_redis(&certs);
    let other = support::tls::certs();
    let url = redis.url();
    let unknown = "TLS handshake failed: the certificate's issuer is unknown (unknown issuer; pass its CA with --redis-cacert FILE)";
    let wrong_ca = other.path("ca.pem");
    // The other CA has the same name as the right one: its key did not sign.
    let other_ca = "TLS handshake failed: the certificate is not signed by the trusted CA of its issuer's name (bad signature; pass its CA with --redis-cacert FILE)";
    for (args, cause) in [
        (vec!["--redis", &url], unknown),
        (vec!["--redis", &url, "--redis-cacert", &wrong_ca], other_ca),
        (vec!["--redis", &url.replace("127.0.0.1", "127.0.0.2"), "--redis-cacert", &certs.path("ca.pem")], "(name mismatch)"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--api-key", "k"];
        all.extend(args.iter().copied());
        let (code, stderr) = support::refused_start(&all);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("TLS")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line:\n{stderr}");
        assert!(lines[0].contains(cause) && lines[0].contains(&format!("cannot load from Redis at {}", "rediss://")), "{args:?}: {stderr}");
    }
}
