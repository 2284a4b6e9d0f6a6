//! The library API alone: a server on a thread, handles from other
//! threads, a real socket subscriber.

mod support;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use ssehub::{Config, Error, Server};
use support::{Frame, Sse};

fn start() -> (ssehub::Handle, std::net::SocketAddr, std::thread::JoinHandle<std::io::Result<()>>) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: Some("embed".into()),
        engine: ssehub::EngineKind::Memory,
        ..Config::default()
    };
    let server = Server::bind(config).unwrap();
    assert_eq!(server.api_key(), Some("embed"));
    let (handle, addr) = (server.handle(), server.local_addr());
    assert_ne!(addr.port(), 0, "the real port is known before run");
    (handle, addr, std::thread::spawn(move || server.run()))
}

fn subscribe(addr: std::net::SocketAddr, source: &str) -> Sse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /sources/{source}/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer embed\r\n\r\n").unwrap();
    let mut sse = Sse { r: BufReader::new(s) };
    assert!(sse.head().starts_with("HTTP/1.1 200"));
    assert_eq!(sse.next(), Frame::Comment("sse-handshake".into()));
    sse
}

#[test]
fn emits_from_four_threads_arrive_once_each_in_per_thread_order() {
    const THREADS: u64 = 4;
    const EACH: u64 = 250;
    let (handle, addr, reactor) = start();
    let info = handle.create_source("counts").unwrap();
    assert!(info.id.starts_with("dc_") && info.endpoint_path.starts_with("/e/"));
    let mut sse = subscribe(addr, "counts");
    let emitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                (0..EACH).map(|n| handle.emit("counts", &format!("{{\"t\":{t}, \"n\":{n}}}")).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = emitters.into_iter().flat_map(|e| e.join().unwrap()).collect();
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut seen_ids = Vec::new();
    for _ in 0..THREADS * EACH {
        let frame = sse.next_event();
        seen_ids.push(frame.id());
        let event = &frame.envelope()["event"];
        let (t, n) = (event["t"].as_u64().unwrap(), event["n"].as_u64().unwrap());
        let want = next.entry(t).or_insert(0);
        assert_eq!(n, *want, "thread {t} out of order");
        *want += 1;
    }
    assert!(next.values().all(|&n| n == EACH));
    seen_ids.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(seen_ids, ids, "each emitted id delivered exactly once");
    assert_eq!(handle.stats().events_emitted, THREADS * EACH);

    handle.shutdown();
    reactor.join().unwrap().unwrap();
    assert_eq!(sse.next_event(), Frame::End, "shutdown ends the stream");
    assert_eq!(handle.emit("counts", "1"), Err(Error::Stopped));
    assert_eq!(handle.create_source("x"), Err(Error::Stopped));
}

#[test]
fn handle_errors_are_typed() {
    let (handle, _, reactor) = start();
    handle.create_source("a").unwrap();
    assert_eq!(handle.create_source("a"), Err(Error::NameTaken));
    assert_eq!(handle.create_source("no spaces"), Err(Error::BadName));
    assert_eq!(handle.emit("missing", "1"), Err(Error::NotFound));
    assert!(matches!(handle.emit("a", "{oops"), Err(Error::InvalidJson(_))));
    assert_eq!(handle.emit("a", &format!("\"{}\"", "x".repeat(600_000))), Err(Error::TooLarge));
    handle.delete_source("a").unwrap();
    assert_eq!(handle.delete_source("a"), Err(Error::NotFound));
    handle.shutdown();
    handle.shutdown();
    reactor.join().unwrap().unwrap();
}

#[test]
fn two_servers_in_one_process() {
    let (one, addr_one, r1) = start();
    let (two, addr_two, r2) = start();
    assert_ne!(addr_one, addr_two);
    one.create_source("s").unwrap();
    two.create_source("s").unwrap();
    let mut sub_one = subscribe(addr_one, "s");
    let mut sub_two = subscribe(addr_two, "s");
    let id_one = one.emit("s", "1").unwrap();
    two.emit("s", "2").unwrap();
    assert_eq!(sub_one.next_event().id(), id_one);
    assert_eq!(sub_two.next_event().envelope()["event"], 2);
    for (handle, reactor) in [(one, r1), (two, r2)] {
        handle.shutdown();
        reactor.join().unwrap().unwrap();
    }
}
