//! `--trusted-proxy`: the client behind a reverse proxy. When a request
//! comes from a trusted proxy, its client is the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends
//! the address it got the request from; only what trusted proxies appended
//! can be believed, and an untrusted client can write anything to its left).
//! Sans-I/O, tested with tables.

use std::net::IpAddr;

/// An address or a network: `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s, None),
        };
        let net: IpAddr = ip.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.trim().parse().ok().filter(|&b| b <= max)?,
            None => max,
        };
        Some(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The client of a request from `peer` whose `X-Forwarded-For` values are
/// `forwarded` (in header order); `None`: the peer itself (not a trusted
/// proxy, no header, or an entry that is not an address where the walk
/// reached it). All entries trusted: the left-most.
pub fn client<'a>(trusted: &[Cidr], peer: IpAddr, forwarded: impl Iterator<Item = &'a [u8]>) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return None;
    }
    let values: Vec<&[u8]> = forwarded.collect();
    let mut client = None;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(|&b| b == b',')) {
        let ip = std::str::from_utf8(entry).ok().and_then(|e| parse_entry(e.trim()))?;
        client = Some(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.rsplit_once(':')?.0.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let table = [
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("10.0.0.1", "::ffff:10.0.0.1", true),
            ("192.168.1.128/25", "192.168.1.200", true),
            ("192.168.1.128/25", "192.168.1.100", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
        ];
        for (cidr, ip, want) in table {
            assert_eq!(Cidr::parse(cidr).unwrap().contains(ip.parse().unwrap()), want, "{cidr} {ip}");
        }
        for bad in ["", "10.0.0.0/33", "fd00::/129", "x", "10.0.0.0/", "10.0.0/8"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_right_most_untrusted_address() {
        let trusted = [Cidr::parse("127.0.0.1").unwrap(), Cidr::parse("10.0.0.0/8").unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let table: [(&str, &[&str], Option<&str>); 9] = [
            ("127.0.0.1", &["203.0.113.7"], Some("203.0.113.7")),
            ("127.0.0.1", &["1.1.1.1, 203.0.113.7, 10.0.0.2"], Some("203.0.113.7")),
            ("127.0.0.1", &["1.1.1.1", "203.0.113.7,10.0.0.2"], Some("203.0.113.7")),
            ("127.0.0.1", &["10.0.0.3, 10.0.0.2"], Some("10.0.0.3")),
            ("127.0.0.1", &[], None),
            ("127.0.0.1", &["junk, 203.0.113.7"], Some("203.0.113.7")),
            ("127.0.0.1", &["203.0.113.7, junk"], None),
            ("127.0.0.1", &["[2001:db8::1]:443, 198.51.100.2:80"], Some("198.51.100.2")),
            ("192.0.2.1", &["203.0.113.7"], None),
        ];
        for (peer, xff, want) in table {
            let got = client(&trusted, ip(peer), xff.iter().map(|v| v.as_bytes()));
            assert_eq!(got, want.map(ip), "{peer} {xff:?}");
        }
    }
}
