//! How a node spreads its clients' reconnects: with `--drain`, a stopping
//! node stops accepting at once and ends its streams spread over the
//! drain, each after a `retry:` (a second signal ends the rest at once);
//! without it, every stream ends at once, as before; `--client-retry`
//! gives every new stream a `retry:` of its own after its first comment.

mod support;

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{Frame, TestServer};

/// What a stream got after its first comment (comments left out), and
/// when the server ended it.
struct Ended {
    frames: Vec<Frame>,
    at: Instant,
}

/// Opens `n` streams of source `s`, each read on a thread of its own
/// until it ends (which it says on `ends`, if given).
fn open_streams(server: &TestServer, n: usize, ends: Option<mpsc::Sender<()>>) -> Vec<JoinHandle<Ended>> {
    let readers = (0..n)
        .map(|_| {
            let mut sse = server.subscribe("/sources/s/sse", "");
            let ends = ends.clone();
            std::thread::spawn(move || {
                let mut frames = Vec::new();
                loop {
                    match sse.next() {
                        Frame::End => {
                            let _ = ends.map(|e| e.send(()));
                            return Ended { frames, at: Instant::now() };
                        }
                        Frame::Comment(_) => {}
                        frame => frames.push(frame),
                    }
                }
            })
        })
        .collect();
    server.wait_metric("ssehub_subscribers", n as u64);
    readers
}

/// How long after `since` connecting to `addr` fails (refused or reset);
/// fails the test if it still succeeds after `limit`.
fn refused_after(addr: SocketAddr, since: Instant, limit: Duration) -> Duration {
    loop {
        let refused = match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(_) => true,
            // Accepted into the backlog just before the listener closed: reset with it.
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                matches!(s.read(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            }
        };
        if refused {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "still accepting {:?} after the signal", since.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `retry:` a stream got just before it ended, checked to be 1 to 5 s.
fn retry_before_end(ended: &Ended) -> u64 {
    match ended.frames.as_slice() {
        [Frame::Retry(ms)] if (1000..=5000).contains(ms) => *ms,
        other => panic!("expected one retry: of 1000 to 5000 ms before the end, got {other:?}"),
    }
}

/// The most of `times` (sorted) that fall in any window of `width`.
fn densest(times: &[Duration], width: Duration) -> usize {
    (0..times.len()).map(|i| times[i..].iter().take_while(|t| **t < times[i] + width).count()).max().unwrap_or(0)
}

#[test]
fn a_drain_stops_accepting_at_once_and_ends_streams_spread_over_it_each_after_a_retry() {
    let mut server = TestServer::start(&["--source", "s", "--drain", "3s"]);
    let readers = open_streams(&server, 30, None);

    let signalled = Instant::now();
    support::signal(server.pid(), "TERM");
    let refused = refused_after(server.addr, signalled, Duration::from_millis(500));
    let status = server.child.wait().unwrap();
    let exited = signalled.elapsed();

    let ended: Vec<Ended> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let retries: HashSet<u64> = ended.iter().map(retry_before_end).collect();
    assert!(retries.len() > 1, "every stream was told the same retry: {retries:?}");
    let mut times: Vec<Duration> = ended.iter().map(|e| e.at - signalled).collect();
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(first < Duration::from_millis(500), "the first stream ended {first:?} after the signal");
    assert!(last > Duration::from_secs(2) && last < Duration::from_millis(3500), "the last stream ended {last:?} after the signal");
    // 30 over 3 s: two per 200 ms when spread evenly.
    let dense = densest(&times, Duration::from_millis(200));
    assert!(dense <= 10, "{dense} of 30 streams ended within 200 ms: {times:?}");
    assert!(status.success(), "{status}");
    assert!(exited < Duration::from_millis(4500), "exited {exited:?} after the signal");
    let logs = server.logs();
    assert!(logs.contains("draining: no longer accepting; ending 30 streams over 3000 ms"), "{logs}");
    assert!(logs.contains("drained: ended 30 of 30 streams in "), "{logs}");
    println!("refused after {refused:?}; ends from {first:?} to {last:?}; exit after {exited:?}");
}

#[test]
fn a_second_signal_ends_a_drain_at_once() {
    let mut server = TestServer::start(&["--source", "s", "--drain", "20s"]);
    let (ends, ended) = mpsc::channel();
    let readers = open_streams(&server, 20, Some(ends));
    support::signal(server.pid(), "TERM");
    // One stream a second: the first ends at once, the rest wait.
    ended.recv_timeout(Duration::from_secs(5)).expect("the drain ended no stream");

    let again = Instant::now();
    support::signal(server.pid(), "TERM");
    let status = server.child.wait().unwrap();
    let exited = again.elapsed();
    let ended: Vec<Ended> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for e in &ended {
        retry_before_end(e);
    }
    let last = ended.iter().map(|e| e.at.saturating_duration_since(again)).max().unwrap();
    assert!(last < Duration::from_secs(1), "the last stream ended {last:?} after the second signal");
    assert!(status.success(), "{status}");
    assert!(exited < Duration::from_millis(1500), "exited {exited:?} after the second signal");
    assert!(server.logs().contains("drain cut short: ended "), "{}", server.logs());
}

#[test]
fn without_a_drain_every_stream_ends_at_once_with_no_retry() {
    let mut server = TestServer::start(&["--source", "s"]);
    let readers = open_streams(&server, 10, None);
    let (status, exited) = server.terminate();
    let signalled = Instant::now() - exited;
    for reader in readers {
        let ended = reader.join().unwrap();
        assert!(ended.frames.is_empty(), "{:?}", ended.frames);
        let after = ended.at - signalled;
        assert!(after < Duration::from_secs(1), "a stream ended {after:?} after the signal");
    }
    assert!(status.success(), "{status}");
    assert!(exited < Duration::from_secs(1), "exited {exited:?} after the signal");
}

#[test]
fn client_retry_follows_the_first_comment_of_every_stream() {
    let server = TestServer::start(&["--source", "s", "--client-retry", "2000"]);
    let mut sse = server.subscribe_raw("/sources/s/sse", &format!("Authorization: Bearer {}\r\n", server.key));
    assert!(sse.head().starts_with("HTTP/1.1 200"));
    let mut first = [0; 29];
    sse.r.read_exact(&mut first).unwrap();
    assert_eq!(String::from_utf8_lossy(&first), ":sse-handshake\n\nretry: 2000\n\n");
    let id = server.emit("s", r#"{"n":1}"#);
    assert_eq!(sse.next_event().id(), id);

    // A resumed stream: the retry comes before the replay too.
    let mut resumed = server.subscribe("/sources/s/sse", "Last-Event-ID: 0\r\n");
    assert_eq!(resumed.next(), Frame::Retry(2000));
    assert_eq!(resumed.next_event().id(), id);
}

#[test]
fn client_retry_in_a_range_is_random_per_stream() {
    let server = TestServer::start(&["--source", "s", "--client-retry", "1000-5000"]);
    let mut told = HashSet::new();
    for _ in 0..20 {
        match server.subscribe("/sources/s/sse", "").next() {
            Frame::Retry(ms) if (1000..=5000).contains(&ms) => told.insert(ms),
            other => panic!("expected a retry: of 1000 to 5000 ms, got {other:?}"),
        };
    }
    assert!(told.len() > 1, "20 streams were told the same retry: {told:?}");
}

#[test]
fn client_retry_is_refused_when_malformed() {
    let (code, stderr) = support::refused_start(&["serve", "--client-retry", "5000-1000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--client-retry: expected milliseconds such as 3000, or a range such as 1000-5000"), "{stderr}");
}
