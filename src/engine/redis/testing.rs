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
            &|dir, history, _floor| {
                // One namespace per check dir, so a reopen finds its data.
                let prefix = format!("t{}:", crate::sha1::hex(dir.to_string_lossy().as_bytes()));
                let mut opened = open(&url, 4, history, &prefix).unwrap();
                let recovered = std::mem::take(&mut opened.recovered);
                (Box::new(Redis::standalone(opened)), recovered)
            },
            true,
        );
    }
}

#[cfg(test)]
mod deadlines {
    use std::time::{Duration, Instant};

    use super::super::{Redis, open};
    use super::RedisServer;
    use crate::engine::Engine;

    /// A deadline is judged by the node's loop: a reply that reached the
    /// socket while the node was busy (here: its loop not run at all) is
    /// read when the deadline is judged, and the link is kept.
    #[test]
    fn a_reply_in_the_socket_is_taken_when_its_deadline_is_judged() {
        let server = RedisServer::start();
        let mut r = Redis::standalone(open(&server.url(), 1, 10, "judged:").unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !r.healthy() {
            assert!(Instant::now() < deadline, "the engine did not connect");
            r.flush();
            r.poll(&mut Vec::new());
            std::thread::sleep(Duration::from_millis(5));
        }
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
}
