//! Accounts and keys over real sockets: what one account can reach of
//! another's sources, and SIGHUP reloading `--keys-file` (added, removed
//! and moved keys; the streams of removed keys end; a bad file keeps the
//! keys in use).

mod support;

use support::{Frame, TempDir, TestServer};

#[test]
fn a_source_named_like_another_accounts_id_is_its_owners() {
    let dir = TempDir::new("keys");
    let keys = dir.0.join("keys");
    std::fs::write(&keys, "key-alice alice\nkey-bob bob\n").unwrap();
    let mut server = TestServer::start(&["--keys-file", keys.to_str().unwrap(), "--engine", "memory"]);
    server.key = "key-alice".into();
    let alice_id = server.create_source("orders")["id"].as_str().unwrap().to_string();

    // To bob, alice's id is exactly a missing source.
    server.key = "key-bob".into();
    let theirs = server.request("GET", &format!("/v1/sources/{alice_id}"), None);
    let missing = server.request("GET", "/v1/sources/dc_NoSuchSource0000", None);
    assert_eq!((theirs.status, &theirs.body), (404, &missing.body));

    // A source bob names like alice's id is bob's, by that name, everywhere.
    let bobs = server.create_source(&alice_id);
    let bobs_id = bobs["id"].as_str().unwrap();
    assert_ne!(bobs_id, alice_id);
    let r = server.request("GET", &format!("/v1/sources/{alice_id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.json()["data"]["id"].as_str(), r.json()["data"]["name"].as_str()), (Some(bobs_id), Some(alice_id.as_str())));
    let mut sse = server.subscribe(&format!("/sources/{alice_id}/sse"), "");
    let id = server.emit(&alice_id, "{\"to\":\"bob\"}");
    assert_eq!(sse.next_event().id(), id);

    // Alice still reaches her own source by its id.
    server.key = "key-alice".into();
    let r = server.request("GET", &format!("/v1/sources/{alice_id}"), None);
    assert_eq!(r.json()["data"]["name"], "orders");
    assert_eq!(server.request("GET", &format!("/v1/sources/{alice_id}/event_summaries"), None).json()["data"], serde_json::json!([]));
}

#[test]
fn sighup_reloads_the_keys_file_and_ends_streams_of_removed_keys() {
    let dir = TempDir::new("hup");
    let keys = dir.0.join("keys");
    std::fs::write(&keys, "key-alice alice\nkey-bob bob\nkey-moved alice\n").unwrap();
    let mut server = TestServer::start(&["--keys-file", keys.to_str().unwrap(), "--engine", "memory"]);
    server.key = "key-alice".into();
    server.create_source("a");
    let mut alice = server.subscribe("/sources/a/sse", "");
    let mut moved = server.subscribe_raw("/sources/a/sse", "Authorization: Bearer key-moved\r\n");
    assert!(moved.head().starts_with("HTTP/1.1 200"));
    server.key = "key-bob".into();
    server.create_source("b");
    let mut bob = server.subscribe("/sources/b/sse", "");

    // bob removed, carol added, key-moved now carol's.
    std::fs::write(&keys, "key-alice alice\nkey-carol carol\nkey-moved carol\n").unwrap();
    support::signal(server.pid(), "HUP");
    server.wait_log("SIGHUP: reloaded --keys-file");
    let line = server.logs().lines().filter(|l| l.contains("SIGHUP")).collect::<Vec<_>>().join("\n");
    assert!(line.ends_with("4 keys in 3 accounts; 2 streams of removed keys ended"), "{line}");
    assert!(!line.contains("key-"), "no key in the log: {line}");

    assert_eq!(bob.next_event(), Frame::End, "bob's stream ended");
    assert_eq!(moved.next_event(), Frame::End, "the stream of a key moved to another account ended");
    assert_eq!(server.request("GET", "/v1/sources", None).status, 401, "bob's key is gone");
    server.key = "key-carol".into();
    assert_eq!(server.request("GET", "/v1/sources", None).json()["data"], serde_json::json!([]));
    server.key = "key-moved".into();
    assert_eq!(server.request("GET", "/v1/sources/a", None).status, 404, "key-moved acts on carol's account now");
    server.key = "key-alice".into();
    let id = server.emit("a", "1");
    assert_eq!(alice.next_event().id(), id, "alice's stream stays open");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");

    // A keys file that no longer parses keeps the keys in use.
    std::fs::write(&keys, "lonely\n").unwrap();
    support::signal(server.pid(), "HUP");
    server.wait_log("keeping the keys in use");
    assert_eq!(server.request("GET", "/v1/sources/a", None).status, 200);
}

#[test]
fn sighup_without_a_keys_file_keeps_running() {
    let mut server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let mut sse = server.subscribe("/sources/s/sse", "");
    support::signal(server.pid(), "HUP");
    server.wait_log("SIGHUP: no --keys-file to reload");
    assert!(server.child.try_wait().unwrap().is_none(), "SIGHUP killed the server");
    let id = server.emit("s", "1");
    assert_eq!(sse.next_event().id(), id);
    let (status, _) = server.terminate();
    assert!(status.success());
}
