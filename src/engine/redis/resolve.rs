//! Host names resolved off the reactor: `getaddrinfo` blocks (a slow DNS
//! for seconds), and the reactor serves every subscriber. A name is
//! looked up on a short-lived thread of its own that leaves the answer
//! here and wakes the reactor; the links wait meanwhile, as while the
//! Sentinels are asked. An IP literal needs no lookup. At most one lookup
//! per name is in flight: one that overruns `RESOLVE_TIMEOUT` fails that
//! round, and the next round waits for the same lookup (a hung DNS makes
//! no pile of threads).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;

use super::url::{Addr, Host};

/// A lookup not answered within this fails the round that asked.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

type Answer = Arc<Mutex<Option<io::Result<Addr>>>>;
type Lookup = Arc<dyn Fn(&Host) -> io::Result<Addr> + Send + Sync>;

pub struct Resolver {
    /// Wakes the reactor when an answer is left (none: the engine's own poll, in tests).
    waker: Option<Arc<Waker>>,
    lookup: Lookup,
    /// In flight: the name, since when this round waits, where the answer goes.
    pending: Vec<(Host, Instant, Answer)>,
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::with_lookup(Arc::new(Host::resolve))
    }
}

impl Resolver {
    fn with_lookup(lookup: Lookup) -> Resolver {
        Resolver { waker: None, lookup, pending: Vec::new() }
    }

    pub fn wake_with(&mut self, waker: Arc<Waker>) {
        self.waker = Some(waker);
    }

    /// `host`'s address: at once for an IP literal, else `None` while its
    /// lookup runs (the reactor is woken when it ends), then its answer.
    pub fn resolve(&mut self, host: &Host, now: Instant) -> Option<io::Result<Addr>> {
        if let Ok(ip) = host.name.parse::<IpAddr>() {
            return Some(Ok(Addr::Tcp(SocketAddr::new(ip, host.port), host.name.clone())));
        }
        if let Some(n) = self.pending.iter().position(|(h, ..)| h == host) {
            let (_, since, answer) = &mut self.pending[n];
            let done = answer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(found) = done {
                self.pending.swap_remove(n);
                return Some(found);
            }
            if now >= *since + RESOLVE_TIMEOUT {
                // The next round waits for this lookup again.
                *since = now;
                let ms = RESOLVE_TIMEOUT.as_millis();
                return Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cannot resolve {}: no answer within {ms} ms", host.name),
                )));
            }
            return None;
        }
        let answer: Answer = Arc::default();
        let (slot, lookup, waker, name) = (answer.clone(), self.lookup.clone(), self.waker.clone(), host.clone());
        let spawned = std::thread::Builder::new().name("redis-resolve".into()).spawn(move || {
            let found = lookup(&name);
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
            if let Some(w) = waker {
                let _ = w.wake();
            }
        });
        if let Err(e) = spawned {
            return Some(Err(io::Error::new(e.kind(), format!("cannot resolve {}: no thread for it: {e}", host.name))));
        }
        self.pending.push((host.clone(), now, answer));
        None
    }

    /// When a lookup in flight overruns.
    pub fn next_wake(&self, consider: &mut impl FnMut(Instant)) {
        for (_, since, _) in &self.pending {
            consider(*since + RESOLVE_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn host(name: &str) -> Host {
        Host { name: name.into(), port: 6379 }
    }

    #[test]
    fn an_ip_literal_is_an_address_at_once() {
        let mut r = Resolver::with_lookup(Arc::new(|_: &Host| panic!("no lookup for a literal")));
        let now = Instant::now();
        assert_eq!(r.resolve(&host("127.0.0.1"), now).unwrap().unwrap(), Addr::Tcp("127.0.0.1:6379".parse().unwrap(), "127.0.0.1".into()));
        assert!(matches!(r.resolve(&host("::1"), now), Some(Ok(Addr::Tcp(a, _))) if a.ip().is_loopback()));
    }

    /// The caller goes on while a lookup hangs; the answer wakes the poll.
    #[test]
    fn a_slow_lookup_does_not_block_and_wakes_the_poll_when_it_ends() {
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let mut r = Resolver::with_lookup(Arc::new(move |h: &Host| {
            released.lock().unwrap().recv().unwrap();
            Ok(Addr::Tcp(SocketAddr::new([10, 0, 0, 7].into(), h.port), h.name.clone()))
        }));
        let mut poll = mio::Poll::new().unwrap();
        r.wake_with(Arc::new(Waker::new(poll.registry(), mio::Token(7)).unwrap()));
        let (slow, t0) = (host("redis.example"), Instant::now());
        // Pending, asked again: still pending, one lookup.
        assert!(r.resolve(&slow, t0).is_none());
        assert!(r.resolve(&slow, t0).is_none());
        assert_eq!(r.pending.len(), 1);
        // Meanwhile a literal is answered.
        assert!(r.resolve(&host("127.0.0.2"), t0).is_some());
        // Past the timeout, the round fails; the next waits for the same lookup.
        let late = t0 + RESOLVE_TIMEOUT;
        assert_eq!(r.resolve(&slow, late).unwrap().unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(r.resolve(&slow, late).is_none());
        let mut wake = None;
        r.next_wake(&mut |t| wake = Some(t));
        assert_eq!(wake, Some(late + RESOLVE_TIMEOUT));
        release.send(()).unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(events.iter().next().map(|e| e.token()), Some(mio::Token(7)));
        let addr = r.resolve(&slow, late).unwrap().unwrap();
        assert_eq!(addr, Addr::Tcp("10.0.0.7:6379".parse().unwrap(), "redis.example".into()));
        assert!(r.pending.is_empty());
    }
}
