//! Redis with Sentinel for the failover tests: a master, its replicas and
//! three Sentinels (`redis-server --sentinel`), each on a free loopback
//! port with a dir of its own, all started by the test; killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RedisServer, TempDir, free_port};

/// The name the Sentinels know the master by.
pub const MASTER: &str = "main";
/// How long a master must be silent before a Sentinel calls it down.
pub const DOWN_AFTER_MS: u32 = 1000;

pub struct Sentinel {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Sentinel {
    pub fn start(master_port: u16) -> Sentinel {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\nsentinel failover-timeout {MASTER} 4000\n\
             sentinel parallel-syncs {MASTER} 2\n",
            dir.path()
        );
        let path = dir.0.join("sentinel.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("redis-server")
            .arg(&path)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let s = Sentinel { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "the Sentinel did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).stderr(Stdio::null()).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }

    /// `SENTINEL master` field `name`.
    pub fn master_field(&self, name: &str) -> String {
        let out = self.cli(&["SENTINEL", "master", MASTER]);
        let lines: Vec<&str> = out.lines().collect();
        lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).unwrap_or(&"").to_string()
    }

    /// The port of the master it names now.
    pub fn master_port(&self) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", MASTER]).lines().nth(1)?.parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master with `replicas` replicas, and three Sentinels that know all of them.
pub struct Ha {
    /// Index 0 is the first master; the others its replicas.
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
}

impl Ha {
    pub fn start(replicas: usize) -> Ha {
        let master = RedisServer::start();
        let mport = master.port.to_string();
        let mut servers = vec![master];
        for _ in 0..replicas {
            // Replicas answer the Sentinels' and the nodes' ROLE as replicas; promoted, as master.
            servers.push(RedisServer::with(&["--replicaof", "127.0.0.1", &mport], None));
        }
        let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(servers[0].port)).collect();
        let ha = Ha { servers, sentinels };
        let deadline = Instant::now() + Duration::from_secs(20);
        let want = replicas.to_string();
        while !ha.sentinels.iter().all(|s| s.master_field("num-slaves") == want && s.master_field("num-other-sentinels") == "2")
            || !ha.servers[1..].iter().all(|r| r.cli(&["INFO", "replication"]).contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "the Sentinels did not find each other and the replicas");
            std::thread::sleep(Duration::from_millis(50));
        }
        ha
    }

    /// `redis-sentinel://` with the three Sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis-sentinel://{}#{MASTER}", hosts.join(","))
    }

    /// The server the Sentinels name as master now (all agree).
    pub fn master(&self) -> Option<usize> {
        let port = self.sentinels[0].master_port()?;
        if self.sentinels.iter().any(|s| s.master_port() != Some(port)) {
            return None;
        }
        self.servers.iter().position(|s| s.port == port)
    }
}
