//! Where the master is, as the links connect to it (`Locator`): the URL's
//! host resolved again after every lost link (a managed Redis moves its
//! primary behind one name), a Unix socket, or what the Sentinels say
//! (`sentinel.rs`, asked again after every lost link).

use std::io;
use std::time::{Duration, Instant};

use mio::Registry;

use super::link::Endpoint;
use super::sentinel::{Heard, Sentinels};
#[cfg(feature = "tls")]
use super::tls::Connector;
use super::url::{Addr, RedisUrl, Target};

/// A resolved address serves the links that connect within this of each
/// other (one lookup for a reconnect of every link), unless a link is lost meanwhile.
const RESOLVED_FOR: Duration = Duration::from_secs(1);

pub struct Locator {
    pub url: RedisUrl,
    #[cfg(feature = "tls")]
    tls: Option<Connector>,
    resolved: Option<(Instant, Endpoint)>,
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
            sentinels,
        })
    }

    /// Where links connect now; `None` while the Sentinels are asked.
    pub fn endpoint(&mut self, now: Instant) -> io::Result<Option<Endpoint>> {
        if let Some(s) = &self.sentinels {
            return Ok(s.found.clone().map(|addr| self.at(addr)));
        }
        if let Some((at, e)) = &self.resolved
            && now < *at + RESOLVED_FOR
        {
            return Ok(Some(e.clone()));
        }
        let e = self.at(self.url.resolve()?);
        self.resolved = Some((now, e.clone()));
        Ok(Some(e))
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
        self.resolved = None;
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

    pub fn next_wake(&self, consider: &mut impl FnMut(Instant)) {
        if let Some(s) = &self.sentinels {
            s.next_wake(consider);
        }
    }
}
