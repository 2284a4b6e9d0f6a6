//! Where the master is, as the links connect to it (`Locator`): the URL's
//! host resolved again after every lost link (a managed Redis moves its
//! primary behind one name), a Unix socket, or what the Sentinels say
//! (`sentinel.rs`, asked again after every lost link). Names are resolved
//! off the reactor (`resolve.rs`); at start, before the reactor runs,
//! blocking (`endpoint_now`).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Waker};

use super::link::Endpoint;
use super::resolve::Resolver;
use super::sentinel::{Heard, Sentinels};
#[cfg(feature = "tls")]
use super::tls::Connector;
use super::url::{Addr, Host, RedisUrl, Target};

/// A resolved address serves the links that connect within this of each
/// other (one lookup for a reconnect of every link), unless a link is lost meanwhile.
const RESOLVED_FOR: Duration = Duration::from_secs(1);

pub struct Locator {
    pub url: RedisUrl,
    #[cfg(feature = "tls")]
    tls: Option<Connector>,
    /// The name resolved, when, and its endpoint.
    resolved: Option<(Host, Instant, Endpoint)>,
    /// `resolved` is the start's (blocking) lookup, which the first links
    /// use however long the load took: requests right after start find
    /// the links up, not waiting for a lookup. Gone with the first loss.
    from_start: bool,
    resolver: Resolver,
    pub sentinels: Option<Sentinels>,
}

impl Locator {
    pub fn new(url: RedisUrl) -> io::Result<Locator> {
        #[cfg(feature = "tls")]
        let tls = Connector::new(&url)?;
        let sentinels = match &url.target {
            Target::Sentinel { sentinels, master, password } => Some(Sentinels::new(
                sentinels.clone(),
                master.clone(),
                password.clone(),
                #[cfg(feature = "tls")]
                tls.clone(),
            )),
            _ => None,
        };
        Ok(Locator {
            #[cfg(feature = "tls")]
            tls,
            url,
            resolved: None,
            from_start: false,
            resolver: Resolver::default(),
            sentinels,
        })
    }

    /// Resolutions wake the reactor with this when they end.
    pub fn wake_with(&mut self, waker: Arc<Waker>) {
        self.resolver.wake_with(waker.clone());
        if let Some(s) = &mut self.sentinels {
            s.wake_with(waker);
        }
    }

    /// The server's name and port: the URL's, or the master the Sentinels
    /// named (`None` while they are asked); `Err` for a Unix socket.
    fn host(&self) -> Result<Option<Host>, Addr> {
        match (&self.sentinels, &self.url.target) {
            (Some(s), _) => Ok(s.found.clone()),
            (None, Target::Host(h)) => Ok(Some(h.clone())),
            (None, Target::Unix(p)) => Err(Addr::Unix(p.clone())),
            (None, Target::Sentinel { .. }) => Ok(None),
        }
    }

    /// Where links connect now; `None` while the Sentinels are asked or
    /// the name is resolved (the reactor is woken when that ends).
    pub fn endpoint(&mut self, now: Instant) -> io::Result<Option<Endpoint>> {
        let host = match self.host() {
            Ok(Some(host)) => host,
            Ok(None) => return Ok(None),
            Err(addr) => return Ok(Some(self.at(addr))),
        };
        if let Some((h, at, e)) = &self.resolved
            && *h == host
            && (self.from_start || now < *at + RESOLVED_FOR)
        {
            return Ok(Some(e.clone()));
        }
        let Some(addr) = self.resolver.resolve(&host, now) else { return Ok(None) };
        let e = self.at(addr?);
        self.resolved = Some((host, now, e.clone()));
        Ok(Some(e))
    }

    /// Where the master is, resolved now, blocking: at start, before the reactor runs.
    pub fn endpoint_now(&mut self) -> io::Result<Option<Endpoint>> {
        match self.host() {
            Ok(Some(host)) => {
                let e = self.at(host.resolve()?);
                (self.resolved, self.from_start) = (Some((host, Instant::now(), e.clone())), true);
                Ok(Some(e))
            }
            Ok(None) => Ok(None),
            Err(addr) => Ok(Some(self.at(addr))),
        }
    }

    /// The endpoint of a data node at `addr`: AUTH, SELECT, ROLE and TLS as the URL asks.
    pub fn at(&self, addr: Addr) -> Endpoint {
        Endpoint {
            addr,
            setup: self.url.setup(),
            role: true,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        }
    }

    /// A link was lost: the next connect looks again.
    pub fn lost(&mut self, registry: &Registry, now: Instant) {
        (self.resolved, self.from_start) = (None, false);
        if let Some(s) = &mut self.sentinels {
            s.ask(registry, now);
        }
    }

    /// The Sentinels' deadlines (nothing for other URLs).
    pub fn drive(&mut self, registry: &Registry, now: Instant) {
        if let Some(s) = &mut self.sentinels {
            s.drive(registry, now);
        }
    }

    pub fn ready(&mut self, event: &mio::event::Event, registry: &Registry) -> Heard {
        self.sentinels.as_mut().map_or(Heard::Nothing, |s| s.ready(event, registry))
    }

    pub fn flush(&mut self) {
        if let Some(s) = &mut self.sentinels {
            s.flush();
        }
    }

    pub fn wants_flush(&self) -> bool {
        self.sentinels.as_ref().is_some_and(Sentinels::wants_flush)
    }

    /// The Sentinel link's state for `/metrics` (none for other URLs).
    pub fn sentinel_link(&self) -> Option<(bool, Instant)> {
        self.sentinels.as_ref().map(Sentinels::link)
    }

    pub fn next_wake(&self, consider: &mut impl FnMut(Instant)) {
        self.resolver.next_wake(consider);
        if let Some(s) = &self.sentinels {
            s.next_wake(consider);
        }
    }
}
