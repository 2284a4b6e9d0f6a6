//! Where the master is, as the links connect to it (`Locator`): the URL's
//! host resolved again after every lost link (a managed Redis moves its
//! primary behind one name), a Unix socket, or what the Sentinels say
//! (`sentinel.rs`).

use std::io;
use std::time::{Duration, Instant};

use super::link::Endpoint;
#[cfg(feature = "tls")]
use super::tls::Connector;
use super::url::{RedisUrl, Target};

/// A resolved address serves the links that connect within this of each
/// other (one lookup for a reconnect of every link), unless a link is lost meanwhile.
const RESOLVED_FOR: Duration = Duration::from_secs(1);

pub struct Locator {
    pub url: RedisUrl,
    #[cfg(feature = "tls")]
    tls: Option<Connector>,
    resolved: Option<(Instant, Endpoint)>,
}

impl Locator {
    pub fn new(url: RedisUrl) -> io::Result<Locator> {
        Ok(Locator {
            #[cfg(feature = "tls")]
            tls: Connector::new(&url)?,
            url,
            resolved: None,
        })
    }

    /// Where links connect now; `None` while it is not known yet.
    pub fn endpoint(&mut self, now: Instant) -> io::Result<Option<Endpoint>> {
        if let Some((at, e)) = &self.resolved
            && now < *at + RESOLVED_FOR
        {
            return Ok(Some(e.clone()));
        }
        let addr = match &self.url.target {
            Target::Host(_) | Target::Unix(_) => self.url.resolve()?,
            Target::Sentinel { .. } => return Err(io::Error::other("Sentinel URLs are not followed yet")),
        };
        let e = self.at(addr);
        self.resolved = Some((now, e.clone()));
        Ok(Some(e))
    }

    /// The endpoint of `addr`: AUTH, SELECT and TLS as the URL asks.
    pub fn at(&self, addr: super::url::Addr) -> Endpoint {
        Endpoint {
            addr,
            setup: self.url.setup(),
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        }
    }

    /// A link was lost: the next connect looks again.
    pub fn lost(&mut self) {
        self.resolved = None;
    }
}
