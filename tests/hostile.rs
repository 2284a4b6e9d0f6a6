//! Hostile and broken clients over real sockets: slowloris, readers that
//! stall, connections reset or half-closed at every stage, and thousands of
//! garbage requests. Each test states what the server must keep doing for
//! everyone else while it happens.

mod support;

use std::collections::BTreeMap;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::net::{Net, Stream};
use support::{Frame, KEY, TestServer, read_response};

/// A memory figure of a process in KiB from /proc/<pid>/status: `VmRSS`
/// (resident now) or `VmHWM` (the most it has been resident).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sets a SOL_SOCKET option to `value`.
fn set_socket_option<T>(s: &TcpStream, name: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `value` for its size; the fd is open.
    let rc = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, name, (value as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Closing this socket sends RST instead of FIN (SO_LINGER with a zero timeout).
fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    set_socket_option(s, libc::SO_LINGER, &linger).expect("SO_LINGER");
}

/// A small receive buffer, so a reader that never reads stops the sender sooner.
fn set_small_receive_buffer(s: &TcpStream) {
    let _ = set_socket_option(s, libc::SO_RCVBUF, &(4096 as libc::c_int));
}

/// A connection read by `read_until_closed`: plain, or TLS over TCP.
trait Socket: Read {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for Stream {
    fn tcp(&self) -> &TcpStream {
        Stream::tcp(self)
    }
}

/// Reads until the server closes (FIN or RST; over TLS also an end without
/// close_notify); `None` if it did not within `timeout`.
fn read_until_closed(s: &mut impl Socket, timeout: Duration) -> Option<Vec<u8>> {
    s.tcp().set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
                ) =>
            {
                return Some(all);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
            Err(e) => panic!("read: {e}"),
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

// ---- slowloris ----

const SLOW_CONNECTIONS: usize = 200;
/// The server's head timeout (docs/api.md: a request head must be complete 10 s after connect).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn slowloris_connections_are_closed_by_the_header_timeout_while_others_are_served() {
    slowloris(Net::Plain, SLOW_CONNECTIONS, None);
}

/// Inside TLS: each connection completes its handshake, then sends its
/// head a byte a record; the head timeout shortened to 2 s.
#[cfg(feature = "tls")]
#[test]
fn slowloris_connections_are_closed_by_the_header_timeout_while_others_are_served_over_tls() {
    slowloris(Net::tls(), 50, Some(Duration::from_secs(2)));
}

/// `connections` send a request head one byte at a time, never finishing
/// it, against the head timeout (`head_timeout` through
/// `SSEHUB_HEAD_TIMEOUT_MS`, or the default); meanwhile an ordinary
/// client emits and a subscriber reads each event.
fn slowloris(net: Net, connections: usize, head_timeout: Option<Duration>) {
    let ms = head_timeout.map(|t| t.as_millis().to_string());
    let env: Vec<(&str, &str)> = ms.iter().map(|ms| ("SSEHUB_HEAD_TIMEOUT_MS", ms.as_str())).collect();
    let timeout = head_timeout.unwrap_or(HEADER_TIMEOUT);
    // A byte every 1/20 of the timeout (500 ms of 10 s), an emit every 1/25.
    let (trickle, pace) = (timeout / 20, timeout / 25);
    let server = net.start_env(&["--source", "s"], &env);
    let baseline = net.metric(&server, "ssehub_connections_open");

    let mut slow: Vec<(Stream, Instant)> = (0..connections)
        .map(|_| {
            let at = Instant::now();
            let mut s = net.connect(&server);
            // (Over TLS the handshake comes first, with this write.)
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            s.tcp().set_nonblocking(true).unwrap();
            (s, at)
        })
        .collect();
    net.wait_metric(&server, "ssehub_connections_open", baseline + connections as u64);
    let trickler = std::thread::spawn(move || {
        // (time from connect to close, bytes the server sent) of each.
        let mut closed: Vec<(Duration, usize)> = Vec::new();
        let deadline = Instant::now() + timeout + Duration::from_secs(8);
        while !slow.is_empty() && Instant::now() < deadline {
            std::thread::sleep(trickle);
            slow.retain_mut(|(s, at)| {
                let mut buf = [0u8; 512];
                let gone = match s.read(&mut buf) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => s.write(b"a").err().map(|_| 0),
                    Err(_) => Some(0),
                };
                if let Some(n) = gone {
                    closed.push((at.elapsed(), n));
                }
                gone.is_none()
            });
        }
        (closed, slow.len())
    });

    let mut sse = net.subscribe(&server, "/sources/s/sse");
    let start = Instant::now();
    let (mut emits, mut slowest) = (0, Duration::ZERO);
    while start.elapsed() < timeout + Duration::from_secs(1) {
        let t = Instant::now();
        net.emit(&server, "s", &emits.to_string());
        assert_eq!(sse.next_event().envelope()["event"], emits);
        slowest = slowest.max(t.elapsed());
        emits += 1;
        std::thread::sleep(pace);
    }
    assert!(slowest < Duration::from_secs(1), "an emit and its delivery took {slowest:?} during the attack");

    let (closed, still_open) = trickler.join().unwrap();
    assert_eq!(still_open, 0, "slow connections still open after {:?}", timeout + Duration::from_secs(8));
    for (took, sent) in &closed {
        assert_eq!(*sent, 0, "a slow connection got an answer instead of a close");
        // The trickler looks every 1/20 of the timeout, so a close is seen up to ~0.6 s late.
        assert!(*took >= timeout - Duration::from_millis(100) && *took < timeout + Duration::from_secs(3), "closed after {took:?}");
    }
    let timeouts = server.logs().matches("request head not complete in time").count();
    assert_eq!(timeouts, connections, "each slow connection closed by the head timeout");
    net.wait_metric(&server, "ssehub_connections_timed_out_total", connections as u64);
    drop(sse);
    net.wait_metric(&server, "ssehub_connections_open", baseline);
    let (first, last) = (closed.iter().map(|c| c.0).min().unwrap(), closed.iter().map(|c| c.0).max().unwrap());
    eprintln!(
        "slowloris ({}): {connections} closed {first:?} to {last:?} after connect; {emits} emits served, slowest {slowest:?}",
        net.scheme()
    );
}

// ---- stalled readers ----

const STALLED: usize = 200;
/// 2560 events of 8 KiB: 20 MiB emitted.
const EVENTS: usize = 2560;
const PAYLOAD_BYTES: usize = 8 * 1024;
/// --max-subscriber-buffer, small enough that the bound below is tighter than
/// what stalled queues would hold without it (every frame, 20 MiB, plus an
/// entry per frame per subscriber).
const MAX_BUFFER: usize = 64 * 1024;
/// The default --history: the ring keeps this many frames alive.
const HISTORY: usize = 100;
/// Events the emitter may be ahead of the healthy subscriber: well within
/// MAX_BUFFER (8 frames of 8 KiB), so it is never dropped as slow.
const HEALTHY_WINDOW: usize = 4;
/// Allocator and bookkeeping headroom.
const SLACK_KIB: u64 = 4 * 1024;

fn payload(i: usize) -> String {
    let head = format!("{{\"i\":{i},\"pad\":\"");
    format!("{head}{}\"}}", "x".repeat(PAYLOAD_BYTES - head.len() - 2))
}

#[test]
fn stalled_readers_are_dropped_at_their_limit_and_memory_stays_bounded() {
    stalled_readers(Net::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn stalled_readers_are_dropped_at_their_limit_and_memory_stays_bounded_over_tls() {
    stalled_readers(Net::tls());
}

fn stalled_readers(net: Net) {
    let server = net.start(&["--source", "s", "--max-subscriber-buffer", &MAX_BUFFER.to_string()]);
    let pid = server.pid();
    net.emit(&server, "s", "0");
    let baseline_kib = memory_kib(pid, "VmRSS:");

    let healthy = net.subscribe(&server, "/sources/s/sse");
    let stalled: Vec<Stream> = (0..STALLED)
        .map(|_| {
            let mut s = net.connect(&server);
            set_small_receive_buffer(s.tcp());
            write!(s, "GET /sources/s/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n").unwrap();
            s
        })
        .collect();
    net.wait_metric(&server, "ssehub_subscribers", 1 + STALLED as u64);

    let mut healthy = healthy;
    // The emitter stays within a few events of the healthy reader, so that
    // a busy machine cannot make it, too, fall MAX_BUFFER behind.
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    let reader = std::thread::spawn(move || {
        for i in 0..EVENTS {
            let frame = healthy.next_event();
            assert_eq!(frame.envelope()["event"]["i"], i, "the healthy subscriber missed or reordered an event");
            seen.store(i + 1, Ordering::Release);
        }
        healthy
    });
    let start = Instant::now();
    let mut answers = BufReader::new(net.connect(&server));
    for i in 0..EVENTS {
        while i >= received.load(Ordering::Acquire) + HEALTHY_WINDOW {
            assert!(!reader.is_finished(), "the healthy reader stopped");
            std::thread::sleep(Duration::from_micros(100));
        }
        let body = payload(i);
        write!(
            answers.get_mut(),
            "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        assert_eq!(read_response(&mut answers).status, 202);
    }
    let emitted = start.elapsed();
    let _healthy = reader.join().unwrap();
    let delivered = start.elapsed();
    let peak_kib = memory_kib(pid, "VmHWM:");

    // An envelope adds under 200 bytes to the payload.
    let frame_len = payload(0).len() + 200;
    // The bound: what every connection may queue, plus the history ring, plus slack.
    let bound_kib = baseline_kib + ((MAX_BUFFER * (STALLED + 1) + HISTORY * frame_len) / 1024) as u64 + SLACK_KIB;
    eprintln!(
        "stalled readers ({}): {} MiB in {EVENTS} events emitted in {emitted:?}, delivered in {delivered:?}; \
         RSS baseline {baseline_kib} KiB, peak {peak_kib} KiB (+{} KiB), bound {bound_kib} KiB",
        net.scheme(),
        (EVENTS * PAYLOAD_BYTES) >> 20,
        peak_kib - baseline_kib
    );
    assert!(peak_kib <= bound_kib, "RSS peaked at {peak_kib} KiB, over the bound of {bound_kib} KiB");
    assert_eq!(net.metric(&server, "ssehub_subscribers_dropped_slow_total"), STALLED as u64);
    assert_eq!(net.metric(&server, "ssehub_subscribers"), 1, "the healthy subscriber is still there");
    // Each was dropped at its limit: with less than MAX_BUFFER queued, and less than a frame short of it.
    let logs = server.logs();
    let queued: Vec<usize> = logs
        .lines()
        .filter(|l| l.contains("dropping subscriber"))
        .map(|l| l.split(": ").last().unwrap().split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(queued.len(), STALLED);
    assert!(queued.iter().all(|&q| q <= MAX_BUFFER && q + frame_len > MAX_BUFFER), "queued at drop: {queued:?}");

    drop(stalled);
}

// ---- half-open and reset connections ----

#[test]
fn reset_and_half_closed_connections_leak_nothing() {
    reset_and_half_closed(Net::Plain);
}

/// Over TLS the peer goes away without a close_notify, in the middle of
/// records as of requests.
#[cfg(feature = "tls")]
#[test]
fn reset_and_half_closed_connections_leak_nothing_over_tls() {
    reset_and_half_closed(Net::tls());
}

fn reset_and_half_closed(net: Net) {
    let server = net.start(&["--source", "s"]);
    let ingest = net.endpoint_path(&server, "s");
    let baseline = net.metric(&server, "ssehub_connections_open");
    let chunked_head =
        format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n");
    for round in 0..10 {
        // A subscriber that resets mid-stream, with events still coming.
        let mut sse = net.subscribe(&server, "/sources/s/sse");
        net.emit(&server, "s", &round.to_string());
        assert_eq!(sse.next_event().envelope()["event"], round);
        let s = sse.r.into_inner();
        set_linger_zero(s.tcp());
        drop(s);
        net.emit(&server, "s", "\"after the reset\"");

        // A subscriber that stops reading, fills its socket, then resets.
        let mut s = net.connect(&server);
        set_small_receive_buffer(s.tcp());
        write!(s, "GET /sources/s/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n").unwrap();
        net.wait_metric(&server, "ssehub_subscribers", 1);
        for _ in 0..4 {
            net.emit(&server, "s", &format!("\"{}\"", "z".repeat(100_000)));
        }
        set_linger_zero(s.tcp());
        drop(s);

        // A subscriber that half-closes its write side: the stream ends (FIN), nothing hangs.
        let mut sse = net.subscribe(&server, "/sources/s/sse");
        sse.r.get_ref().tcp().shutdown(Shutdown::Write).unwrap();
        assert_eq!(sse.next_event(), Frame::End);

        // A request half-closed after it is sent still gets its whole answer.
        let mut s = net.connect(&server);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.tcp().shutdown(Shutdown::Write).unwrap();
        let answer = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed after the answer");
        assert!(answer.starts_with(b"HTTP/1.1 200 ") && answer.ends_with(b"ok\n"), "{}", String::from_utf8_lossy(&answer));

        // Gone in the middle of a chunked body: by FIN, and by RST.
        for reset in [false, true] {
            let mut s = net.connect(&server);
            write!(s, "{chunked_head}10\r\n{{\"half\":").unwrap();
            if reset {
                set_linger_zero(s.tcp());
                drop(s);
            } else {
                s.tcp().shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_until_closed(&mut s, Duration::from_secs(5)), Some(Vec::new()), "closed without an answer");
            }
        }
        // The same through a webhook with Expect: 100-continue, after the 100.
        let mut s = net.connect(&server);
        write!(s, "POST {ingest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let mut cont = [0u8; 25];
        s.read_exact(&mut cont).unwrap();
        assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"5\r\nab").unwrap();
        set_linger_zero(s.tcp());
        drop(s);

        // Gone in the middle of a head: by FIN, and by RST.
        for reset in [false, true] {
            let mut s = net.connect(&server);
            s.write_all(b"POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthori").unwrap();
            if reset {
                set_linger_zero(s.tcp());
                drop(s);
            } else {
                s.tcp().shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_until_closed(&mut s, Duration::from_secs(5)), Some(Vec::new()));
            }
        }

        // Requests pipelined, then a reset before reading any answer.
        let mut s = net.connect(&server);
        s.write_all("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        set_linger_zero(s.tcp());
        drop(s);
    }
    net.wait_metric(&server, "ssehub_subscribers", 0);
    net.wait_metric(&server, "ssehub_connections_open", baseline);
    assert_eq!(net.request(&server, "GET", "/healthz", None).status, 200);
    // Every chunked body that was cut off emitted nothing.
    assert_eq!(net.metric(&server, "ssehub_events_emitted_total"), 10 * 6);
    let mut reasons = BTreeMap::<&str, usize>::new();
    let logs = server.logs();
    for line in logs.lines().filter(|l| l.contains(" closed ")) {
        *reasons.entry(line.rsplit(": ").next().unwrap()).or_default() += 1;
    }
    eprintln!("reset and half-closed ({}): close reasons {reasons:?}", net.scheme());
    let resets = ["connection reset", "broken pipe"].iter().filter_map(|r| reasons.get(r)).sum::<usize>();
    assert_eq!(resets, 10 * 6, "each reset seen as one: {reasons:?}");
}

/// The server's send timeout (docs/api.md: a peer that takes no byte for 30 s while output is queued).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A last answer (`Connection: close`, HTTP/1.0, or an error) too large for
/// the socket, to a client that never reads it: the connection is closed
/// once the peer has taken no byte for the send timeout, as a stream would
/// be, rather than held open with the answer in memory for ever.
#[test]
fn a_closing_answer_nobody_reads_is_dropped_after_the_send_timeout() {
    let server = TestServer::start(&["--source", "s"]);
    let big = format!("\"{}\"", "q".repeat(100_000));
    for _ in 0..100 {
        server.emit("s", &big);
    }
    let baseline = server.metric("ssehub_connections_open");
    let start = Instant::now();
    // About 10 MB each, far more than socket buffers hold.
    let stuck: Vec<TcpStream> = ["HTTP/1.1\r\nHost: x\r\nConnection: close", "HTTP/1.0"]
        .iter()
        .map(|version| {
            let mut s = server.connect();
            set_small_receive_buffer(&s);
            write!(s, "GET /v1/sources/s/event_summaries?limit=100 {version}\r\nAuthorization: Bearer {KEY}\r\n\r\n").unwrap();
            s
        })
        .collect();
    server.wait_metric("ssehub_connections_open", baseline + 2);
    // A slow reader that keeps taking bytes is not cut off.
    let mut slow = server.connect();
    write!(
        slow,
        "GET /v1/sources/s/event_summaries?limit=100 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let slow_reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        // Reads a little every 2 s for longer than the send timeout.
        let until = Instant::now() + SEND_TIMEOUT + Duration::from_secs(4);
        while Instant::now() < until {
            match slow.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("the slow reader was cut off after {got} bytes: {e}"),
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        got + read_until_closed(&mut slow, Duration::from_secs(30)).expect("the slow reader's answer ends").len()
    });
    // Closed for the send timeout, as the log says of each by its address.
    let wanted: Vec<String> = stuck.iter().map(|s| format!("closed {}: peer stopped reading", s.local_addr().unwrap())).collect();
    let deadline = start + SEND_TIMEOUT + Duration::from_secs(8);
    while !wanted.iter().all(|w| server.logs().contains(w.as_str())) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = start.elapsed();
    for w in &wanted {
        assert!(server.logs().contains(w.as_str()), "not {w:?} after {took:?} (send timeout {SEND_TIMEOUT:?})");
    }
    assert!(took >= SEND_TIMEOUT, "closed after {took:?}, before the send timeout");
    let got = slow_reader.join().unwrap();
    assert!(got > 10_000_000, "the slow reader got its whole answer: {got} bytes");
    drop(stuck);
    server.wait_metric("ssehub_connections_open", baseline);
}

// ---- a stream nobody reads ----

/// The send timeout shortened from 30 s (`SSEHUB_SEND_TIMEOUT_MS`).
const SHORT_SEND_TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn a_stream_nobody_reads_is_dropped_after_the_send_timeout_while_others_receive() {
    stream_nobody_reads(Net::Plain);
}

/// Over TLS the event the socket refused part of may have been taken
/// whole by rustls, as records, leaving the output queue empty: output
/// nobody takes all the same.
#[cfg(feature = "tls")]
#[test]
fn a_stream_nobody_reads_is_dropped_after_the_send_timeout_while_others_receive_over_tls() {
    stream_nobody_reads(Net::tls());
}

/// A subscriber that never reads gets events until the server's socket
/// to it refuses part of one; then no more. It is closed for the send
/// timeout, counted once, while a subscriber of another source receives
/// every event meanwhile, and the source's other subscriber goes on.
fn stream_nobody_reads(net: Net) {
    let timeout_ms = SHORT_SEND_TIMEOUT.as_millis().to_string();
    // No bound on its queue and no handshake comment within the test: only the send timeout may drop it.
    let args =
        ["--engine", "memory", "--source", "s", "--source", "t", "--max-subscriber-buffer", "1000000000", "--handshake-interval", "1h"];
    let server = net.start_env(&args, &[("SSEHUB_SEND_TIMEOUT_MS", timeout_ms.as_str())]);
    let (mut on_s, mut on_t) = (net.subscribe(&server, "/sources/s/sse"), net.subscribe(&server, "/sources/t/sse"));
    let mut stalled = net.connect(&server);
    set_small_receive_buffer(stalled.tcp());
    write!(stalled, "GET /sources/s/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n").unwrap();
    net.wait_metric(&server, "ssehub_subscribers", 3);
    let stalled_addr = stalled.tcp().local_addr().unwrap();
    let mut api = BufReader::new(net.connect(&server));

    // Events of 32 KiB (under the 64 KiB rustls takes at once) until the
    // socket to the stalled reader takes less than one.
    let mut written = bytes_written(server.addr, stalled_addr);
    let mut i = 0;
    let refused_from = loop {
        assert!(i < 2000, "the socket to a reader that never reads took {written} bytes and more");
        let sent = Instant::now();
        let body = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(32 * 1024));
        assert_eq!(request_on(&mut api, "POST", "/v1/sources/s/events", &body), 202);
        assert_eq!(on_s.next_event().envelope()["event"]["i"], i);
        // Answered in a later turn than the one that wrote the event to every subscriber.
        assert_eq!(request_on(&mut api, "GET", "/healthz", ""), 200);
        let now = bytes_written(server.addr, stalled_addr);
        let took = now - written;
        written = now;
        i += 1;
        if took < body.len() as u64 {
            break sent;
        }
    };

    // Events to t every 50 ms, each received at once, until the stalled reader is gone.
    let wanted = format!("closed {stalled_addr}: peer stopped reading");
    let mut n = 0;
    while !server.logs().contains(&wanted) {
        let waited = refused_from.elapsed();
        assert!(waited < SHORT_SEND_TIMEOUT + Duration::from_secs(3), "not {wanted:?} {waited:?} after its last event");
        let t = Instant::now();
        assert_eq!(request_on(&mut api, "POST", "/v1/sources/t/events", &n.to_string()), 202);
        assert_eq!(on_t.next_event().envelope()["event"], n);
        assert!(t.elapsed() < Duration::from_millis(500), "an event took {:?} meanwhile", t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = refused_from.elapsed();
    assert!(waited >= SHORT_SEND_TIMEOUT, "closed {waited:?} after its last event, before the send timeout");
    eprintln!("a stream nobody reads ({}): {written} bytes taken by its socket, closed {waited:?} after the last event", net.scheme());
    net.wait_metric(&server, "ssehub_connections_timed_out_total", 1);
    net.wait_metric(&server, "ssehub_subscribers", 2);
    assert_eq!(request_on(&mut api, "POST", "/v1/sources/s/events", "\"after\""), 202);
    assert_eq!(on_s.next_event().envelope()["event"], "after");
}

/// One request on a keep-alive connection; its status.
fn request_on(api: &mut BufReader<Stream>, method: &str, path: &str, body: &str) -> u16 {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n", body.len());
    api.get_mut().write_all(format!("{head}{body}").as_bytes()).unwrap();
    read_response(api).status
}

/// Bytes the server has written to its socket of the connection from
/// `client`, as `ss` (iproute2) shows them: what the peer's kernel
/// acknowledged plus what is still in the send queue.
fn bytes_written(server: std::net::SocketAddr, client: std::net::SocketAddr) -> u64 {
    let out = std::process::Command::new("ss").args(["-tinH", "src", &server.to_string(), "dst", &client.to_string()]).output();
    let text = String::from_utf8(out.expect("ss (iproute2)").stdout).unwrap();
    // ESTAB, Recv-Q, Send-Q, the addresses, then the TCP info.
    let send_q: u64 = text.split_whitespace().nth(2).and_then(|q| q.parse().ok()).unwrap_or_else(|| panic!("ss: {text:?}"));
    let acked: u64 = text.split_whitespace().find_map(|w| w.strip_prefix("bytes_acked:")).map_or(0, |n| n.parse().unwrap());
    send_q + acked
}

// ---- garbage ----

/// Seeded, so a failure names a case that can be replayed.
const GARBAGE_SEED: u64 = 0x5eed_5e11_da7a_0005;
const GARBAGE_CASES: usize = 10_000;
const GARBAGE_WORKERS: usize = 8;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Valid requests the garbage is made from, with the status each earns
/// unmutated. A stream has none: it may end before its head is sent, as
/// the server takes a client's FIN on a stream to mean it is gone.
fn valid_requests(ingest: &str) -> Vec<(Vec<u8>, Option<u16>)> {
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let emit = "{\"order\": 42, \"items\": [1, 2, {\"x\": null}]}";
    let chunked = "8\r\n{\"a\": [1\r\n3\r\n, 2\r\n2\r\n]}\r\n0\r\n\r\n";
    let hook = "{\"a\": 1}";
    [
        ("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n".to_string(), 200),
        ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 200),
        ("HEAD /healthz HTTP/1.0\r\n\r\n".to_string(), 200),
        (format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{emit}", emit.len()), 202),
        (format!("POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n{chunked}"), 202),
        (
            format!(
                "POST {ingest}/hook?x=1&y=%41+b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{hook}",
                hook.len()
            ),
            200,
        ),
        (format!("PUT {ingest} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"), 200),
        (format!("OPTIONS {ingest} HTTP/1.1\r\nHost: x\r\nOrigin: http://o\r\nAccess-Control-Request-Method: POST\r\n\r\n"), 204),
        (format!("GET /v1/sources/s/event_summaries?limit=3 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"), 200),
        (format!("GET /v1/sources HTTP/1.1\r\nHost: x\r\n{auth}Connection: keep-alive\r\n\r\n"), 200),
        (format!("POST /v1/sources HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 12\r\n\r\n{{\"name\":\"s\"}}"), 409),
        (format!("GET /sources/s/sse?last_event_id=1 HTTP/1.1\r\nHost: x\r\n{auth}Accept: text/event-stream\r\n\r\n"), 0),
        ("GET /v1/sources/s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n".to_string(), 401),
        ("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 404),
    ]
    .into_iter()
    .map(|(r, status)| (r.into_bytes(), Some(status).filter(|&s| s != 0)))
    .collect()
}

fn replace_first(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match bytes.windows(from.len()).position(|w| w == from) {
        Some(i) => [&bytes[..i], to, &bytes[i + from.len()..]].concat(),
        None => bytes.to_vec(),
    }
}

/// One mutation of a request; see the match arms.
fn mutate(rng: &mut Rng, mut r: Vec<u8>) -> Vec<u8> {
    const HUGE: &[&str] =
        &["99999999999999999999999", "18446744073709551615", "18446744073709551616", "4294967296", "-1", "+5", "0x10", "1e3", "5, 6", ""];
    const CHUNK_SIZES: &[&str] = &["ffffffffffffffff", "fffffffffffffff", "7fffffff", "10000000", "-1", "", "0x5", "5 5", "g"];
    const METHODS: &[&str] =
        &["G\0T", "GETT", "", "PO ST", "\x16\x03\x01\x02\x00", "get", "DELETE", "BREW", "POST\t", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"];
    const INSERTS: &[&[u8]] = &[b"\r", b"\n", b"\0", b"\r\n", b"\r\n\r\n", b" ", b":", b"\xff", b"%"];
    match rng.below(12) {
        0 | 1 => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(r.len());
                if let Some(b) = r.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
        }
        2 => r.truncate(rng.below(r.len())),
        3 | 4 => {
            let at = rng.below(r.len() + 1);
            r.splice(at..at, rng.pick(INSERTS).iter().copied());
        }
        5 => {
            let value = format!("Content-Length: {}\r\n", rng.pick(HUGE));
            r = replace_first(&r, b"\r\n", format!("\r\n{value}").as_bytes());
            if rng.chance(30) {
                r = replace_first(&r, b"\r\n", b"\r\nTransfer-Encoding: chunked\r\n");
            }
        }
        6 => {
            let size = rng.pick(CHUNK_SIZES);
            let chunked = format!("Transfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n");
            let head_end = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(r.len());
            r = [&r[..head_end], b"\r\n", chunked.as_bytes()].concat();
        }
        7 => {
            let end = r.iter().position(|&b| b == b' ').unwrap_or(0);
            r.splice(..end, rng.pick(METHODS).bytes());
        }
        8 => {
            let version = rng.pick(&["HTTP/1.2", "HTTP/2.0", "HTTP/1.1x", "http/1.1", "HTTP/1", "HTTP/01.1"]);
            r = replace_first(&r, b"HTTP/1.1", version.as_bytes());
        }
        9 => {
            let mut headers = String::new();
            match rng.below(3) {
                0 => (0..70).for_each(|i| headers.push_str(&format!("X-Many-{i}: v\r\n"))),
                1 => headers = format!("X-Huge: {}\r\n", "h".repeat(17 * 1024)),
                _ => headers = format!("Transfer-Encoding: {}\r\n", rng.pick(&["gzip", "chunked, chunked", "identity", "chunked\0"])),
            }
            r = replace_first(&r, b"\r\n", format!("\r\n{headers}").as_bytes());
        }
        10 => r = replace_first(&r, b" /", format!(" /{}", "%".repeat(rng.below(3))).as_bytes()),
        _ => {
            let target =
                rng.pick(&["*", "http://h/healthz", "//x", "/e/", "/e/short", "/sources//sse", "/v1/sources/%00/events", "/\u{e9}"]);
            let start = r.iter().position(|&b| b == b' ').map_or(0, |i| i + 1);
            let end = r[start..].iter().position(|&b| b == b' ').map_or(start, |i| start + i);
            r.splice(start..end, target.bytes());
        }
    }
    r
}

/// One case: the bytes sent on one connection, and the status expected if unmutated.
fn garbage_case(case: usize, valid: &[(Vec<u8>, Option<u16>)]) -> (Vec<u8>, Option<u16>) {
    let mut rng = Rng::new(GARBAGE_SEED ^ case as u64);
    match rng.below(20) {
        // Plain random bytes.
        0 | 1 => ((0..rng.below(400)).map(|_| rng.next() as u8).collect(), None),
        // Valid, untouched: must still get its answer amid the garbage.
        2 => {
            let (r, status) = rng.pick(valid);
            (r.clone(), *status)
        }
        // Pipelined mixes of valid and mutated requests.
        3..=5 => {
            let mut all = Vec::new();
            for _ in 0..2 + rng.below(3) {
                let r = rng.pick(valid).0.clone();
                all.extend(if rng.chance(50) { mutate(&mut rng, r) } else { r });
            }
            (all, None)
        }
        // Mutated, once or a few times.
        _ => {
            let mut r = rng.pick(valid).0.clone();
            for _ in 0..1 + rng.below(3) {
                r = mutate(&mut rng, r);
            }
            (r, None)
        }
    }
}

/// Checks that `bytes` is a sequence of well-formed responses (ending, at
/// most, in an SSE stream) and returns their statuses.
fn parse_answers(mut bytes: &[u8]) -> Result<Vec<u16>, String> {
    const STATUSES: &[u16] = &[100, 200, 201, 202, 204, 400, 401, 404, 405, 409, 411, 413, 414, 431];
    let mut statuses = Vec::new();
    while !bytes.is_empty() {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").ok_or("a response head cut short")?;
        let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "a head that is not UTF-8")?;
        bytes = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        if !STATUSES.contains(&status) {
            return Err(format!("unexpected status {status}"));
        }
        statuses.push(status);
        let mut headers = BTreeMap::new();
        for line in lines {
            let (name, value) = line.split_once(": ").ok_or_else(|| format!("bad header line {line:?}"))?;
            headers.insert(name.to_ascii_lowercase(), value.to_string());
        }
        if headers.get("content-type").is_some_and(|t| t == "text/event-stream") {
            // The rest is the stream, until the server saw our FIN.
            if !b":sse-handshake\n\n".starts_with(&bytes[..bytes.len().min(16)]) {
                return Err("a stream that does not start with the handshake".into());
            }
            break;
        }
        if matches!(status, 100 | 204) {
            continue;
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).ok_or("no Content-Length")?;
        // An answer to HEAD has the head only: the next response (or the end)
        // follows at once. (No body the server sends starts like a response.)
        if len > 0 && (bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 ")) {
            continue;
        }
        if bytes.len() < len {
            return Err(format!("a body cut short: {} of {len} bytes", bytes.len()));
        }
        if status >= 400 {
            let error: serde_json::Value = serde_json::from_slice(&bytes[..len]).map_err(|e| format!("error body not JSON: {e}"))?;
            if !error["error"].is_string() {
                return Err(format!("error body without a sentence: {error}"));
            }
        }
        bytes = &bytes[len..];
    }
    Ok(statuses)
}

#[test]
fn garbage_gets_errors_or_closes_and_the_server_stays_up() {
    garbage(Net::Plain, GARBAGE_CASES);
}

/// The same garbage inside TLS records (a twentieth of the cases: each is a
/// full handshake, 6.5 ms of the debug build's server).
#[cfg(feature = "tls")]
#[test]
fn garbage_gets_errors_or_closes_and_the_server_stays_up_over_tls() {
    garbage(Net::tls(), GARBAGE_CASES / 20);
}

fn garbage(net: Net, cases: usize) {
    let net = Arc::new(net);
    let mut server = net.start(&["--source", "s", "--max-event-bytes", "65536"]);
    let valid = Arc::new(valid_requests(&net.endpoint_path(&server, "s")));
    let baseline = net.metric(&server, "ssehub_connections_open");
    let addr = server.addr;
    let start = Instant::now();

    // /healthz from another client every 100 ms for the whole run.
    let done = Arc::new(AtomicBool::new(false));
    let health = {
        let (done, net) = (done.clone(), net.clone());
        std::thread::spawn(move || {
            let (mut checks, mut slowest) = (0, Duration::ZERO);
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut s = net.connect_to(addr);
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let answer = read_until_closed(&mut s, Duration::from_secs(5)).expect("/healthz answered");
                assert!(answer.starts_with(b"HTTP/1.1 200 ") && answer.ends_with(b"ok\n"), "{}", String::from_utf8_lossy(&answer));
                slowest = slowest.max(t.elapsed());
                checks += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (checks, slowest)
        })
    };

    let next = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let workers: Vec<_> = (0..GARBAGE_WORKERS)
        .map(|_| {
            let (next, outcomes, valid, net) = (next.clone(), outcomes.clone(), valid.clone(), net.clone());
            std::thread::spawn(move || {
                let mut local = BTreeMap::<String, usize>::new();
                loop {
                    let case = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if case >= cases {
                        break;
                    }
                    let (bytes, expected) = garbage_case(case, &valid);
                    let show =
                        || format!("case {case} (seed {GARBAGE_SEED:#x}): {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]));
                    let mut s = net.connect_to(addr);
                    // Sent whole or in a few pieces, then half-closed: the server sees
                    // the end of the input at once instead of waiting out a timeout.
                    let mut rng = Rng::new(case as u64);
                    let pieces = if rng.chance(20) { 2 + rng.below(4) } else { 1 };
                    let sent = bytes
                        .chunks(bytes.len().div_ceil(pieces).max(1))
                        .try_for_each(|piece| {
                            std::thread::sleep(Duration::from_micros(if pieces > 1 { 500 } else { 0 }));
                            s.write_all(piece)
                        })
                        .and_then(|_| s.tcp().shutdown(Shutdown::Write));
                    let answer =
                        read_until_closed(&mut s, Duration::from_secs(5)).unwrap_or_else(|| panic!("no close within 5 s; {}", show()));
                    let statuses = parse_answers(&answer).unwrap_or_else(|e| {
                        panic!("{e}; {}; answer {:?}", show(), String::from_utf8_lossy(&answer[..answer.len().min(400)]))
                    });
                    if let Some(want) = expected {
                        assert_eq!(statuses.iter().find(|&&s| s != 100), Some(&want), "{}", show());
                    }
                    let key = match (statuses.as_slice(), sent) {
                        ([], Err(_)) => "reset while sending".to_string(),
                        ([], Ok(())) => "closed without an answer".to_string(),
                        (all, _) => format!("answered {}", all.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
                    };
                    *local.entry(key).or_default() += 1;
                }
                let mut all = outcomes.lock().unwrap();
                for (k, n) in local {
                    *all.entry(k).or_default() += n;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let (checks, slowest) = health.join().unwrap();

    assert!(server.child.try_wait().unwrap().is_none(), "the server died:\n{}", server.logs());
    assert!(!server.logs().contains("panicked"), "the server panicked:\n{}", server.logs());
    // One check per 100 ms while the garbage flies: how many depends on how fast the server is.
    assert!(checks >= 1 && slowest < Duration::from_secs(2), "/healthz: {checks} checks, slowest {slowest:?}");
    net.wait_metric(&server, "ssehub_connections_open", baseline);
    assert_eq!(net.request(&server, "GET", "/healthz", None).status, 200);
    let outcomes = outcomes.lock().unwrap();
    let mut by_status = BTreeMap::<&str, usize>::new();
    for (k, n) in outcomes.iter() {
        *by_status.entry(k.split(',').next().unwrap()).or_default() += n;
    }
    eprintln!(
        "garbage ({}): {cases} cases in {took:?}; /healthz {checks} checks, slowest {slowest:?}; first outcome of each: {by_status:?}",
        net.scheme()
    );
    assert!(took < Duration::from_secs(30), "garbage took {took:?}");
}

/// Without `--public-url` the request's `Host` is the base of the URLs the
/// API returns: one that is not `host[:port]` is refused (400, JSON) and
/// changes nothing, rather than put into `sse_url` and `endpoint_url`; what
/// real clients send still works.
#[test]
fn a_host_that_is_not_host_and_port_is_refused_and_creates_nothing() {
    let server = TestServer::start(&[]);
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let create = |host: &str, name: &str| {
        let mut s = server.connect();
        let body = format!("{{\"name\":\"{name}\"}}");
        write!(s, "POST /v1/sources HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .unwrap();
        read_response(&mut BufReader::new(s))
    };
    for host in ["evil.example\"<x>", "evil.example/a?b", "user@evil.example", "evil.example:80x"] {
        let r = create(host, "bad");
        assert_eq!(r.status, 400, "{host}: {}", r.body);
        assert_eq!(r.json(), serde_json::json!({"error": "malformed request: invalid Host header"}), "{host}");
    }
    assert_eq!(server.request("GET", "/v1/sources/bad", None).status, 404, "nothing created");
    for (i, host) in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "example.com", "xn--bcher-kva.example"].into_iter().enumerate() {
        let r = create(host, &format!("good{i}"));
        assert_eq!(r.status, 201, "{host}: {}", r.body);
        let sse_url = r.json()["data"]["sse_url"].as_str().unwrap().to_string();
        assert!(sse_url.starts_with(&format!("http://{host}/sources/dc_")), "{sse_url}");
    }
}

/// One connection that pipelines many costly requests (pages of 1,000
/// sources) does not hold the reactor until every answer is built: the
/// first answers go out while the rest are still to be built (and other
/// connections are served between them), and all come, in order.
#[test]
fn a_pipelined_burst_of_pages_is_answered_a_turn_at_a_time_and_in_full() {
    let server = TestServer::start(&["--engine", "memory"]);
    let mut s = server.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let creates: String = (0..1000)
        .map(|i| {
            let body = format!("{{\"name\":\"p{i}\"}}");
            format!("POST /v1/sources HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len())
        })
        .collect();
    s.write_all(creates.as_bytes()).unwrap();
    for _ in 0..1000 {
        assert_eq!(read_response(&mut r).status, 201);
    }
    let pages = 30;
    let started = Instant::now();
    s.write_all(format!("GET /v1/sources?limit=1000 HTTP/1.1\r\nHost: x\r\n{auth}\r\n").repeat(pages).as_bytes()).unwrap();
    let first = read_response(&mut r);
    let first_at = started.elapsed();
    assert_eq!(first.json()["page_info"]["count"], 1000);
    let mut after = String::new();
    for _ in 1..pages {
        let page = read_response(&mut r).json();
        assert_eq!((page["page_info"]["count"].as_u64(), page["data"][0]["name"].as_str()), (Some(1000), Some("p0")));
        after = page["page_info"]["end_cursor"].as_str().unwrap().to_string();
    }
    let all = started.elapsed();
    assert!(!after.is_empty());
    assert!(first_at * 4 < all, "the first page came after {first_at:?}, all {pages} after {all:?}");
}

/// Requests pipelined and then a half-close: every request read before
/// the end of input is answered, even those carried over to a later turn
/// (one page of sources per turn), and then the connection closes.
#[test]
fn requests_carried_over_are_answered_after_the_client_half_closes() {
    let server = TestServer::start(&["--engine", "memory", "--source", "s"]);
    let mut s = server.connect();
    let pages = 5;
    let request = format!("GET /v1/sources?limit=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    s.write_all(request.repeat(pages).as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed within 5 s");
    let statuses = parse_answers(&answer).unwrap();
    assert_eq!(statuses, vec![200; pages], "{}", String::from_utf8_lossy(&answer));
}
