//! Idempotent emits (SPEC §10) through the real binary and the library:
//! a repeat with the same `Idempotency-Key` and body answers the first
//! emit's id and emits nothing, another body is a 422, a malformed key a
//! 400, and the key survives `kill -9` with `--fsync always`. (The
//! `redis` engine's, decided in Redis for every node: tests/redis.rs;
//! a lost reply then a retry: tests/redis_links.rs.)

mod support;

use support::TestServer;

fn summaries(server: &TestServer, source: &str) -> Vec<String> {
    let r = server.request("GET", &format!("/v1/sources/{source}/event_summaries?limit=100"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_repeat_answers_the_first_id_and_emits_nothing() {
    let server = TestServer::start(&[]);
    let source = server.create_source("orders")["id"].as_str().unwrap().to_string();
    let mut sse = server.subscribe(&format!("/sources/{source}/sse"), "");
    let first = server.emit_keyed(&source, "order-1042", r#"{"total":12}"#);
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None, "the first emit is no replay");
    let id = first.json()["id"].as_str().unwrap().to_string();
    let again = server.emit_keyed(&source, "order-1042", r#"{"total":12}"#);
    assert_eq!((again.status, again.json()["id"].as_str()), (202, Some(id.as_str())));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    // Another key is another emit; the stream has each once.
    let other = server.emit_keyed(&source, "order-1043", r#"{"total":12}"#).json()["id"].as_str().unwrap().to_string();
    assert_ne!(other, id);
    assert_eq!(sse.next_event().id(), id);
    assert_eq!(sse.next_event().id(), other, "the repeat sent nothing to the stream");
    assert_eq!(summaries(&server, &source), [other.clone(), id.clone()]);
    // Per source: the same key on another source is its own emit.
    let second = server.create_source("second")["id"].as_str().unwrap().to_string();
    let r = server.emit_keyed(&second, "order-1042", r#"{"total":12}"#);
    assert_eq!((r.status, r.header("idempotent-replayed")), (202, None));
    // A whole second later, still the first id.
    let r = server.emit_keyed(&source, "order-1042", r#"{"total":12}"#);
    assert_eq!(r.json()["id"].as_str(), Some(id.as_str()));
    assert_eq!(summaries(&server, &source).len(), 2);
}

#[test]
fn the_same_key_with_another_body_is_refused_and_malformed_keys_are_400() {
    let server = TestServer::start(&["--engine", "memory"]);
    let source = server.create_source("s")["id"].as_str().unwrap().to_string();
    assert_eq!(server.emit_keyed(&source, "k-1", "[1]").status, 202);
    let r = server.emit_keyed(&source, "k-1", "[2]");
    assert_eq!((r.status, r.json()["error"].as_str()), (422, Some("this Idempotency-Key was used with another body on this source")));
    assert_eq!(summaries(&server, &source).len(), 1);
    let long = "k".repeat(256);
    for bad in ["", "two words", &long, "caf\u{e9}"] {
        let r = server.emit_keyed(&source, bad, "[3]");
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some("Idempotency-Key must be 1 to 255 visible ASCII characters")),
            "{bad:?}"
        );
    }
    assert_eq!(server.emit_keyed(&source, &"k".repeat(255), "[3]").status, 202, "255 characters is a key");
    assert_eq!(summaries(&server, &source).len(), 2);
}

#[test]
fn a_key_survives_kill_9_right_after_its_202() {
    let dir = support::TempDir::new("idempotency");
    let args = ["--fsync", "always", "--data-dir", dir.path()];
    let (source, id) = {
        let mut server = TestServer::start(&args);
        let source = server.create_source("s")["id"].as_str().unwrap().to_string();
        let r = server.emit_keyed(&source, "retry-me", r#"{"n":1}"#);
        assert_eq!(r.status, 202, "{}", r.body);
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        (source, r.json()["id"].as_str().unwrap().to_string())
    };
    let server = TestServer::start(&args);
    let r = server.emit_keyed(&source, "retry-me", r#"{"n":1}"#);
    assert_eq!((r.status, r.json()["id"].as_str()), (202, Some(id.as_str())), "{}", r.body);
    assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(summaries(&server, &source), vec![id], "one event");
    assert_eq!(server.emit_keyed(&source, "retry-me", r#"{"n":2}"#).status, 422, "and its body too");
}

#[test]
fn the_library_handle_emits_idempotently() {
    let config = ssehub::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: Some("embed".into()),
        engine: ssehub::EngineKind::Memory,
        ..ssehub::Config::default()
    };
    let server = ssehub::Server::bind(config).unwrap();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    handle.create_source("h").unwrap();
    let first = handle.emit_idempotent("h", r#"{"a": 1}"#, "lib-1").unwrap();
    assert!(!first.replayed);
    let again = handle.emit_idempotent("h", r#"{"a":1}"#, "lib-1").unwrap();
    assert_eq!(again, ssehub::Emitted { id: first.id.clone(), replayed: true }, "the same JSON, however spaced");
    assert_eq!(handle.emit_idempotent("h", "2", "lib-1"), Err(ssehub::Error::IdempotencyKeyReused));
    assert_eq!(handle.emit_idempotent("h", "2", "no spaces"), Err(ssehub::Error::BadIdempotencyKey));
    assert_ne!(handle.emit_idempotent("h", "2", "lib-2").unwrap().id, first.id);
    handle.shutdown();
    thread.join().unwrap().unwrap();
}
