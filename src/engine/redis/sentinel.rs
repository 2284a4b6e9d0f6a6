//! Redis Sentinel (`redis-sentinel://…#MASTER`), as the Sentinel client
//! spec says: the Sentinels are asked in turn, each with a short timeout,
//! `SENTINEL get-master-addr-by-name`; the first that answers moves to the
//! front of the list; the links then connect to that address and check
//! `ROLE` there (`link.rs`). The connection that asked stays open,
//! subscribed to `+switch-master`, so a failover is heard before the next
//! error. Asked again after every lost link. Non-blocking, on the
//! reactor's poll like the data links (the load at start asks over a
//! blocking connection: `load.rs`).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token, Waker};

use super::link::{Endpoint, Got, Link, LinkState};
use super::resolve::Resolver;
use super::resp::Value;
#[cfg(feature = "tls")]
use super::tls::Connector;
use super::url::Host;
use crate::throttle::{Throttle, throttled};

/// The token of the link to a Sentinel: past the partition readers' (at most 1024).
pub const TOKEN: Token = Token(super::TOKEN_BASE + 2048);
/// A Sentinel that has not answered within this is passed over.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// After a round where no Sentinel answered, the next one starts after this.
const ROUND_PAUSE: Duration = Duration::from_millis(250);

pub struct Sentinels {
    /// The one that answered last first.
    hosts: Vec<Host>,
    master: String,
    /// AUTH with `sentinel_password`.
    setup: Vec<Vec<Vec<u8>>>,
    #[cfg(feature = "tls")]
    tls: Option<Connector>,
    link: Link,
    /// The Sentinel asked or listened to.
    at: usize,
    /// Its name is being resolved (off the reactor) before the link connects.
    resolving: bool,
    resolver: Resolver,
    /// Sentinels asked in this round.
    tried: usize,
    /// A question is out since.
    asking: Option<Instant>,
    /// The next round starts then (no Sentinel answered the last).
    next_round: Option<Instant>,
    /// The master's address as last heard.
    pub found: Option<Host>,
    replies: Vec<Value>,
    lines: Lines,
}

/// The Sentinel link's lines, at most once a second per kind (`health.rs`):
/// Sentinels that are down, or a master no Sentinel knows, repeat per question.
#[derive(Default)]
struct Lines {
    /// A Sentinel did not answer (could not connect, timed out, lost, does not know the master).
    unanswered: Throttle,
    /// A round where none answered.
    round: Throttle,
    found: Throttle,
    switched: Throttle,
}

/// What the Sentinels said.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Nothing,
    /// The master's address (the answer to a question).
    Found,
    /// `+switch-master`: a failover promoted another server.
    Switched,
}

impl Sentinels {
    pub fn new(hosts: Vec<Host>, master: String, password: Option<String>, #[cfg(feature = "tls")] tls: Option<Connector>) -> Sentinels {
        Sentinels {
            hosts,
            master,
            setup: password.map(|p| vec![b"AUTH".to_vec(), p.into_bytes()]).into_iter().collect(),
            #[cfg(feature = "tls")]
            tls,
            link: Link::new(TOKEN),
            at: 0,
            resolving: false,
            resolver: Resolver::default(),
            tried: 0,
            asking: None,
            next_round: None,
            found: None,
            replies: Vec::new(),
            lines: Lines::default(),
        }
    }

    pub fn wake_with(&mut self, waker: Arc<Waker>) {
        self.resolver.wake_with(waker);
    }

    /// Where Sentinel `n` is (resolved now, blocking: at start), and what to send it first.
    pub fn endpoint(&self, n: usize) -> io::Result<Endpoint> {
        self.endpoint_at(self.hosts[n].resolve()?)
    }

    fn endpoint_at(&self, addr: super::url::Addr) -> io::Result<Endpoint> {
        Ok(Endpoint {
            addr,
            setup: self.setup.clone(),
            role: false,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        })
    }

    /// The Sentinel link for `/metrics`: up (connected, subscribed to
    /// `+switch-master`) and when it last read.
    pub fn link(&self) -> (bool, Instant) {
        (self.link.passed_setup() && self.asking.is_none(), self.link.last_read)
    }

