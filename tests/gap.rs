//! The gap signal (SPEC §2.2) over real sockets: a resume point older than
//! evicted or cleared events gets one `event: gap` frame, with no `id:`,
//! before the replay; a resume point within history gets none.

mod support;

use serde_json::json;
use support::{Frame, TestServer};

fn emit_n(server: &TestServer, source: &str, n: u64) -> Vec<String> {
    (0..n).map(|i| server.emit(source, &format!("{{\"n\":{i}}}"))).collect()
}

fn gap(frame: Frame) -> serde_json::Value {
    match frame {
        Frame::Named { event, data } if event == "gap" => serde_json::from_str(&data).unwrap(),
        other => panic!("expected a gap frame, got {other:?}"),
    }
}

#[test]
fn a_resume_point_before_evicted_events_gets_one_gap_frame_then_the_retained() {
    let server = TestServer::start(&["--source", "s", "--history", "5"]);
    let ids = emit_n(&server, "s", 12);
    let mut sse = server.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", ids[1]));
    assert_eq!(gap(sse.next_event()), json!({"after": ids[1], "resumed_from": ids[7], "lost": "unknown"}));
    for id in &ids[7..] {
        assert_eq!(sse.next_event().id(), *id);
    }
    let live = server.emit("s", "\"live\"");
    assert_eq!(sse.next_event().id(), live, "then live, with nothing between");

    // The query form of a first connection gets the same signal.
    let mut sse = server.subscribe(&format!("/sources/s/sse?last_event_id={}", ids[0]), "");
    assert_eq!(gap(sse.next_event())["after"], json!(ids[0]));
}

#[test]
fn a_resume_point_within_history_or_at_the_newest_evicted_gets_no_gap_frame() {
    let server = TestServer::start(&["--source", "s", "--history", "5"]);
    let ids = emit_n(&server, "s", 12);
    for from in [6, 9] {
        let mut sse = server.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", ids[from]));
        for id in &ids[from + 1..] {
            assert_eq!(sse.next_event().id(), *id, "resuming after {from}: no gap frame");
        }
    }
    // A source that never evicted: even an old id is no gap.
    server.create_source("young");
    let young = emit_n(&server, "young", 3);
    let mut sse = server.subscribe("/sources/young/sse", "Last-Event-ID: 1-0\r\n");
    assert_eq!(sse.next_event().id(), young[0]);
}

#[test]
fn clearing_history_makes_an_old_resume_point_a_gap() {
    let server = TestServer::start(&["--source", "s"]);
    let ids = emit_n(&server, "s", 3);
    assert_eq!(server.request("DELETE", "/v1/sources/s/events", None).status, 202);
    let after = emit_n(&server, "s", 2);
    let mut sse = server.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", ids[0]));
    assert_eq!(gap(sse.next_event()), json!({"after": ids[0], "resumed_from": after[0], "lost": "unknown"}));
    assert_eq!(sse.next_event().id(), after[0]);
    assert_eq!(sse.next_event().id(), after[1]);
    let mut sse = server.subscribe("/sources/s/sse", &format!("Last-Event-ID: {}\r\n", ids[2]));
    assert_eq!(sse.next_event().id(), after[0], "from the newest cleared id nothing is lost");
}

/// A resume point newer than every event of a lone server (an id from
/// somewhere else, or from before a restart on a clock that went back) is
/// none of its events: no gap frame, nothing replayed, and the next events
/// come as they are emitted. (A node of a cluster waits for the events up
/// to it instead: tests/redis.rs.)
#[test]
fn a_resume_point_newer_than_every_event_gets_the_next_events() {
    let server = TestServer::start(&["--source", "s"]);
    emit_n(&server, "s", 2);
    let mut sse = server.subscribe("/sources/s/sse", "Last-Event-ID: 99999999999999-0\r\n");
    server.wait_metric("ssehub_subscribers", 1);
    let next = emit_n(&server, "s", 2);
    for id in &next {
        assert_eq!(sse.next_event().id(), *id);
    }
}

/// Clearing a history that holds nothing writes nothing, and is still
/// answered at once, in every engine and `--fsync` mode (it waited for an
/// unrelated write before, minutes at worst); a second clear too.
#[test]
fn clearing_an_empty_history_is_answered_at_once() {
    for args in [&["--engine", "memory"][..], &["--fsync", "always"], &["--fsync", "everysec"], &["--fsync", "never"]] {
        let server = TestServer::start(&[args, &["--source", "s"][..]].concat());
        for round in ["never emitted", "just cleared"] {
            let mut s = server.connect();
            s.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
            let req = format!(
                "DELETE /v1/sources/s/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                server.addr, server.key
            );
            std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
            let mut answer = Vec::new();
            let read = std::io::Read::read_to_end(&mut s, &mut answer);
            let answer = String::from_utf8_lossy(&answer);
            assert!(read.is_ok() && answer.starts_with("HTTP/1.1 202"), "{args:?}, {round}: no answer within 3 s: {read:?} {answer:?}");
        }
        // And the source works on.
        let id = server.emit("s", "1");
        assert_eq!(server.request("GET", "/v1/sources/s/event_summaries", None).json()["data"][0]["id"], id);
    }
}
