//! A real `redis-server` for tests: a free loopback port, a temporary dir
//! of its own, append-only with fsync always; killed on drop. And the
//! conformance suite run against the engine on it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::url::RedisUrl;
use crate::engine::conformance::TempDir;

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir", dir.0.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let server = RedisServer { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while super::load::Blocking::open(&server.url()).and_then(|mut b| b.call(&[vec![b"PING"]])).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> RedisUrl {
        RedisUrl::parse(&format!("redis://127.0.0.1:{}", self.port)).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Redis, open};
    use super::RedisServer;

    #[test]
    fn conforms() {
        let server = RedisServer::start();
        let url = server.url();
        crate::engine::conformance::check_all(
            &|dir, history, floor| {
                // One namespace per check dir, so a reopen finds its data.
                let prefix = format!("t{}:", crate::sha1::hex(dir.to_string_lossy().as_bytes()));
                let mut opened = open(&url, 4, history, &prefix).unwrap();
                opened.floor_ms = floor;
                let recovered = std::mem::take(&mut opened.recovered);
                (Box::new(Redis::standalone(opened)), recovered)
            },
            true,
        );
    }

    /// As the reactor drives the engine (its links read with the clients'
    /// sockets, its outcomes taken when the turn settles), an acknowledged
    /// event is in the ring only once it is published: a stream opened
    /// between the two would otherwise replay it and then get it again.
    #[test]
    fn an_event_enters_the_ring_with_its_publish() {
        use crate::engine::{Engine, Op, Outcome};
        let server = RedisServer::start();
        let mut poll = mio::Poll::new().unwrap();
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).unwrap());
        let mut e = Redis::start(open(&server.url(), 4, 10, "held:").unwrap(), poll.registry().try_clone().unwrap(), waker);
        let mut events = mio::Events::with_capacity(64);
        let (mut out, mut published) = (Vec::new(), 0);
        let meta = crate::engine::conformance::meta(1);
        let created = e.submit(Op::Create { key: 1, meta: &meta }, 2_000);
        let mut emitted = None;
        for _ in 0..1000 {
            e.flush();
            poll.poll(&mut events, Some(std::time::Duration::from_millis(10))).unwrap();
            for event in events.iter() {
                e.ready(event);
            }
            // Here the reactor handles the clients' sockets: a resume replays the ring.
            let retained = e.rings().history(1).map_or(0, |h| h.len());
            assert_eq!(retained, published, "in the ring, not yet published");
            e.poll(&mut out);
            for o in out.drain(..) {
                match o {
                    Outcome::Done { ticket, .. } if ticket == created => {
                        emitted = Some(e.submit(Op::Append { key: 1, payload: b"1", idem: None }, 2_000))
                    }
                    Outcome::Publish { .. } => published += 1,
                    _ => {}
                }
            }
            if published == 1 && emitted.is_some() {
                return;
            }
        }
        panic!("the emit was not published");
    }

    /// What the emit's script answers for keys: the first node's emit is
    /// replayed on another node, another body is refused, and each source
    /// keeps at most `--idempotency-keys` keys in Redis (the oldest go).
    #[test]
    fn idempotency_keys_are_decided_and_bounded_in_redis() {
        use crate::engine::conformance::{create, settle};
        use crate::engine::{Ack, Engine, IdemKey, Op, Outcome, StorageError};
        let server = RedisServer::start();
        let url = server.url();
        let start = || {
            let mut opened = open(&url, 4, 10, "idem:").unwrap();
            opened.bounds.max_keys = 2;
            let recovered = std::mem::take(&mut opened.recovered);
            (Redis::standalone(opened), recovered)
        };
        let emit = |e: &mut Redis, payload: &str, key: &str| {
            let idem = IdemKey::new(key.as_bytes(), payload.as_bytes());
            let t = e.submit(Op::Append { key: 1, payload: payload.as_bytes(), idem: Some(idem) }, 2_000);
            settle(e, &[t]).into_iter().find_map(|o| match o {
                Outcome::Done { ticket, result } if ticket == t => Some(result),
                _ => None,
            })
        };
        let (mut one, _) = start();
        create(&mut one, 1, 2_000);
        let (mut two, recovered) = start();
        two.restore(1, recovered.sources.into_iter().next().unwrap());
        let Some(Ok(Ack::Appended(a))) = emit(&mut one, "1", "a") else { panic!("not appended") };
        assert_eq!(emit(&mut two, "1", "a"), Some(Ok(Ack::Replayed(a))), "the other node replays it");
        assert_eq!(two.rings().repeat(1, &IdemKey::new(b"a", b"1").key, 2_000).map(|r| r.1), Some(a), "and remembers it");
        assert_eq!(emit(&mut two, "2", "a"), Some(Err(StorageError::KeyReused)));
        assert!(matches!(emit(&mut one, "2", "b"), Some(Ok(Ack::Appended(_)))));
        assert!(matches!(emit(&mut one, "3", "c"), Some(Ok(Ack::Appended(_)))));
        let mut redis = super::super::load::Blocking::open(&url).unwrap();
        let id = "dc_conformance0001";
        let (i, o) = (format!("idem:i:{id}"), format!("idem:io:{id}"));
        let lens = redis.call(&[vec![b"HLEN", i.as_bytes()], vec![b"LLEN", o.as_bytes()]]).unwrap();
        assert_eq!(lens, [crate::engine::redis::resp::Value::Int(2), crate::engine::redis::resp::Value::Int(2)], "two keys kept");
        // `a` is forgotten in Redis (the oldest of three): a new emit (on the node that never saw it).
        let (mut three, recovered) = start();
        three.restore(1, recovered.sources.into_iter().next().unwrap());
        let Some(Ok(Ack::Appended(again))) = emit(&mut three, "1", "a") else { panic!("not appended") };
        assert!(again > a);
        // Deleting the source drops its keys.
        let t = three.submit(Op::Delete { key: 1 }, 2_000);
        settle(&mut three, &[t]);
        let exists = redis.call(&[vec![b"EXISTS", i.as_bytes(), o.as_bytes()]]).unwrap();
        assert_eq!(exists, [crate::engine::redis::resp::Value::Int(0)]);
    }
}

