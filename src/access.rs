//! The access log (target `ssehub::access`, off unless `RUST_LOG` names
//! it): one line per request, and the peer's address every connection
//! keeps for it and for close lines.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};

use crate::http::Head;

/// The access log's target: one line per request, off unless `RUST_LOG` names it.
pub const ACCESS_LOG: &str = "ssehub::access";

/// What the access log will say of a request answered later (a stream
/// when it ends, a change once storage has it): who asked, `METHOD /path`,
/// and when its head was complete (reactor clock, microseconds). Made only
/// while the log is on (`enabled`).
pub struct Access {
    /// The account of the request's key or token; `-` for none.
    pub account: String,
    /// The client behind a trusted proxy (`--trusted-proxy`); `None`: the peer.
    pub client: Option<std::net::IpAddr>,
    pub request: String,
    pub since_us: u64,
    /// A stream's bytes so far.
    pub sent: u64,
}

impl Access {
    /// Whether the log is on: asked once, at start (the filter is fixed then).
    pub fn enabled() -> bool {
        log::log_enabled!(target: ACCESS_LOG, log::Level::Info)
    }

    pub fn of(head: &Head, since_us: u64, account: Option<&str>, client: Option<std::net::IpAddr>) -> Box<Access> {
        // Never a query string, and never a webhook's endpoint key (a secret).
        let path = head.path();
        let request = match path.strip_prefix("/e/") {
            Some(rest) => format!("{} /e/*{}", head.method(), rest.find('/').map_or("", |i| &rest[i..])),
            None => format!("{} {path}", head.method()),
        };
        Box::new(Access { account: account.unwrap_or("-").to_string(), client, request, since_us, sent: 0 })
    }

    /// Logs the line: `ACCOUNT CLIENT METHOD /path STATUS BYTES MS.USms`
    /// (the duration to the microsecond, written as a decimal by hand).
    #[inline(never)]
    pub fn log(&self, peer: Peer, status: u16, bytes: u64, now_us: u64) {
        let us = now_us.saturating_sub(self.since_us);
        let (ms, frac) = (us / 1000, us % 1000);
        match self.client {
            Some(client) => log::info!(target: ACCESS_LOG, "{} {client} {} {status} {bytes} {ms}.{frac:03}ms", self.account, self.request),
            None => log::info!(target: ACCESS_LOG, "{} {peer} {} {status} {bytes} {ms}.{frac:03}ms", self.account, self.request),
        }
    }
}

/// A peer's address in 20 bytes instead of `SocketAddr`'s 32 (an IPv6
/// address's flow info and scope id are not kept): every connection has one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    ip: [u8; 16],
    port: u16,
    v6: bool,
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        match addr {
            SocketAddr::V4(a) => Peer { ip: a.ip().to_ipv6_mapped().octets(), port: a.port(), v6: false },
            SocketAddr::V6(a) => Peer { ip: a.ip().octets(), port: a.port(), v6: true },
        }
    }
}

impl Peer {
    pub fn ip(&self) -> std::net::IpAddr {
        let ip = Ipv6Addr::from(self.ip);
        match ip.to_ipv4_mapped().filter(|_| !self.v6) {
            Some(v4) => v4.into(),
            None => ip.into(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = Ipv6Addr::from(self.ip);
        match ip.to_ipv4_mapped().filter(|_| !self.v6) {
            Some(v4) => SocketAddr::from((v4, self.port)).fmt(f),
            None => SocketAddr::from((ip, self.port)).fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peer_shows_as_its_socket_address() {
        for addr in ["127.0.0.1:8080", "[::1]:443", "[::ffff:10.0.0.1]:1", "[2001:db8::7]:65535", "0.0.0.0:0"] {
            let a: std::net::SocketAddr = addr.parse().unwrap();
            assert_eq!(super::Peer::from(a).to_string(), a.to_string());
        }
        assert_eq!(std::mem::size_of::<super::Peer>(), 20);
    }
}