    pub fn count(&self) -> usize {
        self.hosts.len()
    }

    /// `SENTINEL get-master-addr-by-name MASTER`.
    pub fn question(&self) -> [&[u8]; 3] {
        [b"SENTINEL", b"get-master-addr-by-name", self.master.as_bytes()]
    }

    /// Sentinel `n` answered with the master's address: it goes first.
    pub fn answered(&mut self, n: usize, addr: Host) {
        let host = self.hosts.remove(n);
        self.hosts.insert(0, host);
        self.at = 0;
        self.found = Some(addr);
    }

    /// Asks again, from the front of the list (unless a question is out):
    /// the links wait for the answer.
    pub fn ask(&mut self, registry: &Registry, now: Instant) {
        if self.asking.is_some() || self.next_round.is_some() {
            return;
        }
        self.found = None;
        self.at = 0;
        self.tried = 0;
        self.connect(registry, now);
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        self.link.lose(registry);
        self.asking = Some(now);
        self.dial(registry, now);
    }

    /// Connects to the Sentinel asked once its name is resolved (the
    /// question's `ASK_TIMEOUT` covers the lookup too).
    fn dial(&mut self, registry: &Registry, now: Instant) {
        let Some(addr) = self.resolver.resolve(&self.hosts[self.at], now) else {
            self.resolving = true;
            return;
        };
        self.resolving = false;
        let connected = addr.and_then(|addr| self.endpoint_at(addr)).and_then(|at| self.link.connect(&at, registry));
        if let Err(e) = connected {
            throttled!(self.lines.unanswered, Warn, "Sentinel {}:{}: {e}", self.hosts[self.at].name, self.hosts[self.at].port);
            return self.next(registry, now);
        }
        self.link.send(&[b"SENTINEL", b"get-master-addr-by-name", self.master.as_bytes()]);
        self.link.send(&[b"SUBSCRIBE", b"+switch-master"]);
    }

    /// The Sentinel asked did not answer: the next one, or a pause after a whole round.
    fn next(&mut self, registry: &Registry, now: Instant) {
        self.link.lose(registry);
        self.asking = None;
        self.resolving = false;
        self.tried += 1;
        if self.tried >= self.hosts.len() {
            throttled!(self.lines.round, Warn, "no Sentinel knows where master {} is; asking again", self.master);
            self.tried = 0;
            self.at = 0;
            self.next_round = Some(now + ROUND_PAUSE);
        } else {
            self.at = (self.at + 1) % self.hosts.len();
            self.connect(registry, now);
        }
    }

    /// Timeouts and rounds; the first question once the engine starts.
    pub fn drive(&mut self, registry: &Registry, now: Instant) {
        if self.asking.is_some_and(|at| now >= at + ASK_TIMEOUT) {
            let host = &self.hosts[self.at];
            throttled!(
                self.lines.unanswered,
                Warn,
                "Sentinel {}:{}: no answer within {} ms",
                host.name,
                host.port,
                ASK_TIMEOUT.as_millis()
            );
            self.next(registry, now);
        } else if self.resolving {
            self.dial(registry, now);
        }
        if self.next_round.is_some_and(|at| now >= at) {
            self.next_round = None;
            self.connect(registry, now);
        }
        // Listening for +switch-master, from the start and after a lost Sentinel.
        if self.asking.is_none() && self.next_round.is_none() && !matches!(self.link.state, LinkState::Up | LinkState::Connecting) {
            let found = self.found.take();
            self.ask(registry, now);
            // A Sentinel lost while the master is fine: the links keep it meanwhile.
            self.found = found;
        }
    }

    pub fn next_wake(&self, consider: &mut impl FnMut(Instant)) {
        self.resolver.next_wake(consider);
        if let Some(at) = self.asking {
            consider(at + ASK_TIMEOUT);
        }
        if let Some(at) = self.next_round {
            consider(at);
        }
    }