#[cfg(test)]
mod deadlines {
    use std::time::{Duration, Instant};

    use super::super::{Redis, open};
    use super::RedisServer;
    use crate::engine::Engine;

    /// The engine on `server`, driven until its links are up.
    fn connected(server: &RedisServer, prefix: &str) -> Redis {
        let mut r = Redis::standalone(open(&server.url(), 1, 10, prefix).unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !r.healthy() {
            assert!(Instant::now() < deadline, "the engine did not connect");
            r.flush();
            r.poll(&mut Vec::new());
            std::thread::sleep(Duration::from_millis(5));
        }
        r
    }

    /// A deadline is judged by the node's loop: a reply that reached the
    /// socket while the node was busy (here: its loop not run at all) is
    /// read when the deadline is judged, and the link is kept.
    #[test]
    fn a_reply_in_the_socket_is_taken_when_its_deadline_is_judged() {
        let server = RedisServer::start();
        let mut r = connected(&server, "judged:");
        // A ping as if sent 3 s from now, judged 2 s after that (past its
        // 1.5 s deadline) with its reply unread in the socket.
        let later = Instant::now() + Duration::from_secs(3);
        r.pipe.ping_if_idle(later);
        r.flush();
        std::thread::sleep(Duration::from_millis(100));
        r.timers(later + Duration::from_secs(2));
        assert!(r.healthy(), "the reply was there: the link is kept");
        assert_eq!(r.health.metrics_reconnects(), 0);
    }

    /// A deadline runs from when the command was written: a ping queued
    /// while the node was starved (here: stamped 2 s ago) and written only
    /// now is not judged late at once, before Redis could have answered
    /// (Redis is paused, so no reply comes in this test).
    #[test]
    fn a_command_written_late_is_judged_from_its_write() {
        let server = RedisServer::start();
        let mut r = connected(&server, "late:");
        let mut admin = super::super::load::Blocking::open(&server.url()).unwrap();
        admin.call(&[vec![b"CLIENT", b"PAUSE", b"3000", b"ALL"]]).unwrap();
        let queued = Instant::now() - Duration::from_secs(2);
        r.pipe.last_sent = queued - Duration::from_secs(1);
        r.pipe.ping_if_idle(queued);
        r.flush();
        // 0.5 s after the write, 2.5 s after the queueing: within the deadline.
        r.timers(Instant::now() + Duration::from_millis(500));
        assert!(r.healthy(), "judged from its queueing, not its write: {:?}", r.health.metrics_reconnects());
        // Past the deadline from the write, with no reply: lost.
        r.timers(Instant::now() + Duration::from_millis(1600));
        assert!(!r.healthy(), "a command unanswered past its deadline loses the link");
    }
}
