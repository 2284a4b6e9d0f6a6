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