    pub fn flush(&mut self) {
        if self.link.state == LinkState::Up && self.link.flush().is_err() {
            self.link.state = LinkState::Down { retry_at: Instant::now() };
        }
    }

    pub fn wants_flush(&self) -> bool {
        self.link.wants_flush()
    }

    /// Readiness of the Sentinel link.
    pub fn ready(&mut self, event: &mio::event::Event, registry: &Registry) -> Heard {
        let mut replies = std::mem::take(&mut self.replies);
        let got = self.link.ready(event, &mut replies);
        let mut heard = Heard::Nothing;
        let now = Instant::now();
        for reply in replies.drain(..) {
            if self.asking.is_some() {
                self.asking = None;
                match address(&reply) {
                    Some(addr) => {
                        let host = &self.hosts[self.at];
                        throttled!(
                            self.lines.found,
                            Info,
                            "Sentinel {}:{} says master {} is at {}",
                            host.name,
                            host.port,
                            self.master,
                            describe(&addr)
                        );
                        self.answered(self.at, addr);
                        heard = Heard::Found;
                    }
                    None => {
                        let host = &self.hosts[self.at];
                        throttled!(
                            self.lines.unanswered,
                            Warn,
                            "Sentinel {}:{} does not know master {}",
                            host.name,
                            host.port,
                            self.master
                        );
                        self.next(registry, now);
                        break;
                    }
                }
            } else if let Some(addr) = switched(&reply, &self.master) {
                throttled!(self.lines.switched, Warn, "the Sentinels switched master {} to {}", self.master, describe(&addr));
                self.found = Some(addr);
                heard = Heard::Switched;
            }
        }
        self.replies = replies;
        if let Got::Lost(why) = got {
            if self.asking.is_some() {
                let host = &self.hosts[self.at];
                throttled!(self.lines.unanswered, Warn, "Sentinel {}:{}: {why}", host.name, host.port);
                self.next(registry, now);
            } else {
                // Listened to again at the next drive.
                self.link.lose(registry);
            }
        }
        heard
    }
}

fn describe(host: &Host) -> String {
    format!("{}:{}", host.name, host.port)
}

/// `[ip, port]` to an address (a name, as `announce-hostnames` gives, is resolved when a link connects).
pub fn address(reply: &Value) -> Option<Host> {
    let parts = reply.as_array()?;
    let host = std::str::from_utf8(parts.first()?.as_bytes()?).ok()?;
    let port = std::str::from_utf8(parts.get(1)?.as_bytes()?).ok()?.parse().ok()?;
    at(host, port)
}

fn at(host: &str, port: u16) -> Option<Host> {
    (!host.is_empty()).then(|| Host { name: host.to_string(), port })
}

/// A `+switch-master` message for `master`: `<name> <old ip> <old port> <new ip> <new port>`.
fn switched(reply: &Value, master: &str) -> Option<Host> {
    let parts = reply.as_array()?;
    if parts.first()?.as_bytes()? != b"message" {
        return None;
    }
    let text = std::str::from_utf8(parts.get(2)?.as_bytes()?).ok()?;
    let words: Vec<&str> = text.split(' ').collect();
    if words.len() != 5 || words[0] != master {
        return None;
    }
    at(words[3], words[4].parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn answers_and_messages() {
        let tcp = |s: &str| s.split_once(':').map(|(name, port)| Host { name: name.into(), port: port.parse().unwrap() });
        assert_eq!(address(&Value::Array(vec![bulk("127.0.0.1"), bulk("6380")])), tcp("127.0.0.1:6380"));
        assert_eq!(address(&Value::Nil), None);
        let message = |text: &str| Value::Array(vec![bulk("message"), bulk("+switch-master"), bulk(text)]);
        assert_eq!(switched(&message("m 127.0.0.1 1 127.0.0.1 2"), "m"), tcp("127.0.0.1:2"));
        assert_eq!(switched(&message("other 127.0.0.1 1 127.0.0.1 2"), "m"), None);
        let subscribed = Value::Array(vec![bulk("subscribe"), bulk("+switch-master"), Value::Int(1)]);
        assert_eq!(switched(&subscribed, "m"), None);
    }
}
